"""Scratch and dust detection on the luminance of a photo.

A scratch is thin (a few pixels across), contrasts with what lies on *both* of its sides, and is
rare in its neighbourhood; a dust speck is the compact version. Clean photos are full of thin
things that are none of these: edges (one side differs), stripes, lace and hair (dense), chins
and eyelids (edges again). The tests, per polarity (bright and dark defects):

1. thinness: grey top-hat (black-hat for dark) with a small disc removes everything wider than
   the disc, at two scales;
2. contrast: above an absolute floor and several times the noise level;
3. rarity: several times the local 85th percentile of the top-hat in a ~3-block window, so
   textures whose thin bits are everywhere do not qualify;
4. no edge: the background left after removing the thin structure must be locally flat compared
   with the defect's contrast;
5. shape: what survives an opening with a straight line element (12 orientations) and spans
   at least two line lengths is a scratch; small compact blobs that pass tests 2-4 with a 2x
   margin somewhere and a 1.5x margin over 70 % of their area are dust;
6. continuation: long scratches are followed (hysteresis) through short stretches where they
   cross an edge or texture, along thin straight pixels that pass relaxed tests;
7. networks: everything found is also followed a short way through thin pixels passing the
   relaxed tests, whatever their direction, and what was followed is kept only where the
   connected structure's skeleton is several times longer than its span (a branched, wandering
   crack network measured as a whole; a straight content line is never lengthened this way);
8. flanks: a scratch lies on whatever it crosses, so the pixels just beside it match on both
   sides (median along its length); a straight thin line whose two flanks differ by more than
   half its contrast is the profile of an edge (a door frame, a moulding, a sharpening halo
   along a contour) and is dropped;
9. colour: damage never adds colour (exposed paper or film base is near neutral or
   paper-tinted; dirt and emulsion loss move the channels together), so a defect clearly more
   colourful than the ring around it is a coloured object (a lanyard, a pen) and is dropped.

Measured on ../shared/testdata: 0.00-0.16 % of the area flagged on the 10 clean photos (the
most on the 491 px web JPEG 00.jpg, whose white lanyards are real thin bright lines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ORIENTATIONS = 12
MIN_CONTRAST = 25.0  # 8-bit levels: fainter defects are left alone
NOISE_FACTOR = 4.0  # a defect must stand this many noise sigmas above its background
RARITY = 3.0  # ... and this many times the local 85th percentile of thin-structure contrast
RARITY_PERCENTILE = 85.0
EDGE_RATIO = 1.2  # contrast must exceed the local range of the background beside it
DUST_CONTRAST = 25.0  # dust specks are compact: a fainter one is still unmistakable
DUST_FIRM = 1.5  # ... and pass tests 2-4 with this margin over DUST_SHARE of their area
DUST_SHARE = 0.7
CRACK_RUN = 3.0  # a thin, rare, contrasted component this many line lengths across is a crack
# Sizes for a ~1000 px photo; scaled with the long side so that a scan at 4000 px behaves alike.
_REF_SIDE = 1000
_DISCS = (5, 7)  # top-hat disc diameters (the scales): defects up to ~5 px across
_LINE = 15  # minimum straight run of a scratch
_BLOCK = 24  # rarity statistics block
_EDGE = 11  # neighbourhood for the background flatness test
_DUST_AREA = 30  # largest dust speck, pixels
MIN_RUN = 2.0  # a scratch spans at least this many line lengths (30 px at 1000 px)
# Following a scratch where it crosses an edge or a busy patch: from confident runs at least
# SEED_LENGTH line lengths long, through thin straight pixels passing WEAK x the rarity and edge
# tests, for at most FOLLOW_STEPS line lengths.
SEED_LENGTH = 5.0
WEAK = 0.3
FOLLOW_STEPS = 8.0
# Crack networks: followed NETWORK_FOLLOW px (at 1000 px) through thin pixels passing the WEAK
# tests; kept where the skeleton is TORTUOSITY x the span (a straight line has 1).
NETWORK_FOLLOW = 40
# Flanks: a straight component (std along it >= STRAIGHT_ELONGATION x across) whose two sides
# differ by more than FLANK_ASYMMETRY x its contrast is the profile of an edge.
STRAIGHT_ELONGATION = 5.0
FLANK_ASYMMETRY = 0.5
TORTUOSITY = 2.5
# Colour: damage never makes the picture more colourful (exposed paper or base is near neutral
# or paper-tinted, dirt and emulsion loss move the channels together); a defect whose chroma
# exceeds its surroundings' by more than CHROMA_GAIN x its luma contrast (and CHROMA_FLOOR
# levels) is a coloured object: a lanyard, a pen, a ribbon.
CHROMA_GAIN = 0.33
CHROMA_FLOOR = 12.0
_BLOB = 4  # weak pixels in blobs this wide are texture, not a crack to follow
_BAND_PIXELS = 4_000_000  # detection runs on bands of about this many pixels (bounded memory)


@dataclass
class ScratchReport:
    """Detected defects: ``mask`` (H x W bool, exactly the damaged pixels) and its area share."""

    mask: np.ndarray
    coverage: float  # percent of the image area
    scratch_pixels: int
    dust_specks: int

    def to_dict(self) -> dict[str, object]:
        return {"coverage": round(self.coverage, 3), "scratchPixels": self.scratch_pixels,
                "dustSpecks": self.dust_specks}


def _odd(x: float) -> int:
    n = max(3, int(round(x)))
    return n if n % 2 else n + 1


def line_element(length: int, theta: float) -> np.ndarray:
    """A 1-pixel straight structuring element of ``length`` at angle ``theta`` (radians)."""
    r = length // 2
    k = np.zeros((2 * r + 1, 2 * r + 1), np.uint8)
    t = np.linspace(-r, r, 4 * length)
    k[np.round(r + t * np.sin(theta)).astype(int), np.round(r + t * np.cos(theta)).astype(int)] = 1
    return k


def local_percentile(values: np.ndarray, block: int, pct: float, stride: int = 1) -> np.ndarray:
    """Per-pixel ``pct`` percentile of ``values`` over the 3 x 3 blocks around it, interpolated.

    Computed one band of block rows at a time so memory stays a few blocks tall. With
    ``stride`` > 1 (large scans) only every stride-th pixel of each row and column is counted:
    the same statistic from a fraction of the samples.
    """
    import cv2

    h, w = values.shape
    sub = values[::stride, ::stride]
    cell = max(1, block // stride)
    sh, sw = sub.shape
    nby, nbx = -(-sh // cell), -(-sw // cell)
    padded = np.pad(sub, ((cell, nby * cell - sh + cell), (cell, nbx * cell - sw + cell)),
                    mode="reflect")
    grid = np.empty((nby, nbx), np.float32)
    for by in range(nby):
        band = padded[by * cell:(by + 3) * cell]
        blocks = band.reshape(3, cell, nbx + 2, cell).transpose(0, 2, 1, 3).reshape(
            3, nbx + 2, cell * cell)
        hood = np.concatenate([blocks[i, j:j + nbx] for i in range(3) for j in range(3)], axis=-1)
        grid[by] = np.percentile(hood, pct, axis=-1)
    step = cell * stride
    return cv2.resize(grid, (nbx * step, nby * step), interpolation=cv2.INTER_LINEAR)[:h, :w]


def detect_scratches(luma: np.ndarray, noise_sigma: float = 0.0) -> ScratchReport:
    """Find scratches and dust in ``luma`` (H x W float32 on the 0-255 scale)."""
    h, w = luma.shape
    return _detect(luma, noise_sigma, max(1.0, max(h, w) / _REF_SIDE))


def _detect(luma: np.ndarray, noise_sigma: float, scale: float) -> ScratchReport:
    import cv2

    h, w = luma.shape
    line_len = _odd(_LINE * scale)
    stride = max(1, int(scale))  # rarity statistics sample every stride-th pixel
    block = max(8, stride * int(round(_BLOCK * scale / stride)))
    floor = max(MIN_CONTRAST, NOISE_FACTOR * noise_sigma)
    lines_kernels = [line_element(line_len, np.pi * i / ORIENTATIONS) for i in range(ORIENTATIONS)]

    mask = np.zeros((h, w), bool)
    dust_total = 0
    for img in (luma, 255.0 - luma):  # bright defects, then dark ones
        cand = np.zeros((h, w), bool)
        weak = np.zeros((h, w), bool)  # thin and contrasted only: where a scratch may continue
        firm = np.zeros((h, w), bool)  # passes with a smaller margin: most of a speck must
        strong = np.zeros((h, w), bool)  # passes the tests with a margin: dust must be this
        dust_floor = max(DUST_CONTRAST, NOISE_FACTOR * noise_sigma)
        for disc in _DISCS:
            se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(disc * scale),) * 2)
            th = cv2.morphologyEx(img, cv2.MORPH_TOPHAT, se)
            background = img - th
            flatness = local_range(background, _EDGE * scale)
            rarity = local_percentile(th, block, RARITY_PERCENTILE, stride)
            cand |= (th > floor) & (th > RARITY * rarity) & (th > EDGE_RATIO * flatness)
            weak |= (th > floor) & (th > WEAK * RARITY * rarity) & (th > WEAK * EDGE_RATIO * flatness)
            strong |= ((th > dust_floor) & (th > 2 * RARITY * rarity)
                       & (th > 2 * EDGE_RATIO * flatness))
            firm |= ((th > dust_floor) & (th > DUST_FIRM * RARITY * rarity)
                     & (th > DUST_FIRM * EDGE_RATIO * flatness))
        c8 = cand.astype(np.uint8)
        keep = cand & _straight_runs(c8, lines_kernels)
        # A scratch crossing an edge or a busy patch fails the rarity/edge tests there; follow it
        # from long confident runs through straight thin pixels, a short way only.
        path = weak & _straight_runs(weak.astype(np.uint8), lines_kernels)
        seeds = _long_components(keep, SEED_LENGTH * line_len)
        keep |= _grow_within(seeds, path, int(FOLLOW_STEPS * line_len), int(scale))
        # Short straight bits are what clean photos are made of (eyelids, chin shadows, fingers);
        # a scratch is long. Compact specks are judged as dust below instead.
        keep = _long_components(keep, MIN_RUN * line_len)
        # crack networks branch and wander, so they fail the straight-run test: keep long,
        # thin components of candidates whatever their shape
        keep |= _thin_long_components(cand, CRACK_RUN * line_len, 3.0 * scale)
        # A crack network fails the tests in pieces (it is dense, so not rare, where it forks;
        # it crosses edges): follow it from what was found through thin relaxed pixels, and keep
        # what was followed only where the whole structure wanders (a network), never to
        # lengthen a straight content line (a pillar, a lanyard)
        keep |= _networks(keep, weak, int(NETWORK_FOLLOW * scale), _odd(_BLOB * scale),
                          int(scale))
        # a thin line with one flank brighter than the other is an edge's profile, not damage
        keep &= ~_one_sided(keep, luma, FLANK_ASYMMETRY, 2.0 * scale)
        c8 = (cand | strong).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(c8, connectivity=8)
        # Dust: small compact components of strong contrast.
        area = stats[:, cv2.CC_STAT_AREA]
        extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
        # a speck sits on top of the picture: it passes with a margin somewhere and with a
        # smaller one over most of its area (a pupil in a tiny face stands out at its centre
        # only: lids and lashes lie beside it)
        peak = np.zeros(n, bool)
        peak[np.unique(labels[strong])] = True
        peak &= np.bincount(labels[firm], minlength=n) >= DUST_SHARE * area
        dust_area = _DUST_AREA * scale * scale
        dust = (area <= dust_area) & (extent * extent <= 2.5 * area + 4) & peak
        dust[0] = False
        dust_total += int(dust[1:].sum())
        mask |= dust[labels] | keep
    coverage = 100.0 * float(mask.mean()) if mask.size else 0.0
    return ScratchReport(mask=mask, coverage=coverage, scratch_pixels=int(mask.sum()),
                         dust_specks=dust_total)


def local_range(img: np.ndarray, diameter: float) -> np.ndarray:
    """max - min of ``img`` over a disc of ``diameter`` around each pixel.

    Large discs are slow in OpenCV (cost grows with the disc's area), so on large scans the max
    and min are pooled over p x p cells first and the disc shrunk by p: the same range to within
    a cell.
    """
    import cv2

    p = max(1, int(diameter / _EDGE))
    if p == 1:
        se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(diameter),) * 2)
        return cv2.morphologyEx(img, cv2.MORPH_GRADIENT, se)
    h, w = img.shape
    ph, pw = -(-h // p) * p, -(-w // p) * p
    padded = np.pad(img, ((0, ph - h), (0, pw - w)), mode="edge")
    cells = padded.reshape(ph // p, p, pw // p, p)
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(diameter / p),) * 2)
    high = cv2.dilate(np.ascontiguousarray(cells.max(axis=(1, 3))), se)
    low = cv2.erode(np.ascontiguousarray(cells.min(axis=(1, 3))), se)
    rng = cv2.resize(high - low, (pw, ph), interpolation=cv2.INTER_NEAREST)
    return rng[:h, :w]


def _straight_runs(mask8: np.ndarray, kernels: list[np.ndarray]) -> np.ndarray:
    """Pixels of ``mask8`` on a straight run of the kernels' length in some orientation.

    The mask is grown by one pixel first so 1-pixel staircase lines fit the line element.
    """
    import cv2

    grown = cv2.dilate(mask8, np.ones((3, 3), np.uint8))
    straight = np.zeros_like(mask8)
    for k in kernels:
        np.maximum(straight, cv2.morphologyEx(grown, cv2.MORPH_OPEN, k), out=straight)
    return straight > 0


def _long_components(mask: np.ndarray, length: float) -> np.ndarray:
    """The 8-connected components of ``mask`` whose bounding box spans ``length`` or more."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    ok = extent >= length
    ok[0] = False
    return ok[labels]


def _thin_long_components(mask: np.ndarray, length: float, width: float) -> np.ndarray:
    """Components spanning ``length`` or more whose mean width (area / span) is under
    ``width`` px."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    ok = (extent >= length) & (stats[:, cv2.CC_STAT_AREA] <= width * 2.0 * extent)
    ok[0] = False
    return ok[labels]


def _skeleton(mask8: np.ndarray, steps: int = 4) -> np.ndarray:
    """Lantuejoul's morphological skeleton of a 0/1 mask (enough steps for thin shapes)."""
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    skel = np.zeros_like(mask8)
    cur = mask8
    for _ in range(steps):
        if not cur.any():
            break
        skel |= cur & ~cv2.morphologyEx(cur, cv2.MORPH_OPEN, k)
        cur = cv2.erode(cur, k)
    return skel


def _one_sided(mask: np.ndarray, luma: np.ndarray, ratio: float, gap: float) -> np.ndarray:
    """Straight components of ``mask`` whose two flanks differ: the pixels beside them, sampled
    ``gap`` to ``gap`` + 2 px out on each side along the component's normal, differ from each
    other by more than ``ratio`` times the line's contrast with their mean (median over the
    line). A scratch lies on whatever it crosses, so its flanks match; a thin line with one
    side brighter than the other is the profile of an edge (a door frame, a sharpened contour)."""
    import cv2

    h, w = mask.shape
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    cnt = np.maximum(np.bincount(lab, minlength=n), 1).astype(np.float64)
    mx, my = np.bincount(lab, xs, n) / cnt, np.bincount(lab, ys, n) / cnt
    dx, dy = xs - mx[lab], ys - my[lab]
    sxx = np.bincount(lab, dx * dx, n) / cnt
    syy = np.bincount(lab, dy * dy, n) / cnt
    sxy = np.bincount(lab, dx * dy, n) / cnt
    half_tr = 0.5 * (sxx + syy)
    root = np.sqrt(np.maximum(half_tr ** 2 - (sxx * syy - sxy ** 2), 0))
    major, minor = half_tr + root, np.maximum(half_tr - root, 1e-6)
    elongated = major >= STRAIGHT_ELONGATION ** 2 * minor
    theta = 0.5 * np.arctan2(2 * sxy, sxx - syy)  # direction of the main axis
    nx, ny = -np.sin(theta)[lab], np.cos(theta)[lab]
    off = 0.5 * cnt / np.maximum(np.sqrt(12 * major), 1) + gap  # half width + gap
    off = off[lab]

    def side(sign: float) -> np.ndarray:
        vals = []
        for k in (0.0, 1.0, 2.0):
            xi = np.clip(np.rint(xs + sign * (off + k) * nx).astype(int), 0, w - 1)
            yi = np.clip(np.rint(ys + sign * (off + k) * ny).astype(int), 0, h - 1)
            v = luma[yi, xi].astype(np.float32)
            v[mask[yi, xi]] = np.nan
            vals.append(v)
        stack = np.stack(vals)
        ok = np.isfinite(stack)
        return np.where(ok.any(0), np.where(ok, stack, 0).sum(0) / np.maximum(ok.sum(0), 1),
                        np.nan)

    a, b = side(1.0), side(-1.0)
    r = np.abs(a - b) / np.maximum(np.abs(luma[ys, xs] - 0.5 * (a + b)), 1.0)
    good = np.isfinite(r)
    med = _medians(lab[good], r[good], n)  # NaN (never > ratio) where no flank was sampled
    drop = elongated & (med > ratio)
    drop[0] = False
    return drop[labels]


def _networks(found: np.ndarray, weak: np.ndarray, steps: int, blob: int, stride: int
              ) -> np.ndarray:
    """``found`` followed by ``steps`` px through the thin part of ``weak`` (blobs ``blob`` px
    wide or more removed: texture), kept per connected structure only where its skeleton is
    ``TORTUOSITY`` times longer than its span: wandering, branched crack networks."""
    import cv2

    w8 = weak.astype(np.uint8)
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (blob, blob))
    wide = cv2.dilate(cv2.morphologyEx(w8, cv2.MORPH_OPEN, se), np.ones((3, 3), np.uint8))
    grown = _grow_within(found, (w8 & (1 - wide)) > 0, steps, stride)
    g8 = grown.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(g8, connectivity=8)
    length = np.bincount(labels[_skeleton(g8) > 0], minlength=n)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    ok = length >= TORTUOSITY * extent
    ok[0] = False
    return grown & ok[labels]


def _grow_within(seed: np.ndarray, allowed: np.ndarray, steps: int, stride: int = 1
                 ) -> np.ndarray:
    """Geodesic dilation of ``seed`` inside ``allowed`` by at most ``steps`` pixels, ``stride``
    px per round (a large scan takes as many rounds as a 1000 px photo; gaps under ``stride``
    px are bridged)."""
    import cv2

    out = (seed & allowed).astype(np.uint8) | seed.astype(np.uint8)
    lim = allowed.astype(np.uint8)
    stride = max(1, stride)
    kernel = np.ones((2 * stride + 1, 2 * stride + 1), np.uint8)
    for _ in range(-(-steps // stride)):
        nxt = (cv2.dilate(out, kernel) & lim) | out
        if np.array_equal(nxt, out):
            break
        out = nxt
    return out > 0


def detect_in_bands(pixels: np.ndarray, noise_sigma: float = 0.0,
                    band_pixels: int = _BAND_PIXELS) -> ScratchReport:
    """:func:`detect_scratches` on RGB ``pixels`` (uint8/uint16), a band of rows at a time.

    Each band is analysed with a margin wide enough for every neighbourhood the tests use, and
    only its own rows are kept, so a large scan needs a few band-sized buffers, not a dozen
    full-size float images. Photos up to ``band_pixels`` are done in one piece.
    """
    h, w = pixels.shape[:2]
    scale = max(1.0, max(h, w) / _REF_SIDE)
    margin = int(np.ceil(2 * _BLOCK * scale + _LINE * scale))
    rows = max(int(band_pixels // max(w, 1)), 2 * margin)
    mask = np.zeros((h, w), bool)
    dust = 0
    for y in range(0, h, rows):
        y0, y1 = max(0, y - margin), min(h, y + rows + margin)
        # scale is fixed by the whole photo so that every band uses the same sizes
        band = pixels[y0:y1]
        luma = luminance(band)
        part = _detect(luma, noise_sigma, scale)
        part.mask &= ~_colourful(part.mask, band, luma, scale)
        mask[y:min(h, y + rows)] = part.mask[y - y0:y - y0 + min(rows, h - y)]
        dust += part.dust_specks
    coverage = 100.0 * float(mask.mean()) if mask.size else 0.0
    return ScratchReport(mask=mask, coverage=coverage, scratch_pixels=int(mask.sum()),
                         dust_specks=dust)


def _colourful(mask: np.ndarray, pixels: np.ndarray, luma: np.ndarray, scale: float
               ) -> np.ndarray:
    """Components of ``mask`` more colourful than the ring around them: the median chroma
    (max - min channel) of their pixels exceeds the ring's by more than CHROMA_GAIN x the
    difference of their median lumas and by CHROMA_FLOOR levels. Damage (exposed paper or base,
    dirt, emulsion loss) moves the channels together or towards the paper's tint, so it never
    adds colour; a bright green lanyard on a dark shirt or a gold pen on a lapel does."""
    import cv2

    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1 or pixels.ndim != 3 or pixels.shape[2] < 3:
        return np.zeros_like(mask)
    k = np.float32(1.0 / 257.0 if pixels.dtype == np.uint16 else 1.0)

    def chroma(sel: np.ndarray) -> np.ndarray:  # only where needed: a full-band max is slow
        px = pixels[sel][:, :3].astype(np.float32)
        return (px.max(axis=1) - px.min(axis=1)) * k

    r = _odd(2 * max(1.0, scale))  # the ring: r px beside the component, rim pixel skipped
    ring_labels = cv2.dilate(labels.astype(np.float32), np.ones((2 * r + 1,) * 2, np.uint8))
    near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    ring = ~near & (ring_labels > 0)
    inside = labels > 0
    lab_in, lab_ring = labels[inside], ring_labels[ring].astype(np.int64)
    gain = _medians(lab_in, chroma(inside), n) - _medians(lab_ring, chroma(ring), n)
    contrast = np.abs(_medians(lab_in, luma[inside], n) - _medians(lab_ring, luma[ring], n))
    has_ring = np.bincount(lab_ring, minlength=n) > 0
    drop = has_ring & (gain > CHROMA_GAIN * contrast) & (gain > CHROMA_FLOOR)
    drop[0] = False
    return drop[labels]


def _medians(lab: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Median of ``values`` per label 0..n-1 (NaN where a label has none)."""
    order = np.lexsort((values, lab))
    lab_s, val_s = lab[order], values[order]
    first = np.searchsorted(lab_s, np.arange(n))
    count = np.bincount(lab_s, minlength=n)
    out = np.full(n, np.nan, np.float64)
    has = count > 0
    out[has] = val_s[first[has] + count[has] // 2]
    return out


def luminance(pixels: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of RGB uint8/uint16 pixels as float32 on the 0-255 scale."""
    scale = 1.0 / 257.0 if pixels.dtype == np.uint16 else 1.0
    weights = np.array([0.299, 0.587, 0.114], np.float32) * np.float32(scale)
    return pixels.astype(np.float32) @ weights
