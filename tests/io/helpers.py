"""Synthetic but real test images: smooth gradients with texture, written by real encoders."""

from __future__ import annotations

import numpy as np


def gradient(h: int = 48, w: int = 64, dtype: type = np.uint8) -> np.ndarray:
    """An H x W x 3 image with distinct values along both axes and in every channel."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = x / (w - 1)
    g = y / (h - 1)
    b = 0.5 + 0.5 * np.sin((x + 2 * y) / 7.0)
    img = np.stack([r, g, b], axis=-1)
    top = 65535 if dtype == np.uint16 else 255
    return np.rint(img * top).astype(dtype)


def smooth(h: int = 48, w: int = 64) -> np.ndarray:
    """A low-frequency 8-bit image that lossy codecs reproduce closely."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x / (w - 1), y / (h - 1), 1 - (x + y) / (w + h - 2)], axis=-1)
    return np.rint(32 + img * 190).astype(np.uint8)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())
