"""Tiled inpainting at native resolution.

Only tiles that contain masked pixels are touched; each is filled with OpenCV's Telea (or
Navier-Stokes) method on a crop that includes a margin of real pixels for context, and only the
tile's own area is written back. Memory stays at a few tiles whatever the photo's size, and the
fill is computed on the original pixels, never on a downscaled copy.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

TILE = 256  # core size written back per crop
MARGIN = 32  # context around each core; well beyond the inpainting radius
RADIUS = 4  # neighbourhood the fill draws from, pixels


def inpaint_tiled(pixels: np.ndarray, mask: np.ndarray, *, method: str = "telea",
                  radius: int = RADIUS, tile: int = TILE, margin: int = MARGIN,
                  grow: int = 1, on_tile: Callable[[float], None] | None = None) -> np.ndarray:
    """Fill ``mask`` (H x W bool) in ``pixels`` (H x W x 3 uint8/uint16); returns a new array.

    ``grow`` dilates the mask by that many pixels first so the soft rim of a scratch (and the
    JPEG ringing beside it) goes too. ``on_tile(fraction)`` reports progress.
    """
    import cv2

    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    m8 = mask.astype(np.uint8)
    if grow > 0:
        m8 = cv2.dilate(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
    out = pixels.copy()
    h, w = m8.shape
    cores = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)
             if m8[y:y + tile, x:x + tile].any()]
    for i, (y, x) in enumerate(cores):
        y0, x0 = max(0, y - margin), max(0, x - margin)
        y1, x1 = min(h, y + tile + margin), min(w, x + tile + margin)
        crop = pixels[y0:y1, x0:x1]  # original pixels: neighbouring tiles' fills do not feed back
        cmask = m8[y0:y1, x0:x1]
        if crop.dtype == np.uint8:
            filled = cv2.inpaint(np.ascontiguousarray(crop), cmask, radius, flag)
        else:  # OpenCV inpaints 16-bit images one channel at a time
            filled = np.dstack([cv2.inpaint(np.ascontiguousarray(crop[..., c]), cmask, radius, flag)
                                for c in range(crop.shape[2])])
        cy, cx = y - y0, x - x0
        core = filled[cy:cy + tile, cx:cx + tile]
        sel = cmask[cy:cy + tile, cx:cx + tile] > 0
        out[y:y + core.shape[0], x:x + core.shape[1]][sel] = core[sel]
        if on_tile is not None:
            on_tile((i + 1) / len(cores))
    return out
