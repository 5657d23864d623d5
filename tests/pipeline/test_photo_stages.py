"""Photo-restoration stages on their own: monochrome detection, scratch detection, noise.

Real photos from ``../shared/testdata``; damage and noise are added with known masks and seeds.
Measured figures (this machine, numpy 2.4 / OpenCV 5.0) are in the assertions' comments.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import shared_path
from restora.io import decode
from restora.pipeline.photo.denoise import SKIP_SIGMA, estimate_noise
from restora.pipeline.photo.inpaint import inpaint_tiled
from restora.pipeline.photo.mono import TONE_SPREAD, detect_monochrome
from restora.pipeline.photo.scratches import luminance
from restora.pipeline.photo.scratches import detect_scratches

COLOUR = ["photos/00.jpg", "photos/02.png", "photos/05.jpg", "photos/06.png", "faces/0143.png",
          "faces/Solvay_conference_1927_0018.png"]


def load(rel: str) -> np.ndarray:
    return decode(shared_path("testdata", *rel.split("/"))).pixels


def gray_copy(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def sepia_copy(rgb: np.ndarray) -> np.ndarray:
    """The classic sepia matrix applied to the grey copy: red clips in the highlights, so the
    tint changes with lightness as in a real toned print."""
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    return np.clip(gray_copy(rgb).astype(np.float32) @ m.T, 0, 255).astype(np.uint8)


def draw_scratches(rgb: np.ndarray, seed: int, n_lines: int = 8,
                   n_dust: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Long bright and dark scratches (1-3 px) and dust specks; returns (damaged, truth mask).

    The truth is every pixel whose luminance the damage moved by more than 20 levels (a dark
    scratch across a black coat is no damage anyone can see or find).
    """
    rng = np.random.default_rng(seed)
    out = rgb.copy()
    h, w = rgb.shape[:2]
    for i in range(n_lines):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        ang, length = rng.uniform(0, np.pi), rng.uniform(0.3, 0.8) * max(h, w)
        p1 = (int(p0[0] + length * np.cos(ang)), int(p0[1] + length * np.sin(ang)))
        value = int(rng.integers(225, 256)) if i % 2 == 0 else int(rng.integers(0, 30))
        cv2.line(out, p0, p1, (value,) * 3, int(rng.integers(1, 4)))
    for i in range(n_dust):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(out, centre, int(rng.integers(1, 3)), (245,) * 3 if i % 2 else (15,) * 3, -1)
    truth = np.abs(luminance(out) - luminance(rgb)) > 20
    return out, truth


# --- monochrome --------------------------------------------------------------------------------

@pytest.mark.parametrize("rel", COLOUR)
def test_colour_photos_are_not_monochrome_but_their_grey_and_sepia_copies_are(rel: str) -> None:
    rgb = load(rel)
    colour = detect_monochrome(rgb)
    grey = detect_monochrome(gray_copy(rgb))
    sepia = detect_monochrome(sepia_copy(rgb))
    # measured spread p99 (a*b* units): colour 12.5-48.7; grey 0; sepia copies 0.7-2.8
    assert not colour.is_monochrome and colour.spread_p99 > 2 * TONE_SPREAD
    assert grey.is_monochrome and grey.tone_hue is None
    assert sepia.is_monochrome and sepia.spread_p99 < 0.6 * TONE_SPREAD
    assert sepia.chroma_p99 > 25  # clearly tinted (measured 28.1-28.4), still monochrome
    assert 60 < sepia.tone_hue < 110  # yellow-brown


@pytest.mark.parametrize("rel", ["gray/Einstein01.png", "gray/Hepburn01.png",
                                 "gray/169_John_Lennon_00.png"])
def test_real_black_and_white_scans_are_monochrome(rel: str) -> None:
    report = detect_monochrome(load(rel))
    assert report.is_monochrome  # Lennon's JPEG colour noise: spread 3.8, still under 6
    assert report.spread_p99 < 4.5


def test_sixteen_bit_gives_the_same_answer() -> None:
    rgb = sepia_copy(load("photos/06.png"))
    r8 = detect_monochrome(rgb)
    r16 = detect_monochrome(rgb.astype(np.uint16) * 257)
    assert r16.is_monochrome and abs(r16.spread_p99 - r8.spread_p99) < 0.3  # 0.68 vs 0.49


# --- scratches ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rel", ["photos/02.png", "photos/06.png", "faces/0143.png",
                                 "faces/0368.png", "gray/Einstein01.png", "gray/Hepburn01.png"])
def test_clean_photos_have_almost_no_detections(rel: str) -> None:
    rgb = load(rel)
    report = detect_scratches(luminance(rgb), estimate_noise(rgb).luma)
    # measured: 02 0.13 % (necklaces), 06 0.00 %, faces 0.00 %, Einstein 0.00 %, Hepburn 0.01 %
    assert report.coverage < 0.2


@pytest.mark.parametrize(("rel", "seed"), [("photos/02.png", 0), ("photos/06.png", 1),
                                           ("faces/0240.png", 2), ("gray/Einstein01.png", 3)])
def test_synthetic_scratches_are_found(rel: str, seed: int) -> None:
    clean = load(rel)
    damaged, truth = draw_scratches(clean, seed)
    report = detect_scratches(luminance(damaged), estimate_noise(damaged).luma)
    found = report.mask
    recall = (found & truth).sum() / truth.sum()
    precision = (found & truth).sum() / found.sum()
    # measured (truth 0.8-2.0 % of the area): coverage / truth 0.85-1.04, recall 0.85-0.96,
    # precision 0.83 (02.png: its necklaces count too) to 1.00; 10-17 dust specks
    assert 0.7 <= report.coverage / (100 * truth.mean()) <= 1.3
    assert recall > 0.8 and precision > 0.75
    assert report.dust_specks >= 5


def test_edges_and_stripes_are_not_scratches() -> None:
    """A step edge and a dense stripe texture: thin bright/dark structure everywhere, no defect."""
    img = np.full((300, 300), 90, np.float32)
    img[:, 150:] = 200  # edge
    img[::4, :100] = 230  # 1-px stripes every 4 rows
    report = detect_scratches(img)
    assert report.coverage == 0.0
    img[200, 120:290] = 255  # one real scratch across the flat part and the edge
    report = detect_scratches(img)
    assert 100 <= report.scratch_pixels <= 200  # the 170-px line, less where it meets the edge
    assert report.mask[200, 200] and not report.mask[:, :100].any()


def test_tiled_inpainting_only_touches_the_mask_and_keeps_depth() -> None:
    rgb16 = load("photos/06.png").astype(np.uint16) * 257
    mask = np.zeros(rgb16.shape[:2], bool)
    mask[300, 50:700] = True  # crosses three 256-px tiles
    damaged = rgb16.copy()
    damaged[mask] = 65535
    out = inpaint_tiled(damaged, mask, grow=0)
    assert out.dtype == np.uint16
    assert np.array_equal(out[~mask], damaged[~mask])
    err_before = np.abs(damaged[mask].astype(float) - rgb16[mask]).mean()
    err_after = np.abs(out[mask].astype(float) - rgb16[mask]).mean()
    assert err_after < 0.25 * err_before  # measured: about 0.05


# --- noise -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [0, 5, 15])
def test_noise_estimate_tracks_added_noise(sigma: float) -> None:
    rng = np.random.default_rng(7)
    clean = load("photos/02.png")
    noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).round().astype(np.uint8)
    est = estimate_noise(noisy)
    luma_sigma = sigma * float(np.linalg.norm([0.299, 0.587, 0.114]))  # RGB noise seen in Y
    if sigma == 0:
        assert est.is_clean and est.luma < SKIP_SIGMA / 4  # measured 0.25
    else:
        assert abs(est.luma - luma_sigma) < 0.12 * luma_sigma + 0.3  # measured 3.46 / 10.13
        assert not est.is_clean


def test_banded_detection_matches_one_piece_and_sampled_noise_matches_full() -> None:
    """Large scans are analysed in bands (scratches) and sampled windows (noise): same answers."""
    from restora.pipeline.photo.denoise import sample_windows
    from restora.pipeline.photo.scratches import detect_in_bands

    clean = load("photos/02.png")
    damaged, _ = draw_scratches(clean, 4)
    whole = detect_in_bands(damaged, band_pixels=10**9)
    banded = detect_in_bands(damaged, band_pixels=150_000)  # bands of 124 rows + margins
    agree = (whole.mask == banded.mask).mean()
    assert agree > 0.9995 and abs(whole.coverage - banded.coverage) < 0.02
    big = np.tile(damaged, (2, 3, 1))  # 1290 x 3612: sampled in 16 windows
    assert len(sample_windows(*big.shape[:2])) == 16
    rng = np.random.default_rng(3)
    noisy = np.clip(big + rng.normal(0, 10, big.shape), 0, 255).astype(np.uint8)
    sampled = estimate_noise(noisy)
    assert abs(sampled.luma - estimate_noise(noisy[:1000, :1500]).luma) < 0.3


def test_denoise_rule_and_sixteen_bit() -> None:
    from skimage.metrics import peak_signal_noise_ratio as psnr

    from restora.pipeline.photo.denoise import denoise, filter_strengths

    clean = load("faces/0342.png").astype(np.uint16) * 257
    rng = np.random.default_rng(11)
    noisy = np.clip(clean + rng.normal(0, 15 * 257, clean.shape), 0, 65535).astype(np.uint16)
    est = estimate_noise(noisy)
    h25, c25 = filter_strengths(est, 25)
    h50, c50 = filter_strengths(est, 50)
    assert h25 == pytest.approx(est.luma) and c25 == pytest.approx(1.5 * est.chroma)
    assert h50 == pytest.approx(2 * h25) and filter_strengths(est, 0) == (0.0, 0.0)
    out = denoise(noisy, est, 25)
    assert out.dtype == np.uint16
    gain = psnr(clean, out, data_range=65535) - psnr(clean, noisy, data_range=65535)
    assert gain > 5.0  # measured +16.2 dB


def test_large_scan_shortcuts_agree_with_the_exact_statistics() -> None:
    """Scans over 2000 px pool the background range and subsample the rarity percentile."""
    from restora.pipeline.photo.scratches import local_percentile, local_range

    rng = np.random.default_rng(5)
    img = cv2.GaussianBlur(rng.normal(128, 40, (600, 900)).astype(np.float32), (0, 0), 6)
    exact = cv2.morphologyEx(img, cv2.MORPH_GRADIENT,
                             cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (45, 45)))
    pooled = local_range(img, 44.0)  # 4 x 4 cells, disc of 11
    assert np.abs(pooled - exact).mean() < 0.1 * exact.mean()  # measured 0.19 of 7.5
    full = local_percentile(img, 96, 85.0)
    sampled = local_percentile(img, 96, 85.0, stride=4)
    assert np.abs(full - sampled).max() < 0.03 * float(np.ptp(img))  # measured 0.07 of 16
