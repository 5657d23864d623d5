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


def super_resolve_into(up: Upscaler, src: np.ndarray, out: np.ndarray, *, tile: int = TILE,
                       pad: int = TILE_PAD, cancel: threading.Event | None = None,
                       on_tile: Callable[[int, int], None] | None = None) -> None:
    """Stream the network over ``src`` (H x W x 3 uint8, uint16 or float32 [0, 1]) into ``out``
    (H*f x W*f x 3, any of those dtypes), one overlapping tile at a time.

    Only tiles are ever in float: each is converted from ``src``, run, resized from the
    network's factor ``s`` to the output factor ``f`` when they differ (area averaging when
    shrinking, exact per tile for the integer ratios used; Lanczos when enlarging, whose support
    the tile's margin covers), cropped to its interior and rounded into ``out``. So memory is
    the input, the output and a few tiles, whatever the image size. ``on_tile(done, total)``
    reports progress.
    """
    import cv2

    h, w = src.shape[:2]
    f = out.shape[0] / h
    if out.shape[:2] != (round(h * f), round(w * f)) or f * w != out.shape[1]:
        raise ValueError(f"output {out.shape[:2]} is not an integer-ratio enlargement of {h}x{w}")
    s, mult = up.scale, up.multiple
    src_top = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(src.dtype, 1.0)
    out_top = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(out.dtype, None)
    total = ((h + tile - 1) // tile) * ((w + tile - 1) // tile)
    done = 0
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            if cancel is not None and cancel.is_set():
                raise Cancelled("The job was cancelled.")
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            py0, px0 = max(0, y0 - pad), max(0, x0 - pad)
            py1, px1 = min(h, y1 + pad), min(w, x1 + pad)
            patch = src[py0:py1, px0:px1]
            eh, ew = (-patch.shape[0]) % mult, (-patch.shape[1]) % mult
            if eh or ew:  # edge replicate up to the network's multiple
                patch = np.pad(patch, ((0, eh), (0, ew), (0, 0)), mode="edge")
            x = patch.transpose(2, 0, 1)[None].astype(np.float32)
            if src_top != 1.0:
                x *= np.float32(1.0 / src_top)
            y = np.clip(up(np.ascontiguousarray(x))[0], 0.0, 1.0).transpose(1, 2, 0)
            y = y[:(py1 - py0) * s, :(px1 - px0) * s]  # drop the multiple-of padding
            if f != s:
                size = (round((px1 - px0) * f), round((py1 - py0) * f))
                y = cv2.resize(np.ascontiguousarray(y), size, interpolation=cv2.INTER_AREA
                               if f < s else cv2.INTER_LANCZOS4)
            oy, ox = round((y0 - py0) * f), round((x0 - px0) * f)
            ty0, ty1, tx0, tx1 = round(y0 * f), round(y1 * f), round(x0 * f), round(x1 * f)
            piece = y[oy:oy + ty1 - ty0, ox:ox + tx1 - tx0]
            if out_top is None:
                out[ty0:ty1, tx0:tx1] = np.clip(piece, 0.0, 1.0)
            else:
                out[ty0:ty1, tx0:tx1] = np.clip(np.rint(piece * np.float32(out_top)), 0, out_top)
            done += 1
            if on_tile is not None:
                on_tile(done, total)


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
    out = np.empty((h * scale, w * scale, 3), pixels.dtype)
    super_resolve_into(up, pixels, out, cancel=cancel, on_tile=on_tile)
    return out
