"""Model descriptors: what a loaded network does, what it takes, and one way to call it.

:meth:`Runtime.load <restora.models.runtime.Runtime.load>` returns one of these per model. A
descriptor carries the facts pipelines need (task, input size or multiple-of rule, scale,
precisions it may run in) and a single ``__call__`` that takes the network's input as a numpy
array or a torch tensor (NCHW, the network's own value range) and returns its main output as
the same kind of object. Pipelines never look at architecture names or hyper-parameters.

Behind ``__call__`` sits an engine (:mod:`restora.models.engines`): torch eager by default, or an
exported graph (ONNX Runtime, OpenVINO). Engines run a *graph*: a module whose inputs and outputs
are plain tensors (GFPGAN's noise maps and CodeFormer's fidelity ``w`` are inputs), so the same
call gives the same numbers whichever engine runs it.

Adding a network: write the module in ``models/arch``, register it in
``registry.ARCHITECTURES``, and add a descriptor class here (subclass the task's class, set the
facts in ``_configure`` and the graph in ``graph``) plus a line in :data:`DESCRIPTORS`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from restora.models.registry import ModelSpec

if TYPE_CHECKING:
    import torch

    from restora.models.engines import Engine, EngineFactory

Array = Any  # np.ndarray | torch.Tensor

ALL_DTYPES = ("float32", "float16", "bfloat16")

#: samples/astronaut.jpg's face aligned as the pipeline aligns (scripts/make_probe_face.py)
PROBE_FACE = Path(__file__).parent / "data" / "probe_face.png"


def probe_face(height: int, width: int) -> np.ndarray:
    """The aligned probe face, RGB float32 in [0, 1], resized to ``height`` x ``width``."""
    import cv2

    bgr = cv2.imread(str(PROBE_FACE), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"the probe face is missing: {PROBE_FACE}")
    rgb = bgr[:, :, ::-1].astype(np.float32) / 255.0
    if rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


@dataclass(frozen=True)
class InputSpec:
    """One graph input: name and shape (``None`` for a free dimension, 'B' is the batch)."""

    name: str
    shape: tuple[int | None, ...]


class Network:
    """A loaded network. Subclasses fix the task and the call convention."""

    task: ClassVar[str] = ""
    #: user-facing family name ("gfpgan", "codeformer", ...); the arch name by default
    family: ClassVar[str | None] = None
    #: precisions the network may run in without leaving its documented bound
    dtypes: ClassVar[tuple[str, ...]] = ALL_DTYPES
    #: precisions an exported graph may run in, where they differ from torch's ``dtypes`` (the
    #: engine's own kernels may cover what torch's cannot); None = ``dtypes``
    exported_dtypes: ClassVar[tuple[str, ...] | None] = None
    #: whether ``graph()`` exports to ONNX; where not, OpenVINO converts it from the torch
    #: module (its PyTorch frontend reads ops the ONNX exporter cannot) and ONNX Runtime,
    #: which reads only ONNX, cannot run it
    onnx_export: ClassVar[bool] = True
    #: value range of the image input (for the export/accuracy probe)
    input_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    #: side used for free input dimensions when exporting and checking accuracy
    probe_size: ClassVar[int] = 64
    #: whether ``calibration_inputs`` exists, so ``auto`` may try an int8 graph
    int8_calibration: ClassVar[bool] = False
    #: whether the module does nothing outside its graph, so that its torch weights may be
    #: dropped while an exported graph serves (:meth:`release_memory`)
    graph_only: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, module: Any, *, device: str = "cpu",
                 dtype: Any = None) -> None:
        self.spec = spec
        self.module = module
        self.device = str(device)
        self.dtype = dtype
        #: fixed square input side, or None when any size works
        self.input_size: int | None = None
        #: input sides must be multiples of this
        self.multiple = 1
        #: output side / input side
        self.scale = 1
        self._configure(dict(spec.hparams))
        self.engine: Engine | None = None
        #: builds the engine on the first call (set by the Runtime; None = torch eager)
        self.engine_factory: EngineFactory | None = None
        self._engine_lock = threading.Lock()
        #: reads the module again from its file (set by the Runtime; None: never dropped)
        self.reload: Callable[[], Any] | None = None
        self._weights_lock = threading.RLock()
        self._weights_dropped = False

    def __getattr__(self, name: str) -> Any:
        # Anything the descriptor does not define is the module's (parameters(), state_dict(),
        # hooks), so code written against the bare module keeps working.
        if name.startswith("__") or name in ("module", "spec"):
            raise AttributeError(name)
        return getattr(self.__dict__["module"], name) if "module" in self.__dict__ else \
            _missing(type(self).__name__, name)

    # --- facts ---------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.spec.id

    @property
    def kind(self) -> str:
        return self.family or self.spec.arch

    def _configure(self, hparams: dict[str, Any]) -> None:
        """Set ``input_size``, ``multiple`` and ``scale`` from the spec's hyper-parameters."""

    def inputs(self, batch: int | None = None, height: int | None = None,
               width: int | None = None) -> list[InputSpec]:
        """The graph's inputs for a batch of ``height`` x ``width`` images (None = free)."""
        h = self.input_size if self.input_size is not None else height
        w = self.input_size if self.input_size is not None else width
        return [InputSpec("x", (batch, 3, h, w))]

    def graph(self) -> torch.nn.Module:
        """The tensor-in, tensor-out module the engines run (the network itself by default)."""
        return self.module

    def split_graph(self) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module] | None:
        """``graph()`` as (input layer, trunk, output layer), ``out(trunk(in(x))) ==
        graph()(x)``, the input layer a ``conv2d`` on its padded input then pointwise layers
        (``graphs.ExactInput``), for the mixed precision that keeps both end layers
        float32-accurate around a bf16 trunk (``engines.MIXED``); None where the network has
        no such split."""
        return None

    def stream_graph(self) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module] | None:
        """``graph()`` as (stem, trunk, finish) around its residual stream:
        ``finish(trunk(stem(x)), stem(x)) == graph()(x)``, the trunk a chain of residual
        blocks from stream to stream. For ``engines.STREAM``, which runs each part as its own
        bf16 graph so that the trunk adds its residuals in float32; None where the network
        has no such trunk."""
        return None

    @property
    def exportable(self) -> bool:
        """Whether the exported engines can run it (a torch module)."""
        import torch

        return isinstance(self.module, torch.nn.Module)

    def calibration_inputs(self) -> list[np.ndarray]:
        """Input batches for int8 calibration (only where ``int8_calibration``)."""
        raise NotImplementedError(f"{type(self).__name__} has no int8 calibration inputs")

    def probe_image(self, rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
        """A smooth, face-like-statistics random image in ``input_range`` (export/accuracy
        probe): a few random low-frequency waves per channel plus mild noise."""
        n, c, h, w = shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.empty(shape, np.float32)
        for i in range(n):
            for ch in range(c):
                f = rng.uniform(0.5, 4.0, 4) * (2 * np.pi / max(h, w))
                p = rng.uniform(0, 2 * np.pi, 2)
                img[i, ch] = (0.5 + 0.3 * np.sin(f[0] * xx + f[1] * yy + p[0])
                              * np.cos(f[2] * xx - f[3] * yy + p[1]))
        img += rng.normal(0.0, 0.03, shape).astype(np.float32)
        lo, hi = self.input_range
        return (np.clip(img, 0.0, 1.0) * (hi - lo) + lo).astype(np.float32)

    @property
    def engine_name(self) -> str:
        return self.engine.name if self.engine is not None else "torch"

    @property
    def precision(self) -> str:
        return self.engine.precision if self.engine is not None else _short(self.dtype)

    @property
    def engine_label(self) -> str:
        """"engine/precision" it runs on, as results and reports name it."""
        return f"{self.engine_name}/{self.precision}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.model_id!r}, task={self.task!r}, "
                f"input_size={self.input_size}, multiple={self.multiple}, scale={self.scale}, "
                f"engine={self.engine_name!r}, precision={self.precision!r})")

    # --- running -------------------------------------------------------------------------------

    def run(self, inputs: Sequence[Array]) -> list[Array]:
        """All graph outputs for ``inputs`` (numpy or tensors); the engine's own output type."""
        return self.built_engine().run(list(inputs))

    def release_memory(self) -> None:
        """Let the engine give back the working buffers it keeps between runs (it allocates
        them again on the next run), and drop a graph-only network's torch weights on the CPU
        unless torch eager runs them (an exported graph serves it, or none was built yet;
        :meth:`weights` reads them again for an export or a torch engine): between the stages
        of a large job, so that the next stage's peak does not stack on this network's."""
        if self.engine is not None:
            self.engine.release()
        factory = self.engine_factory
        if not self.graph_only or self.reload is None or self.device != "cpu" \
                or factory is None or factory.choice == "torch":
            return
        # not while the engine is being built (it may become torch eager on these weights),
        # nor while an export holds them: both can take minutes, and this job goes on
        if not self._engine_lock.acquire(blocking=False):
            return
        try:
            engine = self.engine
            if engine is not None and engine.name.startswith("torch"):
                return  # torch eager runs these weights
            if not self._weights_lock.acquire(blocking=False):
                return
            try:
                if not self._weights_dropped:
                    self.module.to("meta")  # shapes stay (noise sides, export specs)
                    self._weights_dropped = True
            finally:
                self._weights_lock.release()
        finally:
            self._engine_lock.release()

    def close_engine(self) -> None:
        """Drop an exported engine, its compiled graph and weights with it, and what
        :meth:`release_memory` drops: for a large job done with this network before its last
        heavy stage. The next call opens the graph again from the export cache (a compile, no
        export or check). A torch engine stays: its weights are the module. Skipped while the
        engine is being built."""
        if not self._engine_lock.acquire(blocking=False):
            return
        try:
            engine = self.engine
            if engine is not None and not engine.name.startswith("torch"):
                self.engine = None
                self._drop_graphs()
        finally:
            self._engine_lock.release()
        self.release_memory()

    def _drop_graphs(self) -> None:
        """Forget graphs kept beside the engine (held under the engine lock)."""

    @contextlib.contextmanager
    def weights(self) -> Iterator[Any]:
        """The torch module with its weights, read again from the file if
        :meth:`release_memory` dropped them; held for the block, so that an export or a torch
        run inside it keeps them."""
        with self._weights_lock:
            if self._weights_dropped and self.reload is not None:
                self.module = self.reload()
                self._weights_dropped = False
            yield self.module

    def built_engine(self) -> Engine:
        """The engine, built (exported, checked) on first use."""
        engine = self.engine
        if engine is None:
            with self._engine_lock:  # one build (export) per descriptor, others wait
                if self.engine is None:
                    self.engine = self._make_engine()
                engine = self.engine
        return engine

    def prepare(self) -> None:
        """Build every engine this network runs (exported and checked on a first run): ahead
        of a job's work, or at deploy."""
        self.built_engine()

    def _make_engine(self) -> Engine:
        if self.engine_factory is not None:
            return self.engine_factory.build(self)
        from restora.models.engines import TorchEngine

        return TorchEngine(self.graph(), self.device, self.dtype)

    def __call__(self, x: Array, **kwargs: Any) -> Array:
        """The main output for input ``x`` (NCHW), as a numpy array if ``x`` is one, else a
        tensor."""
        out = self.run([x, *self.extra_inputs(x, **kwargs)])[0]
        return _like(out, x)

    def extra_inputs(self, x: Array, **kwargs: Any) -> list[Array]:
        """Graph inputs after ``x`` (noise maps, weights) for one call."""
        if kwargs:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(kwargs)}")
        return []


# --- face restoration ---------------------------------------------------------------------------

class FaceRestorer(Network):
    """Aligned face crop -> restored crop; RGB NCHW in [-1, 1] at ``input_size``."""

    task = "face-restoration"
    graph_only = True
    input_range = (-1.0, 1.0)

    def _configure(self, hparams: dict[str, Any]) -> None:
        self.input_size = 512

    def __call__(self, x: Array, *, fidelity: float = 0.5,
                 generator: torch.Generator | None = None) -> Array:
        """``fidelity`` is CodeFormer's w (ignored by others); ``generator`` seeds GFPGAN's
        noise (it must live on the runtime's device)."""
        out = self.run([x, *self.extra_inputs(x, fidelity=fidelity, generator=generator)])[0]
        return _like(out, x)

    def extra_inputs(self, x: Array, **kwargs: Any) -> list[Array]:
        return []

    def graph(self) -> torch.nn.Module:
        from restora.models.graphs import FirstOutput

        return FirstOutput(self.module)


class GFPGANRestorer(FaceRestorer):
    """GFPGAN v1.3/v1.4. The StyleGAN noise is a graph input, drawn here: one map per layer in
    execution order from ``generator`` (so a seed gives the same output on every engine)."""

    family = "gfpgan"

    def _configure(self, hparams: dict[str, Any]) -> None:
        from restora.models.arch.gfpgan import input_size

        self.input_size = int(input_size(hparams))

    def noise_sides(self) -> list[int]:
        return [int(n.shape[-1]) for n in self.module.stylegan_decoder.stored_noise()]

    def inputs(self, batch: int | None = None, height: int | None = None,
               width: int | None = None) -> list[InputSpec]:
        # Exported one face at a time (engines loop over the faces). A batch-dynamic export is
        # possible (the modulated convs use the constant weight; same numbers per face) but not
        # cheaper: benchmarks/gfpgan_batch.py, full-size v1.4, 2 threads, CPU-s per face of the
        # batch-1 graph / of the free-batch graph at batch 2 and 4, median of 5 rounds
        # (2026-12-02): OpenVINO fp32 0.92x and 0.92x (0.90x at batch 1), ONNX Runtime fp32
        # 1.03x and 1.06x, OpenVINO bf16 0.78x and 0.82x; a graph fixed at batch 2 or 4 gains
        # only 1.04x on OpenVINO fp32. Peak RSS (OpenVINO fp32, load + 4 faces): 1.71 GiB at
        # batch 1, +1.05 GiB at free batch 2, +2.30 GiB at 4, which would take a 24 MP
        # enhance-faces (2.6-3.0 GiB at batch 1) to about 4 GiB or over.
        return [*super().inputs(1), *(InputSpec(f"noise{i}", (1, 1, s, s))
                                      for i, s in enumerate(self.noise_sides()))]

    def extra_inputs(self, x: Array, *, fidelity: float = 0.5,
                     generator: torch.Generator | None = None, **_: Any) -> list[Array]:
        import torch

        b = int(x.shape[0])
        dev = generator.device if generator is not None else torch.device(self.device)
        dtype = self.dtype if self.dtype is not None else torch.float32
        return [torch.randn((b, 1, s, s), generator=generator, device=dev, dtype=dtype)
                for s in self.noise_sides()]

    def graph(self) -> torch.nn.Module:
        from restora.models.graphs import GFPGANGraph

        return GFPGANGraph(self.module)


class CodeFormerRestorer(FaceRestorer):
    """CodeFormer; the fidelity weight ``w`` is a graph input (a 1-element float tensor).
    Codebook codes flip in half precision, so it runs in float32 only."""

    family = "codeformer"
    dtypes = ("float32",)

    def _configure(self, hparams: dict[str, Any]) -> None:
        from restora.models.arch.codeformer import input_size

        self.input_size = int(input_size(hparams))

    def inputs(self, batch: int | None = None, height: int | None = None,
               width: int | None = None) -> list[InputSpec]:
        return [*super().inputs(batch), InputSpec("w", (1,))]

    def extra_inputs(self, x: Array, *, fidelity: float = 0.5, **_: Any) -> list[Array]:
        return [np.array([float(fidelity)], np.float32)]

    def graph(self) -> torch.nn.Module:
        from restora.models.graphs import CodeFormerGraph

        return CodeFormerGraph(self.module)


# --- face parsing -------------------------------------------------------------------------------

class FaceParser(Network):
    """Face crop RGB NCHW in [-1, 1] at ``input_size`` -> class logits (N, classes, S, S).

    Under ``auto`` a parser may also hold faster *coarse* graphs (bf16) that keep the paste
    bound only for faces pasted small: each from its own number of parsing pixels per output
    pixel, where a one-pixel edge move in the output is several pixels of the parsing map.
    Callers pass each face's ``px_per_output`` and the descriptor picks (see
    ``engines.paste_mask_scale``).
    """

    task = "face-parsing"
    graph_only = True
    input_range = (-1.0, 1.0)
    int8_calibration = True
    #: coarse graphs as (engine, least parsing px per output px), by scale, each quicker than
    #: the one before; None until looked up
    _coarse: list[tuple[Engine, int]] | None = None

    def __call__(self, x: Array, *,  # type: ignore[override]
                 px_per_output: float | None = None) -> Array:
        """Class logits for ``x``; faces pasted at ``px_per_output`` parsing pixels per output
        pixel run on the quickest coarse graph that keeps the bound at that scale, if any
        (None: the scale is unknown, the exact graph)."""
        return _like(self.run([x], px_per_output=px_per_output)[0], x)

    def class_maps(self, x: Array, *, px_per_output: float | None = None) -> np.ndarray:
        """Argmax class maps (N x S x S int64) of ``x``'s logits, taken where the logits are:
        on a GPU only the maps come back to the host (1 byte a pixel, where the logits are 19
        floats: 80 MB for 4 faces, whose host argmax cost more than the network on an H200)."""
        out = self.run([x], px_per_output=px_per_output)[0]
        if isinstance(out, np.ndarray) or out.device.type == "cpu":
            return _numpy(out).argmax(axis=1).astype(np.int64)
        import torch

        maps = out.argmax(dim=1).to(torch.uint8) if out.shape[1] <= 256 else out.argmax(dim=1)
        return maps.cpu().numpy().astype(np.int64)

    def run(self, inputs: Sequence[Array], *, px_per_output: float | None = None
            ) -> list[Array]:
        graph = self.graph_for(px_per_output)
        return graph.run(list(inputs)) if graph is not None else super().run(inputs)

    def graph_for(self, px_per_output: float | None) -> Engine | None:
        """The coarse graph that parses a face pasted at ``px_per_output`` parsing px per output
        px (None: unknown), or None for the exact graph."""
        chosen = None
        if px_per_output is not None:
            for engine, k in self.coarse:
                if px_per_output >= k:
                    chosen = engine  # later ones need a coarser scale and are quicker
        return chosen

    @property
    def coarse(self) -> list[tuple[Engine, int]]:
        """The coarse graphs and the least parsing px per output px each is used from."""
        if self._coarse is None:
            exact = self.built_engine()  # what a coarse graph must beat
            with self._engine_lock:
                if self._coarse is None:
                    factory = self.engine_factory
                    self._coarse = factory.coarse(self, exact) if factory is not None else []
        return self._coarse

    def prepare(self) -> None:
        self.coarse  # noqa: B018 - the exact graph, then the coarse graphs checked against it

    def release_memory(self) -> None:
        super().release_memory()
        for engine, _ in self._coarse or []:
            engine.release()

    def _drop_graphs(self) -> None:
        self._coarse = None  # looked up again (cached verdicts) with the exact graph

    @property
    def coarse_from(self) -> int | None:
        """Parsing pixels per output pixel from which faces are parsed by a coarse graph."""
        return self.coarse[0][1] if self.coarse else None

    @property
    def precision(self) -> str:
        """The exact graph's precision, ``+`` the coarse graphs' where there are any."""
        return self.precision_for(None)

    def precision_for(self, px_per_output: Sequence[float | None] | None) -> str:
        """The precisions that parse faces pasted at these scales (None: at any scale)."""
        exact = super().precision
        tiers = self._coarse or []
        if px_per_output is None:
            return "+".join([exact, *(e.precision for e, _ in tiers)])
        used = [self.graph_for(k) for k in px_per_output]
        parts = [exact] if any(g is None for g in used) else []
        parts += [e.precision for e, _ in tiers if any(g is e for g in used)]
        return "+".join(parts)

    def probe_image(self, rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
        """The aligned probe face (mirrored for odd items): a parser's verdict is about a face."""
        n, _, h, w = shape
        face = probe_face(h, w)
        items = [face if i % 2 == 0 else face[:, ::-1] for i in range(n)]
        return self._to_input(np.stack(items))

    def calibration_inputs(self) -> list[np.ndarray]:
        """int8 calibration batches (1 x 3 x S x S): the probe face, mirrored, darker, brighter,
        grey and softened, so activation ranges cover the photos a parser meets."""
        import cv2

        s = self.input_size or 512
        face = probe_face(s, s)
        grey = np.repeat(face.mean(axis=2, keepdims=True), 3, axis=2)
        variants = [face, face[:, ::-1], face * 0.7, np.clip(face * 1.25, 0.0, 1.0), grey,
                    cv2.GaussianBlur(face, (0, 0), 2.0)]
        return [self._to_input(v[None]) for v in variants]

    def _to_input(self, rgb: np.ndarray) -> np.ndarray:
        lo, hi = self.input_range
        return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2) * (hi - lo) + lo, dtype=np.float32)

    def _configure(self, hparams: dict[str, Any]) -> None:
        self.input_size = int(hparams.get("in_size", 512))
        self.classes = int(hparams.get("parsing_ch", 19))

    def graph(self) -> torch.nn.Module:
        from restora.models.graphs import FirstOutput

        return FirstOutput(self.module)


class ParseNetParser(FaceParser):
    family = "parsenet"

    def split_graph(self) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module] | None:
        from restora.models.graphs import Method

        return self.module.encoder[0], Method(self.module, "trunk"), self.module.out_mask_conv


# --- upscaling ----------------------------------------------------------------------------------

class Upscaler(Network):
    """RGB NCHW in [0, 1], any size that is a multiple of ``multiple`` -> ``scale`` x larger."""

    task = "upscale"
    graph_only = True

    def inputs(self, batch: int | None = None, height: int | None = None,
               width: int | None = None) -> list[InputSpec]:
        return [InputSpec("x", (1, 3, height, width))]  # one tile at a time

    def _configure(self, hparams: dict[str, Any]) -> None:
        self.scale = int(hparams.get("scale", hparams.get("upscale", 4)))


class RRDBNetUpscaler(Upscaler):
    family = "rrdbnet"

    def _configure(self, hparams: dict[str, Any]) -> None:
        self.scale = int(hparams.get("scale", 4))
        # scale 2 and 1 pixel-unshuffle the input by 2 and 4
        self.multiple = {4: 1, 2: 2, 1: 4}.get(self.scale, 1)

    def stream_graph(self) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module] | None:
        from restora.models.graphs import Method

        return Method(self.module, "stem"), self.module.body, Method(self.module, "finish")


class SRVGGUpscaler(Upscaler):
    family = "srvgg"

    def _configure(self, hparams: dict[str, Any]) -> None:
        self.scale = int(hparams.get("upscale", 4))


# --- face detection -----------------------------------------------------------------------------

class FaceDetector(Network):
    """``detect(rgb uint8 H x W x 3, conf_threshold, nms_threshold) -> (N, 15) float32`` rows
    ``[x1, y1, x2, y2, score, 5 x (x, y)]``; ``__call__`` on an image is ``detect``."""

    task = "face-detection"
    #: confidence threshold at sensitivity 0.5 (the detector's usual setting)
    mid_threshold: ClassVar[float] = 0.6
    #: the detector the reference restorers were written for: their pipeline's own threshold
    #: (``pipeline.detect.DetectionRule``) replaces ``mid_threshold``
    follows_reference_rule: ClassVar[bool] = False
    #: a score its upright faces in a photo the right way up reach; below it, ``orientation``
    #: ``auto`` also searches the image turned (``pipeline.detect``)
    sure_score: ClassVar[float] = 0.99
    probe_size = 320

    def inputs(self, batch: int | None = None, height: int | None = None,
               width: int | None = None) -> list[InputSpec]:
        return [InputSpec("x", (1, 3, height, width))]

    def detect(self, image_rgb: np.ndarray, conf_threshold: float | None = None,
               nms_threshold: float = 0.4) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: Array, conf_threshold: float | None = None,  # type: ignore[override]
                 nms_threshold: float = 0.4) -> np.ndarray:
        return self.detect(x, conf_threshold, nms_threshold)


class RetinaFaceDetector(FaceDetector):
    """RetinaFace: the engine runs the convolutional body (BGR mean-subtracted NCHW -> loc,
    softmaxed conf, landmarks); priors, decoding and NMS run here in float32 numpy/torch."""

    family = "retinaface"
    mid_threshold = 0.8
    follows_reference_rule = True
    input_range = (-123.0, 151.0)  # BGR minus the mean

    def graph(self) -> torch.nn.Module:
        from restora.models.graphs import Outputs

        return Outputs(self.module)

    def detect(self, image_rgb: np.ndarray, conf_threshold: float | None = None,
               nms_threshold: float = 0.4) -> np.ndarray:
        net = self.module
        x = net.prepare(image_rgb)
        outs = self.run([x])
        return net.decode(outs, image_rgb.shape[0], image_rgb.shape[1],
                          self.mid_threshold if conf_threshold is None else conf_threshold,
                          nms_threshold)


class YuNetDetector(FaceDetector):
    """YuNet runs through OpenCV's own ONNX engine on the CPU (no torch graph)."""

    family = "yunet"
    dtypes = ("float32",)
    mid_threshold = 0.6
    sure_score = 0.9  # its upright faces on the test photos: 0.905-0.952

    def detect(self, image_rgb: np.ndarray, conf_threshold: float | None = None,
               nms_threshold: float = 0.4) -> np.ndarray:
        del nms_threshold  # fixed at construction (the model's own setting)
        return self.module.detect(image_rgb, conf_threshold)

    @property
    def exportable(self) -> bool:
        return False

    @property
    def engine_name(self) -> str:
        return "opencv"

    @property
    def precision(self) -> str:
        return "fp32"


# --- colorization -------------------------------------------------------------------------------

class Colorizer(Network):
    """Grey RGB NCHW in [0, 1] at ``input_size`` (a multiple of 32) -> Lab a/b (N, 2, S, S)."""

    task = "colorization"
    graph_only = True  # DDColor-L's 0.9 GB of torch weights go while an exported graph serves

    def _configure(self, hparams: dict[str, Any]) -> None:
        from restora.models.arch.ddcolor import input_size

        self.input_size = int(input_size(hparams))
        self.multiple = 32

    @property
    def probe_size(self) -> int:  # type: ignore[override]
        return self.input_size or 512

    def inputs(self, batch: int | None = None, height: int | None = None,
               width: int | None = None) -> list[InputSpec]:
        # the inference size may be overridden per call (a multiple of 32)
        return [InputSpec("x", (1, 3, height, width))]


class DDColorColorizer(Colorizer):
    family = "ddcolor"


# --- old-photo repair ---------------------------------------------------------------------------

class DamageSegmenter(Network):
    """Grey N x 1 x H x W in [-1, 1], sides multiples of 16 -> scratch logits N x 1 x H x W
    (sigmoid >= 0.4 is damage); the reference runs it with the shorter side 256."""

    task = "damage-segmentation"

    def _configure(self, hparams: dict[str, Any]) -> None:
        self.multiple = 2 ** int(hparams.get("depth", 4))
        self.reference_side = 256

    def inputs(self, batch: int | None = None, height: int | None = None,
               width: int | None = None) -> list[InputSpec]:
        return [InputSpec("x", (batch, int(self.spec.hparams.get("in_channels", 1)), height,
                                width))]


class ScratchUNetSegmenter(DamageSegmenter):
    family = "bopbtl-unet"


class Inpainter(Network):
    """N x 4 x H x W = [RGB x (1 - mask), mask], RGB in [0, 1], mask 1 = hole, sides multiples
    of 8 -> the predicted RGB N x 3 x H x W in [0, 1] (composite it into the holes yourself)."""

    task = "inpainting"
    graph_only = True
    #: the spectral transform's FFTs: half precision is unsupported on CPU and restricted to
    #: power-of-two sizes on CUDA
    dtypes = ("float32",)
    #: OpenVINO runs bf16 convolutions around its own FFTs (the probe decides, as ever)
    exported_dtypes = ("float32", "bfloat16")
    #: the TorchScript ONNX exporter has no rfftn/irfftn, and OpenVINO cannot read what the
    #: dynamo exporter writes for them; OpenVINO's PyTorch frontend converts them
    onnx_export = False
    #: a crop of a few hundred pixels, as the fill runs it (LAMA_SIDE 512)
    probe_size = 256

    def _configure(self, hparams: dict[str, Any]) -> None:
        self.multiple = 2 ** int(hparams.get("n_downsampling", 3))

    def inputs(self, batch: int | None = None, height: int | None = None,
               width: int | None = None) -> list[InputSpec]:
        return [InputSpec("x", (batch, int(self.spec.hparams.get("input_nc", 4)), height,
                                width))]

    def probe_image(self, rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
        """A smooth random photo with a hole, as the fill feeds the network: ``[RGB x (1 -
        mask), mask]``, the mask a rectangle of a ninth of the area, off centre."""
        n, c, h, w = shape
        rgb = super().probe_image(rng, (n, c - 1, h, w))
        mask = np.zeros((n, 1, h, w), np.float32)
        mask[:, :, h // 4:h // 4 + h // 3, w // 3:w // 3 + w // 3] = 1.0
        return np.concatenate([rgb * (1.0 - mask), mask], axis=1).astype(np.float32)


class LaMaInpainter(Inpainter):
    family = "lama"


# --- face recognition ---------------------------------------------------------------------------

class FaceRecognizer(Network):
    """FFHQ-aligned face crops (RGB uint8, any square size) -> descriptors (N, D) float32;
    :meth:`distance` compares descriptors (smaller = more alike). ``__call__`` is :meth:`embed`.
    The wrapped file runs on the CPU outside the engine seam: SFace in OpenCV, dlib's network in
    torch (its own module, :mod:`restora.models.arch.dlibnet`; its chips from dlib)."""

    task = "face-recognition"
    dtypes = ("float32",)
    #: "euclidean" (dlib) or "cosine" (1 - cosine similarity, SFace)
    metric: ClassVar[str] = "euclidean"
    runtime_name: ClassVar[str] = "cpu"

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(self.module.describe(list(crops)), np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(self.module.distance(a, b), np.float32)

    def __call__(self, x: Array, **kwargs: Any) -> Array:  # type: ignore[override]
        if kwargs:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(kwargs)}")
        return self.embed(x)

    @property
    def engine_name(self) -> str:
        return self.runtime_name

    @property
    def precision(self) -> str:
        return "fp32"


class DlibFaceRecognizer(FaceRecognizer):
    """dlib's ResNet 128-D descriptor (``restora[identity]``), Euclidean distance."""

    family = "dlib"
    runtime_name = "torch"  # the network; dlib still finds the landmarks and cuts the chip


class SFaceRecognizer(FaceRecognizer):
    """OpenCV's SFace 128-D descriptor, distance 1 - cosine similarity."""

    family = "sface"
    metric = "cosine"
    runtime_name = "opencv"


#: arch -> descriptor class. A new network adds one line (and its arch in ARCHITECTURES).
DESCRIPTORS: dict[str, type[Network]] = {
    "gfpgan_v1_clean": GFPGANRestorer,
    "codeformer": CodeFormerRestorer,
    "parsenet": ParseNetParser,
    "rrdbnet": RRDBNetUpscaler,
    "srvgg": SRVGGUpscaler,
    "retinaface": RetinaFaceDetector,
    "yunet": YuNetDetector,
    "ddcolor": DDColorColorizer,
    "scratch_unet": ScratchUNetSegmenter,
    "lama": LaMaInpainter,
    "dlib_resnet": DlibFaceRecognizer,
    "sface": SFaceRecognizer,
}

#: task -> descriptor class for an architecture without its own (called as ``module(x)``).
TASK_DESCRIPTORS: dict[str, type[Network]] = {
    "face-restoration": FaceRestorer,
    "face-parsing": FaceParser,
    "upscale": Upscaler,
    "colorization": Colorizer,
    "damage-segmentation": DamageSegmenter,
    "inpainting": Inpainter,
    "face-recognition": FaceRecognizer,
}


def describe(spec: ModelSpec, module: Any, *, device: str = "cpu", dtype: Any = None) -> Network:
    """The descriptor for ``module`` built from ``spec`` (engine chosen later by the Runtime)."""
    cls = DESCRIPTORS.get(spec.arch) or TASK_DESCRIPTORS.get(spec.task, Network)
    return cls(spec, module, device=device, dtype=dtype)


def facts(spec: ModelSpec) -> Network:
    """The descriptor of ``spec`` without loading anything (task, sizes, scale, dtypes), e.g. to
    choose among installed models; calling it fails."""
    return describe(spec, None)


def wrap(module: Any, task: str, *, model_id: str = "custom", arch: str = "custom",
         hparams: dict[str, Any] | None = None, device: str = "cpu", dtype: Any = None
         ) -> Network:
    """A descriptor for a module built outside the registry (tests, custom pipelines)."""
    spec = ModelSpec(id=model_id, task=task, arch=arch, hparams=dict(hparams or {}))
    return describe(spec, module, device=device, dtype=dtype)


# --- helpers ------------------------------------------------------------------------------------

def _missing(owner: str, name: str) -> Any:
    raise AttributeError(f"'{owner}' object has no attribute '{name}'")


def _short(dtype: Any) -> str:
    name = str(dtype or "float32").removeprefix("torch.")
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(name, name)


def _numpy(out: Array) -> np.ndarray:
    return out if isinstance(out, np.ndarray) else out.detach().float().cpu().numpy()


def _like(out: Array, x: Array) -> Array:
    """``out`` as the same kind of object as ``x`` (numpy float32 array or torch tensor)."""
    if isinstance(x, np.ndarray):
        return _numpy(out)
    if isinstance(out, np.ndarray):
        import torch

        return torch.from_numpy(out).to(x.device)
    return out
