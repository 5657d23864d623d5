"""Paste-back geometry and blending: an identity restorer must give the photo back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import shared_path
from restora.models.arch.yunet import YuNet
from restora.pipeline.align import align_face, compose, invert, scale_map
from restora.pipeline.detect import detect_faces
from restora.pipeline.paste import (PasteFace, is_grayscale, parse_to_mask, paste_faces,
                                    square_in_target, to_luminance)

PHOTOS = ["00.jpg", "01.jpg", "02.png", "03.jpg", "04.jpg", "05.jpg", "06.png"]
FACES = ["0143.png", "0240.png", "0342.png", "0368.png", "Solvay_conference_1927_0018.png"]


@pytest.fixture(scope="module")
def yunet() -> YuNet:
    return YuNet(shared_path("models", "face_detection_yunet_2026may.onnx"))


def photo(name: str, blur: float = 0.0) -> np.ndarray:
    bgr = cv2.imread(str(shared_path("testdata", "photos", name)), cv2.IMREAD_COLOR)
    if blur:
        # smooth enough that bilinear-in, bicubic-out resampling is exact to a grey level, so
        # what remains measures geometry (a 0.1 px misregistration shows up)
        bgr = cv2.GaussianBlur(bgr, (0, 0), blur)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def identity_items(rgb: np.ndarray, yunet: YuNet, size: int = 512, shift: float = 0.0
                   ) -> list[PasteFace]:
    items = []
    top = 65535.0 if rgb.dtype == np.uint16 else 255.0
    for d in detect_faces(yunet, rgb, conf_threshold=0.6):
        a = align_face(rgb, d.landmarks, size)
        back = invert(a.matrix)
        back[0, 2] += shift
        items.append(PasteFace(face=a.crop.astype(np.float32) / top, mask=None, matrix=back))
    return items


def inner(diff: np.ndarray) -> np.ndarray:
    """Leave out a 3 px image rim: faces are pasted up to the image edge (as the reference), and
    there the bicubic paste of the crop mixes in the crop's grey fill beyond the image."""
    return diff[3:-3, 3:-3]


@pytest.mark.parametrize("name", PHOTOS)
def test_identity_restorer_leaves_the_photo_unchanged(name: str, yunet: YuNet) -> None:
    rgb = photo(name, blur=2.0)
    items = identity_items(rgb, yunet)
    assert items
    out = paste_faces(rgb, items)
    diff = np.abs(out.astype(np.int32) - rgb).max(axis=2)
    assert inner(diff).max() <= 2, f"{name}: max {inner(diff).max()} grey levels"


def test_identity_on_an_unsmoothed_photo_is_close_on_average(yunet: YuNet) -> None:
    # 06.png's faces land at 0.75x the crop size: plain bicubic paste, no anti-aliasing
    rgb = photo("06.png")
    out = paste_faces(rgb, identity_items(rgb, yunet))
    diff = np.abs(out.astype(np.int32) - rgb)
    touched = diff.max(axis=2) > 0
    assert diff[touched].mean() < 1.5


def test_small_faces_are_pasted_without_aliasing() -> None:
    """A 1 px checkerboard crop pasted 10x smaller must come out flat grey, not as moire
    (plain point sampling, as the reference's warp, would give random 0/255 pixels)."""
    n = 512
    board = ((np.indices((n, n)).sum(axis=0) % 2).astype(np.float32))[..., None].repeat(3, axis=2)
    matrix = np.array([[0.1, 0.0, 20.0], [0.0, 0.1, 20.0]])
    target = np.full((100, 100, 3), 128, np.uint8)
    mask = np.ones((n, n), np.float32)
    out = paste_faces(target, [PasteFace(face=board, mask=mask, matrix=matrix)])
    face = out[28:64, 28:64].astype(np.float64)
    assert abs(face.mean() - 127.5) < 3 and face.std() < 3


def test_a_quarter_pixel_error_would_be_caught(yunet: YuNet) -> None:
    rgb = photo("02.png", blur=2.0)
    out = paste_faces(rgb, identity_items(rgb, yunet, shift=0.25))
    assert inner(np.abs(out.astype(np.int32) - rgb).max(axis=2)).max() > 2


def test_identity_at_the_tiny_crop_size_and_in_16_bit(yunet: YuNet) -> None:
    rgb = photo("02.png", blur=1.5)
    # 128 px crops hold less detail than these faces (about 130 px wide): smooth more
    smooth = cv2.GaussianBlur(rgb, (0, 0), 3.0)
    out = paste_faces(smooth, identity_items(smooth, yunet, size=128))
    assert inner(np.abs(out.astype(np.int32) - smooth).max(axis=2)).max() <= 3
    rgb16 = rgb.astype(np.uint16) * 257
    out16 = paste_faces(rgb16, identity_items(rgb16, yunet))
    assert out16.dtype == np.uint16
    assert inner(np.abs(out16.astype(np.int64) - rgb16).max(axis=2)).max() <= 2 * 257


def test_only_each_face_region_is_touched(yunet: YuNet) -> None:
    rgb = photo("00.jpg")
    h, w = rgb.shape[:2]
    items = [PasteFace(face=np.zeros_like(i.face), mask=i.mask, matrix=i.matrix)
             for i in identity_items(rgb, yunet)]
    out = paste_faces(rgb, items)
    footprint = np.zeros((h, w), np.uint8)
    for i in items:
        n = i.face.shape[0]
        footprint |= cv2.warpAffine(np.ones((n, n), np.uint8), i.matrix, (w, h),
                                    flags=cv2.INTER_NEAREST)
    footprint = cv2.dilate(footprint, np.ones((5, 5), np.uint8))
    changed = np.any(out != rgb, axis=2)
    assert changed.any()
    assert not (changed & (footprint == 0)).any()
    # faces were blackened where the mask is 1 (the centre of each crop)
    for i in items:
        cx, cy = i.matrix @ np.array([256.0, 280.0, 1.0])
        assert out[int(round(cy)), int(round(cx))].max() <= 2


def test_strength_blends_linearly(yunet: YuNet) -> None:
    rgb = photo("03.jpg")
    items = [PasteFace(face=np.ones_like(i.face), mask=i.mask, matrix=i.matrix)
             for i in identity_items(rgb, yunet)]
    half = paste_faces(rgb, items, strength=0.5)
    cx, cy = (int(round(v)) for v in items[0].matrix @ np.array([256.0, 300.0, 1.0]))
    expected = (rgb[cy, cx].astype(np.float64) + 255.0) / 2.0
    assert np.abs(half[cy, cx] - expected).max() <= 1.0
    assert np.array_equal(paste_faces(rgb, items, strength=0.0), rgb)


def test_upscaled_canvas_geometry(yunet: YuNet) -> None:
    """Pasting into a 2x canvas through scale_map lands where the Lanczos-enlarged photo is."""
    rgb = photo("03.jpg", blur=2.0)
    big = cv2.resize(rgb, (rgb.shape[1] * 2, rgb.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    items = [PasteFace(face=i.face, mask=i.mask, matrix=compose(scale_map(2.0), i.matrix))
             for i in identity_items(rgb, yunet)]
    out = paste_faces(big, items, upscale=2)
    # bicubic in, bicubic out at 2x: a few pixels of the chin reach 4 levels (a 0.25 px error
    # gives 10)
    assert inner(np.abs(out.astype(np.int32) - big).max(axis=2)).max() <= 4


def reference_square(matrix: np.ndarray, n: int, h: int, w: int, upscale: int = 1) -> np.ndarray:
    """facelib's square rule on the whole canvas (the oracle): warp ones, erode the rim and
    2 * (sqrt(area) // 20), blur."""
    inv = cv2.warpAffine(np.ones((n, n), np.float32), matrix, (w, h))
    inv = cv2.erode(inv, np.ones((2 * upscale, 2 * upscale), np.uint8))
    edge = int(inv.sum() ** 0.5) // 20
    inv = cv2.erode(inv, np.ones((2 * edge, 2 * edge), np.uint8))
    return cv2.GaussianBlur(inv, (2 * edge + 1, 2 * edge + 1), 0)


def pasted_alpha(matrix: np.ndarray, n: int, h: int, w: int, upscale: int = 1,
                 mask: np.ndarray | None = None, square: bool = True) -> np.ndarray:
    """The blend weight paste_faces used: a white face pasted onto black, in 16 bits."""
    face = PasteFace(face=np.ones((n, n, 3), np.float32), mask=mask, matrix=matrix, square=square)
    out = paste_faces(np.zeros((h, w, 3), np.uint16), [face], upscale=upscale)
    return out[..., 0] / 65535.0


def face_photo(name: str) -> np.ndarray:
    bgr = cv2.imread(str(shared_path("testdata", "faces", name)), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


@pytest.mark.parametrize("name", FACES)
def test_no_frame_where_the_crop_overhangs_the_image(name: str, yunet: YuNet) -> None:
    """On aligned 512 px faces the crop overhangs the image edges: the restored face must reach
    them (as the reference's full-canvas mask does), not leave a feathered band of original."""
    rgb = face_photo(name)
    h, w = rgb.shape[:2]
    (d,) = detect_faces(yunet, rgb, conf_threshold=0.6)
    back = invert(align_face(rgb, d.landmarks, 512).matrix)
    alpha = pasted_alpha(back, 512, h, w)
    ref = reference_square(back, 512, h, w)
    assert np.abs(alpha - ref).max() < 2e-3
    # image-edge pixels farther than the 2 px rim, the 2 x 25 px erosion and the 25 px blur from
    # every crop edge that lies inside the image are fully restored (the crop-space mask gave
    # 0.06-0.7 there); outside the image counts as inside the crop
    inside = cv2.warpAffine(np.ones((512, 512), np.uint8), back, (w, h), flags=cv2.INTER_NEAREST)
    pad = 200
    inside = cv2.copyMakeBorder(inside, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=1)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5)[pad:-pad, pad:-pad]
    deep = dist > 85
    rim = np.zeros((h, w), bool)
    rim[:3], rim[-3:], rim[:, :3], rim[:, -3:] = True, True, True, True
    assert (deep & rim).sum() > 100
    assert alpha[deep & rim].min() > 0.999


def test_square_on_an_upscaled_canvas_matches_the_reference() -> None:
    """At 4x the square is built on a 5x coarser grid (a quarter of the cost); it stays within
    7 % of the exact rule (a few pixels of a 160 px feather), and the image edge is not eroded."""
    n, s = 512, 4.0
    angle = np.deg2rad(12.0)
    lin = 0.8 * s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.hstack([lin, [[-150.0], [300.0]]])  # overhangs the left and top edges
    h, w = 1700, 1900
    alpha = pasted_alpha(matrix, n, h, w, upscale=4)
    ref = reference_square(matrix, n, h, w, upscale=4)
    assert np.abs(alpha - ref).max() < 0.07 and np.abs(alpha - ref).mean() < 2e-3
    assert alpha[800:1200, 0].min() > 0.999


def test_mask_rules() -> None:
    """min(ParseNet mask, square) by default; the mask alone with square=False (GFPGAN's rule)."""
    n, h, w = 128, 200, 220
    matrix = np.array([[1.0, 0.0, 40.0], [0.0, 1.0, 30.0]])
    sq = square_in_target(matrix, n, (0, 0, w, h))
    assert sq.dtype == np.float32 and sq.shape == (h, w)
    assert sq[30 + 64, 40 + 64] == pytest.approx(1.0) and sq[:31].max() == 0.0
    assert np.all(np.diff(sq[94, 40:104]) >= -1e-6)  # rises monotonically towards the centre
    half = np.full((n, n), 0.5, np.float32)
    both = pasted_alpha(matrix, n, h, w, mask=half)
    alone = pasted_alpha(matrix, n, h, w, mask=half, square=False)
    np.testing.assert_allclose(both, np.minimum(sq, alone), atol=1e-4)
    assert alone[31:157, 41:167].min() == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(ValueError):
        pasted_alpha(matrix, n, h, w, mask=None, square=False)


def test_parse_mask() -> None:
    classes = np.zeros((64, 64), np.int64)
    classes[16:48, 16:48] = 1  # skin
    classes[40:48, 16:48] = 14  # neck: excluded
    m = parse_to_mask(classes, 128)
    assert m.shape == (128, 128) and m.dtype == np.float32
    assert m[50, 64] > 0.5 and m[5, 5] == 0.0 and m[92, 64] < m[50, 64]


def test_grayscale_helpers() -> None:
    face = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    g = to_luminance(face)
    assert is_grayscale(g) and not is_grayscale(face)
    np.testing.assert_allclose(g[..., 0], face @ np.array([0.299, 0.587, 0.114], np.float32), rtol=1e-6)
