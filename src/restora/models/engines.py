"""Engines: what runs a descriptor's graph (torch, ONNX Runtime, OpenVINO), and which one.

Every engine takes the graph inputs (numpy arrays or torch tensors) and returns all graph
outputs. :class:`TorchEngine` runs the module eagerly (optionally ``torch.compile``\\ d);
:class:`OnnxRuntimeEngine` and :class:`OpenVINOEngine` run a graph exported from our own module
on first use and cached on disk (:class:`ExportCache`), keyed by the model file's SHA-256, the
engine, its version, the graph's input shapes and the precision. Nothing is exported at import.

Choice (``RESTORA_ENGINE``): ``torch``, ``onnxruntime`` or ``openvino`` force one engine (a
missing package falls back to torch with a warning); ``auto`` (the default) tries, on the CPU,
the candidates of the task's :data:`POLICIES` in order (fastest first, as measured by
``benchmarks/engines.py``) and keeps the first whose output on a fixed probe input stays within
the task's bound of torch float32. The verdict is cached with the graph, so each process pays
only for loading it. On CUDA/MPS ``auto`` is torch, in the task's GPU precision when the
network allows it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    from restora.models.nets import InputSpec, Network

log = logging.getLogger("restora.engines")

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
#: Bumped whenever the way graphs are exported changes (invalidates every cache entry).
EXPORT_FORMAT = 3
ONNX_OPSET = 17
#: OpenVINO bf16 with float32-accurate end layers, one graph. Where a parser's logits
#: themselves are bf16, near-tied classes resolve one way along whole edges and the mask moves:
#: its output layer runs in float32 (``graphs.FloatTail``). The image and the first conv's taps
#: are the largest error left: the input layer gets them as exact bf16 parts
#: (``graphs.ExactInput``) (docs/engines.md, "Small faces").
MIXED = "bf16-fp32io"
#: OpenVINO bf16 with a float32 residual stream: the network as three graphs, stem, trunk and
#: finish (``Network.stream_graph``). Under bf16 the CPU plugin keeps in float32 what leads to a
#: graph's output through element-wise nodes only (observed, not documented; the tests check it
#: on the compiled graphs): a trunk graph that ends on its residual stream thus adds every
#: block's residual in float32, and only its convolutions run bf16. In one graph the stream
#: leads on into the finish's convolutions and is bf16: full-size random-weight RRDBNet x2,
#: 51.6 -> 56.3 dB against torch fp32 at 1.1x all-bf16's CPU time and 0.21x OpenVINO fp32's
#: (docs/engines.md, "bf16 with a float32 residual stream").
STREAM = "bf16-fp32stream"


class Engine(Protocol):
    """Runs one graph. ``name`` and ``precision`` are reported in results."""

    name: str
    precision: str
    probe_cpu_s: float | None

    def run(self, inputs: Sequence[Any]) -> list[Any]: ...

    def release(self) -> None:
        """Give back the memory a run keeps for the next one (working buffers), where the
        engine keeps any and is idle; the next run allocates it again."""


# --- per-task precision policy and tolerances ---------------------------------------------------

@dataclass(frozen=True)
class Policy:
    """How close to torch float32 a task's output must stay, and what ``auto`` tries (in order).

    ``bound`` is the sentence the docs print; ``check(ref, got)`` returns (within, measurement).
    """

    bound: str
    check: Callable[[list[np.ndarray], list[np.ndarray]], tuple[bool, str]]
    cpu: tuple[tuple[str, str], ...]  # (engine, precision), fastest first
    #: half precisions ``auto`` tries in order on CUDA (where the network allows one and the
    #: probe stays within the bound on that device) before float32
    gpu: tuple[str, ...] = ()
    #: a stricter check for int8 graphs, whose error depends on the input more than a float
    #: engine's does (one probe must stand for every photo); None = ``check``
    check_int8: Callable[[list[np.ndarray], list[np.ndarray]], tuple[bool, str]] | None = None
    #: (engine, precision) graphs that may serve outputs pasted small (parsers' faces), each
    #: kept from the least paste scale (parsing pixels per output pixel) at which
    #: ``scale_check`` finds it within the bound stated in output pixels, where it is faster
    coarse: tuple[tuple[str, str], ...] = ()
    scale_check: Callable[[list[np.ndarray], list[np.ndarray]], tuple[int | None, str]] | None \
        = None
    #: (engine, precision) ``auto`` tries only on CPUs with AMX (first there), for networks
    #: whose exported fp32 graph runs no faster than torch, so that only AMX's bf16 pays
    amx: tuple[tuple[str, str], ...] = ()

    def check_for(self, precision: str
                  ) -> Callable[[list[np.ndarray], list[np.ndarray]], tuple[bool, str]]:
        return self.check_int8 if precision == "int8" and self.check_int8 else self.check


def psnr(ref: np.ndarray, got: np.ndarray, peak: float) -> float:
    mse = float(np.mean((ref.astype(np.float64) - got.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(peak * peak / mse)


def _psnr_check(peak: float, lo: float, hi: float, min_db: float
                ) -> Callable[[list[np.ndarray], list[np.ndarray]], tuple[bool, str]]:
    def check(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[bool, str]:
        db = psnr(np.clip(ref[0], lo, hi), np.clip(got[0], lo, hi), peak)
        return db >= min_db, f"PSNR {db:.1f} dB"
    return check


def _shifted(a: np.ndarray, axis: int, step: int) -> np.ndarray:
    """``a`` moved ``step`` pixels along ``axis``, the vacated rows repeating the edge row
    (nothing wraps round)."""
    out = np.roll(a, step, axis=axis)
    n = abs(step)
    edge: list[Any] = [slice(None), slice(None)]
    fill: list[Any] = [slice(None), slice(None)]
    edge[axis], fill[axis] = (slice(0, 1), slice(0, n)) if step > 0 else (slice(-1, None),
                                                                             slice(-n, None))
    out[tuple(fill)] = a[tuple(edge)]
    return out


def mask_envelope(classes: np.ndarray, px: int) -> float:
    """The largest change of the soft paste mask that moving the face mask ``px`` pixels (up,
    down, left or right) makes: what a ``px`` pixel edge error costs the paste."""
    from restora.models.parsing import parse_to_mask

    size = classes.shape[0]
    base = parse_to_mask(classes, size)
    return max(float(np.abs(parse_to_mask(_shifted(classes, axis, step), size) - base).max())
               for axis in (0, 1) for step in (px, -px))


def _mask_deviations(ref: list[np.ndarray], got: list[np.ndarray]
                     ) -> list[tuple[np.ndarray, float]]:
    """Per batch item: torch fp32's class map and the paste mask max |d| of the engine's."""
    from restora.models.parsing import parse_to_mask

    out = []
    for r, g in zip(ref[0], got[0]):
        a, b = r.argmax(axis=0), g.argmax(axis=0)
        d = float(np.abs(parse_to_mask(b, b.shape[0]) - parse_to_mask(a, a.shape[0])).max())
        out.append((a, d))
    return out


def paste_mask_check(ref: list[np.ndarray], got: list[np.ndarray], share: float = 1.0
                     ) -> tuple[bool, str]:
    """Parsing bound, on what the paste uses: the soft face mask (``parse_to_mask``) from the
    engine's classes differs from torch fp32's by no more than ``share`` times what moving the
    fp32 face mask by one pixel (up, down, left or right) changes it, for every item of the
    batch. So a pasted pixel moves no further towards the original or the restored face than a
    1 px mask edge move would move it."""
    worst, margin = 0.0, float("inf")
    for a, d in _mask_deviations(ref, got):
        worst, margin = max(worst, d), min(margin, share * mask_envelope(a, 1) - d)
    return margin >= 0.0, (f"paste mask max |d| {worst:.4f}, least margin to "
                           f"{share:g} x the 1 px envelope {margin:+.4f}")


#: The coarsest paste considered for a coarse parser: 8 parsing pixels per output pixel (a face
#: pasted 64 px wide from a 512 px parse).
MAX_PARSE_SCALE = 8


def paste_mask_scale(ref: list[np.ndarray], got: list[np.ndarray], share: float = 1.0
                     ) -> tuple[int | None, str]:
    """The least ``k`` (parsing pixels per output pixel) at which the engine's paste mask stays
    within ``share`` times the ``k`` px envelope, for every item and every coarser scale up to
    :data:`MAX_PARSE_SCALE`; None when there is none.

    A face pasted at ``k`` parsing pixels per output pixel moves its mask edge by one output
    pixel when the parsing map moves ``k`` pixels, so such an engine keeps the bound, stated in
    output pixels, for faces pasted at that scale or smaller."""
    items = [(a, d, [mask_envelope(a, px) for px in range(1, MAX_PARSE_SCALE + 1)])
             for a, d in _mask_deviations(ref, got)]
    least: int | None = None
    for k in range(MAX_PARSE_SCALE, 0, -1):
        if not all(d <= share * env[j] for _, d, env in items
                   for j in range(k - 1, MAX_PARSE_SCALE)):
            break
        least = k
    worst = max((d for _, d, _ in items), default=0.0)
    at = "none" if least is None else f"{least} parse px per output px"
    return least, (f"paste mask max |d| {worst:.4f}; within {share:g} x the k px envelope "
                   f"from k = {at}")


#: int8 parsers must keep the probe face within half the envelope: on a ParseNet trained here
#: (benchmarks/parsing_precision.py) held-out faces deviated up to 1.6x the probe's deviation.
INT8_PARSING_SHARE = 0.5


#: RetinaFace regressions: centres move by loc * 0.1 * prior (<= 512 px) and sizes by
#: exp(loc * 0.2) * size (<= 640 px at the working size), so |d| <= 0.005 keeps boxes and
#: landmarks within 0.26 px and 0.64 px; scores within 0.005.
DETECTION_MAX_ABS = 0.005


def detection_check(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[bool, str]:
    worst = max(float(np.abs(r.astype(np.float64) - g).max()) for r, g in zip(ref, got))
    return worst <= DETECTION_MAX_ABS, f"max |d| {worst:.2e}"


def colour_check(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[bool, str]:
    worst = float(np.abs(ref[0].astype(np.float64) - got[0]).max())
    return worst <= 1.0, f"max |d ab| {worst:.3f}"


def _max_abs_check(limit: float
                   ) -> Callable[[list[np.ndarray], list[np.ndarray]], tuple[bool, str]]:
    def check(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[bool, str]:
        worst = float(np.abs(ref[0].astype(np.float64) - got[0]).max())
        return worst <= limit, f"max |d| {worst:.2e}"
    return check


_FAST_FP32 = (("openvino", "fp32"), ("onnxruntime", "fp32"))
# OpenVINO bf16 comes after the fp32 engines in the policies, which is auto's order on CPUs
# without AMX: on the earlier 2-core benchmark machine (AVX-512 BF16, no AMX) it cost more CPU
# than OpenVINO fp32 on every network (0.6-0.8x of it). On the AMX machine (amx_bf16/amx_int8)
# it is several times faster than OpenVINO fp32, so there cpu_candidates() tries it first; each
# verdict still decides (docs/engines.md has both machines' tables).
_FAST_ANY = (*_FAST_FP32, ("openvino", "bf16"))

#: fp16 first (more mantissa), bf16 where fp16's range overflows
_HALF = ("fp16", "bf16")
#: then float32 with TF32 tensor-core maths (10-bit mantissa products, float32 range and sums):
#: on an H200 ParseNet kept its bound in TF32 (mask max |d| 0.005) where fp16 and bf16 did not,
#: at 1.5x IEEE float32 or more; RetinaFace did not (0.0195 against 0.005) and stays float32
#: (docs/engines.md, "GPU (CUDA)")
_HALF_TF32 = (*_HALF, "tf32")

POLICIES: dict[str, Policy] = {
    # Restored faces: PSNR >= 50 dB against torch float32 (outputs in [-1, 1], peak 2).
    # OpenVINO bf16 (GFPGAN only: CodeFormer's dtypes exclude it, its codes flip) is first on
    # AMX CPUs, where full-size GFPGAN ran 12.1x torch against OpenVINO fp32's 2.9x; it stays
    # only where the installed weights' probe passes (random weights: 80 dB). Without AMX it
    # is last: reached only where neither fp32 graph is usable, so no extra export there.
    # No TF32 on GPUs: it put CodeFormer at 35-38 dB at batches of 4-16 faces where its
    # 1-2 face probe gave 58 dB, so no probe can vouch for it (docs/engines.md, "GPU").
    "face-restoration": Policy("PSNR >= 50 dB vs torch fp32 (clipped to [-1, 1])",
                               _psnr_check(2.0, -1.0, 1.0, 50.0), _FAST_ANY, gpu=_HALF),
    # STREAM last: on AMX CPUs right after bf16, where it ran at 4.8x OpenVINO fp32's speed,
    # within the bound where all-bf16 missed it (random-weight RRDBNet x2: probe 49.8 dB)
    "upscale": Policy("PSNR >= 50 dB vs torch fp32 (clipped to [0, 1])",
                      _psnr_check(1.0, 0.0, 1.0, 50.0),
                      (*_FAST_ANY, ("openvino", STREAM)), gpu=_HALF_TF32),
    # int8 first: ~4x the CPU speed of OpenVINO fp32 (benchmarks/parsing_precision.py), kept
    # only where the installed weights' masks on the probe face stay within the bound. MIXED
    # last: on AMX CPUs it comes right after bf16 (cpu_candidates), where it was 3.0x OpenVINO
    # fp32 and within the bound at 1 px on the surrogate whose all-bf16 graph was not.
    "face-parsing": Policy("the paste mask moves no more than a 1 px move of the fp32 face "
                           "mask would move it (int8: half that, on the probe face)",
                           paste_mask_check,
                           (("openvino", "int8"), *_FAST_ANY, ("openvino", MIXED)),
                           gpu=_HALF_TF32,
                           check_int8=lambda r, g: paste_mask_check(r, g, INT8_PARSING_SHARE),
                           # bf16 (end layers in fp32, or all bf16) for small faces; not
                           # int8: on a trained surrogate int8 flips whole regions of some faces
                           # that no scale covers (docs/engines.md)
                           coarse=(("openvino", MIXED), ("openvino", "bf16")),
                           scale_check=paste_mask_scale),
    "face-detection": Policy(f"raw regressions and scores within {DETECTION_MAX_ABS} "
                             "(boxes and landmarks move < 1 px)", detection_check, _FAST_ANY,
                             gpu=_HALF_TF32),
    # DDColor runs once per photo, so speed matters little and memory a lot: DDColor-L's
    # OpenVINO graph (free input sides) held 2.1 GiB of buffers for its one 512 px forward and
    # kept them, against torch's 1.0 GiB of activations, to save 0.7 s of 2.7; its first export
    # peaked at 4.9 GiB (docs/engines.md, "Colorization stays on torch"). auto keeps torch.
    "colorization": Policy("Lab a/b within 1.0 of torch fp32", colour_check, ()),
    # Scratch logits: the damage threshold is sigmoid 0.4 (logit -0.405); 0.05 moves the
    # probability by < 0.0125, so only pixels already within a hair of the threshold can flip.
    "damage-segmentation": Policy("logits within 0.05 of torch fp32", _max_abs_check(0.05),
                                  _FAST_FP32),
    # LaMa: OpenVINO fp32 costs what torch does (its convolutions are oneDNN's either way:
    # 1.03x on a 512 px crop), so it is no candidate; bf16 on AMX ran 2.33x torch (full-size
    # random weights, 103.7 dB). Only OpenVINO can run its FFTs (Network.onnx_export).
    "inpainting": Policy("PSNR >= 50 dB vs torch fp32 (clipped to [0, 1])",
                         _psnr_check(1.0, 0.0, 1.0, 50.0), (), amx=(("openvino", "bf16"),)),
}
#: Tasks without their own policy (new networks) use float32 engines and a 50 dB bound on [0,1].
DEFAULT_POLICY = Policy("PSNR >= 50 dB vs torch fp32 (clipped to [0, 1])",
                        _psnr_check(1.0, 0.0, 1.0, 50.0), _FAST_FP32)


def policy_for(task: str) -> Policy:
    return POLICIES.get(task, DEFAULT_POLICY)


# --- torch --------------------------------------------------------------------------------------

_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "tf32": "float32"}
#: torch's TF32 switches are process-wide: each CUDA forward sets them to its own precision
#: (IEEE float32 unless "tf32") under this lock and puts back what it found, so concurrent
#: forwards never run in each other's maths and an application embedding Restora keeps its own
_CUDA_MATH = threading.RLock()  # re-entrant: a graph may run another engine inside


@contextlib.contextmanager
def cuda_math(tf32: bool) -> Iterator[None]:
    """TF32 (or IEEE float32) for the CUDA kernels queued inside, the switches restored after.

    The legacy switches: torch >= 2.9 also has ``fp32_precision``, but once an application set
    that API reading the legacy ones raises; then Restora sets them and leaves IEEE behind."""
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    with _CUDA_MATH:
        try:
            found: tuple[bool, bool] = (bool(cudnn.allow_tf32), bool(matmul.allow_tf32))
        except RuntimeError:
            found = (False, False)
        cudnn.allow_tf32 = matmul.allow_tf32 = tf32
        try:
            # kernels read the switches when they are queued: no need to wait for them
            yield
        finally:
            cudnn.allow_tf32, matmul.allow_tf32 = found


class TorchEngine:
    """The module itself, eager (or compiled), under ``inference_mode`` on the device."""

    name = "torch"
    #: CPU seconds of the accuracy probe (from the cache's verdict), None if not timed
    probe_cpu_s: float | None = None

    def __init__(self, graph: Any, device: str = "cpu", dtype: Any = None, *,
                 compile: bool = False, tf32: bool = False) -> None:
        import torch

        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else torch.float32
        self.precision = {torch.float32: "fp32", torch.float16: "fp16",
                          torch.bfloat16: "bf16"}[self.dtype]
        #: TF32 tensor-core maths for float32 convolutions and matmuls (CUDA only)
        self.tf32 = tf32 and self.device.type == "cuda" and self.dtype == torch.float32
        if self.tf32:
            self.precision = "tf32"
        self.graph = torch.compile(graph, dynamic=True) if compile else graph
        if compile:
            self.name = "torch-compile"
        # pinned host memory makes host -> GPU copies asynchronous
        self._pin = self.device.type == "cuda"

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        import torch

        tensors = []
        for value in inputs:
            t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) \
                else value
            if self._pin and t.device.type == "cpu":
                t = t.pin_memory()
            if t.is_floating_point():
                t = t.to(device=self.device, dtype=self.dtype, non_blocking=True)
            else:
                t = t.to(device=self.device, non_blocking=True)
            tensors.append(t)
        if self.device.type != "cuda":
            with torch.inference_mode():
                out = self.graph(*tensors)
        else:
            with cuda_math(self.tf32), torch.inference_mode():
                out = self.graph(*tensors)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def release(self) -> None:
        pass  # torch frees a run's tensors when the run ends


# --- exported engines ---------------------------------------------------------------------------

def _numpy_inputs(inputs: Sequence[Any]) -> list[np.ndarray]:
    out = []
    for value in inputs:
        if not isinstance(value, np.ndarray):
            value = value.detach().float().cpu().numpy()
        out.append(np.ascontiguousarray(value, dtype=np.float32))
    return out


class OnnxRuntimeEngine:
    name = "onnxruntime"
    #: CPU seconds of the accuracy probe (from the cache's verdict), None if not timed
    probe_cpu_s: float | None = None

    def __init__(self, onnx_path: Path, names: Sequence[str], threads: int,
                 precision: str = "fp32") -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), opts,
                                            providers=["CPUExecutionProvider"])
        self.names = list(names)
        self.precision = precision

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        feed = dict(zip(self.names, _numpy_inputs(inputs)))
        return list(self.session.run(None, feed))

    def release(self) -> None:
        pass  # its arena is kept for the session's life (ONNX Runtime's default)


class OpenVINOEngine:
    name = "openvino"
    #: CPU seconds of the accuracy probe (from the cache's verdict), None if not timed
    probe_cpu_s: float | None = None
    #: the folder beside a graph where OpenVINO keeps what it compiled from it
    COMPILED = "compiled"

    def __init__(self, xml_path: Path, names: Sequence[str], threads: int,
                 precision: str = "fp32") -> None:
        # int8 graphs carry their quantization in the graph; the rest of it stays f32
        config = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16", "fp16": "f16",
                                               "int8": "f32"}[precision],
                  "INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = _compile_cached(Path(xml_path), config)
        #: whether OpenVINO imported its own compiled blob instead of compiling the graph
        self.from_cache = bool(_property(self.compiled, "LOADED_FROM_CACHE", False))
        self.names = list(names)
        self.precision = precision

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        # one infer request per call: a compiled model is shared by threads, a request is not
        request = self.compiled.create_infer_request()
        request.infer(dict(zip(self.names, _numpy_inputs(inputs))))
        return [np.array(request.get_output_tensor(i).data, copy=True)
                for i in range(len(self.compiled.outputs))]

    def release(self) -> None:
        # the CPU plugin keeps a run's intermediate buffers in the compiled model, sized for
        # the largest input so far (CodeFormer: ~0.9 GiB); it refuses while a run is going
        try:
            self.compiled.release_memory()
        except RuntimeError:
            pass


def _compile_cached(xml_path: Path, config: dict[str, Any]) -> Any:
    """``xml_path`` compiled for the CPU, through OpenVINO's model cache in the graph's own
    folder (``OpenVINOEngine.COMPILED``): a later process imports the compiled blob instead
    of compiling again (GFPGAN 512 bf16: 1.9 -> 0.55 CPU-s per process).

    The blob is weightless where OpenVINO can import it so (``CACHE_MODE=OPTIMIZE_SIZE``:
    ~12 MB for GFPGAN instead of 330; the weights are read from the graph's own ``.bin``).
    Where a graph was compiled here before and OpenVINO still did not import its weightless
    blob (CodeFormer's fp32 graph), a marker makes later opens keep a full blob
    (``OPTIMIZE_SPEED``: CodeFormer 1.2 -> 0.3 CPU-s, 390 MB on disk). A compile also records
    its ``config`` (``<stem>.config.json``) and an import marks the blob as importable
    (``<stem>.imported``), so :func:`settle_compiled` can finish that cycle ahead of jobs.

    Safe because a cache entry's files are never rewritten (a rebuilt entry is a new folder,
    its blobs deleted with the old one), its opens are serialised by the entry's lock, and
    OpenVINO compiles anew where the graph's path, size or mtime differ from the blob's. An
    OpenVINO that refuses the cache options compiles as before."""
    return _compile_into_cache(xml_path, config)[0]


def _compile_into_cache(xml_path: Path, config: dict[str, Any]) -> tuple[Any, str]:
    """:func:`_compile_cached`'s compiled model and what happened: ``imported`` (the blob was
    loaded), ``compiled`` (compiled and recorded in the cache) or ``uncached`` (the cache was
    refused or its folder could not be written: the next open compiles again)."""
    ov = _openvino()
    core = ov.Core()
    folder = xml_path.parent / OpenVINOEngine.COMPILED
    stem = xml_path.stem
    full = folder / f"{stem}.full"  # its weightless blob was not imported
    seen = folder / f"{stem}.compiled"  # compiled into this cache before
    cached = {**config, "CACHE_DIR": str(folder),
              "CACHE_MODE": "OPTIMIZE_SPEED" if full.exists() else "OPTIMIZE_SIZE"}
    try:
        compiled = core.compile_model(str(xml_path), "CPU", cached)
    except RuntimeError as exc:
        log.debug("OpenVINO's model cache refused %s (%s): compiling without it", xml_path,
                  str(exc).strip().split("\n")[0][:200])
        return core.compile_model(core.read_model(str(xml_path)), "CPU", config), "uncached"
    imported = folder / f"{stem}.imported"
    if _property(compiled, "LOADED_FROM_CACHE", False):
        with contextlib.suppress(OSError):  # read-only: a later settle imports it again
            if not imported.exists():
                imported.touch()
        return compiled, "imported"
    try:
        if seen.exists() and not full.exists():
            full.touch()
        seen.touch()
        # the blob just written has not been imported yet (it may be one OpenVINO refuses)
        imported.unlink(missing_ok=True)
        _atomic_write(folder / f"{stem}{CONFIG_SUFFIX}", json.dumps(config, sort_keys=True))
    except OSError:  # a read-only cache: compiled each time, as before
        return compiled, "uncached"
    return compiled, "compiled"


#: beside a compiled blob: the engine's config it was compiled with (its key depends on it)
CONFIG_SUFFIX = ".config.json"
#: compiles :func:`settle_compiled` spends on one graph: a refused weightless blob, a full one
#: written, then imported
SETTLE_COMPILES = 3


def settle_compiled(cache_dir: Path) -> list[dict[str, Any]]:
    """Compile again, until OpenVINO imports its blob, each graph of the export cache under
    ``cache_dir`` that was compiled and not imported since: so the next process imports every
    one (a graph whose weightless blob OpenVINO refuses otherwise costs the next two processes
    a compile each). Only entries of the installed OpenVINO that an open can use (kept, or a
    coarse candidate) are settled, each with its recorded config (OpenVINO's blob key includes
    it), under the entry's lock, one compiled model in memory at a time. A graph that cannot
    be settled (a read-only cache, a cache OpenVINO refuses, a failing compile) is logged and
    left. Returns one dict per graph compiled (path, key, graph, compiles, imported)."""
    version = package_version("openvino")
    done: list[dict[str, Any]] = []
    if version is None or not Path(cache_dir).is_dir():
        return done
    cache = ExportCache(Path(cache_dir))
    for record in sorted(Path(cache_dir).glob(f"*/*/{OpenVINOEngine.COMPILED}/*{CONFIG_SUFFIX}")):
        folder = record.parent.parent
        stem = record.name[:-len(CONFIG_SUFFIX)]
        xml = folder / f"{stem}.xml"
        if folder.name.startswith(".build-") or (record.parent / f"{stem}.imported").exists() \
                or not xml.is_file():
            continue
        try:
            meta = json.loads((folder / "meta.json").read_text())
            key = meta["key"]
            if key.get("engine") != "openvino" or key.get("engine_version") != version or \
                    not (meta.get("ok") or meta.get("scale") is not None):
                continue
            with cache.lock(folder):
                # another process may have imported it, or pruned or rebuilt the entry, meanwhile
                if (record.parent / f"{stem}.imported").exists() or not record.is_file() \
                        or not xml.is_file():
                    continue
                config = json.loads(record.read_text())
                compiles, outcome = 0, "compiled"
                while outcome == "compiled" and compiles < SETTLE_COMPILES:
                    compiled, outcome = _compile_into_cache(xml, config)
                    compiles += 1
                    del compiled  # before the next compile: one graph's memory at a time
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            log.warning("could not settle OpenVINO's compiled %s (%s): the next process "
                        "compiles it", xml, " ".join(str(exc).split())[:200])
            continue
        if outcome != "imported":
            log.warning("OpenVINO's compiled %s is not settled (%s after %d compile(s)): the "
                        "next process compiles it", xml, outcome, compiles)
        done.append({"path": str(xml), "key": key, "graph": stem, "compiles": compiles,
                     "imported": outcome == "imported"})
    trim_heap()
    return done


def _property(compiled: Any, name: str, default: Any) -> Any:
    try:
        return compiled.get_property(name)
    except RuntimeError:
        return default


class Deferred:
    """An engine opened on its first run (a graph the process may never need)."""

    probe_cpu_s: float | None = None

    def __init__(self, name: str, precision: str, opener: Callable[[], Engine]) -> None:
        self.name, self.precision = name, precision
        self._opener = opener
        self._inner: Engine | None = None
        self._lock = threading.Lock()

    @property
    def opened(self) -> bool:
        return self._inner is not None

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        if self._inner is None:
            with self._lock:
                if self._inner is None:
                    self._inner = self._opener()
        return self._inner.run(inputs)

    def release(self) -> None:
        if self._inner is not None:
            self._inner.release()


class OneAtATime:
    """Runs a graph on a batch one item after the other (every exported image graph on the CPU:
    see ``EngineFactory._open``)."""

    probe_cpu_s: float | None = None

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name
        self.precision = inner.precision

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        arrays = _numpy_inputs(inputs)
        n = arrays[0].shape[0]
        if n == 1:
            return self.inner.run(arrays)
        # inputs without the batch dimension (CodeFormer's w) go whole to every item
        parts = [self.inner.run([a[i:i + 1] if a.ndim and a.shape[0] == n else a
                                 for a in arrays]) for i in range(n)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def release(self) -> None:
        self.inner.release()


class SplitInput:
    """``inner`` fed its image input as bf16 parts (``split_bf16``): ``MIXED``'s graph, whose
    input layer is ``graphs.ExactInput``."""

    probe_cpu_s: float | None = None

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name, self.precision = inner.name, MIXED

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        return self.inner.run([split_bf16(_numpy_inputs(inputs)[0])])

    def release(self) -> None:
        self.inner.release()


def split_bf16(x: np.ndarray) -> np.ndarray:
    """Float32 NCHW ``x`` as ``[hi, lo, hi]`` on the channels, each exact in bf16: ``hi`` is
    ``x`` cut to bf16's 8 significant bits, ``lo = x - hi`` (exact in float32; bf16 keeps 8 of
    its bits, so ``hi + lo`` is within ~2^-16 of ``x``). Input of ``graphs.ExactInput``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    hi = (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    return np.concatenate([hi, x - hi, hi], axis=1)


class StreamGraphs:
    """``STREAM``'s three graphs run in turn: ``finish(trunk(stem(x)), stem(x))``, the
    residual stream passed between them in float32."""

    probe_cpu_s: float | None = None
    name = "openvino"
    precision = STREAM
    #: the graphs' files in the cache folder
    FILES = ("stem.xml", "trunk.xml", "finish.xml")

    def __init__(self, stem: Engine, trunk: Engine, finish: Engine) -> None:
        self.stem, self.trunk, self.finish = stem, trunk, finish

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        feat = self.stem.run(inputs)[0]
        return self.finish.run([self.trunk.run([feat])[0], feat])

    def release(self) -> None:
        for part in (self.stem, self.trunk, self.finish):
            part.release()


def open_stream(folder: Path, names: Sequence[str], threads: int) -> StreamGraphs:
    """``STREAM``'s OpenVINO graphs in ``folder``, each compiled for bf16."""
    stem, trunk, finish = (folder / f for f in StreamGraphs.FILES)
    return StreamGraphs(OpenVINOEngine(stem, names, threads, "bf16"),
                        OpenVINOEngine(trunk, ["h"], threads, "bf16"),
                        OpenVINOEngine(finish, ["h", "feat"], threads, "bf16"))


def open_mixed(folder: Path, names: Sequence[str], threads: int) -> SplitInput:
    """``MIXED``'s OpenVINO graph in ``folder``, compiled for bf16 and fed the input's bf16
    parts (its output layer stays float32, ``graphs.FloatTail``)."""
    return SplitInput(OpenVINOEngine(folder / "graph.xml", names, threads, "bf16"))


class _NoSender:
    def send(self, *args: Any, **kwargs: Any) -> None:
        pass

    def force_shutdown(self, timeout: float = 1.0) -> None:
        pass


def telemetry_off() -> None:
    """Keep OpenVINO's and NNCF's usage telemetry off in this process.

    Without a consent file both send events to Google Analytics by default (``import openvino``,
    every ``convert_model``, every ``nncf.quantize``), each from a forked copy of the process,
    and write a client id under ``~/intel``; Restora promises that nothing leaves the machine.
    Their shared ``openvino_telemetry.Telemetry`` is a process-wide singleton: installing a
    consent-less instance first (not initialised, so it reads no consent file and writes
    nothing) makes every later ``Telemetry(...)`` call return it. Idempotent; a no-op when the
    package is absent or was already initialised by someone else (then its own consent rules
    apply)."""
    try:
        from openvino_telemetry import main as telemetry
    except ImportError:
        return
    meta = type(telemetry.Telemetry)
    slot = f"_{meta.__name__}__single_instance"
    if getattr(telemetry.Telemetry, slot, "missing") is not None:
        return  # already made (by us or by a tool), or the package changed its singleton
    quiet = object.__new__(telemetry.Telemetry)
    quiet.consent = False
    quiet.sender = _NoSender()
    setattr(telemetry.Telemetry, slot, quiet)


def _openvino() -> Any:
    """The ``openvino`` module, imported with its telemetry off."""
    telemetry_off()
    import openvino

    return openvino


def package_version(engine: str) -> str | None:
    """The installed version of an engine's package, or None when it cannot be imported."""
    try:
        if engine == "onnxruntime":
            import onnxruntime

            return str(onnxruntime.__version__)
        if engine == "openvino":
            return str(_openvino().__version__).split("-")[0]
    except ImportError:
        return None
    return None


def bf16_supported() -> bool:
    ov = _openvino()
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True on CPUs with AMX tile units (Sapphire Rapids and later), where bf16 matrix work
    runs several times faster than fp32; False where this cannot be read (not Linux)."""
    try:
        with cpuinfo.open(encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def cpu_candidates(candidates: Sequence[tuple[str, str]], amx: bool
                   ) -> list[tuple[str, str]]:
    """``auto``'s order on this CPU: the policy's (int8, then fp32 engines) without AMX; with
    AMX, bf16 and then ``MIXED`` right after int8, since there both beat fp32 (the probe still
    has to pass the task's bound, else the next candidate is tried)."""
    if not amx:
        return list(candidates)
    rank = {"int8": 0, "bf16": 1, MIXED: 2, STREAM: 2}
    return sorted(candidates, key=lambda c: rank.get(c[1], 3))  # stable: policy order within


# --- the on-disk cache of exported graphs -------------------------------------------------------

class CacheUnwritable(OSError):
    """The export cache cannot be written (a read-only folder or mount, a folder that cannot
    be created, a full disk): the engine factory then uses it as it is, or exports elsewhere."""


class ExportCache:
    """Exported graphs under ``root``, one folder per (model hash, engine, engine version,
    shape, precision) with a ``meta.json`` recording the key, the files' sizes and the verdict
    of the accuracy check. A folder whose files do not match its meta (truncated, edited, a
    crash mid-write) or that fails to load is deleted and rebuilt.

    A write that fails raises :class:`CacheUnwritable`. ``read_only``: complete entries are
    read without a lock and nothing is written, deleted or rebuilt (an entry that would need
    it raises :class:`CacheUnwritable`)."""

    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        self.root = Path(root)
        self.read_only = read_only

    def model_hash(self, path: Path) -> str:
        """SHA-256 of a model file, remembered per (path, size, mtime) so it is read once."""
        st = path.stat()
        memo_path = self.root / "hashes.json"
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        if isinstance(memo, dict) and isinstance(memo.get(key), str):
            return memo[key]
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        memo = memo if isinstance(memo, dict) else {}
        memo[key] = digest
        if not self.read_only:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                _atomic_write(memo_path, json.dumps(memo, indent=1))
            except OSError as exc:  # only a memo: the hash is right, the next process reads again
                log.debug("could not remember the hash of %s in %s: %s", path, memo_path, exc)
        return digest

    def folder(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.root / key["model"][:16] / f"{key['engine']}-{key['precision']}-{digest}"

    def read(self, folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
        """The meta of a complete entry for ``key``; None (and the folder removed) otherwise."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("key") != key:
                raise ValueError("key mismatch")
            for name, size in meta.get("files", {}).items():
                if (folder / name).stat().st_size != size:
                    raise ValueError(f"{name} has the wrong size")
            return meta
        except FileNotFoundError:
            if folder.exists():
                self.discard(folder, "no meta.json")
            return None
        except NotADirectoryError:  # a cache root on a file: there is no entry
            return None
        except (OSError, ValueError, AttributeError) as exc:
            self.discard(folder, str(exc))
            return None

    def write(self, folder: Path, key: dict[str, Any], meta: dict[str, Any]) -> None:
        self.writable(folder)
        try:
            files = {p.name: p.stat().st_size for p in folder.iterdir()
                     if p.is_file() and p.name != "meta.json"}
            _atomic_write(folder / "meta.json", json.dumps({**meta, "key": key,
                                                            "files": files}, indent=1))
        except OSError as exc:
            raise _unwritable(exc) from exc

    def writable(self, folder: Path) -> None:
        """Raise :class:`CacheUnwritable` if this cache is only read (``folder`` would need
        writing)."""
        if self.read_only:
            raise CacheUnwritable(f"{folder} would need writing in a cache that is only read")

    def discard(self, folder: Path, why: str) -> None:
        if self.read_only:  # left as it is; the caller builds the entry elsewhere
            return
        log.warning("engine cache entry %s is unusable (%s): rebuilding it", folder, why)
        shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, folder: Path) -> Iterator[None]:
        """Hold the file lock of ``folder``'s entry (none where the cache is only read: no
        one rebuilds it then). A lock that cannot be made raises :class:`CacheUnwritable`."""
        if self.read_only:
            yield
            return
        from filelock import FileLock

        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            held = FileLock(str(folder) + ".lock")
            held.acquire()
        except OSError as exc:
            raise _unwritable(exc) from exc
        try:
            yield
        finally:
            held.release()


#: precisions an export cache entry is built in now (others were written by an older Restora)
CACHE_PRECISIONS = ("fp32", "fp16", "bf16", "int8", MIXED, STREAM)
#: an unfinished export (``.build-*``) older than this was left by a process that died
STALE_BUILD_S = 3600.0


def stale_reason(key: Mapping[str, Any], model_hashes: set[str]) -> str | None:
    """Why no load of this install can use a cache entry with ``key``, or None where one may:
    another export format, precision, engine or torch version than the installed ones, or a
    model file (by SHA-256) that is not in ``model_hashes``."""
    if key.get("format") != EXPORT_FORMAT:
        return f"export format {key.get('format')}, now {EXPORT_FORMAT}"
    if key.get("precision") not in CACHE_PRECISIONS:
        return f"precision {key.get('precision')} is no longer built"
    engine = str(key.get("engine"))
    installed = package_version(engine)
    if installed is None:
        return f"{engine} is not installed"
    if key.get("engine_version") != installed:
        return f"{engine} {key.get('engine_version')}, installed {installed}"
    if key.get("torch") != _torch_version():
        return f"exported with torch {key.get('torch')}, installed {_torch_version()}"
    if "nncf" in key and key["nncf"] != quantizer_version():
        return f"quantized with NNCF {key['nncf']}, installed {quantizer_version()}"
    if key.get("model") not in model_hashes:
        return "its model file is not installed (or was replaced)"
    return None


def prune_cache(root: Path, model_hashes: set[str]) -> list[dict[str, Any]]:
    """Delete what in the export cache under ``root`` no load of this install can use: entries
    with a :func:`stale_reason`, entries whose meta.json is unreadable, and exports left
    unfinished (``.build-*``) more than :data:`STALE_BUILD_S` ago. An entry whose lock another
    process holds is left alone. Returns one dict per deleted folder (path, key or None, why,
    bytes)."""
    import time

    from filelock import FileLock, Timeout

    pruned: list[dict[str, Any]] = []
    if not root.is_dir():
        return pruned
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            key: dict[str, Any] | None = None
            if folder.name.startswith(".build-"):
                if time.time() - folder.stat().st_mtime < STALE_BUILD_S:
                    continue
                why: str | None = "an export left unfinished"
            else:
                try:
                    key = json.loads((folder / "meta.json").read_text())["key"]
                    why = stale_reason(key, model_hashes)
                except (OSError, ValueError, KeyError, TypeError):
                    why = "unreadable meta.json"
            if why is None:
                continue
            lock_path = Path(str(folder) + ".lock")
            try:
                with FileLock(str(lock_path), timeout=0):
                    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                    shutil.rmtree(folder, ignore_errors=True)
            except Timeout:
                continue
            lock_path.unlink(missing_ok=True)
            pruned.append({"path": str(folder), "key": key, "why": why, "bytes": size})
        if not any(model_dir.iterdir()):
            model_dir.rmdir()
    return pruned


def _unwritable(exc: OSError) -> CacheUnwritable:
    """``exc`` (a failed write into the cache) as :class:`CacheUnwritable`."""
    if isinstance(exc, CacheUnwritable):
        return exc
    if exc.errno is None:
        return CacheUnwritable(str(exc))
    return CacheUnwritable(exc.errno, exc.strerror or str(exc), exc.filename)


def _atomic_write(path: Path, text: str) -> None:
    from restora.io.files import write_atomic  # here: restora.io loads the image codecs

    write_atomic(path, text.encode("utf-8"))


# --- export -------------------------------------------------------------------------------------

def shape_signature(specs: Sequence[InputSpec]) -> str:
    return ",".join(f"{s.name}:" + "x".join("?" if d is None else str(d) for d in s.shape)
                    for s in specs)


#: the probe's batch where the graph's batch is free
PROBE_BATCH = 2


def probe_batch(specs: Sequence[InputSpec]) -> int:
    """How many items the probe of a graph with inputs ``specs`` holds (its first input's
    batch: fixed, or :data:`PROBE_BATCH` where free), without building the probe."""
    batch = specs[0].shape[0]
    return PROBE_BATCH if batch is None else batch


def probe_inputs(net: Network, specs: Sequence[InputSpec]) -> list[np.ndarray]:
    """A fixed input for export and the accuracy check: a smooth random image in the
    network's range (free sizes become ``net.probe_size``, a free batch
    :func:`probe_batch`), standard normal noise maps, and the documented default for scalar
    weights."""
    rng = np.random.default_rng(20240611)
    batch = probe_batch(specs)
    out = []
    for i, spec in enumerate(specs):
        shape = [d if d is not None else (batch if j == 0 else net.probe_size)
                 for j, d in enumerate(spec.shape)]
        if i == 0:
            out.append(net.probe_image(rng, shape))
        elif spec.shape == (1,):
            out.append(np.array([0.5], np.float32))
        else:
            out.append(rng.standard_normal(shape).astype(np.float32))
    return out


def export_onnx(net: Network, specs: Sequence[InputSpec], example: Sequence[np.ndarray],
                path: Path, graph: Any = None) -> None:
    """Export ``net.graph()`` (or ``graph``) in float32 with every free dimension dynamic."""
    import torch

    graph = (net.graph() if graph is None else graph).float().eval()
    names = [s.name for s in specs]
    dynamic = {s.name: {j: f"{s.name}_d{j}" for j, d in enumerate(s.shape) if d is None}
               for s in specs}
    dynamic = {k: v for k, v in dynamic.items() if v}
    args = tuple(torch.from_numpy(a) for a in example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            try:
                # The TorchScript exporter: ~10x faster to export than the dynamo one here.
                torch.onnx.export(graph, args, str(path), input_names=names,
                                  output_names=None, dynamic_axes=dynamic,
                                  opset_version=ONNX_OPSET, dynamo=False)
            except Exception as exc:  # noqa: BLE001 - removed or failing: try torch.export
                log.info("TorchScript ONNX export of %s failed (%s); trying dynamo",
                         net.model_id, exc)
                torch.onnx.export(graph, args, str(path), input_names=names,
                                  dynamo=True, external_data=False)


# --- choosing an engine -------------------------------------------------------------------------

class EngineUnavailable(Exception):
    """This engine cannot run this network here (package missing, export failed, too far)."""


_M = TypeVar("_M", bound=Callable[..., Any])


def _with_weights(method: _M) -> _M:
    """``method(self, net, ...)`` run holding ``net``'s torch weights (``Network.weights``: an
    export or an accuracy check runs the module, whose weights a large job may have dropped)."""
    @functools.wraps(method)
    def wrapper(self: Any, net: Network, *args: Any, **kwargs: Any) -> Any:
        with net.weights():
            return method(self, net, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


@dataclass
class EngineFactory:
    """Builds the engine for a descriptor on its first call (the Runtime holds one)."""

    choice: str = "auto"
    cache_dir: Path | None = None
    threads: int = 1
    torch_compile: bool = False
    model_path: Callable[[Network], Path | None] = lambda net: None
    #: whether this CPU has AMX (bf16 candidates first); read from /proc/cpuinfo by default
    amx: bool = field(default_factory=cpu_has_amx)

    def __post_init__(self) -> None:
        if self.choice not in ENGINES:
            from restora.errors import InvalidParameter

            raise InvalidParameter("engine", f"unknown engine '{self.choice}'; use "
                                   f"{', '.join(ENGINES)}")
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self.notes: list[str] = []
        self._scratch: ExportCache | None = None

    def torch(self, net: Network, dtype: Any = None) -> TorchEngine:
        with net.weights():  # read again if a large job dropped them
            return TorchEngine(net.graph(), net.device, net.dtype if dtype is None else dtype,
                               compile=self.torch_compile)

    def build(self, net: Network) -> Engine:
        if net.device != "cpu" or not net.exportable:
            return self._gpu_torch(net) if net.device.startswith("cuda") else self.torch(net)
        if self.choice == "torch":
            return self.torch(net)
        policy = policy_for(net.task)
        if self.choice == "auto":
            tried = policy.cpu + (policy.amx if self.amx else ())
            candidates = [c for c in cpu_candidates(tried, self.amx)
                          if _precision_allowed(net, c[1])]
        else:
            candidates = [(self.choice, "fp32")]
        for engine, precision in candidates:
            try:
                return self.exported(net, engine, precision, verify=self.choice == "auto")
            except EngineUnavailable as exc:
                if self.choice != "auto" or "not installed" in str(exc):
                    self._warn(engine, f"{exc}; running {net.model_id} on torch")
                else:
                    log.info("%s/%s not used for %s: %s", engine, precision, net.model_id, exc)
        return self.torch(net)

    def _gpu_torch(self, net: Network) -> TorchEngine:
        """torch in the first of the task's GPU precisions that the network allows and in which
        the probe's output stays within the task's bound of float32 on the same device (checked
        at every load: a probe takes milliseconds on a GPU, and half precision can fail where
        float32 does not), else float32."""
        import torch

        policy = policy_for(net.task)
        tried: list[str] = []
        example: list[np.ndarray] = []
        ref: list[np.ndarray] = []
        for want in policy.gpu if self.choice == "auto" else ():
            if _TORCH_DTYPES[want] not in net.dtypes or net.dtype != torch.float32 or \
                    (want == "tf32" and not net.device.startswith("cuda")):
                continue
            if not ref:
                example = probe_inputs(net, net.inputs())
                ref = [_to_numpy(o) for o in self.torch(net).run(example)]
            dtype = getattr(torch, _TORCH_DTYPES[want])
            tf32 = want == "tf32"
            # TF32 runs the float32 graph itself; a half precision a converted copy
            trial = TorchEngine(net.graph() if tf32 else copy.deepcopy(net.graph()).to(dtype),
                                net.device, dtype, tf32=tf32)
            got = [_to_numpy(o) for o in trial.run(example)]
            del trial
            ok, measure = policy.check_for(want)(ref, got)
            if ok:
                # converted in place once its copy passed: both would double its GPU memory
                graph = net.graph().to(dtype)
                return TorchEngine(graph, net.device, dtype, compile=self.torch_compile,
                                   tf32=tf32)
            tried.append(f"{want}: {measure}")
        if tried:
            self._warn(f"{net.model_id}/gpu", f"{net.model_id} on {net.device} is outside the "
                       f"{net.task} bound in {'; '.join(tried)}; it runs in fp32")
        return self.torch(net)

    def _warn(self, engine: str, message: str) -> None:
        with self._lock:
            if engine in self._warned:
                return
            self._warned.add(engine)
            self.notes.append(message)
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def exported(self, net: Network, engine: str, precision: str, *,
                 verify: bool = True) -> Engine:
        """The cached (or newly exported) graph of ``net`` on ``engine`` at ``precision``."""
        return self._load(net, engine, precision, verify, lambda meta: bool(meta["ok"]))[0]

    def coarse(self, net: Network, exact: Engine) -> list[tuple[Engine, int]]:
        """Graphs the task's policy allows for outputs pasted small, each with the least parsing
        pixels per output pixel from which it keeps the bound: :func:`coarse_tiers` of their
        cache verdicts. Empty where there is none."""
        policy = policy_for(net.task)
        if self.choice != "auto" or net.device != "cpu" or not net.exportable:
            return []
        exact_s = exact.probe_cpu_s
        if not policy.coarse or exact_s is None:
            return []

        def usable(meta: dict[str, Any]) -> bool:
            return coarse_refusal(meta, exact_s) is None

        found: list[tuple[Engine, dict[str, Any]]] = []
        for engine, precision in policy.coarse:
            if (engine, precision) == (exact.name, exact.precision) or \
                    not _precision_allowed(net, precision):
                continue
            try:
                # opened when a face first needs it: many photos have no face pasted that small
                deferred, meta = self._load(net, engine, precision, True, usable,
                                            open_graph=False)
            except EngineUnavailable as exc:
                log.info("no coarse %s/%s graph for %s: %s", engine, precision, net.model_id,
                         exc)
                continue
            found.append((deferred, meta))
        return coarse_tiers(found, exact_s)

    def _load(self, net: Network, engine: str, precision: str, verify: bool,
              usable: Callable[[dict[str, Any]], bool], open_graph: bool = True
              ) -> tuple[Engine, dict[str, Any]]:
        version = package_version(engine)
        if version is None:
            raise EngineUnavailable(f"the {engine} package is not installed "
                                    f"(pip install 'restora[fast]')")
        if engine != "openvino" and precision in LAYOUTS:
            raise EngineUnavailable(f"{precision} is an OpenVINO precision")
        if engine == "onnxruntime" and not net.onnx_export:
            raise EngineUnavailable(f"{net.model_id}'s graph does not export to ONNX")
        if engine == "openvino" and (precision == "bf16" or precision in LAYOUTS) \
                and not bf16_supported():
            raise EngineUnavailable("this CPU has no bf16 support")
        quantizer = None
        if precision == "int8":
            quantizer = quantizer_version()
            if engine != "openvino" or quantizer is None:
                raise EngineUnavailable("int8 needs OpenVINO and NNCF (pip install "
                                        "'restora[fast]')")
        model_file = self.model_path(net)
        if model_file is None or self.cache_dir is None:
            raise EngineUnavailable("the model has no file to key the export cache on")
        cache = ExportCache(self.cache_dir)
        specs = net.inputs()
        key = {"model": cache.model_hash(model_file), "model_id": net.model_id,
               "engine": engine, "engine_version": version, "precision": precision,
               "shape": shape_signature(specs), "format": EXPORT_FORMAT,
               "torch": _torch_version()}
        if quantizer is not None:
            key["nncf"] = quantizer
        args = (net, engine, precision, specs, key, verify, usable, open_graph)
        try:
            return self._load_in(cache, *args)
        except CacheUnwritable as exc:
            problem = exc
        try:  # a cache prepared ahead and mounted read-only: its complete entries serve
            return self._load_in(ExportCache(self.cache_dir, read_only=True), *args)
        except CacheUnwritable:
            pass
        self._warn("engine-cache", f"the engine cache {self.cache_dir} cannot be written "
                   f"({problem.strerror or problem}): graphs are exported into a temporary "
                   "folder for this process only, so every new process exports and checks "
                   "them again (set RESTORA_ENGINE_CACHE or RESTORA_HOME to a writable folder, "
                   "or RESTORA_ENGINE=torch)")
        return self._load_in(self._scratch_cache(), *args)

    def _scratch_cache(self) -> ExportCache:
        """This factory's own export cache in a temporary folder, deleted with the factory
        (or at exit): where the configured cache cannot be written."""
        with self._lock:
            if self._scratch is None:
                try:
                    root = Path(tempfile.mkdtemp(prefix="restora-engines-"))
                except OSError as exc:
                    raise EngineUnavailable(f"no folder to export into: the engine cache and "
                                            f"the temporary folder cannot be written "
                                            f"({exc.strerror or exc})") from exc
                weakref.finalize(self, shutil.rmtree, str(root), True)
                self._scratch = ExportCache(root)
            return self._scratch

    def _load_in(self, cache: ExportCache, net: Network, engine: str, precision: str,
                 specs: Sequence[InputSpec], key: dict[str, Any], verify: bool,
                 usable: Callable[[dict[str, Any]], bool], open_graph: bool
                 ) -> tuple[Engine, dict[str, Any]]:
        """:meth:`_load` in ``cache``: its entry for ``key``, built, checked and opened."""
        folder = cache.folder(key)
        with cache.lock(folder):
            meta = cache.read(folder, key)
            if meta is None:
                meta = self._build_entry(net, engine, precision, specs, folder, cache, key,
                                         verify)
            if not meta.get("ok", False) and "measure" not in meta:  # the export itself failed
                raise EngineUnavailable(meta.get("reason", "rejected earlier"))
            if verify and ("measure" not in meta
                           or _wants_remeasure(net, engine, precision, meta)):
                meta = self._verify(net, engine, precision, specs, folder, cache, key, meta)
            elif verify and "cpu_s" not in meta:  # a verdict from before every probe was timed
                meta = self._time_probe(engine, precision, specs, folder, cache, key, meta,
                                        probe_inputs(net, specs))
            if not usable(meta):
                raise EngineUnavailable(meta.get("reason", "not usable here"))
            if not open_graph:
                return Deferred(engine, precision, lambda: self._load(
                    net, engine, precision, verify, usable)[0]), meta
            try:
                opened = self._open(engine, folder, specs, precision)
            except Exception as exc:  # noqa: BLE001 - a corrupt file: rebuild once
                cache.writable(folder)
                cache.discard(folder, f"{engine} cannot load it: {exc}")
                meta = self._build_entry(net, engine, precision, specs, folder, cache, key,
                                         verify)
                if not meta.get("ok", False) and "measure" not in meta or not usable(meta):
                    raise EngineUnavailable(meta.get("reason", "rejected")) from exc
                opened = self._open(engine, folder, specs, precision)
            opened.probe_cpu_s = meta.get("cpu_s")
            return opened, meta

    def _open(self, engine: str, folder: Path, specs: Sequence[InputSpec], precision: str
              ) -> Engine:
        names = [s.name for s in specs]
        opened: Engine
        if engine == "onnxruntime":
            opened = OnnxRuntimeEngine(folder / "graph.onnx", names, self.threads, precision)
        elif precision in LAYOUTS:
            opened = LAYOUTS[precision].open(folder, names, self.threads)
        else:
            opened = OpenVINOEngine(folder / "graph.xml", names, self.threads, precision)
        if len(specs[0].shape) == 4:
            # one image at a time: batches ran no faster on the CPU (ParseNet, CodeFormer:
            # 11.4 CPU-s for two faces either way), and an engine keeps the buffers of the
            # largest batch it ran (CodeFormer: +0.55 GiB for two faces; docs/engines.md)
            opened = OneAtATime(opened)
        return opened

    @_with_weights
    def _build_entry(self, net: Network, engine: str, precision: str,
                     specs: Sequence[InputSpec], folder: Path, cache: ExportCache,
                     key: dict[str, Any], verify: bool) -> dict[str, Any]:
        cache.writable(folder)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".build-"))
        except OSError as exc:
            raise _unwritable(exc) from exc
        try:
            example = probe_inputs(net, specs)
            log.warning("exporting %s for %s/%s: once per model file and engine version, "
                        "this first run takes longer", net.model_id, engine, precision)
            try:
                if precision in LAYOUTS:
                    LAYOUTS[precision].export(net, specs, example, tmp)
                elif not net.onnx_export:
                    torch_to_openvino(net, specs, example, tmp / "graph.xml")
                else:
                    export_onnx(net, specs, example, tmp / "graph.onnx")
                    if engine == "openvino":
                        _to_openvino(tmp / "graph.onnx", tmp / "graph.xml",
                                     (lambda m: quantize_int8(net, m)) if precision == "int8"
                                     else None)
                meta: dict[str, Any] = {"ok": True}
            except Exception as exc:  # noqa: BLE001 - an exporter limitation: remember it
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                meta = {"ok": False, "reason": f"export failed: {type(exc).__name__}: "
                                               f"{str(exc)[:300]}"}
            try:
                os.replace(tmp, folder)
            except OSError as exc:
                raise _unwritable(exc) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        cache.write(folder, key, meta)
        if meta["ok"] and verify:
            meta = self._verify(net, engine, precision, specs, folder, cache, key, meta)
        return meta

    @_with_weights
    def _verify(self, net: Network, engine: str, precision: str, specs: Sequence[InputSpec],
                folder: Path, cache: ExportCache, key: dict[str, Any], meta: dict[str, Any]
                ) -> dict[str, Any]:
        """Run the probe on torch float32 and on the engine; record the task's verdict."""
        cache.writable(folder)
        example = probe_inputs(net, specs)
        ref = [np.asarray(_to_numpy(o)) for o in self.torch(net).run(example)]
        engine_run = self._open(engine, folder, specs, precision)
        got = engine_run.run(example)
        policy = policy_for(net.task)
        ok, measure = policy.check_for(precision)(ref, got)
        meta = {**meta, "ok": bool(ok), "measure": measure, "bound": policy.bound,
                "task": net.task}
        if not ok:
            meta["reason"] = f"outside the {net.task} bound ({measure}; {policy.bound})"
        # every task: coarse graphs must be faster than the exact one, and the enhance-faces
        # estimate weighs a parser's probe against the restorer's
        meta["cpu_s"] = _probe_cpu_s(engine_run, example)
        if (engine, precision) in policy.coarse and policy.scale_check is not None:
            meta["scale"], meta["scale_measure"] = policy.scale_check(ref, got)
        cache.write(folder, key, meta)
        return meta

    def _time_probe(self, engine: str, precision: str, specs: Sequence[InputSpec],
                    folder: Path, cache: ExportCache, key: dict[str, Any],
                    meta: dict[str, Any], example: Sequence[np.ndarray]) -> dict[str, Any]:
        """Add the probe's CPU seconds to a cached verdict that lacks them (once per entry: it
        is written back), without the torch reference run the verdict already had."""
        cache.writable(folder)
        engine_run = self._open(engine, folder, specs, precision)
        engine_run.run(example)  # warm-up, as the verdict's own run is in ``_verify``
        meta = {**meta, "cpu_s": _probe_cpu_s(engine_run, example)}
        cache.write(folder, key, meta)
        return meta


def torch_to_openvino(net: Network, specs: Sequence[InputSpec], example: Sequence[np.ndarray],
                      xml_path: Path) -> None:
    """Convert ``net.graph()`` in float32 to OpenVINO IR with OpenVINO's PyTorch frontend (for
    graphs the ONNX exporters cannot write), every free dimension dynamic."""
    import torch

    ov = _openvino()
    graph = net.graph().float().eval()
    shapes = [ov.PartialShape([-1 if d is None else d for d in s.shape]) for s in specs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            model = ov.convert_model(graph, example_input=tuple(
                torch.from_numpy(np.asarray(a)) for a in example), input=shapes)
    for port, spec in zip(model.inputs, specs):
        port.get_tensor().set_names({spec.name})  # the engine feeds its inputs by name
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def _to_openvino(onnx_path: Path, xml_path: Path,
                 transform: Callable[[Any], Any] | None = None) -> None:
    """Convert an exported ONNX graph to OpenVINO IR beside it (the ONNX file is removed)."""
    # the runtime's ONNX reader: the same graph as the converter (max |d| 0) without the
    # converter tool's telemetry
    model = _openvino().Core().read_model(str(onnx_path))
    if transform is not None:
        model = transform(model)
    _openvino().save_model(model, str(xml_path), compress_to_fp16=False)
    onnx_path.unlink()


def _export_mixed(net: Network, specs: Sequence[InputSpec], example: Sequence[np.ndarray],
                  folder: Path) -> None:
    """``MIXED``'s OpenVINO graph ``graph.xml``: the input layer as ``graphs.ExactInput`` (input:
    the first input's bf16 parts, ``split_bf16``), the trunk, the output layer as
    ``graphs.FloatTail``."""
    import torch

    from restora.models.graphs import ExactInput, FloatTail
    from restora.models.nets import InputSpec

    parts = net.split_graph()
    if parts is None:
        raise EngineUnavailable(f"{net.model_id} has no end layers to keep float32-accurate")
    stem, trunk, head = parts
    graph = torch.nn.Sequential(ExactInput(stem), trunk, FloatTail(head)).eval()
    first = specs[0]
    parts_in = split_bf16(example[0])
    wide = InputSpec(first.name, (first.shape[0], parts_in.shape[1], *first.shape[2:]))
    export_onnx(net, [wide], [parts_in], folder / "graph.onnx", graph)
    _to_openvino(folder / "graph.onnx", folder / "graph.xml")


def _export_stream(net: Network, specs: Sequence[InputSpec], example: Sequence[np.ndarray],
                   folder: Path) -> None:
    """``STREAM``'s OpenVINO graphs: ``net.stream_graph()``'s stem, trunk and finish, each
    exported on what the probe gives it (the stream's sizes free where the image's are)."""
    import torch

    from restora.models.nets import InputSpec

    parts = net.stream_graph()
    if parts is None:
        raise EngineUnavailable(f"{net.model_id} has no residual trunk to split off")
    stem, trunk, finish = parts
    free = [d is None for d in specs[0].shape[2:]]

    def save(graph: Any, names: Sequence[str], args: Sequence[np.ndarray], xml: str) -> None:
        inputs = [InputSpec(n, (a.shape[0], a.shape[1], *(None if f else d for f, d in
                                                           zip(free, a.shape[2:]))))
                  for n, a in zip(names, args)]
        onnx = folder / (Path(xml).stem + ".onnx")
        export_onnx(net, inputs, args, onnx, graph)
        _to_openvino(onnx, folder / xml)

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(example[0], dtype=np.float32))
        feat = stem.float().eval()(x)
        h = trunk.float().eval()(feat).numpy()
        feat = feat.numpy()
    stem_xml, trunk_xml, finish_xml = StreamGraphs.FILES
    save(stem, [specs[0].name], [example[0]], stem_xml)
    save(trunk, ["h"], [feat], trunk_xml)
    save(finish, ["h", "feat"], [h, feat], finish_xml)


@dataclass(frozen=True)
class Layout:
    """An OpenVINO bf16 precision whose export is not the network's one plain graph: the
    network's parts it needs (None: it has none), how they are exported into a cache folder and
    how that folder is opened."""

    parts: Callable[[Network], Any]
    export: Callable[[Network, Sequence[InputSpec], Sequence[np.ndarray], Path], None]
    open: Callable[[Path, Sequence[str], int], Engine]


LAYOUTS: dict[str, Layout] = {
    MIXED: Layout(lambda net: net.split_graph(), _export_mixed, open_mixed),
    STREAM: Layout(lambda net: net.stream_graph(), _export_stream, open_stream),
}


def trim_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``). Weights and
    buffers are mostly blocks of a few MB, which malloc serves from its heap and keeps after
    they are freed: without this, dropping them would not lower the process's memory."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


def _wants_remeasure(net: Network, engine: str, precision: str, meta: dict[str, Any]) -> bool:
    """A coarse candidate's verdict cached before coarse graphs existed: verify it again to
    measure its scale (and time). A verdict lacking only its probe time is timed, not verified
    again (``EngineFactory._time_probe``)."""
    policy = policy_for(net.task)
    return (engine, precision) in policy.coarse and policy.scale_check is not None \
        and "scale" not in meta


#: a coarse graph is used only where its probe costs at most this share of the exact graph's CPU
COARSE_SPEED = 0.8

_G = TypeVar("_G")


def coarse_refusal(meta: Mapping[str, Any], exact_s: float) -> str | None:
    """Why a coarse candidate's cache verdict ``meta`` cannot serve any scale next to an exact
    graph whose probe took ``exact_s`` CPU seconds; None where it can."""
    if meta.get("scale") is None:
        return "within the k px envelope at no scale"
    cpu_s = meta.get("cpu_s")
    if cpu_s is None:
        return "its probe was not timed"
    if cpu_s > COARSE_SPEED * exact_s:
        return f"probe {cpu_s:g} CPU-s > {COARSE_SPEED:g} x the exact graph's {exact_s:g}"
    return None


def coarse_tiers(found: Iterable[tuple[_G, Mapping[str, Any]]], exact_s: float
                 ) -> list[tuple[_G, int]]:
    """The coarse tiers among ``found`` (a graph, or anything naming one, with its cache
    verdict): the usable ones (:func:`coarse_refusal`) with the least scale ``k`` each keeps the
    bound from, by scale. One is kept only where it is quicker than every one kept before it
    (which serve from a finer scale), so each scale has one quickest graph; on a tie the earlier
    in ``found`` serves. Pure: ``EngineFactory.coarse`` and ``restora models engines`` share it."""
    usable = [(int(m["scale"]), float(m["cpu_s"]), i, g) for i, (g, m) in enumerate(found)
              if coarse_refusal(m, exact_s) is None]
    tiers: list[tuple[_G, int]] = []
    best_s = float("inf")
    for scale, cpu_s, _, graph in sorted(usable, key=lambda f: f[:3]):
        if cpu_s < best_s:
            tiers.append((graph, scale))
            best_s = cpu_s
    return tiers


def _probe_cpu_s(engine: Engine, example: Sequence[np.ndarray]) -> float:
    """Process CPU seconds of the quicker of two runs on the probe (the verdict's run before
    them warmed the engine up)."""
    import time

    best = float("inf")
    for _ in range(2):
        t0 = time.process_time()
        engine.run(example)
        best = min(best, time.process_time() - t0)
    return round(best, 4)


def _precision_allowed(net: Network, precision: str) -> bool:
    if precision == "int8":
        return net.int8_calibration
    dtypes = net.exported_dtypes or net.dtypes
    if precision in LAYOUTS:
        return "bfloat16" in dtypes and LAYOUTS[precision].parts(net) is not None
    return _TORCH_DTYPES[precision] in dtypes


def quantizer_version() -> str | None:
    """The installed NNCF's version (the int8 quantizer), or None. Read from the package's
    metadata: importing NNCF costs ~3 s, and a cached int8 verdict needs only the version for
    its key (the import happens in :func:`quantize_int8`, when a graph is quantized)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nncf")
    except PackageNotFoundError:
        return None


def quantize_int8(net: Network, model: Any) -> Any:
    """Post-training int8 quantization of an OpenVINO model with NNCF, calibrated on the
    network's own calibration inputs (real faces for face networks)."""
    telemetry_off()
    import nncf

    samples = net.calibration_inputs()
    with _nncf_off_stdout():
        return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))


@contextlib.contextmanager
def _nncf_off_stdout() -> Iterator[None]:
    """NNCF reports on stdout: its logger's own handler, and a progress bar on rich's shared
    console. stdout carries the CLI's ``--json`` lines, so its log records go through
    Restora's logging like any other library's (its handler is removed, the records
    propagate) and, while it quantizes, the progress bar goes nowhere."""
    nncf_log = logging.getLogger("nncf")
    for handler in list(nncf_log.handlers):
        if type(handler) is logging.StreamHandler:
            nncf_log.removeHandler(handler)
    nncf_log.propagate = True
    try:
        from rich import get_console
    except ImportError:  # an NNCF without rich has no progress bar
        yield
        return
    console = get_console()
    quiet, console.quiet = console.quiet, True
    try:
        yield
    finally:
        console.quiet = quiet


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return value.detach().float().cpu().numpy()


def _torch_version() -> str:
    import torch

    return str(torch.__version__)
