"""Run a face restorer (GFPGAN v1.4, CodeFormer, or any crop -> crop network) on a batch of crops.

All faces of an image go through the network together, in batches capped by a memory budget, so
the per-call overhead is paid once per batch rather than once per face.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from restora.errors import Cancelled, InvalidParameter
from restora.models.nets import FaceParser, FaceRestorer

if TYPE_CHECKING:
    from restora.models.registry import ModelSpec
    from restora.models.runtime import Runtime

#: Peak activation memory per 512 x 512 face in one float32 forward pass, measured on CPU with the
#: full-size networks (RSS growth from batch 1 to 2, rounded up); scales with the crop's area.
BYTES_PER_FACE_512 = {"gfpgan": 640 * 2**20, "codeformer": 600 * 2**20, "parsenet": 600 * 2**20}
#: Memory a batch may use on CPU (fixed: results must not depend on the memory free). 1.5 GiB
#: (two 512 faces per forward): with 3 GiB a 24 MP enhance-faces peaked at 4.25 GiB before any
#: upscaling (benchmarks/memory.py); on CPU larger batches barely change the cost per face.
CPU_BATCH_BUDGET = 3 * 2**29


def load_restorer(runtime: Runtime, spec: ModelSpec) -> FaceRestorer:
    """The restorer descriptor for ``spec`` (loaded once per runtime)."""
    net = runtime.load(spec.id)
    if not isinstance(net, FaceRestorer):
        raise InvalidParameter("model", f"model '{spec.id}' is a {spec.task} model, not a face "
                               "restorer")
    return net


def max_batch(restorer: FaceRestorer) -> int:
    """Faces per forward pass so activations stay within the memory budget (at least 1)."""
    return batch_for(restorer.kind, restorer.input_size or 512, restorer.device)


def batch_for(kind: str, size: int, device: str) -> int:
    """Batch size for ``kind`` at ``size`` x ``size`` that fits the device's memory budget.

    The budget depends only on the device (1.5 GiB on CPU, 40 % of a GPU's total memory), never
    on the memory free at the moment: batch composition changes floating-point results (and
    which noise GFPGAN draws), so a free-memory rule made repeated runs differ by a grey level.
    """
    per_face = BYTES_PER_FACE_512.get(kind, 640 * 2**20) * (size / 512) ** 2
    budget = float(CPU_BATCH_BUDGET)
    if device.startswith("cuda"):
        import torch

        budget = 0.4 * torch.cuda.get_device_properties(torch.device(device)).total_memory
    return max(1, int(budget // per_face))


def restore_faces(crops: Sequence[np.ndarray], restorer: FaceRestorer, *, fidelity: float = 0.5,
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
    device = torch.device(restorer.device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed))
    size = batch_size or max_batch(restorer)
    out: list[np.ndarray] = []
    for start in range(0, len(crops), size):
        if cancel is not None and cancel.is_set():
            raise Cancelled("The job was cancelled.")
        chunk = np.stack(crops[start:start + size]).transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(chunk) * np.float32(2.0) - np.float32(1.0)  # float32 [-1, 1]
        y = restorer(x, fidelity=fidelity, generator=generator)
        y = (np.clip(y, -1.0, 1.0) + 1.0) * 0.5
        out.extend(np.ascontiguousarray(f.transpose(1, 2, 0), dtype=np.float32) for f in y)
        if on_batch is not None:
            on_batch(len(out), len(crops))
    return out


def parse_faces(parser: FaceParser, faces: Sequence[np.ndarray], *,
                px_per_output: Sequence[float] | None = None, batch_size: int | None = None,
                cancel: threading.Event | None = None) -> list[np.ndarray]:
    """Argmax class maps (S x S int64, S the parser's input size) for restored crops in [0, 1].

    ``px_per_output`` is, per face, how many parsing pixels one pixel of the output holds where
    the face is pasted (small faces: several); the parser runs faces pasted small enough on its
    coarse graph when it has one (:class:`~restora.models.nets.FaceParser`).
    """
    import cv2

    in_size = parser.input_size or 512
    scales: list[float | None] = (list(px_per_output) if px_per_output is not None
                                  else [None] * len(faces))  # unknown: the exact graph
    if len(scales) != len(faces):
        raise ValueError("px_per_output needs one scale per face")
    # faces that share a graph are batched together; the maps come back in the faces' order
    graphs = [parser.graph_for(k) for k in scales]
    groups: dict[int, list[int]] = {}
    for i, graph in enumerate(graphs):
        groups.setdefault(id(graph), []).append(i)
    maps: list[np.ndarray | None] = [None] * len(faces)
    batch_size = batch_size or batch_for("parsenet", in_size, parser.device)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled("The job was cancelled.")
            idx = group[start:start + batch_size]
            batch = [faces[i] if faces[i].shape[0] == in_size else
                     cv2.resize(faces[i], (in_size, in_size), interpolation=cv2.INTER_LINEAR)
                     for i in idx]
            x = np.stack(batch).transpose(0, 3, 1, 2) * np.float32(2.0) - np.float32(1.0)
            # the group's least scale picks the group's graph (a scale range per graph)
            found = parser.class_maps(np.ascontiguousarray(x, dtype=np.float32),
                                      px_per_output=min(scales[i] or 0.0 for i in idx)
                                      if graphs[idx[0]] is not None else None)
            for i, m in zip(idx, found):
                maps[i] = m
    return [m for m in maps if m is not None]
