"""Monochrome detection by chroma spread.

A black-and-white print that has been toned (sepia, selenium, cyanotype) or has yellowed is not
"equal RGB channels", but all its colours lie on one hue line in the CIELAB a*b* plane: only the
amount of tint changes with lightness. A colour photo has many colours at the same lightness. So
the test measures, within narrow lightness bands, how far pixels stray from the band's
tint (the "tone curve").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Thresholds in CIELAB a*b* units (a just-noticeable colour difference is about 2.3).
GRAY_CHROMA = 4.0  # 99th-percentile chroma below this: neutral gray.
TONE_SPREAD = 6.0  # 99th-percentile distance from the tone curve below this: one-hue (toned) print.
_ANALYSIS_SIDE = 512  # statistics on a small copy are as good and cost nothing
_BAND_WIDTH = 2.0  # lightness band (L* units) within which a toned print has one tint


@dataclass(frozen=True)
class MonoReport:
    """Outcome of :func:`detect_monochrome`; numbers are CIELAB a*b* units."""

    is_monochrome: bool
    chroma_p99: float  # how colourful the most colourful pixels are
    spread_p99: float  # how far colours stray from the tone curve
    tone_hue: float | None  # hue angle of the tint in degrees (None for neutral gray)

    def to_dict(self) -> dict[str, object]:
        return {"isGrayscale": self.is_monochrome, "chromaP99": round(self.chroma_p99, 2),
                "spreadP99": round(self.spread_p99, 2),
                "toneHue": None if self.tone_hue is None else round(self.tone_hue, 1)}


def lab_small(rgb: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """CIELAB of an RGB uint8/uint16 image as N x 3 float32, computed on a small copy; pixels
    whose small-copy cell touches ``exclude`` (H x W bool) are left out."""
    import cv2

    h, w = rgb.shape[:2]
    scale = _ANALYSIS_SIDE / max(h, w)
    small = rgb
    keep = None if exclude is None else ~exclude
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        if exclude is not None:
            keep = cv2.resize(exclude.astype(np.float32), size, interpolation=cv2.INTER_AREA) == 0
    peak = 65535.0 if rgb.dtype == np.uint16 else 255.0
    lab = cv2.cvtColor(small.astype(np.float32) / peak, cv2.COLOR_RGB2Lab)
    if keep is not None and keep.sum() >= 64:  # nothing sensible to measure otherwise
        return lab[keep]
    return lab.reshape(-1, 3)


def detect_monochrome(rgb: np.ndarray, exclude: np.ndarray | None = None) -> MonoReport:
    """Whether ``rgb`` is a black-and-white photo, possibly toned; see the module docstring.

    ``exclude`` (H x W bool) leaves damaged pixels out: the paper showing through a tear or a
    crack has its own tint and would make a toned print look like a colour photo."""
    lab = lab_small(rgb, exclude).astype(np.float64)
    ab = lab[:, 1:]
    chroma = np.hypot(ab[:, 0], ab[:, 1])
    chroma_p99 = float(np.percentile(chroma, 99))
    mean = ab.mean(axis=0)
    hue = float(np.degrees(np.arctan2(mean[1], mean[0])) % 360.0)
    if chroma_p99 < GRAY_CHROMA:
        return MonoReport(True, chroma_p99, chroma_p99, None)
    # The tone curve: in a toned print the tint is a function of lightness (it may change hue
    # from shadows to highlights, and clips towards yellow in the highlights). Per lightness band,
    # measure how far colours stray from that band's tint.
    bands = np.clip((lab[:, 0] / _BAND_WIDTH).astype(np.int64), 0, int(100 / _BAND_WIDTH))
    count = np.maximum(np.bincount(bands), 1)

    def centred(v: np.ndarray) -> np.ndarray:
        return v - (np.bincount(bands, weights=v) / count)[bands]

    light, tint_a, tint_b = (centred(lab[:, c]) for c in range(3))
    # Within a band the tint may still move with lightness (steep where a channel clips):
    # remove that linear trend, keep what no tone curve can explain.
    spread = np.maximum(np.bincount(bands, weights=light * light), 1e-9)
    slope_a, slope_b = (np.bincount(bands, weights=light * t) / spread for t in (tint_a, tint_b))
    residual = np.hypot(tint_a - light * slope_a[bands], tint_b - light * slope_b[bands])
    spread_p99 = float(np.percentile(residual, 99))
    return MonoReport(spread_p99 < TONE_SPREAD, chroma_p99, spread_p99, hue)


@dataclass(frozen=True)
class ToneCurve:
    """The tint of a monochrome print as a function of lightness: mean a*, b* per L* unit."""

    levels: np.ndarray  # the L* units present in the print, ascending
    a: np.ndarray  # mean a* at each level
    b: np.ndarray  # mean b* at each level

    @classmethod
    def of(cls, rgb: np.ndarray, exclude: np.ndarray | None = None) -> ToneCurve:
        """Tabulate the curve of ``rgb`` (uint8/uint16 RGB), leaving ``exclude`` out."""
        lab = lab_small(rgb, exclude).astype(np.float64)
        bins = np.clip(np.rint(lab[:, 0]).astype(np.int64), 0, 100)
        count = np.bincount(bins, minlength=101)
        filled = count > 0
        a, b = (np.bincount(bins, weights=lab[:, c], minlength=101)[filled] / count[filled]
                for c in (1, 2))
        return cls(np.arange(101)[filled].astype(np.float64), a, b)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` (float, 0..1, shape ... x 3) with its lightness kept and the print's tint at
        that lightness; float32, clipped to 0..1."""
        import cv2

        lab = cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_RGB2Lab)
        light = lab[:, 0, 0]
        lab[:, 0, 1] = np.interp(light, self.levels, self.a)
        lab[:, 0, 2] = np.interp(light, self.levels, self.b)
        out = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB).reshape(rgb.shape)
        return np.clip(out, 0.0, 1.0)
