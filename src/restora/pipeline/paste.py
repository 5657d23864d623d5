"""Paste restored faces back: soft masks in crop space, warp only each face's region, blend in float32.

The reference pipelines warp every face over the whole canvas in float64 (several full-size
buffers per face). Here each face is warped into the axis-aligned box its crop covers in the
target, and the blend touches only that box, so cost scales with face area, not image area.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from restora.pipeline.align import compose

#: facelib's ParseNet class -> face-mask table: 0 background, 14 neck, 16 cloth, 17 hair and
#: 18 hat are outside the face; every other class (skin, brows, eyes, ears, nose, mouth, ...) is in.
PARSE_FACE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)

#: Luma weights (Rec. 601, as OpenCV's RGB2GRAY) used to keep grayscale photos grayscale.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class PasteFace:
    """One restored face ready to paste: crop in [0, 1], its mask, and crop -> target matrix."""

    face: np.ndarray  # n x n x 3 float32 in [0, 1]
    mask: np.ndarray  # n x n float32 in [0, 1]
    matrix: np.ndarray  # 2 x 3 float64, crop pixel indices -> target pixel indices


def square_mask(size: int) -> np.ndarray:
    """Eroded, feathered square in crop space (facelib's soft mask, computed before the warp).

    facelib erodes the warped mask by ``sqrt(face area) / 20`` target pixels and blurs it with a
    kernel twice that; in crop pixels that is ``size / 20`` whatever the face's size, so the mask
    depends only on the crop size and can be built once per call.
    """
    import cv2

    edge = max(1, size // 20)
    mask = np.zeros((size, size), np.float32)
    inner = edge + 1  # +1: facelib's first 2 px erosion that hides the bilinear rim
    mask[inner:size - inner, inner:size - inner] = 1.0
    return cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0)


def parse_to_mask(classes: np.ndarray, size: int) -> np.ndarray:
    """Soft face mask from a ParseNet argmax map (blurred twice, border cleared), at ``size``.

    Blur and border widths follow facelib at 512 (101 px kernel, sigma 11, 10 px border) and scale
    with the parsing resolution.
    """
    import cv2

    res = classes.shape[0]
    k = res / 512.0
    mask = np.isin(classes, PARSE_FACE_CLASSES).astype(np.float32)
    ksize = max(3, int(round(101 * k)) | 1)
    sigma = 11.0 * k
    mask = cv2.GaussianBlur(mask, (ksize, ksize), sigma)
    mask = cv2.GaussianBlur(mask, (ksize, ksize), sigma)
    border = max(1, int(round(10 * k)))
    mask[:border] = 0.0
    mask[-border:] = 0.0
    mask[:, :border] = 0.0
    mask[:, -border:] = 0.0
    if res != size:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    return mask


def to_luminance(face: np.ndarray) -> np.ndarray:
    """Replace RGB by its luma in all three channels (for grayscale photos)."""
    y = face @ LUMA
    return np.repeat(y[..., None], 3, axis=2)


def is_grayscale(pixels: np.ndarray) -> bool:
    """True when every pixel has R == G == B."""
    return bool(np.array_equal(pixels[..., 0], pixels[..., 1])
                and np.array_equal(pixels[..., 1], pixels[..., 2]))


def _footprint(matrix: np.ndarray, size: int, height: int, width: int
               ) -> tuple[int, int, int, int] | None:
    """Axis-aligned target box (x0, y0, x1, y1) the crop square covers, clipped; None if empty."""
    corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [-0.5, size - 0.5, 1],
                        [size - 0.5, size - 0.5, 1]], np.float64)
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
    mask = cv2.resize(face.mask, (m, m), interpolation=cv2.INTER_AREA)
    # resized index J sits at crop index (J + 0.5) / f - 0.5
    back = np.array([[1.0 / f, 0.0, 0.5 / f - 0.5], [0.0, 1.0 / f, 0.5 / f - 0.5]])
    return PasteFace(face=small, mask=mask, matrix=compose(face.matrix, back))


def paste_faces(target: np.ndarray, faces: Sequence[PasteFace], strength: float = 1.0
                ) -> np.ndarray:
    """Blend ``faces`` into a copy of ``target`` (H x W x 3 uint8/uint16) and return it.

    Per face: out = orig + strength * mask * (face - orig), in float32 on the target's own range
    (16-bit data stays 16-bit), only inside the face's footprint. Faces are pasted in order, so a
    later (overlapping) face blends over an earlier one.
    """
    import cv2

    out = target.copy()
    if strength <= 0.0 or not faces:
        return out
    top = 65535.0 if target.dtype == np.uint16 else 255.0
    height, width = target.shape[:2]
    for item in faces:
        item = _shrink_for_warp(item)
        box = _footprint(item.matrix, item.face.shape[0], height, width)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        local = np.asarray(item.matrix, np.float64).copy()
        local[0, 2] -= x0
        local[1, 2] -= y0
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(item.face, local, size, flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(item.mask, local, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        alpha *= np.float32(strength)
        roi = out[y0:y1, x0:x1].astype(np.float32)
        roi += alpha[..., None] * (warped * np.float32(top) - roi)
        np.clip(np.rint(roi, out=roi), 0.0, top, out=roi)
        out[y0:y1, x0:x1] = roi.astype(target.dtype)
    return out
