"""Topaz-style finishing steps after restoration: output resize, seeded film grain, credits."""

from __future__ import annotations

import math

import numpy as np

#: Output megapixels -> credits (Topaz "Face Recovery" pricing table, developer.topazlabs.com):
#: the first row whose bound is >= the output size applies.
CREDIT_TABLE: tuple[tuple[float, int], ...] = (
    (1, 1), (4, 1), (8, 1), (16, 1), (24, 1), (32, 2), (40, 2), (50, 3), (64, 3), (100, 5))


def credits_for(width: int, height: int) -> int:
    """Credits for an output of ``width`` x ``height`` pixels.

    Above the table's last row (100 MP) the table's own rate continues: 1 credit per 20 MP
    started.
    """
    mp = width * height / 1_000_000
    for bound, credits in CREDIT_TABLE:
        if mp <= bound:
            return credits
    return math.ceil(mp / 20)


def target_size(width: int, height: int, out_w: int | None, out_h: int | None) -> tuple[int, int]:
    """Requested output size; one side given keeps the aspect ratio."""
    if out_w and out_h:
        return out_w, out_h
    if out_w:
        return out_w, max(1, round(height * out_w / width))
    if out_h:
        return max(1, round(width * out_h / height)), out_h
    return width, height


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos when enlarging, area averaging when shrinking (no aliasing)."""
    import cv2

    h, w = pixels.shape[:2]
    if (w, h) == (width, height):
        return pixels
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LANCZOS4
    return cv2.resize(pixels, (width, height), interpolation=interp)


def add_grain(pixels: np.ndarray, *, model: str, density: float, size: float, strength: float,
              seed: int) -> np.ndarray:
    """Add film grain to H x W x 3 uint8/uint16 RGB; the same arguments give the same pixels.

    * ``gaussian``: independent noise per colour channel (colour grain).
    * ``grey``: one noise field for all channels (monochrome grain, constant amplitude).
    * ``silver``: monochrome grain whose amplitude follows a silver-halide response, strongest
      in the mid-tones and fading in deep shadows and highlights.

    ``density`` (0.1-1) is the fraction of grain sites, ``size`` (1-5) the grain diameter in
    output pixels, ``strength`` (0-1) the amplitude (1 = a standard deviation of 12 % of full
    scale).
    """
    import cv2

    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError("add_grain expects H x W x 3 pixels")
    if strength <= 0:
        return pixels.copy()
    rng = np.random.Generator(np.random.PCG64(seed))
    h, w = pixels.shape[:2]
    channels = 3 if model == "gaussian" else 1
    noise = rng.standard_normal((h, w, channels), dtype=np.float32)
    if density < 1.0:
        noise *= (rng.random((h, w, channels), dtype=np.float32) < density)
    sigma = max(0.0, (size - 1.0) * 0.6)
    if sigma > 0:
        ksize = int(2 * math.ceil(3 * sigma) + 1)
        noise = cv2.GaussianBlur(noise, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT)
        if noise.ndim == 2:
            noise = noise[..., None]
    std = float(noise.std())
    if std > 0:
        noise /= std  # same visual strength whatever the size and density
    scale = float(np.iinfo(pixels.dtype).max)
    amp = np.float32(0.12 * strength)
    out = np.empty_like(pixels)
    # Row bands: the float copy of a 50 MP image would otherwise cost 600 MB per temporary.
    band = max(1, (1 << 20) // max(1, w))
    for r0 in range(0, h, band):
        img = pixels[r0:r0 + band].astype(np.float32) / scale
        nz = noise[r0:r0 + band]
        if model == "silver":
            luma = img @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
            response = np.sqrt(np.clip(4.0 * luma * (1.0 - luma), 0.0, 1.0))[..., None]
            img = img + amp * response * nz
        else:
            img = img + amp * nz
        out[r0:r0 + band] = (np.clip(img, 0.0, 1.0) * scale + 0.5).astype(pixels.dtype)
    return out
