"""restore_photo with the learned damage models installed through ``RESTORA_MODELS`` (the tiny
conformance weights: random, so the numbers say nothing about quality; these tests check the
wiring: which detector and fill ran, at which resolution, and that nothing outside the mask
changes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from restora.config import Settings
from restora.io import decode
from restora.models.runtime import Runtime
from restora.pipeline.photo import restore_photo
from restora.pipeline.photo.learned import probability_to_mask, scratch_probability
from tiny_models import tiny_photo_repair_entries, write_tiny_manifest


def _runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **which: bool) -> Runtime:
    manifest = write_tiny_manifest(tmp_path, include=set(),
                                   extra=tiny_photo_repair_entries(**which))
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    return Runtime(Settings(), device="cpu")


def test_learned_detector_runs_at_reference_size_and_maps_to_full_res(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = _runtime(tmp_path, monkeypatch, lama=False)
    img = decode(shared_path("testdata", "photos", "03.jpg"))
    result = restore_photo(img, runtime=rt, face_enhancement=False, denoise=False)
    report = result.reports["scratch-removal"]
    assert report["detector"] == "learned" and report["model"] == "tiny-scratch-unet"
    assert report["engine"] == "torch/fp32"  # the suite's RESTORA_ENGINE
    assert min(report["networkSize"]) == 256  # the reference's shorter side
    prob = scratch_probability(rt.load("tiny-scratch-unet"), img.pixels)
    expected = probability_to_mask(prob, img.height, img.width)
    assert result.mask.shape == (img.height, img.width)
    assert result.mask[expected].all()  # everything the network flagged was repaired
    assert abs(result.scratch_coverage - 100 * expected.mean()) < 1e-6
    out = result.image.pixels
    assert np.array_equal(out[~result.mask], img.pixels[~result.mask])
    # no inpainting model: wide regions got the classical fill, and the result says so
    assert report["fill"]["wideFill"] == "classical-coarse-to-fine"
    assert any("inpainting model" in w for w in result.warnings)


def test_lama_fills_a_wide_user_region_composited_inside_the_mask(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = _runtime(tmp_path, monkeypatch, scratch=False)
    img = decode(shared_path("testdata", "photos", "06.png"))
    user = np.zeros((img.height, img.width), bool)
    user[200:260, 300:420] = True  # a torn patch, far wider than a thin line
    user[500:503, 50:600] = True  # and a thin scratch
    result = restore_photo(img, runtime=rt, face_enhancement=False, denoise=False, mask=user)
    fill = result.reports["scratch-removal"]["fill"]
    assert fill["wideFill"] == "lama" and fill["model"] == "tiny-lama"
    assert fill["engine"] == "torch/fp32"
    assert fill["wideRegions"] == 1 and fill["thinPixels"] > 0
    assert not any("inpainting model" in w for w in result.warnings)
    out = result.image.pixels
    assert np.array_equal(out[~result.mask], img.pixels[~result.mask])
    assert (out[user] != img.pixels[user]).any(axis=-1).mean() > 0.5  # the patch was replaced


def test_lama_crop_is_reduced_for_huge_regions_and_memory_stays_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A region bigger than LAMA_SIDE: LaMa sees at most LAMA_SIDE px (checked by a hook)."""
    from restora.pipeline.photo.fill import LAMA_SIDE

    rt = _runtime(tmp_path, monkeypatch, scratch=False)
    seen: list[tuple[int, ...]] = []
    net = rt.load("tiny-lama")
    handle = net.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    try:
        rng = np.random.default_rng(0)
        px = rng.integers(0, 255, (1500, 1200, 3), dtype=np.uint8)
        user = np.zeros(px.shape[:2], bool)
        user[100:1300, 200:900] = True
        from restora.io import Image

        result = restore_photo(Image(px, None, "png"), runtime=rt, face_enhancement=False,
                               denoise=False, mask=user)
    finally:
        handle.remove()
    assert seen and all(max(s[-2:]) <= LAMA_SIDE + 8 for s in seen)
    assert result.mask[user].all()


def test_the_wide_fill_announces_the_job_estimate_from_its_measured_crops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After its first crop the fill announces the job's estimate: the wide regions left at the
    measured seconds per region, plus the denoise still to come at its nominal cost; ``seconds``
    counts from the job's start, and the result keeps the first estimate."""
    import time

    from restora.pipeline.photo.restore import DENOISE_S_PER_MP_PLANE

    rt = _runtime(tmp_path, monkeypatch, scratch=False)
    img = decode(shared_path("testdata", "photos", "06.png"))
    rng = np.random.default_rng(3)
    noisy = np.clip(img.pixels + rng.normal(0, 8, img.pixels.shape), 0, 255).astype(np.uint8)
    user = np.zeros((img.height, img.width), bool)
    for k, (y, x) in enumerate([(40, 40), (40, 600), (420, 40), (420, 600)]):
        user[y:y + 60 + 10 * k, x:x + 90] = True  # four torn patches, each its own crop
    events: list[tuple[float, dict]] = []
    t0 = time.perf_counter()
    result = restore_photo(img.with_pixels(noisy), runtime=rt, face_enhancement=False,
                           mask=user, on_estimate=lambda e: events.append(
                               (time.perf_counter() - t0, e)))
    assert result.reports["scratch-removal"]["fill"]["crops"] == 4
    assert "denoise" in result.steps
    at, first = events[0]
    assert first["work"] == {"inpaintRegions": 3}
    assert first["basis"] == "inpaintRegions:measured,denoise:nominal"
    # noise in R, G and B: the luma and both chroma planes are filtered
    denoise_s = 3 * DENOISE_S_PER_MP_PLANE * img.width * img.height / 1e6
    assert first["remainingSeconds"] >= round(denoise_s, 1)
    # from the job's start: what had elapsed when it was announced, plus what is left
    assert first["seconds"] - first["remainingSeconds"] == pytest.approx(at, abs=0.15)
    assert result.estimate == first
    assert result.to_dict()["estimatedSeconds"] == first["seconds"]
    from restora.pipeline._timing import estimate_text

    assert estimate_text(first).endswith("(3 damaged region(s) to fill)")


def test_faces_found_by_the_scratch_detector_join_the_first_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The classical scratch detector finds the faces (to protect their features) before the
    fill: the fill's first estimate already counts the face step, at its nominal cost per face,
    and the face step's own estimates replace that share once it starts."""
    from restora.pipeline.enhance import NOMINAL_FACE_SECONDS

    manifest = write_tiny_manifest(
        tmp_path, include={"tiny-codeformer", "tiny-parsenet",
                           "retinaface-mobilenet0.25-facelibcfg"},
        extra=tiny_photo_repair_entries(scratch=False))
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    rt = Runtime(Settings(), device="cpu")
    img = decode(shared_path("testdata", "photos", "00.jpg"))
    user = np.zeros((img.height, img.width), bool)
    user[250:290, 20:80] = True  # two torn patches away from the faces, each its own crop
    user[250:290, 400:470] = True
    events: list[dict] = []
    result = restore_photo(img, runtime=rt, denoise=False, mask=user, mask_mode="add",
                           on_estimate=events.append)
    report = result.reports["scratch-removal"]
    assert report["detector"] == "classical" and report["fill"]["crops"] == 2
    faces = report["facesProtected"]
    assert faces == 4 and result.faces_enhanced >= 1
    first = events[0]
    assert first["basis"] == "inpaintRegions:measured,faces:nominal"
    assert first["work"] == {"inpaintRegions": 1, "faces": 4}
    assert first["remainingSeconds"] >= faces * NOMINAL_FACE_SECONDS["cpu"]
    # the face step's own estimates: no nominal face share added on top of them
    later = [e for e in events[1:] if "inpaintRegions" not in e["work"]]
    assert later and all(e["basis"].count("faces:") == 1 for e in later)
