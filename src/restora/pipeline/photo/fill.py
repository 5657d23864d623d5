"""Filling damage at native resolution: a learned fill (LaMa) for wide regions, Telea for thin.

The rule (also in docs/restore-photo.md):

* The mask is grown by 1 px (the soft rim of a scratch, JPEG ringing) and split into connected
  regions. A region is *wide* when it still has pixels after an erosion by a disc of
  ``THIN_WIDTH`` px (something wider than a thin line: a crack, a torn corner, a blob); the rest
  are *thin* (scratches, specks) and keep the fast classical fill (OpenCV Telea, tiled).
* Each wide region is filled on a crop around it with ``max(MIN_CONTEXT, region size)`` px of
  context on every side (clipped at the photo's edge). Crops larger than ``LAMA_SIDE`` px are
  reduced to that long side for LaMa (it was trained at 256 px and is at its best up to ~512 px
  holes-with-context; larger crops cost time and memory without helping) and the fill is scaled
  back; every hole in the crop is a hole for LaMa, so no damage leaks in as context. Other wide
  regions lying inside the crop are filled from the same pass.
* The fill goes into the region only, with a ``FEATHER`` px seam: the region is grown by that
  much and the fill fades out over it (distance-weighted), so there is no hard edge, and every
  pixel outside the grown region is untouched. The returned mask is exactly the pixels written.
* Without LaMa, wide regions get a coarse-to-fine classical fill (Telea on a reduced copy where
  the hole is only a few pixels across, scaled back, then the seam), and the caller warns that an
  inpainting model would do better.

Memory stays bounded on a 40 MP scan: regions are processed one crop at a time, and a crop never
exceeds ``LAMA_SIDE`` px on the network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from restora.pipeline.photo.inpaint import inpaint_tiled

THIN_WIDTH = 9  # px: regions that vanish under an erosion with this disc are thin
LAMA_SIDE = 512  # longest side of what LaMa sees
MIN_CONTEXT = 48  # px of real pixels around a region, at least
FEATHER = 3  # px of seam outside a wide region
_CLASSIC_HOLE = 4.0  # the reduced copy for the classical wide fill makes holes about this wide

#: ``inpaint(rgb8_crop, hole_bool_crop) -> rgb8_crop`` (the LaMa wrapper), or None
InpaintFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: ``on_crop(regions_done, wide_regions, seconds)`` after each crop of the wide fill: the wide
#: regions filled so far (a crop fills the smaller ones inside it too), of how many, and the
#: seconds the wide fill has taken so far
CropFn = Callable[[int, int, float], None]


@dataclass
class FillResult:
    pixels: np.ndarray
    mask: np.ndarray  # every pixel written (thin fill, wide fill and its seam)
    report: dict[str, Any] = field(default_factory=dict)
    wide_regions: int = 0
    thin_pixels: int = 0


def _disc(d: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))


def split_wide(mask8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, stats, wide flags per label) of the 8-connected regions of ``mask8``."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask8, connectivity=8)
    core = cv2.erode(mask8, _disc(THIN_WIDTH))
    wide = np.zeros(n, bool)
    wide[np.unique(labels[core > 0])] = True
    wide[0] = False
    return labels, stats, wide


def fill_damage(pixels: np.ndarray, mask: np.ndarray, *, inpaint: InpaintFn | None = None,
                progress: Callable[[float], None] | None = None,
                on_crop: CropFn | None = None) -> FillResult:
    """Fill ``mask`` (H x W bool) in RGB ``pixels`` (uint8/uint16); see the module docstring."""
    import cv2

    m8 = cv2.dilate(mask.astype(np.uint8), _disc(3))
    out = pixels.copy()
    written = m8.astype(bool)
    labels, stats, wide = split_wide(m8)
    wide_ids = np.flatnonzero(wide)
    thin8 = m8.copy()
    if wide_ids.size:
        thin8[wide[labels]] = 0
    pending = wide[labels]  # wide holes not filled yet (context must never come from them)
    crops = 0
    done = np.zeros(len(wide), bool)
    # largest first: big regions' crops often swallow the small ones around them
    order = sorted(wide_ids, key=lambda i: -int(stats[i, cv2.CC_STAT_AREA]))
    t0 = time.perf_counter()
    for k, i in enumerate(order):
        if done[i]:
            continue
        x, y, w, h = (int(v) for v in stats[i, :4])
        box = _crop_box(x, y, w, h, pixels.shape[0], pixels.shape[1])
        inner = [j for j in order if not done[j] and _inside(stats[j], box, pixels.shape)]
        if i not in inner:
            inner.append(i)
        y0, y1, x0, x1 = box
        holes = pending[y0:y1, x0:x1]
        region = np.isin(labels[y0:y1, x0:x1], inner)
        filled = (_lama_crop(out[y0:y1, x0:x1], holes, inpaint) if inpaint is not None
                  else _classic_crop(out[y0:y1, x0:x1], holes))
        seam = _blend(out[y0:y1, x0:x1], filled, region)
        written[y0:y1, x0:x1] |= seam
        pending[y0:y1, x0:x1] &= ~region
        done[inner] = True
        crops += 1
        if progress is not None:
            progress(0.8 * (k + 1) / len(order))
        if on_crop is not None:
            on_crop(int(done.sum()), len(order), time.perf_counter() - t0)
    if thin8.any():
        # after the wide fill, so thin lines next to a big hole draw on filled pixels
        out = inpaint_tiled(out, thin8 > 0, grow=0,
                            on_tile=None if progress is None else
                            (lambda f: progress(0.8 + 0.2 * f)))
    method = ("lama" if inpaint is not None else "classical-coarse-to-fine") if wide_ids.size \
        else None
    report = {"thinFill": "telea", "wideFill": method, "wideRegions": int(wide_ids.size),
              "crops": crops, "thinPixels": int(thin8.sum()), "native": True}
    return FillResult(out, written, report, int(wide_ids.size), int(thin8.sum()))


def _crop_box(x: int, y: int, w: int, h: int, height: int, width: int
              ) -> tuple[int, int, int, int]:
    ctx = max(MIN_CONTEXT, max(w, h))
    return (max(0, y - ctx), min(height, y + h + ctx), max(0, x - ctx), min(width, x + w + ctx))


def _inside(stat: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, ...]) -> bool:
    """A region lies well inside the crop (FEATHER + some context from its sides, or the edge)."""
    y0, y1, x0, x1 = box
    x, y, w, h = (int(v) for v in stat[:4])
    pad = MIN_CONTEXT // 2
    ok_x0 = x - pad >= x0 or x0 == 0
    ok_y0 = y - pad >= y0 or y0 == 0
    ok_x1 = x + w + pad <= x1 or x1 == shape[1]
    ok_y1 = y + h + pad <= y1 or y1 == shape[0]
    return ok_x0 and ok_y0 and ok_x1 and ok_y1


def _to8(px: np.ndarray) -> np.ndarray:
    return px if px.dtype == np.uint8 else np.round(px / 257.0).astype(np.uint8)


def _lama_crop(crop: np.ndarray, holes: np.ndarray, inpaint: InpaintFn) -> np.ndarray:
    """LaMa on the crop (reduced to LAMA_SIDE when larger), back at the crop's size and depth."""
    import cv2

    h, w = holes.shape
    s = min(1.0, LAMA_SIDE / max(h, w))
    rgb8 = _to8(crop)
    if s < 1.0:
        size = (max(8, round(w * s)), max(8, round(h * s)))
        small = cv2.resize(rgb8, size, interpolation=cv2.INTER_AREA)
        # a hole pixel anywhere under a reduced pixel makes it a hole
        small_holes = cv2.resize(holes.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        filled = inpaint(small, small_holes)
        filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        filled = inpaint(rgb8, holes)
    if crop.dtype == np.uint16:
        return filled.astype(np.uint16) * 257
    return filled


def _classic_crop(crop: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Telea on a copy reduced until the widest hole is ~_CLASSIC_HOLE px, scaled back."""
    import cv2

    h8 = holes.astype(np.uint8)
    half = float(cv2.distanceTransform(h8, cv2.DIST_L2, 3).max()) if h8.any() else 0.0
    s = min(1.0, _CLASSIC_HOLE / max(2.0 * half, 1e-6))
    h, w = holes.shape
    size = (max(4, round(w * s)), max(4, round(h * s)))

    def telea(img: np.ndarray, m: np.ndarray) -> np.ndarray:
        if img.dtype == np.uint8:
            return cv2.inpaint(np.ascontiguousarray(img), m, 3, cv2.INPAINT_TELEA)
        return np.dstack([cv2.inpaint(np.ascontiguousarray(img[..., c]), m, 3, cv2.INPAINT_TELEA)
                          for c in range(img.shape[2])])

    if s >= 1.0:
        return telea(crop, h8)
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    small_holes = (cv2.resize(h8.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0)
    return cv2.resize(telea(small, small_holes.astype(np.uint8)), (w, h),
                      interpolation=cv2.INTER_CUBIC)


def _blend(dst: np.ndarray, filled: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Write ``filled`` into ``dst`` on ``region`` and fade it out over FEATHER px around it;
    returns the pixels written."""
    import cv2

    r8 = region.astype(np.uint8)
    grown = cv2.dilate(r8, _disc(2 * FEATHER + 1))
    # distance (px) from the region for the seam pixels; alpha 1 inside, -> 0 at FEATHER + 1
    dist = cv2.distanceTransform(1 - r8, cv2.DIST_L2, 3)
    alpha = np.clip(1.0 - dist / (FEATHER + 1), 0.0, 1.0) * (grown > 0)
    alpha[region] = 1.0
    sel = alpha > 0
    a = alpha[sel][:, None].astype(np.float32)
    mixed = a * filled[sel].astype(np.float32) + (1 - a) * dst[sel].astype(np.float32)
    dst[sel] = np.clip(np.rint(mixed), 0, np.iinfo(dst.dtype).max).astype(dst.dtype)
    return sel
