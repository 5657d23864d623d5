"""dlib's face-recognition ResNet in torch against dlib itself, on the real aligned face crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from restora.errors import CheckpointError
from restora.models.arch.dlibface import FACE_BOX_512, DlibFaceDescriptor
from restora.models.arch.dlibnet import CHIP_PADDING, CHIP_SIZE, DlibResNet, read_dlib_resnet
from restora.models.registry import package_file

TOL = 1e-4


def model_file(name: str) -> Path:
    path = package_file("face_recognition_models", f"models/{name}")
    assert path is not None, \
        "dlib's models are not installed: run `pip install -e '.[identity]'` (scripts/install.sh does)"
    return path


@pytest.fixture(scope="module")
def dat() -> Path:
    return model_file("dlib_face_recognition_resnet_model_v1.dat")


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """The real aligned crops (RGB) and their mirror images: two faces per photo for dlib."""
    import cv2

    paths = sorted(shared_path("testdata", "faces").glob("*.png"))
    assert len(paths) >= 3
    out = []
    for path in paths:
        rgb = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
        out += [rgb, np.ascontiguousarray(rgb[:, ::-1])]
    return out


@pytest.fixture(scope="module")
def reference(dat: Path, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """dlib's own descriptors (compute_face_descriptor) and its chips, from the same landmarks."""
    import dlib

    predictor = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
    net = dlib.face_recognition_model_v1(str(dat))
    descriptors, chips = [], []
    for crop in crops:
        s = crop.shape[0] / 512.0
        shape = predictor(crop, dlib.rectangle(*(int(round(v * s)) for v in FACE_BOX_512)))
        descriptors.append(np.asarray(net.compute_face_descriptor(crop, shape), np.float32))
        chips.append(dlib.get_face_chip(crop, shape, size=CHIP_SIZE, padding=CHIP_PADDING))
    return np.stack(descriptors), np.stack(chips)


def pairwise(d: np.ndarray) -> np.ndarray:
    return np.linalg.norm(d[:, None] - d[None], axis=-1)


def test_torch_net_equals_dlib(dat: Path, reference: tuple[np.ndarray, np.ndarray]) -> None:
    expected, chips = reference
    assert len(expected) >= 6
    net = DlibResNet.from_dat(dat)
    with torch.inference_mode():
        got = net(torch.from_numpy(chips).permute(0, 3, 1, 2).float()).numpy()
    assert got.shape == (len(chips), 128) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOL
    assert np.abs(pairwise(got) - pairwise(expected)).max() <= TOL
    # the faces differ: the comparison is not between near-constant outputs
    assert pairwise(expected)[np.triu_indices(len(expected), 1)].min() > 0.05


def test_describe_unchanged(dat: Path, crops: list[np.ndarray],
                            reference: tuple[np.ndarray, np.ndarray]) -> None:
    got = DlibFaceDescriptor(dat).describe(crops)
    assert got.shape == (len(crops), 128) and got.dtype == np.float32
    assert np.abs(got - reference[0]).max() <= TOL
    assert np.abs(pairwise(got) - pairwise(reference[0])).max() <= TOL


def test_reader_reads_the_whole_network(dat: Path) -> None:
    weights = read_dlib_resnet(dat)
    assert np.allclose(weights.mean_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    assert len(weights.convs) == len(weights.affines) == 29
    assert weights.convs[0][0].shape == (32, 3, 7, 7)
    assert weights.fc is not None and weights.fc.shape == (256, 128)


@pytest.mark.parametrize("cut", [100, 11_000_000, -1])
def test_truncated_file_refused(dat: Path, tmp_path: Path, cut: int) -> None:
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(dat.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match="ends early"):
        read_dlib_resnet(bad)


def test_trailing_bytes_refused(dat: Path, tmp_path: Path) -> None:
    bad = tmp_path / "longer.dat"
    bad.write_bytes(dat.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="after the network"):
        read_dlib_resnet(bad)


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).bytes(4096),
    b"\x01\x01\x08" + b"\xff" * 8 + b"loss_metric_2",  # a string claiming 2**64 bytes
    b"\x01\x01\x01\x0dloss_metric_2\x01\x01\x02\xff\x7c",  # a float of 2**31999
    b"",
])
def test_garbage_refused(dat: Path, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "garbage.dat"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError):
        read_dlib_resnet(bad)
    with pytest.raises(CheckpointError, match="dlib could not read garbage.dat"):
        DlibFaceDescriptor(bad, shape_predictor=str(model_file(
            "shape_predictor_5_face_landmarks.dat")))


def test_other_layer_version_refused(dat: Path, tmp_path: Path) -> None:
    bad = tmp_path / "other.dat"
    bad.write_bytes(dat.read_bytes().replace(b"con_4", b"con_9", 1))
    with pytest.raises(CheckpointError, match="con version 'con_9'"):
        read_dlib_resnet(bad)
