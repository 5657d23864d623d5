"""Paste restored faces back: warp only each face's region, soft masks, blend in float32.

The reference pipelines warp every face over the whole canvas in float64 (several full-size
buffers per face). Here each face is warped into the axis-aligned box its crop covers in the
target, and the blend touches only that box, so cost scales with face area, not image area.
The ParseNet mask is made in crop space and warped; the feathered square is made in the target,
so it stops at the crop's edges, not at the image's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from restora.io.image import is_grayscale  # noqa: F401 - re-exported
from restora.models.parsing import PARSE_FACE_CLASSES, parse_to_mask  # noqa: F401 - re-exported
from restora.pipeline.align import compose

#: Luma weights (Rec. 601, as OpenCV's RGB2GRAY) used to keep grayscale photos grayscale.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class PasteFace:
    """One restored face ready to paste: crop in [0, 1], its soft mask, and crop -> target matrix.

    ``mask`` is a soft mask in crop space (the ParseNet face mask) or None. ``square`` adds
    facelib's feathered square, built in the target (see :func:`square_in_target`); the face is
    blended with min(square, mask), the square alone without a mask, or the mask alone when
    ``square`` is False (GFPGAN's reference rule).
    """

    face: np.ndarray  # n x n x 3 float32 in [0, 1]
    mask: np.ndarray | None  # n x n float32 in [0, 1], crop space
    matrix: np.ndarray  # 2 x 3 float64, crop pixel indices -> target pixel indices
    square: bool = True


#: Rows of a face's box blended at a time (bounds paste memory whatever the face's size).
PASTE_STRIP = 128

#: Above this feather width (target pixels) the square is computed on a grid width / 16 coarser:
#: at 4x (160 px feathers) that is a quarter of the cost, within 7 % of the exact mask.
SQUARE_FINE_EDGE = 16


def square_in_target(matrix: np.ndarray, size: int, box: tuple[int, int, int, int],
                     rim: int = 2) -> np.ndarray:
    """The square mask over the whole ``box`` (see :func:`_square_source`)."""
    m, to_coarse = _square_source(matrix, size, box, rim)
    if to_coarse is None:
        return m
    return _square_rows(m, to_coarse, box[2] - box[0], 0, box[3] - box[1])


def _square_rows(coarse: np.ndarray, to_coarse: np.ndarray, width: int, r0: int, r1: int
                 ) -> np.ndarray:
    """Rows ``r0:r1`` of the box of a coarse-grid square, interpolated up to box pixels."""
    import cv2

    local = np.asarray(to_coarse, np.float64).copy()
    local[:, 2] += local[:, 1] * r0  # box row r0 + r -> strip row r
    return cv2.warpAffine(coarse, local, (width, r1 - r0),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _square_source(matrix: np.ndarray, size: int, box: tuple[int, int, int, int],
                   rim: int = 2) -> tuple[np.ndarray, np.ndarray | None]:
    """facelib's soft square mask of a ``size`` crop, computed in the target inside ``box``.

    The crop's footprint (a bilinear warp of ones) is eroded by ``rim`` pixels (the resampling
    rim), then by ``2 * w`` with ``w = int(sqrt(area)) // 20`` and blurred with a ``2 * w + 1``
    kernel. Done in the target, where the crop overhangs the image edge nothing is eroded (the
    image edge is not a face edge), so the restored face reaches the edge as in the reference;
    built in crop space it left a frame of original pixels there. ``box`` is the clipped
    footprint (x0, y0, x1, y1); rows and columns of the box inside the image beyond the crop
    are zero, so eroding and blurring the box alone equals doing it on the whole canvas.

    Returns (mask, None) with the mask at box size, or, for large faces, (coarse mask, box ->
    coarse matrix) that :func:`_square_rows` interpolates a strip of rows at a time.
    """
    import cv2

    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    local = np.asarray(matrix, np.float64).copy()
    local[0, 2] -= x0
    local[1, 2] -= y0
    scale = float(np.sqrt(abs(np.linalg.det(local[:, :2]))))
    step = max(1, int(size * scale / 20.0) // SQUARE_FINE_EDGE)  # grid step (1 = exact)
    # the coarse grid covers the box exactly (its edges are the image edges where clipped):
    # coarse index j covers box pixels [j * fx, (j + 1) * fx)
    cw, ch = max(1, round(width / step)), max(1, round(height / step))
    fx, fy = width / cw, height / ch
    to_coarse = np.array([[1.0 / fx, 0.0, 0.5 / fx - 0.5], [0.0, 1.0 / fy, 0.5 / fy - 0.5]])
    ones = np.ones((size, size), np.float32)
    m = cv2.warpAffine(ones, compose(to_coarse, local), (cw, ch), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    if step == 1:
        if rim > 1:  # erode's default border leaves the image edge alone, as on the full canvas
            m = cv2.erode(m, np.ones((rim, rim), np.uint8))
        edge = int(float(m.sum()) ** 0.5) // 20
        if edge > 0:
            m = cv2.erode(m, np.ones((2 * edge, 2 * edge), np.uint8))
            m = cv2.GaussianBlur(m, (2 * edge + 1, 2 * edge + 1), 0)
        return m, None
    # Large faces (upscaled canvases): the same rule on a grid ``step`` times coarser. The
    # footprint is made binary first, so erosion moves its edge by whole coarse pixels rather
    # than spreading the bilinear rim.
    m = (m >= 0.5).astype(np.float32)
    edge = int((float(m.sum()) * fx * fy) ** 0.5) // 20
    kx, ky = (max(1, int(round((rim + 2 * edge) / g))) for g in (fx, fy))
    m = cv2.erode(m, np.ones((ky, kx), np.uint8))
    # OpenCV's sigma rule follows the kernel size, so scaling the size scales sigma
    kx, ky = (2 * max(1, int(round(edge / g))) + 1 for g in (fx, fy))
    m = cv2.GaussianBlur(m, (kx, ky), 0)
    return m, to_coarse


def to_luminance(face: np.ndarray) -> np.ndarray:
    """Replace RGB by its luma in all three channels (for grayscale photos)."""
    y = face @ LUMA
    return np.repeat(y[..., None], 3, axis=2)


@dataclass(frozen=True)
class PhotoTone:
    """How restored faces are coloured to belong in a black-and-white photo.

    Face networks answer in colour whatever they are given. ``kind`` is ``"gray"`` when every
    pixel has R == G == B (faces become their luma, so the output stays exactly gray) or
    ``"toned"`` for any other monochrome photo: a toned or yellowed print, or a gray scan or
    JPEG whose channels differ a little (faces keep their lightness and take the photo's tint at
    that lightness, :class:`~restora.pipeline.photo.mono.ToneCurve`).
    """

    kind: str
    apply: Callable[[np.ndarray], np.ndarray]  # float RGB face in 0..1 -> the same, toned


def hidden(alpha: np.ndarray | None) -> np.ndarray | None:
    """H x W bool, True where ``alpha`` is 0, or None where no pixel is fully transparent.

    The colour under such pixels is whatever an editor left there (often the erased colour, or
    noise), never seen: tone and monochrome tests leave it out."""
    if alpha is None:
        return None
    out = alpha == 0
    return out if out.any() else None


def fill_hidden(pixels: np.ndarray, unseen: np.ndarray | None) -> np.ndarray:
    """``pixels`` with the ``unseen`` ones (see :func:`hidden`) replaced by a smooth fill from
    the shown ones (push-pull: averages of the shown pixels over ever coarser cells, brought
    back down bilinearly), so what analyses or networks read around them no longer depends on
    the colour an editor left there. The same array when nothing is hidden; zeros when
    everything is. A new array otherwise, of the same dtype."""
    import cv2

    if unseen is None or not unseen.any():
        return pixels
    if unseen.all():
        return np.zeros_like(pixels)

    def half(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, ((a.shape[1] + 1) // 2, (a.shape[0] + 1) // 2),
                          interpolation=cv2.INTER_AREA)

    # the first level from the integers (hidden ones zeroed): no full-size float copy
    value = half(np.where(unseen[..., None], 0, pixels)).astype(np.float32)
    weight = half(np.where(unseen, 0, 255).astype(np.uint8)).astype(np.float32) / 255.0
    levels = [(value, weight)]
    while weight.min() == 0 and max(weight.shape) > 1:
        value, weight = half(value), half(weight)
        levels.append((value, weight))
    est = value / np.maximum(weight, 1e-12)[..., None]
    for value, weight in reversed(levels[:-1]):
        up = cv2.resize(est, (weight.shape[1], weight.shape[0]), interpolation=cv2.INTER_LINEAR)
        est = value + (1.0 - weight)[..., None] * up
    top = 65535 if pixels.dtype == np.uint16 else 255
    coarse = np.clip(np.rint(est), 0, top).astype(pixels.dtype)
    up = cv2.resize(coarse, (pixels.shape[1], pixels.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.where(unseen[..., None], up, pixels)


def photo_tone(pixels: np.ndarray, alpha: np.ndarray | None = None) -> PhotoTone | None:
    """The tone faces must take in ``pixels`` (uint8/uint16 RGB), judged on the pixels
    ``alpha`` shows (see :func:`hidden`); None for a colour photo."""
    from restora.pipeline.photo.mono import ToneCurve, detect_monochrome

    unseen = hidden(alpha)
    if is_grayscale(pixels if unseen is None else pixels[~unseen]):
        return PhotoTone("gray", to_luminance)
    # the statistics are taken at 512 px; a strided view first spares area-averaging 24 MP
    step = max(1, max(pixels.shape[:2]) // 2048)
    sample = pixels[::step, ::step]
    exclude = None if unseen is None else unseen[::step, ::step]
    if not detect_monochrome(sample, exclude).is_monochrome:
        return None
    return PhotoTone("toned", ToneCurve.of(sample, exclude).apply)


def _footprint(matrix: np.ndarray, size: int, height: int, width: int
               ) -> tuple[int, int, int, int] | None:
    """Axis-aligned target box (x0, y0, x1, y1) the crop square covers, clipped; None if empty.

    The box reaches one crop pixel beyond the crop's edges (crop indices -1 and ``size``), where
    a bilinear warp of the crop is exactly zero, plus a pixel of margin.
    """
    corners = np.array([[-1.0, -1.0, 1], [size, -1.0, 1], [-1.0, size, 1], [size, size, 1]],
                       np.float64)
    pts = corners @ np.asarray(matrix, np.float64).T
    x0 = max(0, int(np.floor(pts[:, 0].min())) - 1)
    y0 = max(0, int(np.floor(pts[:, 1].min())) - 1)
    x1 = min(width, int(np.ceil(pts[:, 0].max())) + 2)
    y1 = min(height, int(np.ceil(pts[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _shrink_for_warp(face: PasteFace) -> PasteFace:
    """Pre-shrink a crop that lands much smaller in the target (area filter, no aliasing).

    A warp that minifies by more than 2x point-samples the crop and aliases the restored detail
    (the reference's moire on small faces); resizing first with INTER_AREA to twice the target
    size leaves the warp a gentle 2x reduction. Faces at 0.5x or larger are warped directly.
    """
    import cv2

    n = face.face.shape[0]
    lin = np.asarray(face.matrix, np.float64)[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(lin))))
    if scale >= 0.5:
        return face
    m = max(8, int(round(2.0 * n * scale)))
    f = m / n
    small = cv2.resize(face.face, (m, m), interpolation=cv2.INTER_AREA)
    mask = None if face.mask is None else cv2.resize(face.mask, (m, m), interpolation=cv2.INTER_AREA)
    # resized index J sits at crop index (J + 0.5) / f - 0.5
    back = np.array([[1.0 / f, 0.0, 0.5 / f - 0.5], [0.0, 1.0 / f, 0.5 / f - 0.5]])
    return PasteFace(face=small, mask=mask, matrix=compose(face.matrix, back), square=face.square)


def paste_faces(target: np.ndarray, faces: Sequence[PasteFace], strength: float = 1.0, *,
                upscale: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
    """Blend ``faces`` into a copy of ``target`` (H x W x 3 uint8/uint16) and return it; with
    ``out`` (``target`` itself included) into that array instead, so a large upscaled canvas
    is never copied.

    Per face: out = orig + strength * mask * (face - orig), in float32 on the target's own range
    (16-bit data stays 16-bit), only inside the face's footprint. Faces are pasted in order, so a
    later (overlapping) face blends over an earlier one. ``upscale`` (target pixels per input
    pixel) sets the square mask's rim erosion, ``2 * upscale`` pixels as facelib.
    """
    import cv2

    if out is None:
        out = target.copy()
    elif out is not target:
        out[...] = target
    if strength <= 0.0 or not faces:
        return out
    top = 65535.0 if target.dtype == np.uint16 else 255.0
    height, width = target.shape[:2]
    rim = max(1, int(2 * upscale))
    for item in faces:
        if item.mask is None and not item.square:
            raise ValueError("a face needs a mask, the square rule, or both")
        item = _shrink_for_warp(item)
        n = item.face.shape[0]
        box = _footprint(item.matrix, n, height, width)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        sq_src, to_coarse = (_square_source(item.matrix, n, box, rim) if item.square
                             else (None, None))
        # A strip of rows at a time: a face pasted at 4x can cover thousands of pixels a side,
        # and whole-box float buffers (warped face, masks, blend temporaries) would cost GBs.
        for r0 in range(0, y1 - y0, PASTE_STRIP):
            r1 = min(y1 - y0, r0 + PASTE_STRIP)
            local = np.asarray(item.matrix, np.float64).copy()
            local[0, 2] -= x0
            local[1, 2] -= y0 + r0
            size = (x1 - x0, r1 - r0)
            warped = cv2.warpAffine(item.face, local, size, flags=cv2.INTER_CUBIC,
                                    borderMode=cv2.BORDER_REPLICATE)
            alpha = None
            if item.mask is not None:
                alpha = cv2.warpAffine(item.mask, local, size, flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
            if sq_src is not None:
                square = (sq_src[r0:r1] if to_coarse is None
                          else _square_rows(sq_src, to_coarse, x1 - x0, r0, r1))
                alpha = square if alpha is None else np.minimum(alpha, square, out=alpha)
            assert alpha is not None
            alpha *= np.float32(strength)
            view = out[y0 + r0:y0 + r1, x0:x1]
            roi = view.astype(np.float32)  # only a strip of the face's box is ever float
            warped *= np.float32(top)
            warped -= roi
            warped *= alpha[..., None]
            roi += warped
            np.clip(np.rint(roi, out=roi), 0.0, top, out=roi)
            view[...] = roi.astype(target.dtype)
    return out
