"""Background (and face) upscaling: Real-ESRGAN in overlapping tiles, or Lanczos.

Tiles keep memory bounded whatever the image size: each tile is processed with a margin of
context on every side, and only its interior is kept, so there are no seams.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from restora.errors import Cancelled

if TYPE_CHECKING:
    from restora.models.registry import ModelSpec
    from restora.models.runtime import Runtime

TILE = 256  # input pixels per tile side
TILE_PAD = 16  # context on each side, discarded after the network


@dataclass
class Upscaler:
    """A loaded super-resolution network and its native factor."""

    net: Any
    scale: int
    model_id: str
    device: str = "cpu"
    dtype: Any = None


def spec_scale(spec: ModelSpec) -> int:
    """Native factor of an upscale model from its hparams (RRDBNet ``scale``, SRVGG ``upscale``)."""
    hp = dict(spec.hparams)
    return int(hp.get("scale", hp.get("upscale", 4)))


def find_upscaler(runtime: Runtime, scale: int) -> ModelSpec | None:
    """The installed upscale model to use for ``scale``: one with that native factor if any
    (the task default first), else the installed default, else any installed; None if none."""
    reg = runtime.registry
    installed = reg.installed("upscale")
    if not installed:
        return None
    for spec in installed:
        if spec_scale(spec) == scale:
            return spec
    return installed[0]


def load_upscaler(runtime: Runtime, spec: ModelSpec) -> Upscaler:
    return Upscaler(net=runtime.load(spec.id), scale=spec_scale(spec), model_id=spec.id,
                    device=str(runtime.device), dtype=runtime.dtype)


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


def _multiple(net: Any) -> int:
    """Input sides must be multiples of this (RRDBNet pixel-unshuffles at scale 2 and 1)."""
    return int(getattr(net, "unshuffle", 1) or 1)


def super_resolve(up: Upscaler, rgb: np.ndarray, *, tile: int = TILE, pad: int = TILE_PAD,
                  cancel: threading.Event | None = None) -> np.ndarray:
    """Run the network over float32 RGB [0, 1] in overlapping tiles; returns H*s x W*s x 3."""
    import torch
    import torch.nn.functional as F

    h, w = rgb.shape[:2]
    s = up.scale
    out = np.empty((h * s, w * s, 3), np.float32)
    device = torch.device(up.device)
    dtype = up.dtype or torch.float32
    mult = _multiple(up.net)
    with torch.inference_mode():
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("The job was cancelled.")
                y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
                py0, px0 = max(0, y0 - pad), max(0, x0 - pad)
                py1, px1 = min(h, y1 + pad), min(w, x1 + pad)
                patch = torch.from_numpy(np.ascontiguousarray(rgb[py0:py1, px0:px1].transpose(2, 0, 1)))
                x = patch[None].to(device=device, dtype=dtype)
                eh, ew = (-x.shape[2]) % mult, (-x.shape[3]) % mult
                if eh or ew:
                    x = F.pad(x, (0, ew, 0, eh), mode="replicate")
                y = up.net(x).float().clamp_(0.0, 1.0)[0].permute(1, 2, 0).cpu().numpy()
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
