"""Noise estimation and luminance/chroma denoising.

The noise level is measured before anything is filtered, two ways:

* white noise: the residual of a 3 x 3 second-difference kernel (it cancels flat areas and
  linear ramps) is mostly noise, and its median absolute value, scaled for a Gaussian, estimates
  sigma without being fooled by the few pixels on edges. Film grain is *correlated* (grains are
  several pixels across), and this high-pass filter sees only a fraction of it: grain of 2-3 px
  measures 2-17 times too low.
* flat patches: the image is cut into 16 px blocks, the flattest 10 % (least gradient after a
  3 px Gaussian blur, which grain does not survive; clipped blocks excluded) are fitted with a
  plane, and the median standard deviation of what the plane leaves is the noise, correlated or
  not. Texture in "flat" parts of clean photos reads up to ~3.7 levels this way, so this estimate
  is used only when it exceeds ``GRAIN_MIN``: luma sigma = max(white, flat) then.

Filtering happens in YCrCb with OpenCV's non-local means, which averages similar patches and so
keeps edges: luma gently (detail lives there), chroma harder (colour noise is blotchy and the eye
forgives soft colour). The filter strength ``h`` follows the documented rule

    h_luma   = 1.0 x sigma_luma   x denoise_strength / 25
    h_chroma = 1.5 x sigma_chroma x denoise_strength / 25

so the default strength 25 sets ``h`` to the measured sigma (non-local means' sweet spot), 50
doubles it and 100 quadruples it; 0 turns denoising off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKIP_SIGMA = 2.0  # 8-bit levels: below this in luma and chroma the photo counts as clean
GRAIN_MIN = 4.0  # flat-patch estimates below this are texture as often as grain: not used
_FLAT_BLOCK = 16
_FLAT_SHARE = 0.1
LUMA_GAIN = 1.0
CHROMA_GAIN = 1.5
REFERENCE_STRENGTH = 25.0
_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_KERNEL_NORM = 6.0  # sqrt(sum(k^2)): residual sigma = noise sigma x 6
_MAD_TO_SIGMA = 1.4826
_SAMPLE_PIXELS = 4_000_000
_SAMPLE_SIDE = 512
_SAMPLE_GRID = 4


@dataclass(frozen=True)
class NoiseEstimate:
    """Noise sigma in 8-bit levels for the luma (Y) and chroma (mean of Cr, Cb) planes."""

    luma: float
    chroma: float
    flat: float = 0.0  # the flat-patch (grain) estimate, reported; see the module docstring

    @property
    def is_clean(self) -> bool:
        return max(self.luma, self.chroma) < SKIP_SIGMA


def _residuals(plane: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """|second-difference response| of one plane (float32, 0-255 scale), borders dropped;
    ``keep`` (the plane's shape, bool): only responses of pixels it keeps."""
    import cv2

    if min(plane.shape) < 3:
        return np.zeros(0, np.float32)
    res = np.abs(cv2.filter2D(plane, cv2.CV_32F, _KERNEL)[1:-1, 1:-1])
    return res.ravel() if keep is None else res[keep[1:-1, 1:-1]]


def sample_windows(h: int, w: int) -> list[tuple[slice, slice]]:
    """The whole image when small; else a 4 x 4 grid of 512 px windows spread over it (the
    estimate needs a few million residuals, not a full-size float copy of a 50 MP scan)."""
    if h * w <= _SAMPLE_PIXELS:
        return [(slice(0, h), slice(0, w))]
    side = _SAMPLE_SIDE
    ys = np.linspace(0, max(0, h - side), _SAMPLE_GRID).astype(int)
    xs = np.linspace(0, max(0, w - side), _SAMPLE_GRID).astype(int)
    return [(slice(y, y + side), slice(x, x + side)) for y in ys for x in xs]


def to_ycrcb8(pixels: np.ndarray) -> np.ndarray:
    """YCrCb uint8 of RGB uint8/uint16 pixels (16-bit rounded to 8-bit)."""
    import cv2

    rgb8 = pixels if pixels.dtype == np.uint8 else np.round(pixels / 257.0).astype(np.uint8)
    return cv2.cvtColor(rgb8, cv2.COLOR_RGB2YCrCb)


def estimate_noise(pixels: np.ndarray, exclude: np.ndarray | None = None) -> NoiseEstimate:
    """Estimate luma and chroma noise of RGB ``pixels`` in 8-bit levels.

    ``exclude`` (H x W bool; fully transparent pixels) takes no part: no residual whose 3 x 3
    window touches it, no flat block holding one of its pixels. Their values still pass
    through the flat blocks' blur, so give them a fill that does not depend on what they hid
    (:func:`restora.pipeline.paste.fill_hidden`) to make the estimate independent of it."""
    import cv2

    per_plane: list[list[np.ndarray]] = [[], [], []]
    flat: list[np.ndarray] = []
    top = 257.0 if pixels.dtype == np.uint16 else 1.0
    for rows, cols in sample_windows(*pixels.shape[:2]):
        ycc = cv2.cvtColor(pixels[rows, cols].astype(np.float32) / np.float32(top),
                           cv2.COLOR_RGB2YCrCb)
        keep = None
        if exclude is not None:
            keep = cv2.dilate(exclude[rows, cols].astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
        for i in range(3):
            per_plane[i].append(_residuals(np.ascontiguousarray(ycc[..., i]), keep))
        flat.append(flat_block_sigmas(np.ascontiguousarray(ycc[..., 0]),
                                      exclude=None if exclude is None else exclude[rows, cols]))
    sig = [_sigma(np.concatenate(r)) for r in per_plane]
    fs = np.concatenate(flat) if flat else np.zeros(0)
    grain = float(np.median(fs)) if fs.size else 0.0
    luma = max(sig[0], grain) if grain >= GRAIN_MIN else sig[0]
    return NoiseEstimate(luma=luma, chroma=0.5 * (sig[1] + sig[2]), flat=grain)


def flat_block_sigmas(plane: np.ndarray, block: int = _FLAT_BLOCK,
                      share: float = _FLAT_SHARE, exclude: np.ndarray | None = None
                      ) -> np.ndarray:
    """Noise sigma of each of the flattest ``share`` of ``block`` px blocks of ``plane``
    (0-255 float): the standard deviation left by a least-squares plane, in levels. Blocks
    holding a pixel of ``exclude`` (bool, the plane's shape) are not used."""
    import cv2

    h, w = plane.shape
    hb, wb = h // block, w // block
    if hb == 0 or wb == 0:
        return np.zeros(0)
    p = np.ascontiguousarray(plane[:hb * block, :wb * block], dtype=np.float32)
    smooth = cv2.GaussianBlur(p, (0, 0), 3)
    grad = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    structure = grad.reshape(hb, block, wb, block).mean(axis=(1, 3)).ravel()
    blocks = p.reshape(hb, block, wb, block).transpose(0, 2, 1, 3).reshape(-1, block * block)
    yy, xx = np.mgrid[0:block, 0:block]
    design = np.stack([np.ones(block * block), yy.ravel(), xx.ravel()], 1).astype(np.float32)
    fit = (blocks @ np.linalg.pinv(design).T) @ design.T
    n = block * block
    sd = (blocks - fit).std(axis=1) * np.float32(np.sqrt(n / (n - 3)))
    mean = blocks.mean(axis=1)
    usable = (mean > 12) & (mean < 243)  # clipped blocks have no noise to measure
    if exclude is not None:
        usable &= ~exclude[:hb * block, :wb * block].reshape(hb, block, wb, block).any(
            axis=(1, 3)).ravel()
    if not usable.any():
        return np.zeros(0)
    k = max(1, int(share * usable.sum()))
    return sd[np.argsort(np.where(usable, structure, np.inf))[:k]]


def _sigma(residuals: np.ndarray) -> float:
    if residuals.size == 0:
        return 0.0
    return float(_MAD_TO_SIGMA * np.median(residuals) / _KERNEL_NORM)


def filter_strengths(noise: NoiseEstimate, strength: float) -> tuple[float, float]:
    """(h_luma, h_chroma) by the rule in the module docstring."""
    factor = strength / REFERENCE_STRENGTH
    return LUMA_GAIN * noise.luma * factor, CHROMA_GAIN * noise.chroma * factor


#: a YCrCb plane is filtered only from this filter strength on (below it nl-means changes nothing)
MIN_H = 0.1


def planes_filtered(noise: NoiseEstimate, strength: float) -> int:
    """How many of the three YCrCb planes :func:`denoise` filters (its cost is per plane)."""
    h_luma, h_chroma = filter_strengths(noise, strength)
    return int(h_luma > MIN_H) + 2 * int(h_chroma > MIN_H)


def denoise(pixels: np.ndarray, noise: NoiseEstimate, strength: float) -> np.ndarray:
    """Denoise RGB ``pixels`` (uint8 or uint16) with the measured ``noise`` at ``strength``.

    16-bit input is filtered at 8-bit precision and the correction added back to the 16-bit
    pixels, so untouched fine gradations survive.
    """
    import cv2

    h_luma, h_chroma = filter_strengths(noise, strength)
    ycc = to_ycrcb8(pixels)
    planes = []
    for i, h in enumerate((h_luma, h_chroma, h_chroma)):
        plane = np.ascontiguousarray(ycc[..., i])
        planes.append(cv2.fastNlMeansDenoising(plane, None, h=float(h), templateWindowSize=7,
                                               searchWindowSize=21) if h > MIN_H else plane)
    clean8 = cv2.cvtColor(np.dstack(planes), cv2.COLOR_YCrCb2RGB)
    if pixels.dtype == np.uint8:
        return clean8
    before8 = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    delta = (clean8.astype(np.int32) - before8.astype(np.int32)) * 257
    return np.clip(pixels.astype(np.int32) + delta, 0, 65535).astype(np.uint16)
