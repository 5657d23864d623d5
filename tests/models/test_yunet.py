"""YuNet through OpenCV on the real photos: face counts, RetinaFace row layout, landmark order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from restora.errors import CheckpointError
from restora.models.arch.yunet import YuNet

EXPECTED_FACES = {"00.jpg": 4, "01.jpg": 4, "02.png": 4, "03.jpg": 1, "04.jpg": 1, "05.jpg": 1, "06.png": 2}


@pytest.fixture(scope="module")
def yunet() -> YuNet:
    return YuNet(shared_path("models", "face_detection_yunet_2026may.onnx"))


def read_rgb(name: str) -> np.ndarray:
    with Image.open(shared_path("testdata", "photos", name)) as im:
        return np.asarray(im.convert("RGB"))  # 02 and 06 are RGBA: the detector sees RGB only


@pytest.mark.parametrize("photo", sorted(EXPECTED_FACES))
def test_faces_on_real_photos(yunet: YuNet, photo: str) -> None:
    image = read_rgb(photo)
    rows = yunet.detect(image)
    assert rows.dtype == np.float32 and rows.shape == (EXPECTED_FACES[photo], 15)
    assert (rows[:, 4] >= 0.6).all() and (np.diff(rows[:, 4]) <= 0).all()
    height, width = image.shape[:2]
    for row in rows:
        x1, y1, x2, y2 = row[:4]
        assert x1 < x2 and y1 < y2 and x2 > 0 and y2 > 0 and x1 < width and y1 < height
        points = row[5:].reshape(5, 2)
        assert ((points[:, 0] >= x1) & (points[:, 0] <= x2) & (points[:, 1] >= y1) & (points[:, 1] <= y2)).all()
        left_eye, right_eye, nose, left_mouth, right_mouth = points
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
        assert max(left_eye[1], right_eye[1]) < max(left_mouth[1], right_mouth[1])
        assert left_eye[0] < nose[0] < right_eye[0]


def test_score_threshold_override(yunet: YuNet) -> None:
    image = read_rgb("00.jpg")
    default = yunet.detect(image)
    assert len(yunet.detect(image, score_threshold=0.99)) == 0
    # the override is per call: the configured threshold applies again afterwards
    np.testing.assert_array_equal(yunet.detect(image), default)
    assert len(yunet.detect(np.zeros((64, 80, 3), np.uint8))) == 0


def test_behaves_like_a_network(yunet: YuNet) -> None:
    assert yunet.to("cpu") is yunet and yunet.eval() is yunet
    with pytest.raises(ValueError):
        yunet.detect(np.zeros((32, 32), np.uint8))


def test_unreadable_model_is_a_checkpoint_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(CheckpointError) as info:
        YuNet(bad)
    assert info.value.code == "bad_checkpoint"
