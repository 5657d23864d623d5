"""Background (and face) upscaling: Real-ESRGAN in overlapping tiles, or Lanczos.

Tiles keep memory bounded whatever the image size: each tile is processed with a margin of
context on every side, and only its interior is kept, so there are no seams.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from restora.errors import Cancelled, InvalidParameter
from restora.models.nets import Upscaler, facts

if TYPE_CHECKING:
    from restora.models.registry import ModelSpec
    from restora.models.runtime import Runtime

TILE = 256  # input pixels per tile side
TILE_PAD = 16  # context on each side, discarded after the network


def find_upscaler(runtime: Runtime, scale: int) -> ModelSpec | None:
    """The installed upscale model to use for ``scale``: one with that native factor if any
    (the task default first), else the installed default, else any installed; None if none."""
    reg = runtime.registry
    installed = reg.installed("upscale")
    if not installed:
        return None
    for spec in installed:
        if facts(spec).scale == scale:
            return spec
    return installed[0]


def load_upscaler(runtime: Runtime, spec: ModelSpec) -> Upscaler:
    """The upscaler descriptor for ``spec`` (loaded once per runtime)."""
    net = runtime.load(spec.id)
    if not isinstance(net, Upscaler):
        raise InvalidParameter("upscaler", f"model '{spec.id}' is a {spec.task} model, not an "
                               "upscaler")
    return net


def resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos when enlarging, area averaging when shrinking (any dtype cv2 resizes)."""
    import cv2

    if arr.shape[1] == width and arr.shape[0] == height:
        return arr
    shrink = width < arr.shape[1] and height < arr.shape[0]
    out = cv2.resize(arr, (width, height),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    if out.dtype == np.float32:
        np.clip(out, 0.0, 1.0, out=out)  # Lanczos overshoots
    return out


def super_resolve(up: Upscaler, rgb: np.ndarray, *, tile: int = TILE, pad: int = TILE_PAD,
                  cancel: threading.Event | None = None) -> np.ndarray:
    """Run the network over float32 RGB [0, 1] in overlapping tiles; returns H*s x W*s x 3."""
    h, w = rgb.shape[:2]
    out = np.empty((h * up.scale, w * up.scale, 3), np.float32)
    super_resolve_into(up, rgb, out, tile=tile, pad=pad, cancel=cancel)
    return out


def tile_count(height: int, width: int, tile: int = TILE) -> int:
    """Network forwards :func:`super_resolve_into` makes for a ``height`` x ``width`` input."""
    return ((height + tile - 1) // tile) * ((width + tile - 1) // tile)


class TileRun:
    """One streamed super-resolution of ``src`` into ``out``, a tile per :meth:`step`.

    ``src`` is H x W x 3 uint8, uint16 or float32 [0, 1]; ``out`` H*f x W*f x 3 of any of
    those dtypes. Only tiles are ever in float: each is converted from ``src``, run, resized
    from the network's factor ``s`` to the output factor ``f`` when they differ (area averaging
    when shrinking, exact per tile for the integer ratios used; Lanczos when enlarging, whose
    support the tile's margin covers), cropped to its interior and rounded into ``out``. So
    memory is the input, the output and a few tiles, whatever the image size. Stepping lets a
    pipeline run the first tiles early to time them (the estimate) and the rest later.

    ``out`` may be None with an integer ``scale``: the output (``src``'s dtype) is then
    allocated only by :meth:`run`, and tiles stepped before are kept aside until then, so
    a pipeline can time tiles before its faces without holding the canvas during them.
    """

    def __init__(self, up: Upscaler, src: np.ndarray, out: np.ndarray | None = None, *,
                 scale: int | None = None, tile: int = TILE, pad: int = TILE_PAD,
                 tone: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        h, w = src.shape[:2]
        if out is None:
            if scale is None:
                raise ValueError("TileRun needs an output array or a scale")
            shape: tuple[int, ...] = (h * scale, w * scale, 3)
        else:
            shape = out.shape
        f = shape[0] / h
        if shape[:2] != (round(h * f), round(w * f)) or f * w != shape[1]:
            raise ValueError(f"output {shape[:2]} is not an integer-ratio enlargement of "
                             f"{h}x{w}")
        self.up, self.src, self.out, self.f = up, src, out, f
        self.shape, self.dtype = shape, (out.dtype if out is not None else src.dtype)
        #: tiles run before ``out`` existed: (y0, y1, x0, x1, pixels)
        self._pending: list[tuple[int, int, int, int, np.ndarray]] = []
        self.tile, self.pad = tile, pad
        self.tone = tone  # applied to each finished tile (float RGB 0..1)
        self.origins = [(y0, x0) for y0 in range(0, h, tile) for x0 in range(0, w, tile)]
        self.total = len(self.origins)
        self.done = 0
        #: seconds each finished tile took (the first may include building the engine)
        self.seconds: list[float] = []

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def tile_seconds(self) -> float | None:
        """Measured cost of one tile: the median of those after the first (which may include
        the engine's export), or the first alone; None before any tile ran."""
        if not self.seconds:
            return None
        later = sorted(self.seconds[1:]) or self.seconds
        return later[len(later) // 2]

    def step(self) -> None:
        """Run the next tile into ``out``."""
        import time

        import cv2

        t0 = time.perf_counter()
        src, f, pad = self.src, self.f, self.pad
        h, w = src.shape[:2]
        s, mult = self.up.scale, self.up.multiple
        src_top = _TOP.get(src.dtype, 1.0)
        out_top = _TOP.get(self.dtype)
        y0, x0 = self.origins[self.done]
        y1, x1 = min(h, y0 + self.tile), min(w, x0 + self.tile)
        py0, px0 = max(0, y0 - pad), max(0, x0 - pad)
        py1, px1 = min(h, y1 + pad), min(w, x1 + pad)
        patch = src[py0:py1, px0:px1]
        eh, ew = (-patch.shape[0]) % mult, (-patch.shape[1]) % mult
        if eh or ew:  # edge replicate up to the network's multiple
            patch = np.pad(patch, ((0, eh), (0, ew), (0, 0)), mode="edge")
        x = patch.transpose(2, 0, 1)[None].astype(np.float32)
        if src_top != 1.0:
            x *= np.float32(1.0 / src_top)
        y = np.clip(self.up(np.ascontiguousarray(x))[0], 0.0, 1.0).transpose(1, 2, 0)
        y = y[:(py1 - py0) * s, :(px1 - px0) * s]  # drop the multiple-of padding
        if f != s:
            size = (round((px1 - px0) * f), round((py1 - py0) * f))
            y = cv2.resize(np.ascontiguousarray(y), size, interpolation=cv2.INTER_AREA
                           if f < s else cv2.INTER_LANCZOS4)
        oy, ox = round((y0 - py0) * f), round((x0 - px0) * f)
        ty0, ty1, tx0, tx1 = round(y0 * f), round(y1 * f), round(x0 * f), round(x1 * f)
        piece = y[oy:oy + ty1 - ty0, ox:ox + tx1 - tx0]
        if self.tone is not None:
            piece = self.tone(piece)
        if out_top is None:
            piece = np.clip(piece, 0.0, 1.0)
        else:
            piece = np.clip(np.rint(piece * np.float32(out_top)), 0, out_top)
        if self.out is not None:
            self.out[ty0:ty1, tx0:tx1] = piece
        else:
            self._pending.append((ty0, ty1, tx0, tx1, piece.astype(self.dtype)))
        self.done += 1
        self.seconds.append(time.perf_counter() - t0)

    def run(self, *, cancel: threading.Event | None = None,
            on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Run the remaining tiles (``on_tile(done, total)`` after each); returns ``out``."""
        if self.out is None:
            self.out = np.empty(self.shape, self.dtype)
            for ty0, ty1, tx0, tx1, piece in self._pending:
                self.out[ty0:ty1, tx0:tx1] = piece
            self._pending.clear()
        while not self.finished:
            if cancel is not None and cancel.is_set():
                raise Cancelled("The job was cancelled.")
            self.step()
            if on_tile is not None:
                on_tile(self.done, self.total)
        return self.out


_TOP = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def super_resolve_into(up: Upscaler, src: np.ndarray, out: np.ndarray, *, tile: int = TILE,
                       pad: int = TILE_PAD, cancel: threading.Event | None = None,
                       on_tile: Callable[[int, int], None] | None = None) -> None:
    """Stream the network over ``src`` into ``out`` one overlapping tile at a time (see
    :class:`TileRun`); ``on_tile(done, total)`` reports progress."""
    TileRun(up, src, out, tile=tile, pad=pad).run(cancel=cancel, on_tile=on_tile)


def upscale_rgb(rgb: np.ndarray, scale: float, up: Upscaler | None, *, out_size: tuple[int, int] | None = None,
                cancel: threading.Event | None = None) -> np.ndarray:
    """Float32 RGB [0, 1] enlarged by ``scale``: the network (then resized to the exact target
    if its factor differs), or Lanczos without one. ``out_size`` is (width, height)."""
    h, w = rgb.shape[:2]
    width, height = out_size or (int(round(w * scale)), int(round(h * scale)))
    if up is None:
        return resize(rgb, width, height)
    sr = super_resolve(up, rgb, cancel=cancel)
    return resize(sr, width, height)


def to_dtype(rgb: np.ndarray, dtype: np.dtype) -> np.ndarray:
    top = 65535.0 if dtype == np.uint16 else 255.0
    return np.clip(np.rint(rgb * top), 0.0, top).astype(dtype)


def start_upscale(pixels: np.ndarray, scale: int, up: Upscaler, *,
                  tone: Callable[[np.ndarray], np.ndarray] | None = None) -> TileRun:
    """The tile run that enlarges uint8/uint16 ``pixels`` by the integer ``scale`` >= 1 into a
    new array of the same dtype (scale 1: super-resolved, area-averaged back per tile),
    allocated when the run starts (:meth:`TileRun.run`); ``tone`` recolours each tile."""
    return TileRun(up, pixels, scale=scale, tone=tone)


def upscale_pixels(pixels: np.ndarray, scale: int, up: Upscaler | None, *,
                   cancel: threading.Event | None = None,
                   on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """uint8/uint16 RGB enlarged by the integer ``scale`` >= 1 (keeps the dtype).

    Lanczos runs directly on the integer data. The network streams tiles into the integer
    output (:func:`super_resolve_into`): no float copy of the image or the canvas exists. At
    ``scale`` 1 the network's result is area-averaged back to the input size (background
    enhancement).
    """
    h, w = pixels.shape[:2]
    if up is None:
        return resize(pixels, w * scale, h * scale)
    return start_upscale(pixels, scale, up).run(cancel=cancel, on_tile=on_tile)
