"""Classical detection of damage that is not a thin scratch: missing areas and faint folds.

*Missing areas* (a torn corner, a chip of emulsion gone) show the paper or the scanner lid: a
region of one flat colour, lighter than most of the print, with a sharp boundary on most of its
outline. The tests (on a copy of at most ``WORK_SIDE`` px):

1. flat: local standard deviation (7 x 7) under ``FLAT_STD`` levels;
2. large: at least ``MIN_AREA`` of the image;
3. one colour: each RGB channel's standard deviation over the whole region under
   ``UNIFORM_STD`` (skies and walls are gradients; paper is not), mean luma over ``MIN_LUMA``;
4. sharp: on at least ``SHARP_SHARE`` of its outline (the image border excluded), the pixels
   4-7 px outside differ by more than ``EDGE_CONTRAST`` levels (a torn edge, not a soft
   transition), measured after a median filter that removes thin lines (scratches fencing in
   a flat patch are not its outline);
5. a clipped white region (mean luma over ``CLIPPED``) counts only when it touches the image
   border (the scanner lid behind a torn corner), never inside (a blown-out collar or sky).

*Folds* are long, faint, straight ridges (a crease catching the light, or its shadow) that run
across much of the print. On the luma top-hat / black-hat (disc of 11 px at ``WORK_SIDE``),
segments found by a probabilistic Hough transform must span ``FOLD_SPAN`` of the image, respond
on ``FOLD_COVER`` of their length and on ``FOLD_CHORD`` of the line extended from border to border
(a fold crosses the whole print; an image edge stops), and stand out of the neighbourhood beside
them (a ridge, not a texture). Lines parallel to the border within ``FRAME_MARGIN`` of it are print frames and are
left alone.
"""

from __future__ import annotations

import numpy as np

WORK_SIDE = 1000
FLAT_STD = 2.5
MIN_AREA = 0.0006
UNIFORM_STD = 6.0
MIN_LUMA = 140.0
CLIPPED = 250.0
EDGE_CONTRAST = 25.0
SHARP_SHARE = 0.6
OUTLINE_MEDIAN = 9  # px: lines up to 4 px wide vanish from the outline test
FOLD_SPAN = 0.55
FOLD_COVER = 0.6
FOLD_MIN = 5.0  # levels on the line (median)
FOLD_MAX = 35.0  # ... and at most this: folds are faint
FOLD_MIN_SIDE = 400  # smaller images: a fold is indistinguishable from content (not searched)
FOLD_CHORD = 0.85  # share of the line extended to the borders that must respond
FRAME_MARGIN = 0.08
FRAME_ANGLE = np.radians(3.0)


def _small(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    import cv2

    h, w = pixels.shape[:2]
    s = min(1.0, WORK_SIDE / max(h, w))
    px = pixels if pixels.dtype == np.uint8 else np.round(pixels / 257.0).astype(np.uint8)
    if s < 1.0:
        px = cv2.resize(px, (max(1, round(w * s)), max(1, round(h * s))),
                        interpolation=cv2.INTER_AREA)
    return px.astype(np.float32), s


def _up(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    if mask.shape == (h, w):
        return mask
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0


def detect_missing_areas(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """(H x W bool mask of missing areas, number of areas)."""
    import cv2

    h, w = pixels.shape[:2]
    rgb, _ = _small(pixels)
    sh, sw = rgb.shape[:2]
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    mean = cv2.blur(luma, (7, 7))
    std = np.sqrt(np.maximum(cv2.blur(luma * luma, (7, 7)) - mean * mean, 0))
    flat = (std < FLAT_STD).astype(np.uint8)
    # the outline is judged without thin lines: two scratches crossing a light, flat patch (a
    # neck) give it a sharp border that a torn edge has and the patch has not
    wide = cv2.medianBlur(np.clip(luma, 0, 255).astype(np.uint8), OUTLINE_MEDIAN).astype(
        np.float32)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(flat, connectivity=8)
    out = np.zeros((sh, sw), bool)
    found = 0
    min_area = MIN_AREA * sh * sw
    # the flat test leaves a 3 px rim of the region out; the outline is looked at 4-7 px out
    near_k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    ring_k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < min_area:
            continue
        x, y, bw, bh = (int(v) for v in stats[i, :4])
        y0, y1, x0, x1 = max(0, y - 8), min(sh, y + bh + 8), max(0, x - 8), min(sw, x + bw + 8)
        comp = labels[y0:y1, x0:x1] == i
        vals = rgb[y0:y1, x0:x1][comp]
        level = float(luma[y0:y1, x0:x1][comp].mean())
        if vals.std(axis=0).max() > UNIFORM_STD or level < MIN_LUMA:
            continue
        at_border = x == 0 or y == 0 or x + bw == sw or y + bh == sh
        if level >= CLIPPED and not at_border:
            continue  # a blown-out highlight (a white collar); only a torn edge shows the lid
        near = cv2.dilate(comp.astype(np.uint8), near_k) > 0
        ring = (cv2.dilate(comp.astype(np.uint8), ring_k) > 0) & ~near
        # the image border is not an outline: a torn corner's edge is only its inner side
        yy, xx = np.nonzero(ring)
        inside = (yy + y0 > 2) & (yy + y0 < sh - 3) & (xx + x0 > 2) & (xx + x0 < sw - 3)
        if inside.sum() < 8:
            continue
        diff = np.abs(wide[y0:y1, x0:x1][yy[inside], xx[inside]] - level)
        if float((diff > EDGE_CONTRAST).mean()) < SHARP_SHARE:
            continue
        # the rim the flat test left out: pixels near the region of (nearly) its colour, then
        # 1 px over the ragged, anti-aliased edge
        colour = vals.mean(axis=0)
        same = np.abs(rgb[y0:y1, x0:x1] - colour).max(axis=2) < 3 * UNIFORM_STD
        grown = cv2.dilate((comp | (near & same)).astype(np.uint8), np.ones((3, 3), np.uint8))
        out[y0:y1, x0:x1] |= grown > 0
        found += 1
    return _up(out, h, w), found


def detect_folds(pixels: np.ndarray, noise_sigma: float = 0.0) -> tuple[np.ndarray, int]:
    """(H x W bool mask of fold lines, number of folds)."""
    bright, dark, n = detect_folds_by_polarity(pixels, noise_sigma)
    return bright | dark, n


def detect_folds_by_polarity(pixels: np.ndarray, noise_sigma: float = 0.0
                             ) -> tuple[np.ndarray, np.ndarray, int]:
    """(bright-fold mask, dark-fold mask, number of folds), H x W bool each."""
    import cv2

    h, w = pixels.shape[:2]
    if max(h, w) < FOLD_MIN_SIDE:
        return np.zeros((h, w), bool), np.zeros((h, w), bool), 0
    rgb, _ = _small(pixels)
    sh, sw = rgb.shape[:2]
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))
    masks = []
    found = 0
    floor = max(FOLD_MIN, 2.5 * noise_sigma)
    span = FOLD_SPAN * min(sh, sw)
    for img in (luma, 255.0 - luma):
        out = np.zeros((sh, sw), bool)
        masks.append(out)
        th = cv2.morphologyEx(img, cv2.MORPH_TOPHAT, se)
        binary = (th > floor).astype(np.uint8) * 255
        lines = cv2.HoughLinesP(binary, 1, np.pi / 360, threshold=int(span * 0.4),
                                minLineLength=int(span), maxLineGap=int(0.04 * max(sh, sw)))
        if lines is None:
            continue
        for x1, y1, x2, y2 in lines.reshape(-1, 4)[:50].astype(float):  # (N,1,4) or (N,4)
            if _is_frame(x1, y1, x2, y2, sw, sh):
                continue
            length = float(np.hypot(x2 - x1, y2 - y1))
            t = np.linspace(0, 1, max(2, int(length)))
            xs, ys = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
            nx, ny = -(y2 - y1) / length, (x2 - x1) / length
            on = _sample(th, xs, ys)
            side = np.maximum(_sample(th, xs + 6 * nx, ys + 6 * ny),
                              _sample(th, xs - 6 * nx, ys - 6 * ny))
            if (on > floor).mean() < FOLD_COVER or not floor <= np.median(on) <= FOLD_MAX:
                continue  # (a stronger line is a scratch: the scratch detector's job)
            # a fold runs from edge to edge: the whole chord through the image must respond
            cx, cy = _chord(x1, y1, x2, y2, sw, sh)
            if (_sample(th, cx, cy) > floor).mean() < FOLD_CHORD:
                continue
            if np.median(side) > 0.5 * np.median(on):  # texture around: not a lone ridge
                continue
            band = np.zeros((sh, sw), np.uint8)
            cv2.line(band, (int(x1), int(y1)), (int(x2), int(y2)), 1, 5)
            out |= (band > 0) & (th > 0.5 * floor)
            found += 1
    bright, dark = (_up(cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0, h, w)
                    for m in masks)
    return bright, dark, found


def flatten_folds(pixels: np.ndarray, bright: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """Remove faint folds by their ridge only: on the fold pixels, each channel is replaced by
    its grey opening (bright folds) or closing (dark folds) with a disc wider than the fold, so
    the thin ridge goes and the picture under it (edges it crosses included) stays. Telea would
    smear every edge the fold crosses."""
    import cv2

    out = pixels.copy()
    h, w = pixels.shape[:2]
    d = max(11, int(round(11 * max(h, w) / WORK_SIDE)) | 1)
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
    for sel, op in ((bright, cv2.MORPH_OPEN), (dark, cv2.MORPH_CLOSE)):
        if not sel.any():
            continue
        ys, xs = np.nonzero(sel)
        # one crop around all fold pixels of this polarity, margin for the structuring element
        y0, y1 = max(0, ys.min() - d), min(h, ys.max() + d + 1)
        x0, x1 = max(0, xs.min() - d), min(w, xs.max() + d + 1)
        crop = np.ascontiguousarray(out[y0:y1, x0:x1])
        flat = np.dstack([cv2.morphologyEx(np.ascontiguousarray(crop[..., c]), op, se)
                          for c in range(crop.shape[2])])
        m = sel[y0:y1, x0:x1]
        crop[m] = flat[m]
        out[y0:y1, x0:x1] = crop
    return out


def _chord(x1: float, y1: float, x2: float, y2: float, w: int, h: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Points (1 px apart) of the segment's line extended across the whole image."""
    dx, dy = x2 - x1, y2 - y1
    n = float(np.hypot(dx, dy)) or 1.0
    t = np.arange(-2.0 * max(w, h), 2.0 * max(w, h))
    xs, ys = x1 + t * dx / n, y1 + t * dy / n
    keep = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    return xs[keep], ys[keep]


def _sample(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    h, w = img.shape
    xi = np.clip(np.rint(xs).astype(int), 0, w - 1)
    yi = np.clip(np.rint(ys).astype(int), 0, h - 1)
    return img[yi, xi]


def _is_frame(x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> bool:
    """A line parallel to a border and close to it: a print's frame, not damage."""
    ang = np.arctan2(abs(y2 - y1), abs(x2 - x1))
    if ang < FRAME_ANGLE:  # horizontal
        y = 0.5 * (y1 + y2)
        return y < FRAME_MARGIN * h or y > (1 - FRAME_MARGIN) * h
    if ang > np.pi / 2 - FRAME_ANGLE:  # vertical
        x = 0.5 * (x1 + x2)
        return x < FRAME_MARGIN * w or x > (1 - FRAME_MARGIN) * w
    return False


def drop_frame_lines(mask: np.ndarray, margin: float = FRAME_MARGIN) -> np.ndarray:
    """``mask`` without straight lines parallel to a border and close to it (a print's frame
    line, the edge of the scan): content, not damage. In each border band (``margin`` of the
    side), what survives an opening with a line an eighth of the side long, parallel to that
    border, is a frame line; it is removed with a 1 px rim."""
    import cv2

    h, w = mask.shape
    m8 = mask.astype(np.uint8)
    frame = np.zeros_like(m8)
    by, bx = max(1, int(margin * h)), max(1, int(margin * w))
    horiz = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, w // 8), 1))
    vert = cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(3, h // 8)))
    gap_h = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, w // 32), 1))
    gap_v = cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(3, h // 32)))
    for rows, cols, k, gap in ((slice(0, by), slice(None), horiz, gap_h),
                               (slice(h - by, h), slice(None), horiz, gap_h),
                               (slice(None), slice(0, bx), vert, gap_v),
                               (slice(None), slice(w - bx, w), vert, gap_v)):
        band = np.ascontiguousarray(m8[rows, cols])
        if band.any():
            # short gaps (where the line crosses something as light as itself) are bridged
            line = cv2.morphologyEx(cv2.morphologyEx(band, cv2.MORPH_CLOSE, gap),
                                    cv2.MORPH_OPEN, k)
            frame[rows, cols] |= line & band
    if not frame.any():
        return mask
    # pieces of the same line the opening missed (corners, short gaps): everything in the
    # border bands connected to a frame line goes with it
    bands = np.zeros_like(m8)
    bands[:by] = bands[h - by:] = 1
    bands[:, :bx] = bands[:, w - bx:] = 1
    n, labels = cv2.connectedComponents(m8 & bands, connectivity=8)
    hit = np.zeros(n, bool)
    hit[np.unique(labels[cv2.dilate(frame, np.ones((3, 3), np.uint8)) > 0])] = True
    hit[0] = False
    frame |= hit[labels].astype(np.uint8)
    return mask & ~(cv2.dilate(frame, np.ones((3, 3), np.uint8)) > 0)
