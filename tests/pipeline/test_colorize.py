"""Colorization stage: the official DDColor pre/post-processing, end to end through the Runtime.

The network is the reduced-width conformance model (``../shared/conformance/ddcolor/tiny.pth``),
registered as a custom manifest entry, so these tests run the same path as a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_path
from restora.config import Settings
from restora.errors import InvalidParameter, ModelNotInstalled
from restora.io import Image, decode
from restora.models.runtime import Runtime
from restora.pipeline.colorize import colorize, compose, model_input, rgb_to_lab, to_unit_float
from tiny_models import tiny_ddcolor_entry, write_tiny_manifest

TINY_ID = "tiny-ddcolor"


def ddcolor_dir() -> Path:
    return shared_path("conformance", "ddcolor")


def tiny_entry(path: Path | None = None, **extra: object) -> dict:
    """The reduced-width golden model at the official input size (512)."""
    return tiny_ddcolor_entry(path, **extra)


def make_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: list[dict]) -> Runtime:
    manifest = write_tiny_manifest(tmp_path, include=set(), extra=entries)
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    return Runtime(Settings(), device="cpu")


@pytest.fixture
def runtime(restora_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    return make_runtime(tmp_path, monkeypatch, [tiny_entry()])


def einstein(rows: int | None = None) -> Image:
    image = decode(shared_path("testdata", "gray", "Einstein01.png"))
    if rows is not None:
        image = image.with_pixels(np.ascontiguousarray(image.pixels[:rows]))
    return image


def golden_png(name: str) -> np.ndarray:
    return cv2.imread(str(ddcolor_dir() / f"{name}.png"), cv2.IMREAD_COLOR)[:, :, ::-1]


GOLDENS = [("tiny_e2e", None, 512), ("tiny_e2e_crop448_s256", 448, 256)]


# --- conformance with the official pipeline ------------------------------------------------------

@pytest.mark.parametrize(("name", "rows", "size"), GOLDENS)
def test_each_stage_matches_the_reference(runtime: Runtime, name: str, rows: int | None,
                                          size: int) -> None:
    stored = np.load(ddcolor_dir() / f"{name}.npz", allow_pickle=False)
    image = einstein(rows)
    assert np.array_equal(image.pixels, cv2.imread(  # decode == cv2.imread, as the reference read
        str(shared_path("testdata", "gray", "Einstein01.png")))[:rows, :, ::-1])
    rgb = to_unit_float(image.pixels)
    lab = rgb_to_lab(rgb)
    # Pre-processing is bit-exact with the reference.
    assert np.array_equal(model_input(rgb, size), stored["model_input"])
    if "orig_l" in stored.files:
        assert np.array_equal(lab[:, :, :1], stored["orig_l"])
    # The network, from the stored input: README tolerance 1e-3.
    net = runtime.load(TINY_ID)
    with torch.inference_mode():
        ab = net(torch.from_numpy(stored["model_input"]))
    assert float(np.abs(ab.numpy() - stored["model_output_ab"]).max()) < 1e-3
    # Post-processing from the stored a/b is bit-exact with the golden PNG.
    out = np.rint(compose(lab, stored["model_output_ab"]) * np.float32(255)).astype(np.uint8)
    assert np.array_equal(out, golden_png(name))


@pytest.mark.parametrize(("name", "rows", "size"), GOLDENS)
def test_colorize_reproduces_the_end_to_end_goldens(runtime: Runtime, name: str,
                                                    rows: int | None, size: int) -> None:
    result, report = colorize(einstein(rows), runtime=runtime, strength=1.0, input_size=size)
    assert report == {"model": TINY_ID, "strength": 1.0, "inputSize": size,
                      "engine": "torch/fp32"}
    want = golden_png(name)
    assert result.pixels.shape == want.shape and result.pixels.dtype == np.uint8
    diff = np.abs(result.pixels.astype(np.int16) - want).max(axis=2)
    # README: OpenCV colour conversions -> at most 1 grey level on at most 0.1 % of pixels.
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= 0.001 * diff.size
    # The synthetic model does colour the grey picture.
    assert np.abs(result.pixels[:, :, 0].astype(int) - result.pixels[:, :, 2]).mean() > 2


# --- strength, lightness, depth and alpha -------------------------------------------------------

def test_strength_zero_returns_the_input_unchanged(runtime: Runtime) -> None:
    image = decode(shared_path("testdata", "photos", "04.jpg"))
    result, report = colorize(image, runtime=runtime, strength=0.0, input_size=64)
    assert np.array_equal(result.pixels, image.pixels) and result.pixels is not image.pixels
    assert result.alpha is None and result.bit_depth == 8 and report["strength"] == 0.0


def test_strength_blends_chroma_and_keeps_lightness(runtime: Runtime) -> None:
    image = decode(shared_path("testdata", "photos", "04.jpg"))  # a colour photo
    lab_in = rgb_to_lab(to_unit_float(image.pixels))
    full, _ = colorize(image, runtime=runtime, strength=1.0, input_size=64)
    half, report = colorize(image, runtime=runtime, strength=0.5, input_size=64)
    assert report == {"model": TINY_ID, "strength": 0.5, "inputSize": 64,
                      "engine": "torch/fp32"}
    lab_full = rgb_to_lab(to_unit_float(full.pixels))
    lab_half = rgb_to_lab(to_unit_float(half.pixels))
    # Half strength lies half way between the original and the model's chroma (up to 8-bit
    # rounding and gamut clipping, which only the saturated full-strength colours meet).
    midway = (lab_in[:, :, 1:] + lab_full[:, :, 1:]) / 2
    err = np.abs(lab_half[:, :, 1:] - midway)
    assert np.median(err) < 1.0 and np.percentile(err, 95) < 4.0
    moved = np.abs(lab_full[:, :, 1:] - lab_in[:, :, 1:]).mean()
    assert moved > 5 * np.median(err)
    # Lightness is the original's.
    for out in (lab_half, lab_full):
        assert np.abs(out[:, :, 0] - lab_in[:, :, 0]).mean() < 0.6


def test_sixteen_bit_input_stays_sixteen_bit(runtime: Runtime) -> None:
    image8 = einstein(rows=256)
    image16 = image8.with_pixels(image8.pixels.astype(np.uint16) * 257)
    out8, _ = colorize(image8, runtime=runtime, strength=1.0, input_size=128)
    out16, _ = colorize(image16, runtime=runtime, strength=1.0, input_size=128)
    assert out16.pixels.dtype == np.uint16 and out16.bit_depth == 16
    assert out16.pixels.shape == image16.pixels.shape
    # x * 257 / 65535 == x / 255: both runs see the same floats, so they differ only by the
    # output rounding (at most half an 8-bit level; measured 0.498).
    diff = np.abs(out16.pixels / 257.0 - out8.pixels)
    assert diff.max() <= 0.51
    assert len(np.unique(out16.pixels)) > 2 * len(np.unique(out8.pixels))  # real 16-bit detail


def test_rgba_input_keeps_its_alpha(runtime: Runtime) -> None:
    image = decode(shared_path("testdata", "photos", "02.png"))
    assert image.alpha is not None
    result, _ = colorize(image, runtime=runtime, strength=0.85, input_size=128)
    assert result.size == image.size and result.pixels.dtype == image.pixels.dtype
    assert np.array_equal(result.alpha, image.alpha)
    assert not np.array_equal(result.pixels, image.pixels)


def test_checkpoint_nested_under_params_loads(restora_home: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # The official DDColor-models/*.pth files are BasicSR training checkpoints ("params").
    nested = tmp_path / "ddcolor_nested.pth"
    torch.save({"params": torch.load(ddcolor_dir() / "tiny.pth", weights_only=True)}, nested)
    runtime = make_runtime(tmp_path, monkeypatch, [
        tiny_entry(), tiny_entry(nested, id="tiny-ddcolor-nested", nesting="params",
                                 default=False)])
    image = einstein(rows=128)
    plain, _ = colorize(image, runtime=runtime, strength=1.0, input_size=64)
    wrapped, report = colorize(image, runtime=runtime, model_id="tiny-ddcolor-nested",
                               strength=1.0, input_size=64)
    assert report["model"] == "tiny-ddcolor-nested"
    assert np.array_equal(plain.pixels, wrapped.pixels)


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("strength", [0.0, 0.85])
def test_missing_default_model_is_an_error_not_a_skip(restora_home: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      strength: float) -> None:
    runtime = make_runtime(tmp_path, monkeypatch, [])  # only the built-in (absent) DDColor-L
    with pytest.raises(ModelNotInstalled) as info:
        colorize(einstein(rows=64), runtime=runtime, strength=strength)
    assert info.value.code == "model_not_installed" and "ddcolor" in info.value.message


def test_missing_custom_model_file_is_an_error(restora_home: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = make_runtime(tmp_path, monkeypatch, [tiny_entry(tmp_path / "absent.pth")])
    with pytest.raises(ModelNotInstalled):
        colorize(einstein(rows=64), runtime=runtime, model_id=TINY_ID)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_photo_lying_turned_is_colorized_the_right_way_up(runtime: Runtime,
                                                            rotation: int) -> None:
    upright = einstein()  # square: every resize turns exactly with it
    k = rotation // 90
    lying = upright.with_pixels(np.ascontiguousarray(np.rot90(upright.pixels, -k)))
    want, _ = colorize(upright, runtime=runtime)
    got, report = colorize(lying, runtime=runtime, rotation=rotation)
    assert report["rotation"] == rotation
    assert np.array_equal(np.rot90(got.pixels, k), want.pixels)
    plain, _ = colorize(lying, runtime=runtime)  # seen lying, the answer differs
    assert np.abs(np.rot90(plain.pixels, k).astype(np.int16)
                  - want.pixels.astype(np.int16)).mean() > 0.5


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_lying_photo_of_any_shape_gives_the_network_its_upright_input(rotation: int) -> None:
    # what colorize feeds the network for a turned photo: the upright photo's own input (the
    # a/b maps' nearest resize to full size then samples along turned axes)
    upright = to_unit_float(einstein(rows=400).pixels)
    k = rotation // 90
    lying = np.ascontiguousarray(np.rot90(upright, -k))
    seen = np.rot90(model_input(lying, 256), k, axes=(2, 3))
    np.testing.assert_allclose(seen, model_input(upright, 256), atol=1e-5)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"strength": 1.5}, "strength"), ({"strength": -0.1}, "strength"),
    ({"strength": float("nan")}, "strength"), ({"input_size": 100}, "inputSize"),
    ({"input_size": 0}, "inputSize"), ({"rotation": 45}, "rotation"),
])
def test_invalid_parameters(runtime: Runtime, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        colorize(einstein(rows=64), runtime=runtime, **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_the_banded_full_resolution_work_gives_the_whole_frame_pixels(
        monkeypatch: pytest.MonkeyPatch, strength: float) -> None:
    """In bands of a few rows (the last one shorter) the colour work gives exactly the pixels of
    :func:`compose` on the whole frame, 8- and 16-bit, a/b maps not square."""
    import restora.pipeline.colorize as col

    image = decode(shared_path("testdata", "photos", "04.jpg"))
    ab = np.random.default_rng(0).uniform(-60, 60, (1, 2, 48, 80)).astype(np.float32)
    monkeypatch.setattr(col, "BAND_PIXELS", 7 * image.width + 3)
    assert image.height % 7
    for pixels, top in ((image.pixels, 255),
                        (image.pixels.astype(np.uint16) * 257, 65535)):
        lab = rgb_to_lab(to_unit_float(pixels))
        whole = np.rint(compose(lab, ab, strength) * np.float32(top)).astype(pixels.dtype)
        assert np.array_equal(col.compose_bands(pixels, ab, strength, top), whole)
