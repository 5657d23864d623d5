"""EXIF orientation 1-8 and ICC profiles (Display P3 -> sRGB) at decode, and what encode keeps."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from helpers import P3_TO_SRGB, display_p3_profile, gradient, srgb_decode, srgb_encode
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from restora.io import Image, decode, encode
from restora.io.color import exif_orientation


def _exif(orientation: int) -> bytes:
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "RestoraCam"  # Make: must survive the orientation reset
    return exif.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "AVIF"])
def test_exif_orientation_applied_and_reset(fmt: str, orientation: int) -> None:
    src = gradient(48, 64)
    src[:8, :16] = (255, 0, 255)  # an asymmetric marker in the stored top-left corner
    out = io.BytesIO()
    kw = {"quality": 95} if fmt in ("JPEG", "AVIF") else {}
    if fmt == "WEBP":
        kw = {"lossless": True}
    PILImage.fromarray(src).save(out, fmt, exif=_exif(orientation), **kw)
    stored = PILImage.open(io.BytesIO(out.getvalue()))
    expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))  # Pillow's reading
    img = decode(out.getvalue())
    assert img.pixels.shape == expected.shape
    if orientation in (5, 6, 7, 8):
        assert img.size == (48, 64)
    tolerance = 3.0 if fmt in ("JPEG", "AVIF") else 0.0  # mean abs error of the lossy codecs
    assert np.abs(img.pixels.astype(int) - expected).mean() <= tolerance
    if fmt != "TIFF":  # TIFF carries orientation as a TIFF tag, not an EXIF block
        assert img.exif is not None and exif_orientation(img.exif) == 1
        kept = PILImage.Exif()
        kept.load(img.exif)
        assert kept.get(0x010F) == "RestoraCam"
    if orientation != 1:
        assert img.info["orientation_applied"] == orientation


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_heif_orientation_applied_once(orientation: int) -> None:
    import pillow_heif

    src = gradient(48, 64)
    src[:8, :16] = (255, 0, 255)
    out = io.BytesIO()
    # pillow-heif turns the EXIF orientation into the container's irot/imir transform.
    pillow_heif.from_pillow(PILImage.fromarray(src)).save(out, quality=95, exif=_exif(orientation))
    img = decode(out.getvalue())
    errors = {}
    for candidate in range(1, 9):  # the decoded picture must match this orientation, and no other
        view = np.asarray(ImageOps.exif_transpose(_with_orientation(PILImage.fromarray(src), candidate)))
        if view.shape == img.pixels.shape:
            errors[candidate] = np.abs(img.pixels.astype(int) - view).mean()
    assert min(errors, key=errors.get) == orientation
    assert errors[orientation] < 8.0  # lossy HEVC on a textured image
    assert exif_orientation(img.exif) == 1


def _with_orientation(im: PILImage.Image, orientation: int) -> PILImage.Image:
    im.getexif()[0x0112] = orientation
    return im


def test_orientation_not_reapplied_after_encode() -> None:
    out = io.BytesIO()
    PILImage.fromarray(gradient(48, 64)).save(out, "PNG", exif=_exif(6))
    img = decode(out.getvalue())
    again = decode(encode(img, "jpeg"))
    assert again.size == img.size == (48, 64)


def _p3_expected(src: np.ndarray) -> np.ndarray:
    return srgb_encode(srgb_decode(src / 255.0) @ P3_TO_SRGB.T) * 255.0


def _p3_sample() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(20, 236, (24, 32, 3)).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_display_p3_converted_to_srgb(fmt: str) -> None:
    src = _p3_sample()
    p3 = display_p3_profile()
    out = io.BytesIO()
    PILImage.fromarray(src).save(out, fmt, icc_profile=p3, **({"quality": 100, "subsampling": 0}
                                                             if fmt == "JPEG" else {}))
    img = decode(out.getvalue())
    assert img.icc_profile == p3 and img.info.get("icc_converted")
    expected = _p3_expected(src)
    err = np.abs(img.pixels.astype(float) - expected)
    assert err.mean() < (1.5 if fmt == "JPEG" else 0.75)  # colorimetric conversion, 8-bit
    assert np.abs(img.pixels.astype(int) - src).mean() > 4  # and the pixels really moved
    for fmt_out in ("png", "jpeg", "webp"):  # outputs say sRGB, never the stale P3 profile
        back = PILImage.open(io.BytesIO(encode(img, fmt_out)))
        desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(back.info["icc_profile"])))
        assert "sRGB" in desc


def test_display_p3_16bit_png_converted_keeps_depth() -> None:
    import cv2

    src8 = _p3_sample()
    src = src8.astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(src[..., ::-1]))
    assert ok
    png = buf.tobytes()
    payload = b"P3\x00\x00" + zlib.compress(display_p3_profile())
    chunk = struct.pack(">I", len(payload)) + b"iCCP" + payload + struct.pack(">I", zlib.crc32(b"iCCP" + payload))
    img = decode(png[:33] + chunk + png[33:])
    assert img.bit_depth == 16 and img.pixels.dtype == np.uint16
    err = np.abs(img.pixels.astype(float) / 257 - _p3_expected(src8))
    assert err.max() < 0.6  # exact float maths for matrix/TRC profiles (8-bit levels)


def test_srgb_profile_is_kept_verbatim() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    src = gradient()
    PILImage.fromarray(src).save(out, "PNG", icc_profile=srgb)
    img = decode(out.getvalue())
    np.testing.assert_array_equal(img.pixels, src)  # no needless round trip through LittleCMS
    assert PILImage.open(io.BytesIO(encode(img, "png"))).info["icc_profile"] == srgb


def test_16bit_png_keeps_exif_and_icc() -> None:
    img = Image(pixels=gradient(dtype=np.uint16), bit_depth=16, exif=_exif(1),
                icc_profile=display_p3_profile())
    data = encode(img, "png")
    back = decode(data)
    assert back.bit_depth == 16
    assert back.exif is not None and PILImage.Exif().load(back.exif) is None
    kept = PILImage.Exif()
    kept.load(back.exif)
    assert kept.get(0x010F) == "RestoraCam"
    assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(back.icc_profile)))


def test_damaged_or_mismatched_profile_is_ignored() -> None:
    src = gradient()
    cmyk = b"\x00\x00\x02\x00" + b"none" + b"\x02\x10\x00\x00mntrCMYKXYZ " + b"\x00" * 492
    for icc in (b"not an icc profile at all" * 8, cmyk):
        out = io.BytesIO()
        PILImage.fromarray(src).save(out, "PNG", icc_profile=icc)
        img = decode(out.getvalue())
        np.testing.assert_array_equal(img.pixels, src)
        assert img.icc_profile == icc and "icc_converted" not in img.info
