"""Photos that are not the right way up (a scan placed sideways, a lost EXIF turn): the turned
searches of ``detect_faces`` with the real detectors on the real photos, and faces restored
the right way up through the whole pipeline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_path
from restora.config import Settings
from restora.errors import InvalidParameter
from restora.io import Image
from restora.models.nets import wrap
from restora.models.runtime import Runtime
from restora.pipeline import detect as det
from restora.pipeline.enhance import enhance_faces
from restora.pipeline.options import EnhanceOptions, parse
from tiny_models import write_tiny_manifest

RETINA, YUNET = "retinaface-mobilenet0.25-facelibcfg", "yunet-2026may"
UPRIGHT = [("photos", n) for n in ("00.jpg", "01.jpg", "02.png", "03.jpg", "04.jpg", "05.jpg",
                                   "06.png")] + [("gray", n) for n in ("Einstein01.png",
                                                                      "Hepburn01.png",
                                                                      "169_John_Lennon_00.png")]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    tmp = tmp_path_factory.mktemp("orientation")
    manifest = write_tiny_manifest(tmp, include={RETINA, YUNET})
    return Runtime(Settings(models=manifest, home=tmp / "home"), device="cpu")


def load(folder: str, name: str) -> np.ndarray:
    bgr = cv2.imread(str(shared_path("testdata", folder, name)), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def turned(rgb: np.ndarray, degrees: int) -> np.ndarray:
    """The photo turned ``degrees`` clockwise (its faces then stand turned as much)."""
    return np.ascontiguousarray(np.rot90(rgb, -(degrees // 90)))


def find(net, rgb: np.ndarray, orientation: str) -> list[det.Detection]:
    return det.detect_faces(net, rgb, conf_threshold=det.sensitivity_to_threshold(0.5, net),
                            orientation=orientation)


def test_turned_points_are_exact() -> None:
    h, w = 5, 7
    img = np.zeros((h, w), np.uint8)
    img[1, 4] = 1  # pixel centre (4.5, 1.5)
    for k in range(4):
        y, x = np.argwhere(np.rot90(img, k))[0]
        p = det.turn_points(np.array([[4.5, 1.5]], np.float32), k, w, h)[0]
        assert tuple(p) == (x + 0.5, y + 0.5)


def test_rows_found_turned_map_back_exactly() -> None:
    rng = np.random.default_rng(0)
    w, h = 300, 200
    rows = np.zeros((6, 15), np.float32)
    rows[:, 0:2] = rng.uniform(0, 100, (6, 2))
    rows[:, 2:4] = rows[:, 0:2] + rng.uniform(20, 90, (6, 2))
    rows[:, 4] = rng.uniform(0.5, 1, 6)
    rows[:, 5:15] = rng.uniform(0, 190, (6, 10))
    for k in (1, 2, 3):
        seen = rows.copy()  # the same faces as a search of the turned image reports them
        corners = det.turn_points(rows[:, 0:4].reshape(-1, 2, 2), k, w, h)
        seen[:, 0:2], seen[:, 2:4] = corners.min(axis=1), corners.max(axis=1)
        seen[:, 5:15] = det.turn_points(rows[:, 5:15].reshape(-1, 5, 2), k, w, h).reshape(-1, 10)
        back = det.unturn_rows(seen, k, w, h)
        np.testing.assert_allclose(back, rows, atol=1e-4)


def _level(angle: float) -> float:
    return abs((angle + 180.0) % 360.0 - 180.0)


def _box_in_turned(box: tuple[float, ...], degrees: int, w: int, h: int) -> tuple[float, ...]:
    corners = det.turn_points(np.array([box[:2], box[2:]], np.float32), -(degrees // 90), w, h)
    (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
    return float(x1), float(y1), float(x2), float(y2)


@pytest.mark.parametrize("detector", [RETINA, YUNET])
@pytest.mark.parametrize("name", ["00.jpg", "02.png"])
def test_group_photos_turned_each_way_are_found_the_right_way_up(runtime: Runtime, detector: str,
                                                                 name: str) -> None:
    net = runtime.load(detector)
    rgb = load("photos", name)
    h, w = rgb.shape[:2]
    upright = find(net, rgb, "upright")
    assert len(upright) == 4 and all(d.rotation == 0 for d in upright)
    for degrees in (90, 180, 270):
        img = turned(rgb, degrees)
        # the references' search misses faces, or gives landmarks the wrong way up
        before = find(net, img, "upright")
        assert sum(_level(d.roll - degrees) < 30 for d in before) < 4
        for orientation in ("auto", "search"):
            found = find(net, img, orientation)
            assert len(found) == 4, (degrees, orientation)
            assert [d.rotation for d in found] == [degrees] * 4
            for u in upright:  # the same faces, where the turn puts them
                want = _box_in_turned(u.box, degrees, w, h)
                assert max(det.box_iou(want, d.box) for d in found) > 0.6
            for d in found:  # the face's own landmark order is kept: its eye line is turned too
                assert abs(d.tilt) < 20


@pytest.mark.parametrize("detector", [RETINA, YUNET])
def test_photos_the_right_way_up_are_never_turned(runtime: Runtime, detector: str) -> None:
    # every test photo, with both searches: the faces found are those of the upright search
    net = runtime.load(detector)
    for folder, name in UPRIGHT:
        rgb = load(folder, name)
        upright = find(net, rgb, "upright")
        for orientation in ("auto", "search"):
            found = find(net, rgb, orientation)
            assert [d.box for d in found] == [d.box for d in upright], (name, orientation)
            assert all(d.rotation == 0 for d in found)


def _beside(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    h = max(left.shape[0], right.shape[0])
    canvas = np.full((h, left.shape[1] + right.shape[1], 3), 128, np.uint8)
    canvas[:left.shape[0], :left.shape[1]] = left
    canvas[:right.shape[0], left.shape[1]:] = right
    return canvas


@pytest.mark.parametrize("left,right", [(("photos", "06.png"), ("gray", "Einstein01.png")),
                                        (("photos", "02.png"), ("photos", "04.jpg"))])
def test_a_face_lying_beside_upright_ones_is_found_by_search(runtime: Runtime, left: tuple,
                                                            right: tuple) -> None:
    # a person lying down beside people standing: YuNet finds that face in the turned search
    net = runtime.load(YUNET)
    a, b = load(*left), turned(load(*right), 90)
    photo = _beside(a, b)
    standing = find(net, a, "upright")
    upright = find(net, photo, "upright")
    assert len(upright) == len(standing)  # the references' search misses the lying face
    found = find(net, photo, "search")
    assert len(found) == len(standing) + 1
    assert [d.rotation for d in found].count(0) == len(standing)
    lying = next(d for d in found if d.rotation == 90)
    assert lying.box[0] >= a.shape[1] - 1 and abs(lying.tilt) < 20  # on the right, level
    # the one lying face is found where the turned photo alone puts it
    alone = find(net, b, "search")
    shifted = [(d.box[0] + a.shape[1], d.box[1], d.box[2] + a.shape[1], d.box[3]) for d in alone]
    assert max(det.box_iou(lying.box, s) for s in shifted) > 0.6


class Counting:
    """A real detector that counts its runs."""

    def __init__(self, net) -> None:
        self.net, self.runs, self.shapes = net, 0, []
        self.sure_score = net.sure_score

    def detect(self, image_rgb, conf_threshold=None, nms_threshold=0.4):
        self.runs += 1
        self.shapes.append(image_rgb.shape[:2])
        return self.net.detect(image_rgb, conf_threshold, nms_threshold)


def test_auto_searches_turned_only_when_the_upright_search_is_doubtful(runtime: Runtime) -> None:
    counting = Counting(runtime.load(RETINA))
    thr = det.sensitivity_to_threshold(0.5, counting.net)
    for folder, name in UPRIGHT:  # sure, level faces: one run each
        counting.runs = 0
        det.detect_faces(counting, load(folder, name), conf_threshold=thr, orientation="auto")
        assert counting.runs == 1, name
    counting.runs = 0
    det.detect_faces(counting, turned(load("photos", "00.jpg"), 90), conf_threshold=thr,
                     orientation="auto")
    assert counting.runs == 4
    counting.runs = 0
    blank = np.full((300, 400, 3), 128, np.uint8)  # no face at all: every turn, nothing found
    assert det.detect_faces(counting, blank, conf_threshold=thr, orientation="auto") == []
    assert counting.runs == 4
    counting.runs = 0
    det.detect_faces(counting, blank, conf_threshold=thr, orientation="upright")
    assert counting.runs == 1


def test_turned_searches_of_a_large_photo_run_at_the_working_size(runtime: Runtime) -> None:
    # GFPGAN's rule keeps a photo's own resolution; the turned searches shrink to 640 px
    counting = Counting(runtime.load(RETINA))
    rgb = load("photos", "02.png")
    big = cv2.resize(rgb, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC)
    lying = turned(big, 90)
    found = det.detect_faces(counting, lying, conf_threshold=0.8, working_size=None,
                             orientation="auto")
    assert counting.shapes[0] == lying.shape[:2]  # the upright search at its own size
    assert counting.runs == 4 and all(min(s) == det.WORKING_SIZE for s in counting.shapes[1:])
    assert [d.rotation for d in found] == [90] * 4
    upright = det.detect_faces(counting, big, conf_threshold=0.8, working_size=None)
    h, w = big.shape[:2]
    for u in upright:
        want = _box_in_turned(u.box, 90, w, h)
        assert max(det.box_iou(want, d.box) for d in found) > 0.6


def test_client_boxes_on_a_turned_photo_get_the_turned_landmarks(runtime: Runtime) -> None:
    net = runtime.load(RETINA)
    rgb = turned(load("photos", "02.png"), 90)
    faces = find(net, rgb, "search")
    boxes = [(*d.box, 1.0) for d in faces]
    got, sources = det.detections_for_boxes(net, rgb, boxes, orientation="auto")
    assert sources == ["detector"] * 4
    assert [d.rotation for d in got] == [90] * 4
    assert all(abs(d.tilt) < 20 for d in got)


class Ramp(torch.nn.Module):
    """A restorer whose every face is dark at the top and light at the chin (in its own frame)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1.0, 1.0, x.shape[-2], dtype=x.dtype).view(1, 1, -1, 1)
        return ramp.expand_as(x).contiguous()


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_faces_of_a_turned_photo_are_restored_the_right_way_up(runtime: Runtime,
                                                                degrees: int) -> None:
    src = load("photos", "00.jpg")
    upright = find(runtime.load(RETINA), src, "upright")
    ramp = wrap(Ramp(), "face-restoration")
    result = enhance_faces(Image(turned(src, degrees)), runtime=runtime, restorer=ramp,
                           strength=1.0, identity=False)
    assert result.faces_detected == 4
    assert [f.rotation for f in result.faces] == [degrees] * 4
    assert all(f.to_dict()["rotation"] == degrees for f in result.faces)
    back = np.rot90(result.image.pixels, degrees // 90).astype(np.float32).mean(axis=2)
    for u in upright:  # in the photo turned back, every pasted face is dark on top
        x1, y1, x2, y2 = (int(round(v)) for v in u.box)
        third = (y2 - y1) // 3
        top = back[y1 + 2:y1 + third, x1 + 4:x2 - 4].mean()
        bottom = back[y2 - third:y2 - 2, x1 + 4:x2 - 4].mean()
        assert bottom - top > 60, (degrees, top, bottom)


def test_orientation_is_an_option_everywhere() -> None:
    assert EnhanceOptions().orientation == "auto"
    assert parse(EnhanceOptions, {"orientation": "search"}).orientation == "search"
    with pytest.raises(InvalidParameter) as err:
        parse(EnhanceOptions, {"orientation": "sideways"})
    assert err.value.field == "orientation"
    with pytest.raises(InvalidParameter):
        det.detect_faces(None, np.zeros((64, 64, 3), np.uint8), conf_threshold=0.5,  # type: ignore[arg-type]
                         orientation="sideways")


def test_cli_takes_the_orientation(tmp_path: Path, runtime: Runtime) -> None:
    import json
    import subprocess
    import sys

    src = tmp_path / "turned.png"
    cv2.imwrite(str(src), np.ascontiguousarray(turned(load("photos", "00.jpg"), 270)[:, :, ::-1]))
    manifest = write_tiny_manifest(tmp_path, include={RETINA, "tiny-gfpgan"})
    import restora

    env = {"RESTORA_MODELS": str(manifest), "RESTORA_HOME": str(tmp_path / "home"),
           "RESTORA_ENGINE": "torch", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(restora.__file__).parents[1])}  # this checkout's package
    runs = {}
    for orientation in ("auto", "upright"):
        out = subprocess.run([sys.executable, "-m", "restora", "enhance-faces", str(src), "-o",
                              str(tmp_path / orientation), "--json", "--no-identity",
                              "--orientation", orientation, "--model", "tiny-gfpgan"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        runs[orientation] = json.loads(out.stdout)
    assert [f["rotation"] for f in runs["auto"]["faces"]] == [270] * 4
    assert all(f["rotation"] == 0 for f in runs["upright"]["faces"])
    bad = subprocess.run([sys.executable, "-m", "restora", "enhance-faces", str(src), "-o",
                          str(tmp_path / "bad"), "--orientation", "sideways"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "orientation" in bad.stderr and "Traceback" not in bad.stderr
