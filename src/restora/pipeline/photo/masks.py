"""Damage masks in and out: the user's mask (file, bytes, array) and the result's mask PNG.

Convention everywhere: white (>= 128) = damaged / repaired, black = keep. A mask with an alpha
channel (a brush layer painted on a transparent canvas) counts a pixel only where it is also
opaque (alpha >= 128), so erased strokes are not damage.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal, Union

import numpy as np

from restora.errors import InvalidParameter, RestoraError
from restora.io.image import Image

MaskMode = Literal["replace", "add"]
MASK_MODES: tuple[str, ...] = ("replace", "add")
DEFAULT_MASK_MODE: MaskMode = "replace"
#: a mask whose aspect ratio differs from the photo's by more than this is refused (a smaller
#: mask of the same shape, e.g. painted on a preview, is scaled up)
ASPECT_TOLERANCE = 0.02

MaskSource = Union[np.ndarray, Image, bytes, str, Path]


def check_mask_mode(mode: str) -> MaskMode:
    if mode not in MASK_MODES:
        raise InvalidParameter("maskMode", f"maskMode must be 'replace' or 'add', got {mode!r}")
    return mode  # type: ignore[return-value]


def load_user_mask(source: MaskSource, height: int, width: int,
                   settings: object | None = None) -> np.ndarray:
    """The user's mask as an ``height x width`` bool array (True = repair).

    Arrays are taken as they are (bools; 8-bit 0-255 numbers count from 128, other numbers
    from 0.5; NaN or infinity is refused, as it says nothing about the pixel); images are
    decoded with the photo's own limits. A mask of another size with the photo's aspect ratio is
    scaled (nearest); anything else is an :class:`InvalidParameter` on ``mask``.
    """
    import cv2

    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if (arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4))
                or not arr.size or arr.dtype.kind not in "biuf"):
            raise InvalidParameter("mask", "a mask array must be a non-empty H x W (or H x W x "
                                   "3/4, painted) array of bools or numbers, got "
                                   f"{source.dtype} {source.shape}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            # NaN compares False with every threshold: it read as "no damage" without a word
            raise InvalidParameter("mask", "a mask array must hold finite numbers; this one "
                                   "has NaN or infinite values")
        on = _array_on(arr)
    else:
        on = _decode_mask(source, settings)
    mh, mw = on.shape
    if (mh, mw) != (height, width):
        if abs(mw / mh - width / height) > ASPECT_TOLERANCE * (width / height):
            raise InvalidParameter(
                "mask", f"the mask is {mw} x {mh} but the photo is {width} x {height}; give a "
                "mask of the photo's size (white = repair)")
        on = cv2.resize(on.astype(np.uint8), (width, height),
                        interpolation=cv2.INTER_NEAREST).astype(bool)
    return np.ascontiguousarray(on, dtype=bool)


def _array_on(arr: np.ndarray) -> np.ndarray:
    """Where a mask array says "repair": a 2-D array by its values; a painted H x W x 3/4 one
    like a mask image, by its luma and, with four channels, its alpha (the first channel
    alone missed strokes painted in green or blue, and counted erased ones)."""
    def on(a: np.ndarray) -> np.ndarray:
        if a.dtype == bool:
            return a
        return a >= (128 if arr.dtype == np.uint8 and arr.max(initial=0) > 1 else 0.5)

    if arr.ndim == 2:
        return on(arr)
    luma = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    out = luma >= 0.5 if arr.dtype == bool else on(luma.astype(np.float32))
    if arr.shape[2] == 4:
        out &= on(arr[..., 3])
    return out


def _decode_mask(source: Image | bytes | str | Path, settings: object | None) -> np.ndarray:
    from restora.io.decode import as_image

    try:
        img = as_image(source, settings)  # type: ignore[arg-type]
    except RestoraError as exc:
        raise InvalidParameter("mask", f"the mask could not be read: {exc.message}",
                               reason=exc.code) from None
    px = img.pixels
    half = 32768 if px.dtype == np.uint16 else 128
    luma = px.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    on = luma >= half
    if img.alpha is not None:
        on &= img.alpha >= half
    return on


def mask_png(mask: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of ``mask``: 255 where repaired, 0 elsewhere."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(
        buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
