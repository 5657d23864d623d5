"""Background (and face) upscaling: Real-ESRGAN in overlapping tiles, or Lanczos.

Tiles keep memory bounded whatever the image size: each tile is processed with a margin of
context on every side, and only its interior is kept, so there are no seams.
"""

from __future__ import annotations

import threading
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
    s = up.scale
    out = np.empty((h * s, w * s, 3), np.float32)
    mult = up.multiple
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            if cancel is not None and cancel.is_set():
                raise Cancelled("The job was cancelled.")
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            py0, px0 = max(0, y0 - pad), max(0, x0 - pad)
            py1, px1 = min(h, y1 + pad), min(w, x1 + pad)
            patch = rgb[py0:py1, px0:px1]
            eh, ew = (-patch.shape[0]) % mult, (-patch.shape[1]) % mult
            if eh or ew:  # edge replicate up to the network's multiple
                patch = np.pad(patch, ((0, eh), (0, ew), (0, 0)), mode="edge")
            x = np.ascontiguousarray(patch.transpose(2, 0, 1)[None], dtype=np.float32)
            y = np.clip(up(x)[0], 0.0, 1.0).transpose(1, 2, 0)
            oy, ox = (y0 - py0) * s, (x0 - px0) * s
            out[y0 * s:y1 * s, x0 * s:x1 * s] = y[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
    return out


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
                   cancel: threading.Event | None = None) -> np.ndarray:
    """uint8/uint16 RGB enlarged by the integer ``scale`` (keeps the dtype).

    Lanczos runs directly on the integer data; the network runs in float.
    """
    h, w = pixels.shape[:2]
    if up is None:
        return resize(pixels, w * scale, h * scale)
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    rgb = pixels.astype(np.float32) * np.float32(1.0 / top)
    return to_dtype(upscale_rgb(rgb, scale, up, out_size=(w * scale, h * scale), cancel=cancel),
                    pixels.dtype)
