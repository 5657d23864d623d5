"""RetinaFace conformance: layouts, the ResNet-50 formula golden, and the real MobileNet-0.25
checkpoints' raw outputs and detections against ``../shared/conformance`` (facelib reference)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import shared_path

from restora.models.arch.retinaface import RetinaFace, nms, prior_boxes

BB1MB = "retinaface_mobilenet0.25.pth"
FACELIBCFG = "retinaface_mobilenet0.25_facelibcfg.pth"
PHOTOS = ("retinaface_photo_02.png", "retinaface_photo_00.png", "retinaface_photo_03.png")
FD1MB_MIN_SIZES = [[10, 20], [32, 64], [128, 256]]


def conformance(name: str) -> Path:
    return shared_path("conformance", name)


def load_mobilenet(checkpoint: str, **kwargs: object) -> RetinaFace:
    # the shared checkpoints hold CUDA tensors
    state = torch.load(conformance(checkpoint), map_location="cpu", weights_only=True)
    net = RetinaFace("mobile0.25", **kwargs)
    net.load_state_dict(state, strict=True)
    return net.eval()


def read_rgb(name: str) -> np.ndarray:
    bgr = cv2.imread(str(conformance(name)), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


@pytest.fixture(scope="module")
def nets() -> dict[str, RetinaFace]:
    return {ckpt: load_mobilenet(ckpt) for ckpt in (BB1MB, FACELIBCFG)}


@pytest.fixture(scope="module")
def detected(nets: dict[str, RetinaFace]) -> Callable[[str, str], np.ndarray]:
    """detect() at the reference defaults, run once per (checkpoint, photo) for the module."""
    cache: dict[tuple[str, str], np.ndarray] = {}

    def run(checkpoint: str, photo: str) -> np.ndarray:
        if (checkpoint, photo) not in cache:
            cache[checkpoint, photo] = nets[checkpoint].detect(read_rgb(photo), conf_threshold=0.8,
                                                               nms_threshold=0.4)
        return cache[checkpoint, photo]

    return run


@pytest.fixture(scope="module")
def detections() -> dict:
    return json.loads(conformance("retinaface_mobilenet0.25.detections.json").read_text())


@pytest.mark.parametrize("manifest, backbone", [("retinaface_mobilenet0.25.keys.json", "mobile0.25"),
                                                ("retinaface_resnet50.keys.json", "resnet50")])
def test_full_size_layout_loads_strictly(manifest: str, backbone: str) -> None:
    spec = json.loads(conformance(manifest).read_text())
    with torch.device("meta"):
        net = RetinaFace(backbone)
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()]
    assert ours == [(k["key"], k["shape"], k["dtype"]) for k in spec["keys"]]
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    state = {k["key"]: torch.empty(k["shape"], dtype=dtypes[k["dtype"]], device="meta") for k in spec["keys"]}
    net.load_state_dict(state, strict=True, assign=True)
    assert sum(v.numel() for k, v in state.items() if v.is_floating_point()) == spec["num_float_elements"]


def _formula_tensor(j: int, key: str, shape: list[int]) -> torch.Tensor:
    """One tensor of the ResNet-50 golden, by the integer-hash rule in the conformance README."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    mask = np.uint64(0xFFFFFFFF)
    x = (np.arange(1, math.prod(shape) + 1, dtype=np.uint64) * np.uint64(0x9E3779B1)
         + np.uint64((j + 1) * 0x85EBCA77)) & mask
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x2C1B3C6D)) & mask
    x ^= x >> np.uint64(12)
    x = (x * np.uint64(0x297A2D39)) & mask
    x ^= x >> np.uint64(15)
    u = x.astype(np.float64) / 2.0**32
    if key.endswith("running_var"):
        v = 0.5 + u
    elif key.endswith("running_mean"):
        v = (u - 0.5) * 0.2
    elif len(shape) == 4:
        v = (u - 0.5) * (2 * math.sqrt(3) * math.sqrt(0.5 / math.prod(shape[1:])))
    elif key.endswith(".weight"):
        v = 1 + (u - 0.5) * 0.2
    else:
        v = (u - 0.5) * 0.2
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def test_resnet50_formula_golden() -> None:
    spec = json.loads(conformance("retinaface_resnet50.keys.json").read_text())
    golden = json.loads(conformance("retinaface_resnet50.formula.json").read_text())
    z = np.load(conformance("retinaface_resnet50.formula.npz"), allow_pickle=False)
    state = {k["key"]: _formula_tensor(j, k["key"], k["shape"]) for j, k in enumerate(spec["keys"])}
    net = RetinaFace("resnet50")
    net.load_state_dict(state, strict=True)
    net.eval()
    # the stored input is exactly the reference pre-processing of the stored crop
    bgr = z["image_bgr_uint8"].astype(np.float32) - np.array([104, 117, 123], np.float32)
    np.testing.assert_array_equal(bgr.transpose(2, 0, 1)[None], z["input"])
    with torch.no_grad():
        loc, conf, landms = net(torch.from_numpy(z["input"]))
    atol = golden["recommended_atol"]
    for name, ours in (("loc", loc), ("conf", conf), ("landms", landms)):
        assert np.abs(ours.numpy() - z[name]).max() <= atol, name
    np.testing.assert_array_equal(net.priors(128, 160).numpy(), z["priors"])


@pytest.mark.parametrize("tag, checkpoint", [("bb1mb", BB1MB), ("facelibcfg", FACELIBCFG)])
def test_mobilenet_raw_outputs(nets: dict[str, RetinaFace], detections: dict, tag: str, checkpoint: str) -> None:
    z = np.load(conformance(f"retinaface_mobilenet0.25.raw_{tag}.npz"), allow_pickle=False)
    atol = detections["raw_outputs"][tag]["recommended_atol"]
    with torch.no_grad():
        loc, conf, landms = nets[checkpoint](torch.from_numpy(z["input"]))
    assert loc.shape == (1, 6396, 4) and conf.shape == (1, 6396, 2) and landms.shape == (1, 6396, 10)
    for name, ours in (("loc", loc), ("conf", conf), ("landms", landms)):
        assert np.abs(ours.numpy() - z[name]).max() <= atol, name
    # odd input size (310 x 491): ceil-sized feature maps, priors in the reference order
    np.testing.assert_array_equal(prior_boxes(310, 491).numpy(), z["priors"])


@pytest.mark.parametrize("checkpoint", [BB1MB, FACELIBCFG])
@pytest.mark.parametrize("photo", PHOTOS)
def test_mobilenet_detections_match_reference(detected: Callable[[str, str], np.ndarray], detections: dict,
                                              checkpoint: str, photo: str) -> None:
    expected = detections["results"][checkpoint][photo]["detect_faces"]
    rows = detected(checkpoint, photo)
    assert rows.dtype == np.float32 and rows.shape == (len(expected), 15)
    for row, ref in zip(rows, expected):  # same order: descending score
        np.testing.assert_allclose(row[:4], ref["box_xyxy"], rtol=0, atol=1e-3)
        assert abs(row[4] - ref["score"]) <= 1e-5
        np.testing.assert_allclose(row[5:].reshape(5, 2), ref["landmarks_xy"], rtol=0, atol=1e-3)


def test_real_faces_in_facelib_configuration(detected: Callable[[str, str], np.ndarray]) -> None:
    assert [len(detected(FACELIBCFG, p)) for p in PHOTOS] == [4, 4, 1]
    for row in detected(FACELIBCFG, "retinaface_photo_02.png"):
        x1, y1, x2, y2 = row[:4]
        points = row[5:].reshape(5, 2)
        assert ((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2)).all()
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # image-left first


def test_face_detector_1mb_configuration() -> None:
    """relu_only + its own anchors turn the biubug6 checkpoint into a working detector."""
    net = load_mobilenet(BB1MB, relu_only=True, min_sizes=FD1MB_MIN_SIZES)
    # photos 00 and 03 (4 and 1 faces); through the facelib configuration it finds 8 and 4
    assert [len(net.detect(read_rgb(p))) for p in PHOTOS[1:]] == [4, 1]


def test_nms_follows_torchvision_semantics() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 5.1], [20, 20, 30, 30]],
                         dtype=torch.float32)
    scores = torch.tensor([0.9, 0.9, 0.8, 0.7, 0.6])
    # equal scores keep index order; IoU exactly 0.5 survives (strict >); 0.51 is suppressed
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 4]
    assert nms(boxes[[3, 2, 0]], scores[[3, 2, 0]], 0.5).tolist() == [2, 1]
    # the float32 IoU 0.4f is compared against the double 0.4 and is above it, as in torchvision
    assert nms(torch.tensor([[0, 0, 10, 10], [0, 0, 10, 4.0]]), torch.tensor([0.9, 0.8]), 0.4).tolist() == [0]
    assert nms(boxes[:0], scores[:0], 0.4).numel() == 0


def test_bad_arguments_are_rejected(nets: dict[str, RetinaFace]) -> None:
    with pytest.raises(ValueError, match="backbone"):
        RetinaFace("mobilenet")
    with pytest.raises(ValueError, match="uint8"):
        nets[FACELIBCFG].detect(np.zeros((32, 32, 3), np.uint16))


def test_no_faces_gives_an_empty_table(nets: dict[str, RetinaFace]) -> None:
    rows = nets[FACELIBCFG].detect(np.full((96, 128, 3), 127, np.uint8))
    assert rows.shape == (0, 15) and rows.dtype == np.float32
