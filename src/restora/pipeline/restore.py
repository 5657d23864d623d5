"""Run a face restorer (GFPGAN v1.4, CodeFormer, or any crop -> crop network) on a batch of crops.

All faces of an image go through the network together, in batches capped by a memory budget, so
the per-call overhead is paid once per batch rather than once per face.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from restora.errors import Cancelled

if TYPE_CHECKING:
    import torch

    from restora.models.registry import ModelSpec
    from restora.models.runtime import Runtime

#: Restorer architectures and their user-facing kind.
KINDS = {"gfpgan_v1_clean": "gfpgan", "codeformer": "codeformer"}

#: Peak activation memory per 512 x 512 face in one float32 forward pass, measured on CPU with the
#: full-size networks (RSS growth from batch 1 to 2, rounded up); scales with the crop's area.
BYTES_PER_FACE_512 = {"gfpgan": 640 * 2**20, "codeformer": 600 * 2**20, "parsenet": 600 * 2**20}
#: Memory a batch may use on CPU (fixed: results must not depend on the memory free).
CPU_BATCH_BUDGET = 3 * 2**30


@dataclass
class Restorer:
    """A loaded face restorer: the network plus how to call it."""

    net: Any  # torch.nn.Module
    kind: str  # "gfpgan", "codeformer", or "custom" (called as net(x), first output if a tuple)
    input_size: int
    model_id: str | None = None
    device: str = "cpu"
    dtype: Any = None  # torch dtype; None = float32

    def forward(self, x: torch.Tensor, *, fidelity: float = 0.5,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """NCHW RGB in [-1, 1] -> NCHW RGB (nominally [-1, 1])."""
        if self.kind == "gfpgan":
            # randomize_noise=True as GFPGANer; the generator makes the noise reproducible
            out = self.net(x, return_rgb=False, randomize_noise=True, generator=generator)
        elif self.kind == "codeformer":
            out = self.net(x, w=float(fidelity), adain=True)
        else:
            out = self.net(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def input_size_for(spec: ModelSpec) -> int:
    """The crop size a restorer spec expects (from its architecture's hparams)."""
    if spec.arch == "gfpgan_v1_clean":
        from restora.models.arch.gfpgan import input_size
    elif spec.arch == "codeformer":
        from restora.models.arch.codeformer import input_size
    else:
        return 512
    return int(input_size(dict(spec.hparams)))


def load_restorer(runtime: Runtime, spec: ModelSpec) -> Restorer:
    """Load (or reuse) the network for ``spec`` through the runtime."""
    net = runtime.load(spec.id)
    return Restorer(net=net, kind=KINDS.get(spec.arch, "custom"), input_size=input_size_for(spec),
                    model_id=spec.id, device=str(runtime.device), dtype=runtime.dtype)


def max_batch(restorer: Restorer) -> int:
    """Faces per forward pass so activations stay within the memory budget (at least 1)."""
    return batch_for(restorer.kind, restorer.input_size, restorer.device)


def batch_for(kind: str, size: int, device: str) -> int:
    """Batch size for ``kind`` at ``size`` x ``size`` that fits the device's memory budget.

    The budget depends only on the device (3 GiB on CPU, 40 % of a GPU's total memory), never
    on the memory free at the moment: batch composition changes floating-point results (and
    which noise GFPGAN draws), so a free-memory rule made repeated runs differ by a grey level.
    """
    per_face = BYTES_PER_FACE_512.get(kind, 640 * 2**20) * (size / 512) ** 2
    budget = float(CPU_BATCH_BUDGET)
    if device.startswith("cuda"):
        import torch

        budget = 0.4 * torch.cuda.get_device_properties(torch.device(device)).total_memory
    return max(1, int(budget // per_face))


def restore_faces(crops: Sequence[np.ndarray], restorer: Restorer, *, fidelity: float = 0.5,
                  seed: int | None = None, batch_size: int | None = None,
                  cancel: threading.Event | None = None,
                  on_batch: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """Restore aligned crops (n x n x 3 float32 RGB in [0, 1]); returns the same shape in [0, 1].

    ``seed`` seeds GFPGAN's noise injection: one generator for the whole call; batch sizes depend
    only on the device, so a given image and seed always give the same output.
    ``cancel`` is checked before every batch; ``on_batch(done, total)`` reports progress in faces.
    """
    import torch

    if not crops:
        return []
    n = restorer.input_size
    for c in crops:
        if c.shape != (n, n, 3):
            raise ValueError(f"crop of shape {c.shape} does not match the restorer input {n}x{n}x3")
    dtype = restorer.dtype or torch.float32
    device = torch.device(restorer.device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    size = batch_size or max_batch(restorer)
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(crops), size):
            if cancel is not None and cancel.is_set():
                raise Cancelled("The job was cancelled.")
            chunk = np.stack(crops[start:start + size]).transpose(0, 3, 1, 2)
            x = torch.from_numpy(np.ascontiguousarray(chunk)).to(device=device)
            x = (x * 2.0 - 1.0).to(dtype)  # normalise in float32, then the runtime's dtype
            y = restorer.forward(x, fidelity=fidelity, generator=generator)
            y = ((y.float().clamp(-1.0, 1.0) + 1.0) * 0.5).permute(0, 2, 3, 1).cpu().numpy()
            out.extend(np.ascontiguousarray(f, dtype=np.float32) for f in y)
            if on_batch is not None:
                on_batch(len(out), len(crops))
    return out


def parse_faces(parsenet: Any, faces: Sequence[np.ndarray], *, device: str = "cpu",
                dtype: Any = None, in_size: int = 512, batch_size: int | None = None,
                cancel: threading.Event | None = None) -> list[np.ndarray]:
    """ParseNet argmax class maps (in_size x in_size int) for restored crops in [0, 1]."""
    import cv2
    import torch

    maps: list[np.ndarray] = []
    dev = torch.device(device)
    batch_size = batch_size or batch_for("parsenet", in_size, device)
    with torch.inference_mode():
        for start in range(0, len(faces), batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled("The job was cancelled.")
            batch = [f if f.shape[0] == in_size else
                     cv2.resize(f, (in_size, in_size), interpolation=cv2.INTER_LINEAR)
                     for f in faces[start:start + batch_size]]
            x = torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy()).to(device=dev)
            x = (x * 2.0 - 1.0).to(dtype or torch.float32)
            logits = parsenet(x)[0]
            maps.extend(logits.argmax(dim=1).cpu().numpy().astype(np.int64))
    return maps
