"""FFHQ 5-point face alignment: a similarity transform onto the FFHQ template, then a warp.

This is facelib's ``FaceRestoreHelper`` alignment (crop 512, crop ratio 1, 5-point template), the
one GFPGAN v1.4 and CodeFormer were trained on: ``cv2.estimateAffinePartial2D`` with LMEDS, then
``cv2.warpAffine`` with bilinear interpolation and a constant grey border. On uint8 input the crops
equal the reference crops exactly; networks with a smaller input (the tiny test GFPGAN) get the
template scaled to their size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: FFHQ landmarks in 512 x 512 crop pixels: image-left eye, image-right eye, nose tip,
#: image-left mouth corner, image-right mouth corner.
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)

#: Border fill of the crop outside the image, RGB (the reference's BGR (135, 133, 132)).
BORDER_RGB = (132, 133, 135)


@dataclass(frozen=True)
class AlignedFace:
    """A face crop and the 2x3 float64 matrix mapping input pixels to crop pixels."""

    crop: np.ndarray  # size x size x 3, the input's dtype
    matrix: np.ndarray  # 2 x 3 float64, input -> crop

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])


def face_template(size: int) -> np.ndarray:
    """The FFHQ template for a ``size`` x ``size`` crop."""
    return FFHQ_TEMPLATE_512 * np.float32(size / 512.0)


def similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 4-DoF similarity (Umeyama without reflection) mapping ``src`` onto ``dst``."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = float((s ** 2).sum())
    if var <= 0.0:
        raise ValueError("landmarks are degenerate (all points coincide)")
    a = float((s * d).sum()) / var  # scale * cos
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / var  # scale * sin
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def estimate_matrix(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """The 2x3 input->crop similarity for five landmarks, as the reference computes it.

    LMEDS is what facelib uses; on its rare failure (degenerate points) we fall back to the
    least-squares fit, which the conformance data shows agrees to 1e-4 crop pixels.
    """
    import cv2

    src = np.asarray(landmarks, np.float32).reshape(5, 2)
    dst = face_template(size)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():
        matrix = similarity_lstsq(src, dst)
    return matrix.astype(np.float64)


def warp_to_crop(pixels: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp RGB ``pixels`` (uint8/uint16/float32) into a ``size`` square crop with ``matrix``."""
    import cv2

    if pixels.dtype == np.uint16:
        border = tuple(float(v) * 257.0 for v in BORDER_RGB)
    elif pixels.dtype == np.uint8:
        border = tuple(float(v) for v in BORDER_RGB)
    else:
        border = tuple(v / 255.0 for v in BORDER_RGB)
    return cv2.warpAffine(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def align_face(pixels: np.ndarray, landmarks: np.ndarray, size: int = 512) -> AlignedFace:
    """Align one face: estimate the similarity, warp the crop.

    Faces more than twice the crop's size in the image (eyes over 250 px apart for a 512 crop)
    are first area-shrunk, around the face, to the crop's resolution, so the bilinear warp does
    not alias (the reference point-samples them: a 1 px checkerboard becomes moire with a
    standard deviation of 42 grey levels instead of 2). Smaller faces, the conformance case,
    are warped exactly as the reference.
    """
    matrix = estimate_matrix(landmarks, size)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale >= 0.5:
        return AlignedFace(crop=warp_to_crop(pixels, matrix, size), matrix=matrix)
    small, to_small = _shrink_around(pixels, matrix, size, scale)
    return AlignedFace(crop=warp_to_crop(small, compose(matrix, invert(to_small)), size),
                       matrix=matrix)


def _shrink_around(pixels: np.ndarray, matrix: np.ndarray, size: int, factor: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The image region the crop covers, area-resized by ``factor``; returns (region, map from
    input pixel indices to region pixel indices)."""
    import cv2

    h, w = pixels.shape[:2]
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    back = invert(matrix)
    pts = corners @ back[:, :2].T + back[:, 2]
    x0 = int(np.clip(np.floor(pts[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(pts[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 3, x0 + 1, w))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 3, y0 + 1, h))
    region = pixels[y0:y1, x0:x1]
    nw = max(1, int(round((x1 - x0) * factor)))
    nh = max(1, int(round((y1 - y0) * factor)))
    small = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
    fx, fy = nw / (x1 - x0), nh / (y1 - y0)
    # input index x -> region index x - x0 -> resized index (x - x0 + 0.5) * fx - 0.5
    to_small = np.array([[fx, 0.0, (0.5 - x0) * fx - 0.5], [0.0, fy, (0.5 - y0) * fy - 0.5]])
    return small, to_small


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (crop -> input)."""
    import cv2

    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def to_3x3(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])


def scale_map(factor: float) -> np.ndarray:
    """2x3 map from pixel indices of an image to those of the same image resized by ``factor``.

    Pixel centres sit at integer indices, so index i covers [i - 0.5, i + 0.5] and maps to
    ``factor * i + (factor - 1) / 2``. (facelib adds ``0.5 * factor`` instead, which shifts every
    upscaled paste by half an output pixel.)
    """
    off = (factor - 1.0) / 2.0
    return np.array([[factor, 0.0, off], [0.0, factor, off]], dtype=np.float64)


def compose(*matrices: np.ndarray) -> np.ndarray:
    """``compose(a, b)`` applies ``b`` first, then ``a`` (2x3 in, 2x3 out)."""
    out = np.eye(3)
    for m in matrices:
        out = out @ to_3x3(m)
    return out[:2]


def scale_of(matrix: np.ndarray) -> float:
    """How many target pixels one source pixel spans under a 2 x 3 affine ``matrix`` (the
    geometric mean of its two axes)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))
