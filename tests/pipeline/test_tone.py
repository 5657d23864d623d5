"""Restored faces of black-and-white photos take the photo's tone (gray, toned, near-gray)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_path
from restora.config import Settings
from restora.io import Image, decode
from restora.models.nets import wrap
from restora.models.runtime import Runtime
from restora.pipeline.enhance import enhance_faces
from restora.pipeline.paste import photo_tone
from restora.pipeline.photo.mono import ToneCurve, detect_monochrome
from restora.pipeline.upscale import load_upscaler, upscale_pixels
from tiny_models import write_tiny_manifest


class Reddish(torch.nn.Module):
    """A restorer that answers in strong colour, as face networks do on black-and-white input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = torch.tensor([0.35, -0.1, -0.35], dtype=x.dtype).view(1, 3, 1, 1)
        return (x + shift).clamp(-1.0, 1.0)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    tmp = tmp_path_factory.mktemp("tone")
    manifest = write_tiny_manifest(tmp, include={"retinaface-mobilenet0.25-facelibcfg"})
    return Runtime(Settings(models=manifest, home=tmp / "home"), device="cpu")


def sepia(rgb: np.ndarray) -> np.ndarray:
    """A sepia-toned print of ``rgb``: its gray, tinted brown and clipped in the highlights."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    tint = np.array([1.08, 0.94, 0.76], np.float32)
    return np.clip(np.rint(gray[..., None] * tint), 0, 255).astype(np.uint8)


def face_pixels(result, src: np.ndarray) -> np.ndarray:
    """The output pixels the faces changed (N x 3)."""
    changed = (result.image.pixels != src).any(axis=2)
    assert changed.sum() > 500
    return result.image.pixels[changed]


def lab(px: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(px.reshape(-1, 1, 3).astype(np.float32) / 255.0,
                        cv2.COLOR_RGB2Lab)[:, 0, :]


def run(runtime: Runtime, pixels: np.ndarray) -> object:
    img = decode(shared_path("testdata", "photos", "03.jpg")).with_pixels(pixels)
    return enhance_faces(img, runtime=runtime, restorer=wrap(Reddish(), "face-restoration"),
                         identity=False)


def test_tone_curve_keeps_lightness_and_gives_the_print_tint() -> None:
    toned = sepia(decode(shared_path("testdata", "photos", "00.jpg")).pixels)
    curve = ToneCurve.of(toned)
    rng = np.random.default_rng(1)
    colours = rng.random((2000, 3), dtype=np.float32)
    out = curve.apply(colours)
    assert out.shape == colours.shape and out.dtype == np.float32
    before, after = lab(colours * 255), lab(out * 255)
    inside = (after[:, 0] > 5) & (after[:, 0] < 85)  # away from where the tint clips
    assert np.abs(after[inside, 0] - before[inside, 0]).max() < 1.0
    want_a = np.interp(after[inside, 0], curve.levels, curve.a)
    want_b = np.interp(after[inside, 0], curve.levels, curve.b)
    assert np.abs(after[inside, 1] - want_a).max() < 1.0
    assert np.abs(after[inside, 2] - want_b).max() < 1.0
    # and a face that came back colourful lands on the print's hue (brown, b* > a* > 0)
    assert (curve.b[10:80] > curve.a[10:80]).all() and (curve.a[10:80] > 0).all()


def test_photo_tone_tells_gray_toned_and_colour_apart() -> None:
    colour = decode(shared_path("testdata", "photos", "00.jpg")).pixels
    gray = cv2.cvtColor(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert photo_tone(colour) is None
    assert photo_tone(gray).kind == "gray"
    assert photo_tone(sepia(colour)).kind == "toned"
    # a real black-and-white photo whose channels differ by up to 10 levels is not "gray"
    lennon = decode(shared_path("testdata", "gray", "169_John_Lennon_00.png")).pixels
    assert not np.array_equal(lennon[..., 0], lennon[..., 2])
    assert photo_tone(lennon).kind == "toned"
    assert photo_tone(gray.astype(np.uint16) * 257).kind == "gray"


def test_faces_of_a_sepia_print_take_its_tone(runtime: Runtime) -> None:
    src = sepia(decode(shared_path("testdata", "photos", "03.jpg")).pixels)
    result = run(runtime, src)
    assert result.faces_detected == 1 and result.tone == "toned"
    assert result.to_dict()["tone"] == "toned"
    new = lab(face_pixels(result, src))
    curve = ToneCurve.of(src)
    # the restorer's red is gone: every changed pixel sits on the print's own tone curve
    mid = (new[:, 0] > 5) & (new[:, 0] < 85)
    assert np.abs(new[mid, 1] - np.interp(new[mid, 0], curve.levels, curve.a)).max() < 1.5
    assert np.abs(new[mid, 2] - np.interp(new[mid, 0], curve.levels, curve.b)).max() < 1.5
    assert detect_monochrome(result.image.pixels).is_monochrome
    # the lightness the restorer gave is kept
    assert result.image.pixels.astype(int).sum() != src.astype(int).sum()


def test_faces_of_a_near_gray_photo_stay_near_gray(runtime: Runtime) -> None:
    lennon = decode(shared_path("testdata", "gray", "169_John_Lennon_00.png"))
    result = enhance_faces(lennon, runtime=runtime, identity=False,
                           restorer=wrap(Reddish(), "face-restoration"))
    assert result.faces_detected >= 1 and result.tone == "toned"
    new = lab(face_pixels(result, lennon.pixels))
    before = lab(lennon.pixels.reshape(-1, 3))
    # no more colour in the faces than in the photo (the restorer alone gives chroma ~40)
    chroma = np.hypot(new[:, 1], new[:, 2])
    assert np.percentile(chroma, 99) <= np.percentile(np.hypot(before[:, 1], before[:, 2]), 99)
    assert detect_monochrome(result.image.pixels).is_monochrome


def test_exactly_gray_photos_stay_exactly_gray(runtime: Runtime) -> None:
    colour = decode(shared_path("testdata", "photos", "03.jpg")).pixels
    gray = cv2.cvtColor(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    result = run(runtime, gray)
    out = result.image.pixels
    assert result.tone == "gray"
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert not np.array_equal(out, gray)


def test_colour_photos_keep_the_restorers_colour(runtime: Runtime) -> None:
    src = decode(shared_path("testdata", "photos", "03.jpg")).pixels
    result = run(runtime, src)
    assert result.tone is None and result.to_dict()["tone"] is None
    new = face_pixels(result, src).astype(int)
    old = src[(result.image.pixels != src).any(axis=2)].astype(int)
    # the restorer's shift (red up, blue down) reaches the output untouched
    assert (new[:, 0] - old[:, 0]).mean() > 10 and (old[:, 2] - new[:, 2]).mean() > 10


@pytest.mark.parametrize("upscale,bg_upscale,face_upsample", [(2, False, True), (1, True, False)])
def test_gray_photos_stay_exactly_gray_through_the_upscaler(
        tmp_path: Path, upscale: int, bg_upscale: bool, face_upsample: bool) -> None:
    manifest = write_tiny_manifest(
        tmp_path, include={"retinaface-mobilenet0.25-facelibcfg", "tiny-realesrgan-x2"})
    rt = Runtime(Settings(models=manifest, home=tmp_path / "home"), device="cpu")
    colour = decode(shared_path("testdata", "photos", "03.jpg")).pixels
    gray = cv2.cvtColor(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    img = Image(pixels=gray)
    result = enhance_faces(img, runtime=rt, restorer=wrap(Reddish(), "face-restoration"),
                           identity=False, upscale=upscale, bg_upscale=bg_upscale,
                           face_upsample=face_upsample)
    out = result.image.pixels
    assert result.upscaler == "tiny-realesrgan-x2" and result.tone == "gray"
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    # the tiny network's random weights do colour a gray photo when nothing stops them
    up = load_upscaler(rt, rt.registry.get("tiny-realesrgan-x2"))
    plain = upscale_pixels(gray, upscale, up)
    assert not np.array_equal(plain[..., 0], plain[..., 2])


def test_a_grey_file_comes_back_a_grey_file(runtime: Runtime, tmp_path: Path) -> None:
    import io as _io

    from PIL import Image as PILImage

    from restora.io import encode

    scan = tmp_path / "scan.png"
    PILImage.open(shared_path("testdata", "photos", "03.jpg")).convert("L").save(scan)
    src = decode(scan)
    assert src.info["gray"]
    result = enhance_faces(src, runtime=runtime, identity=False,
                           restorer=wrap(Reddish(), "face-restoration"))
    assert result.tone == "gray" and result.faces_detected == 1
    for fmt, mode in (("png", "L"), ("jpeg", "L"), ("webp", "RGB")):
        assert PILImage.open(_io.BytesIO(encode(result.image, fmt))).mode == mode
    back = decode(encode(result.image, "png"))
    np.testing.assert_array_equal(back.pixels, result.image.pixels)
