"""The reworked classical damage detection, noise and monochrome measurements on real photos.

Damage is drawn with known masks and seeds (torn corners, missing areas, faint folds, crack
networks, faint dust); the clean photos of ``../shared/testdata`` must stay untouched. Measured
figures are in the comments; ``benchmarks/damage.py`` has the full per-type table.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import shared_path
from restora.config import Settings
from restora.io import Image, decode
from restora.models.runtime import Runtime
from restora.pipeline.photo import restore_photo
from restora.pipeline.photo.damage import detect_damage
from restora.pipeline.photo.denoise import GRAIN_MIN, estimate_noise
from restora.pipeline.photo.mono import detect_monochrome
from restora.pipeline.photo.regions import detect_folds, detect_missing_areas
from restora.service.finishing import add_grain
from test_photo_stages import sepia_copy

CLEAN = ["photos/02.png", "photos/03.jpg", "photos/05.jpg", "photos/06.png",
         "gray/Einstein01.png", "gray/Hepburn01.png"]


def load(rel: str) -> np.ndarray:
    return decode(shared_path("testdata", *rel.split("/"))).pixels


def luma(px: np.ndarray) -> np.ndarray:
    return px.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    near = cv2.dilate(found.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return float((truth & near).sum() / max(1, truth.sum()))


def torn(rgb: np.ndarray, paper=(236, 230, 214)) -> tuple[np.ndarray, np.ndarray]:
    """A ragged torn corner (top right) and an irregular missing area, in paper colour."""
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(1)
    m = np.zeros((h, w), np.uint8)
    s = min(h, w)
    edge = np.stack([np.linspace(w - 0.2 * s, w, 12), np.linspace(0, 0.18 * s, 12)], 1)
    edge += rng.normal(0, 0.01 * s, edge.shape)
    cv2.fillPoly(m, [np.vstack([[w, 0], edge]).astype(np.int32)], 1)
    ang = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    r = 0.05 * s * rng.uniform(0.7, 1.3, 14)
    c = (0.4 * w, 0.6 * h)
    cv2.fillPoly(m, [np.stack([c[0] + np.cos(ang) * r, c[1] + np.sin(ang) * r], 1)
                     .astype(np.int32)], 1)
    out = rgb.copy()
    out[m > 0] = paper
    return out, m > 0


def fold(rgb: np.ndarray, contrast: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """A faint bright fold, 3 px wide, from the left edge to the right edge."""
    h, w = rgb.shape[:2]
    m = np.zeros((h, w), np.uint8)
    cv2.line(m, (0, int(0.35 * h)), (w - 1, int(0.6 * h)), 1, 3)
    out = np.clip(rgb.astype(np.float32) + contrast * m[..., None], 0, 255).astype(np.uint8)
    return out, (m > 0) & (np.abs(luma(out) - luma(rgb)) > 4)


@pytest.mark.parametrize("rel", ["photos/02.png", "photos/06.png", "gray/Hepburn01.png"])
def test_torn_corner_and_missing_area_are_found(rel: str) -> None:
    damaged, truth = torn(load(rel))
    found, n = detect_missing_areas(damaged)
    print(f"{rel}: {n} areas, recall {recall(found, truth):.2f}, "
          f"outside {(found & ~truth).sum() / truth.sum():.3f}")
    # measured 0.99 (02), 0.97 (06), 0.68 (Hepburn: the blob lies on light skin, so part of its
    # outline is too soft for the sharpness test)
    assert n >= 1 and recall(found, truth) > 0.6
    grown = cv2.dilate(truth.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert (found & ~grown).sum() < 0.02 * truth.sum()


@pytest.mark.parametrize("rel", ["photos/02.png", "gray/Hepburn01.png", "gray/Einstein01.png"])
def test_faint_fold_is_found_and_removed_without_smearing(rel: str) -> None:
    clean = load(rel)
    damaged, truth = fold(clean)
    found, n = detect_folds(damaged)
    assert n >= 1 and recall(found, truth) > 0.8  # measured 1.00
    rt = Runtime(Settings(home=Path("/nonexistent-restora-home")), device="cpu")
    out = restore_photo(Image(damaged), runtime=rt, face_enhancement=False,
                        denoise=False).image.pixels
    err_before = np.abs(damaged.astype(float) - clean)[truth].mean()
    err_after = np.abs(out.astype(float) - clean)[truth].mean()
    print(f"{rel}: fold error {err_before:.1f} -> {err_after:.1f} levels")
    assert err_after < 0.6 * err_before  # measured 15 -> 3-5 levels


@pytest.mark.parametrize("rel", CLEAN)
def test_clean_photos_have_no_missing_areas_folds_or_frame_lines(rel: str) -> None:
    px = load(rel)
    assert detect_missing_areas(px)[1] == 0
    assert detect_folds(px)[1] == 0
    # a print frame: a thin bright line parallel to each border, 3 % inside it
    framed = px.copy()
    h, w = px.shape[:2]
    d = int(0.03 * min(h, w))
    cv2.rectangle(framed, (d, d), (w - 1 - d, h - 1 - d), (250, 250, 250), 1)
    frame = np.zeros((h, w), bool)
    cv2.rectangle(frame.view(np.uint8), (d, d), (w - 1 - d, h - 1 - d), 1, 1)
    found, report = detect_damage(framed, estimate_noise(framed).luma, None)
    print(f"{rel}: frame pixels flagged {found[frame].mean():.3f}, report {report}")
    assert found[frame].mean() < 0.05  # measured 0.000-0.033
    assert 100 * found.mean() < 0.3


def test_crack_network_and_faint_dust() -> None:
    clean = load("gray/Einstein01.png")
    rng = np.random.default_rng(5)
    h, w = clean.shape[:2]
    m = np.zeros((h, w), np.uint8)
    p, ang = np.array([0.3 * w, 0.2 * h]), 0.6
    pts = [p]
    for i in range(90):  # a wandering crack with two forks
        ang += rng.normal(0, 0.3)
        p = p + 5 * np.array([np.cos(ang), np.sin(ang)])
        pts.append(p)
        if i in (30, 60):
            q, a2 = p.copy(), ang + 1.0
            branch = [q]
            for _ in range(30):
                a2 += rng.normal(0, 0.3)
                q = q + 5 * np.array([np.cos(a2), np.sin(a2)])
                branch.append(q)
            cv2.polylines(m, [np.array(branch, np.int32)], False, 1, 2)
    cv2.polylines(m, [np.array(pts, np.int32)], False, 1, 2)
    dust = np.zeros((h, w), np.uint8)
    for _ in range(30):  # specks 35 levels brighter, under the old 50-level floor
        cv2.circle(dust, (int(rng.integers(20, w - 20)), int(rng.integers(20, h - 20))), 2, 1, -1)
    damaged = np.clip(clean.astype(np.float32) - 60 * m[..., None] + 35 * dust[..., None],
                      0, 255).astype(np.uint8)
    crack_truth = (m > 0) & (np.abs(luma(damaged) - luma(clean)) > 4)
    dust_truth = (dust > 0) & ~(m > 0) & (np.abs(luma(damaged) - luma(clean)) > 4)
    found, _ = detect_damage(damaged, estimate_noise(damaged).luma, None)
    print(f"crack recall {recall(found, crack_truth):.2f}, dust recall "
          f"{recall(found, dust_truth):.2f}")
    assert recall(found, crack_truth) > 0.6  # measured 0.81
    assert recall(found, dust_truth) > 0.3  # measured 0.50


@pytest.mark.parametrize("size", [1.0, 2.0, 3.0])
def test_noise_from_flat_patches_tracks_film_grain(size: float) -> None:
    clean = load("photos/02.png")
    grain = add_grain(clean, model="grey", density=1.0, size=size, strength=0.3, seed=1)
    true = float((luma(grain) - luma(clean)).std())  # 9.2 levels
    est = estimate_noise(grain)
    print(f"grain {size} px: true {true:.2f}, estimated {est.luma:.2f} (flat {est.flat:.2f})")
    assert abs(est.luma - true) < 0.25 * true  # measured 9.1 / 9.0 / 7.9 (was 9.1 / 4.0 / 0.6)
    silver = add_grain(clean, model="silver", density=1.0, size=2.0, strength=0.3, seed=2)
    assert estimate_noise(silver).luma > 0.6 * float((luma(silver) - luma(clean)).std())
    assert estimate_noise(clean).luma < GRAIN_MIN / 2  # clean: the flat-patch figure is unused


def test_monochrome_is_measured_on_undamaged_pixels(restora_home: Path) -> None:
    sepia = sepia_copy(load("photos/06.png"))
    damaged, truth = torn(sepia, paper=(200, 222, 240))  # cold white paper behind the tears
    assert not detect_monochrome(damaged).is_monochrome  # the paper's tint fools it ...
    assert detect_monochrome(damaged, exclude=truth).is_monochrome  # ... not without it
    result = restore_photo(Image(damaged), runtime=Runtime(Settings(), device="cpu"),
                           face_enhancement=False, denoise=False)
    assert result.is_grayscale and result.reports["analysis"]["damageExcluded"]


def test_eyes_and_lips_are_protected_when_a_face_detector_is_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Specks on the eyes (catchlight-like) and a short line on the lips stay; the same specks on
    the cheeks are judged as without protection (real YuNet landmarks)."""
    from restora.pipeline import detect as det
    from tiny_models import write_tiny_manifest

    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(tmp_path, include={
        "yunet-2026may"})))
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    rt = Runtime(Settings(), device="cpu")
    clean = load("photos/03.jpg")
    net = rt.load("yunet-2026may")
    face = max(det.detect_faces(net, clean, conf_threshold=0.6), key=lambda f: f.area)
    lm = face.landmarks
    d = face.eye_distance
    damaged = clean.copy()
    specks = [lm[0], lm[1], lm[0] + (0, 0.5 * d), lm[1] + (0, 0.5 * d)]  # eyes, then cheeks
    for p in specks:
        cv2.circle(damaged, (int(p[0]), int(p[1])), 1, (250, 250, 250), -1)
    m = (lm[3] + lm[4]) / 2
    cv2.line(damaged, (int(lm[3][0]), int(m[1])), (int(lm[4][0]), int(m[1])), (20, 20, 20), 1)
    found, report = detect_damage(damaged, estimate_noise(damaged).luma, rt)
    assert report["facesProtected"] >= 1
    assert report["protectedPixels"] > 0  # the report says how much was taken as features
    near = lambda p: found[int(p[1]) - 2:int(p[1]) + 3, int(p[0]) - 2:int(p[0]) + 3].any()  # noqa: E731
    assert not near(specks[0]) and not near(specks[1])  # catchlight-like: content
    assert not found[int(m[1]) - 1:int(m[1]) + 2, int(lm[3][0]):int(lm[4][0])].any()  # lip line
    bare, _ = detect_damage(damaged, estimate_noise(damaged).luma, None)  # no detector
    near_bare = lambda p: bare[int(p[1]) - 2:int(p[1]) + 3, int(p[0]) - 2:int(p[0]) + 3].any()  # noqa: E731
    print("without protection:", [near_bare(p) for p in specks], "with:", [near(p) for p in specks])
    assert near_bare(specks[0]) or near_bare(specks[1])  # ... which detection alone takes as dust
    assert [near(p) for p in specks[2:]] == [near_bare(p) for p in specks[2:]]  # cheeks unchanged


def _generator():  # type: ignore[no-untyped-def]
    """The benchmark's own damage generator (``benchmarks/damage.py``), seeded."""
    from conftest import load_benchmark

    return load_benchmark("damage")


def test_scratches_fencing_a_flat_patch_are_not_a_missing_area() -> None:
    # the benchmark's scratches on Hepburn (seed 5000): two of them fence in her light, flat
    # neck, which used to read as a missing area (its outline looked sharp: the scratches)
    gen = _generator()
    damaged, _ = gen.draw_scratches(load("gray/Hepburn01.png"), np.random.default_rng(5000))
    found, n = detect_missing_areas(damaged)
    assert n == 0 and not found.any()  # was 1 area of 2402 px


@pytest.mark.parametrize("rel,seed,floor", [("photos/04.jpg", 2001, 0.35),
                                            ("photos/06.png", 3001, 0.75)])
def test_branched_crack_networks_are_found_as_a_whole(rel: str, seed: int, floor: float) -> None:
    # the benchmark's crack networks: they fail the tests in pieces (dense at forks, crossing
    # edges) and are followed and kept as networks; measured 0.43 and 0.82 (were 0.19, 0.62)
    gen = _generator()
    damaged, truth = gen.draw_cracks(load(rel), np.random.default_rng(seed))
    found, _ = detect_damage(damaged, estimate_noise(damaged).luma, None)
    print(f"{rel}: crack recall {recall(found, truth):.2f}")
    assert recall(found, truth) > floor


def test_a_thin_line_with_unequal_flanks_is_an_edge_not_a_scratch() -> None:
    # 00.jpg's door frame: a lit moulding (~150), a 1 px shadowed slit (~62), then the wall
    # (~235): thin lines whose two sides differ, the profile of an edge. They were flagged
    # (85 px); a scratch lies on what it crosses, so its flanks match.
    px = load("photos/00.jpg")
    found, _ = detect_damage(px, estimate_noise(px).luma, None)
    assert not found[0:50, 236:250].any()


def test_specks_standing_out_at_one_pixel_only_are_not_dust() -> None:
    # 01.jpg (248 px): a pupil (80-110 levels darker than the eye white, lids and lashes beside
    # it) and a crease between fingers passed the dust tests at a pixel or two and were taken
    # as specks; a speck on the print stands out over most of its area. (The other pupil of
    # the front face still passes: 14 px.)
    px = load("photos/01.jpg")
    found, _ = detect_damage(px, estimate_noise(px).luma, None)
    assert not found[66:74, 64:72].any() and not found[117:125, 13:20].any()
    assert 100 * found.mean() <= 0.3  # measured 0.28 % (was 0.33 %)


def test_a_line_more_colourful_than_its_surroundings_is_content_not_damage() -> None:
    # 00.jpg (491 px): a green lanyard on a black shirt (314 px, chroma +47 over its
    # surroundings at 97 levels of contrast) and a coloured speck by the lamp; 01.jpg: a gold
    # pen on a lapel (118 px, +50 at 106). Locally scratches in every other respect (thin,
    # rare, matching flanks); damage never adds colour. 00.jpg was 0.367 % (over the 0.3 %
    # limit), now 0.155 %; 01.jpg 0.282 -> 0.030 %.
    px = load("photos/00.jpg")
    found, _ = detect_damage(px, estimate_noise(px).luma, None)
    assert not found[151:203, 79:104].any() and not found[17:20, 399:402].any()
    assert 100 * found.mean() <= 0.3
    pen = load("photos/01.jpg")
    found, _ = detect_damage(pen, estimate_noise(pen).luma, None)
    assert not found[154:184, 19:31].any()


def test_neutral_and_paper_coloured_scratches_on_colourful_pictures_are_still_found() -> None:
    # the colour rule must not cost damage: a neutral bright scratch across 00.jpg's shirts
    # and the green lanyard, and an exposed-paper scratch (less colourful than the print) on
    # a sepia print (recall 0.87 and 0.66, the same as before the rule)
    px = load("photos/00.jpg")
    m = np.zeros(px.shape[:2], np.uint8)
    cv2.line(m, (20, 170), (470, 250), 1, 2)
    damaged = np.clip(px.astype(np.float32) + 80 * m[..., None], 0, 255).astype(np.uint8)
    truth = (m > 0) & (np.abs(luma(damaged) - luma(px)) > 4)
    found, _ = detect_damage(damaged, estimate_noise(damaged).luma, None)
    assert recall(found, truth) > 0.6
    sepia = sepia_copy(load("gray/Einstein01.png"))
    h, w = sepia.shape[:2]
    m = np.zeros((h, w), np.uint8)
    cv2.line(m, (int(0.1 * w), int(0.2 * h)), (int(0.9 * w), int(0.7 * h)), 1, 2)
    damaged = sepia.copy()
    damaged[m > 0] = (236, 230, 214)
    truth = (m > 0) & (np.abs(luma(damaged) - luma(sepia)) > 4)
    found, _ = detect_damage(damaged, estimate_noise(damaged).luma, None)
    assert recall(found, truth) > 0.6
