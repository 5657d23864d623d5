"""Identity per face with the real dlib face descriptor (restora[identity]) on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from restora.config import Settings
from restora.errors import CheckpointError, InvalidParameter, ModelNotInstalled
from restora.io import Image, decode
from restora.models.runtime import Runtime
from restora.pipeline import choose
from restora.pipeline import detect as det
from restora.pipeline.enhance import enhance_faces
from restora.pipeline.identity import THRESHOLDS, load_checker
from restora.models.nets import FaceRecognizer, wrap
from restora.pipeline.restore import load_restorer
from tiny_models import write_tiny_manifest

DLIB = THRESHOLDS["dlib_resnet"]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    tmp = tmp_path_factory.mktemp("identity")
    rt = Runtime(Settings(models=write_tiny_manifest(tmp), home=tmp / "home"), device="cpu")
    assert rt.registry.is_installed(rt.registry.get("dlib-resnet")), \
        "dlib-resnet is not installed: run `pip install -e '.[identity]'` (scripts/install.sh does)"
    return rt


def image(*parts: str) -> Image:
    return decode(shared_path("testdata", *parts))


def descriptors(rt: Runtime, img: Image) -> tuple[np.ndarray, list[det.Detection]]:
    """Descriptors of every face (largest first) as the pipeline takes them."""
    found = det.detect_faces(rt.load("retinaface-mobilenet0.25-facelibcfg"), img.pixels,
                             conf_threshold=0.8)
    found = sorted(found, key=lambda d: -d.eye_distance)  # as references: widest eyes first
    checker = load_checker(rt)
    assert checker is not None and checker.model_id == "dlib-resnet"
    assert isinstance(checker.net, FaceRecognizer) and checker.net.kind == "dlib"
    return checker.describe(choose.input_crops(img.pixels, found)), found


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_same_person_across_two_photos_is_under_the_threshold(runtime: Runtime) -> None:
    checker = load_checker(runtime)
    hepburn = [descriptors(runtime, image("photos", "04.jpg"))[0][0],
               descriptors(runtime, image("gray", "Hepburn01.png"))[0][0]]
    young, _ = descriptors(runtime, image("photos", "05.jpg"))
    pair, found = descriptors(runtime, image("photos", "06.png"))
    left = min(range(len(found)), key=lambda i: found[i].box[0])  # DiCaprio is on the left
    for a, b in (hepburn, (young[0], pair[left])):
        d = float(checker.distance(a, b))
        assert d < DLIB.match_below, d


def test_different_people_are_over_the_threshold(runtime: Runtime) -> None:
    checker = load_checker(runtime)
    group, _ = descriptors(runtime, image("photos", "00.jpg"))  # four different people
    pair, _ = descriptors(runtime, image("photos", "06.png"))
    einstein, _ = descriptors(runtime, image("gray", "Einstein01.png"))
    hepburn, _ = descriptors(runtime, image("gray", "Hepburn01.png"))
    dists = [float(checker.distance(group[i], group[j])) for i in range(4) for j in range(i + 1, 4)]
    dists += [float(checker.distance(pair[0], pair[1])),
              float(checker.distance(einstein[0], hepburn[0]))]
    assert len(dists) == 8 and min(dists) > DLIB.changed_from, dists


def test_identity_restorer_keeps_the_person(runtime: Runtime) -> None:
    ident = wrap(Identity(), "face-restoration", model_id="identity")
    result = enhance_faces(image("photos", "06.png"), runtime=runtime, restorer=ident,
                           strength=1.0)
    data = result.to_dict()
    assert data["identityModel"] == "dlib-resnet" and len(data["faces"]) == 2
    for face in data["faces"]:
        assert face["identity"]["verdict"] == "same", face["identity"]
        assert face["identity"]["model"] == "dlib-resnet"
        assert face["identity"]["distance"] < 0.05
        assert face["restored"] is True and face["restoration"]["model"] == "identity"


def test_tiny_random_restorer_changes_the_person(runtime: Runtime) -> None:
    result = enhance_faces(image("photos", "06.png"), runtime=runtime, model="gfpgan", seed=0,
                           strength=1.0)
    assert result.model == "tiny-gfpgan"
    for face in result.faces:
        assert face.identity is not None and face.identity.verdict == "changed", face.identity
        assert face.identity.distance >= DLIB.changed_from
        assert face.restoration["reason"] == "gfpgan requested"
        assert len(face.restoration["tried"]) == 1  # an explicit model is not second-guessed


def test_too_small_faces_are_not_judged(runtime: Runtime) -> None:
    import cv2

    src = image("photos", "03.jpg")  # one face, eyes 47 px apart
    small = cv2.resize(src.pixels, (90, 51), interpolation=cv2.INTER_AREA)  # eyes ~ 10 px
    result = enhance_faces(Image(pixels=small), runtime=runtime, model="gfpgan", seed=0,
                           faces=[{"x": 22, "y": 6, "w": 24, "h": 33}])
    ident = result.faces[0].identity
    assert ident.verdict == "unknown" and "too small" in ident.reason, ident
    assert ident.distance is not None  # measured, but not trusted


def test_auto_switches_away_from_a_face_changing_restorer(runtime: Runtime) -> None:
    spec = runtime.registry.get("tiny-gfpgan")
    random_gfpgan = load_restorer(runtime, spec)
    ident = wrap(Identity(), "face-restoration", model_id="identity")
    src = image("photos", "06.png")
    result = enhance_faces(src, runtime=runtime, restorer=[random_gfpgan, ident], seed=0,
                           strength=1.0)
    assert result.model == "identity"
    for face in result.faces:
        tried = face.restoration["tried"]
        assert [t["model"] for t in tried] == ["tiny-gfpgan", "identity"]
        assert tried[0]["distance"] >= DLIB.changed_from and tried[1]["distance"] < 0.05
        assert face.restoration["model"] == "identity"
        assert "did not keep the identity" in face.restoration["reason"]
        assert face.identity.verdict == "same"


def test_auto_tries_a_bounded_ladder_and_keeps_the_closest(runtime: Runtime) -> None:
    result = enhance_faces(image("photos", "06.png"), runtime=runtime, seed=0, strength=1.0)
    for face in result.faces:
        tried = face.restoration["tried"]
        # both tiny restorers are random: every rung is tried, never more than the bound
        assert len(tried) == 1 + choose.AUTO_MAX_EXTRA
        best = min(t["distance"] for t in tried)
        assert face.identity.distance == pytest.approx(best, abs=1e-4)
        assert "kept the closest" in face.restoration["reason"]


def test_reference_photo_picks_the_right_face(runtime: Runtime) -> None:
    src = image("photos", "06.png")
    ref = shared_path("testdata", "photos", "05.jpg")  # the same boy, younger, another photo
    result = enhance_faces(src, runtime=runtime, model="gfpgan", seed=0, reference=[ref],
                           only_reference_faces=True)
    data = result.to_dict()
    left = min(range(2), key=lambda i: data["faces"][i]["x"])
    right = 1 - left
    assert data["references"][0]["face"] == left and data["references"][0]["name"] == "05.jpg"
    assert data["references"][0]["distance"] < DLIB.match_below
    assert data["faces"][left]["restored"] and data["faces"][left]["reference"]["index"] == 0
    assert data["faces"][right]["restored"] is False
    assert data["faces"][right]["reference"] is None
    assert "no reference photo matches" in data["faces"][right]["identity"]["reason"]
    for i, changed in ((right, False), (left, True)):  # around each nose (the left face's
        x, y = (int(v) for v in data["faces"][i]["landmarks"][2])  # paste area is large)
        region = (slice(y - 15, y + 15), slice(x - 15, x + 15))
        assert np.array_equal(result.image.pixels[region], src.pixels[region]) != changed


def test_reference_face_tries_fidelities_and_keeps_the_closest(runtime: Runtime) -> None:
    ref = shared_path("testdata", "photos", "05.jpg")
    result = enhance_faces(image("photos", "06.png"), runtime=runtime, model="codeformer",
                           reference=ref)
    matched = [f for f in result.faces if f.reference is not None]
    assert len(matched) == 1
    tried = matched[0].restoration["tried"]
    assert [t["fidelity"] for t in tried] == [0.5, 1.0, 0.0]
    best = min(t["referenceDistance"] for t in tried)
    assert matched[0].reference["restoredDistance"] == pytest.approx(best, abs=1e-4)
    assert "closest to reference 1" in matched[0].restoration["reason"]


def test_reference_without_a_face_is_a_clear_error(runtime: Runtime) -> None:
    flat = Image(pixels=np.full((200, 200, 3), 120, np.uint8))
    with pytest.raises(InvalidParameter) as info:
        enhance_faces(image("photos", "03.jpg"), runtime=runtime, reference=flat)
    assert info.value.field == "reference" and "no face" in info.value.message


def test_without_a_recognition_model_faces_say_so(tmp_path: Path) -> None:
    entry = {"id": "dlib-resnet", "path": str(tmp_path / "absent.dat")}
    rt = Runtime(Settings(models=write_tiny_manifest(tmp_path, extra=[entry]),
                          home=tmp_path / "home"), device="cpu")
    result = enhance_faces(image("photos", "03.jpg"), runtime=rt, model="gfpgan", seed=0)
    ident = result.to_dict()["faces"][0]["identity"]
    assert ident["verdict"] == "unknown" and "restora[identity]" in ident["reason"]
    with pytest.raises(ModelNotInstalled) as info:
        enhance_faces(image("photos", "03.jpg"), runtime=rt,
                      reference=shared_path("testdata", "photos", "04.jpg"))
    assert "dlib-resnet" in info.value.message


def test_sface_is_registered_and_its_wrapper_reports_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "sface.onnx"
    bad.write_bytes(b"not an onnx file")
    entry = {"id": "my-sface", "task": "face-recognition", "arch": "sface", "path": str(bad),
             "license": "test"}
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"models": [entry]}))
    rt = Runtime(Settings(models=manifest, home=tmp_path / "home"), device="cpu")
    spec = rt.registry.get("sface")
    assert spec.task == "face-recognition" and spec.license == "Apache-2.0"
    assert spec.urls[0].endswith("face_recognition_sface_2021dec.onnx")
    with pytest.raises(ModelNotInstalled) as info:
        rt.load("sface")
    assert "restora models pull sface" in info.value.message
    with pytest.raises(CheckpointError):
        rt.load("my-sface")
