"""Float views of an :class:`Image` for processing stages, keeping its bit depth on the way back."""

from __future__ import annotations

import numpy as np

from restora.io.image import Image


def to_float(image: Image) -> np.ndarray:
    """H x W x 3 float32 RGB in [0, 1] (alpha is not included)."""
    return image.pixels.astype(np.float32) * np.float32(1.0 / image.max_value)


def from_float(arr: np.ndarray, like: Image) -> Image:
    """An Image like ``like`` (depth, metadata, alpha) holding float RGB ``arr`` in [0, 1].

    Values are clipped and rounded to ``like``'s dtype. If ``arr`` has a different size (an
    upscaler ran), ``like``'s alpha is resized to match with bilinear filtering.
    """
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 array, got shape {arr.shape}")
    dtype = like.pixels.dtype
    top = like.max_value
    pixels = np.rint(np.clip(arr, 0.0, 1.0) * top).astype(dtype)
    alpha = like.alpha
    if alpha is not None and alpha.shape != pixels.shape[:2]:
        import cv2  # only needed when the size changed

        alpha = cv2.resize(alpha, (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_LINEAR)
    return like.with_pixels(pixels, alpha)
