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
                                    square_mask, to_luminance)

PHOTOS = ["00.jpg", "01.jpg", "02.png", "03.jpg", "04.jpg", "05.jpg", "06.png"]


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
        items.append(PasteFace(face=a.crop.astype(np.float32) / top, mask=square_mask(size), matrix=back))
    return items


def inner(diff: np.ndarray) -> np.ndarray:
    """Leave out the 1 px image rim, where the crop mixes in the grey border colour."""
    return diff[1:-1, 1:-1]


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
    out = paste_faces(big, items)
    assert inner(np.abs(out.astype(np.int32) - big).max(axis=2)).max() <= 3


def test_masks() -> None:
    sq = square_mask(512)
    assert sq.dtype == np.float32 and sq.shape == (512, 512)
    assert sq[256, 256] == pytest.approx(1.0) and sq[0].max() == 0.0 and sq[:, -1].max() == 0.0
    assert np.all(np.diff(sq[256, :256]) >= -1e-6)  # rises monotonically towards the centre
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
