"""Decode/encode round trips for the writable formats, depth and alpha, and the helpers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import gradient, mae, smooth
from PIL import Image as PILImage

from restora.errors import InvalidParameter
from restora.io import (Image, decode, encode, from_float, make_preview, output_for, output_format_for,
                        sniff_format, to_float)


def _pil_bytes(arr: np.ndarray, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(arr).save(out, fmt, **kw)
    return out.getvalue()


def test_png_8bit_exact() -> None:
    src = gradient()
    img = decode(_pil_bytes(src, "PNG"))
    assert (img.format, img.bit_depth, img.pixels.dtype, img.alpha) == ("png", 8, np.uint8, None)
    assert img.size == (64, 48)
    np.testing.assert_array_equal(img.pixels, src)


def test_jpeg_within_tolerance() -> None:
    src = smooth()
    img = decode(_pil_bytes(src, "JPEG", quality=95))
    assert img.format == "jpeg" and img.pixels.shape == src.shape
    assert mae(img.pixels, src) < 2.0  # quality 95 on a smooth image: well under 2 levels


def test_webp_lossless_exact_and_lossy_close() -> None:
    src = gradient()
    np.testing.assert_array_equal(decode(_pil_bytes(src, "WEBP", lossless=True)).pixels, src)
    img = decode(_pil_bytes(smooth(), "WEBP", quality=90))
    assert img.format == "webp" and mae(img.pixels, smooth()) < 3.0


def test_png_16bit_round_trip_exact() -> None:
    src = gradient(dtype=np.uint16)
    alpha = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    data = encode(Image(pixels=src, alpha=alpha, bit_depth=16), "png")
    assert data[24] == 16 and data[25] == 6  # IHDR: 16-bit RGBA
    img = decode(data)
    assert img.bit_depth == 16 and img.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img.pixels, src)
    np.testing.assert_array_equal(img.alpha, alpha)


def test_alpha_round_trip_png_and_webp() -> None:
    src = gradient()
    alpha = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    img = decode(_pil_bytes(np.dstack([src, alpha]), "PNG"))
    np.testing.assert_array_equal(img.alpha, alpha)
    np.testing.assert_array_equal(img.pixels, src)
    again = decode(encode(img, "png"))
    np.testing.assert_array_equal(again.alpha, alpha)
    np.testing.assert_array_equal(again.pixels, src)
    webp = decode(encode(img, "webp", quality=100))
    assert webp.alpha is not None and mae(webp.alpha, alpha) < 1.0


def test_jpeg_composites_alpha_on_white() -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    alpha = np.zeros((16, 16), np.uint8)  # fully transparent black -> white
    alpha[:, 8:] = 255  # right half opaque black
    out = decode(encode(Image(pixels=rgb, alpha=alpha), "jpeg"))
    assert out.alpha is None
    assert out.pixels[:, :6].min() > 245 and out.pixels[:, 10:].max() < 10


def test_16bit_to_8bit_rounds() -> None:
    src = np.full((4, 4, 3), 257 * 100 + 128, np.uint16)  # 100.5 levels -> rounds to 100 or 101
    img = decode(encode(Image(pixels=src, bit_depth=16), "webp", quality=100))
    assert img.bit_depth == 8 and abs(int(img.pixels.mean()) - 100) <= 1


def test_exif_and_icc_kept_in_jpeg() -> None:
    exif = PILImage.Exif()
    exif[0x010F] = "RestoraCam"  # Make
    exif[0x0112] = 1
    data = _pil_bytes(smooth(), "JPEG", exif=exif.tobytes())
    img = decode(data)
    for fmt in ("jpeg", "png", "webp"):
        back = PILImage.open(io.BytesIO(encode(img, fmt)))
        assert back.getexif().get(0x010F) == "RestoraCam", fmt


def test_preview_is_webp_and_bounded() -> None:
    img = Image(pixels=gradient(300, 500))
    data = make_preview(img, longest=100)
    assert sniff_format(data) == "webp"
    assert PILImage.open(io.BytesIO(data)).size == (100, 60)
    small = make_preview(Image(pixels=gradient(30, 50)))
    assert PILImage.open(io.BytesIO(small)).size == (50, 30)  # never upscaled


@pytest.mark.parametrize(("src", "out"), [
    ("jpeg", "jpeg"), ("png", "png"), ("webp", "webp"), ("avif", "png"), ("heif", "png"),
    ("raw", "png"), ("psd", "png"), ("exr", "png"), ("hdr", "png"), ("tiff", "png"),
    ("bmp", "png"), ("gif", "png"), ("tga", "png"),
])
def test_output_format_rule(src: str, out: str) -> None:
    assert output_format_for(src) == out


@pytest.mark.parametrize("src", ["jpeg", "png", "webp", "heif", "tiff"])
def test_enhance_faces_output_is_always_png(src: str) -> None:
    # The SnapOtter document: "Output is always PNG", named <stem>_enhanced.png.
    assert output_for("enhance-faces", "dir/portrait.photo.JPG", src) == ("png",
                                                                          "portrait.photo_enhanced.png")


@pytest.mark.parametrize(("src", "fmt", "name"), [
    ("jpeg", "jpeg", "old_restored.jpg"), ("webp", "webp", "old_restored.webp"),
    ("heif", "png", "old_restored.png"), ("png", "png", "old_restored.png")])
def test_restore_photo_output_keeps_the_format_rule(src: str, fmt: str, name: str) -> None:
    assert output_for("restore-photo", "old.x", src) == (fmt, name)


def test_output_for_explicit_format_and_16bit_alpha_png() -> None:
    assert output_for("face-refiner", "a.png", "png", "webp") == ("webp", "a_refined.webp")
    assert output_for("face-recovery", "", "jpeg", "jpg") == ("jpeg", "image_recovered.jpg")
    with pytest.raises(InvalidParameter):
        output_for("face-recovery", "a.png", "png", "tiff")
    # 16-bit and alpha survive the enhance-faces output (PNG) exactly
    px = (np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1000)
    alpha = np.full((4, 5), 40000, np.uint16)
    fmt, _ = output_for("enhance-faces", "a.jpg", "jpeg")
    back = decode(encode(Image(pixels=px, alpha=alpha, bit_depth=16), fmt))
    assert back.pixels.dtype == np.uint16 and np.array_equal(back.pixels, px)
    assert back.alpha is not None and np.array_equal(back.alpha, alpha)


def test_encode_rejects_bad_parameters() -> None:
    img = Image(pixels=gradient(4, 4))
    with pytest.raises(InvalidParameter) as exc:
        encode(img, "tiff")
    assert exc.value.field == "format"
    with pytest.raises(InvalidParameter):
        encode(img, "jpeg", quality=0)


def test_a_side_longer_than_the_format_holds_is_a_clear_error() -> None:
    from restora.errors import OutputTooLarge

    wide = Image(pixels=np.zeros((1, 16_384, 3), np.uint8))
    with pytest.raises(OutputTooLarge) as exc:
        encode(wide, "webp")
    assert exc.value.http_status == 413 and exc.value.details["limit"] == 16_383
    assert len(encode(wide, "jpeg")) > 0 and len(encode(wide, "png")) > 0
    edge = Image(pixels=np.zeros((1, 16_383, 3), np.uint8))
    assert PILImage.open(io.BytesIO(encode(edge, "webp"))).size == (16_383, 1)


def test_float_helpers_keep_depth() -> None:
    src = gradient(dtype=np.uint16)
    img = Image(pixels=src, bit_depth=16, alpha=np.full((48, 64), 65535, np.uint16))
    arr = to_float(img)
    assert arr.dtype == np.float32 and arr.shape == (48, 64, 3)
    assert 0.0 <= arr.min() and arr.max() <= 1.0
    back = from_float(arr, like=img)
    assert back.bit_depth == 16 and back.pixels.dtype == np.uint16
    np.testing.assert_array_equal(back.pixels, src)
    up = from_float(np.repeat(np.repeat(arr, 2, 0), 2, 1), like=img)
    assert up.alpha is not None and up.alpha.shape == (96, 128)


def test_pixel_layouts_normalise_to_rgb() -> None:
    rgb = gradient()
    grey = rgb[..., 1]
    # greyscale, grey + alpha, palette with transparency, CMYK JPEG, 16-bit grey
    img = decode(_pil_bytes(grey, "PNG"))
    np.testing.assert_array_equal(img.pixels, np.repeat(grey[..., None], 3, axis=2))
    la = PILImage.fromarray(np.dstack([grey, 255 - grey]), "LA")
    out = io.BytesIO()
    la.save(out, "PNG")
    img = decode(out.getvalue())
    np.testing.assert_array_equal(img.alpha, 255 - grey)
    pal = PILImage.fromarray(rgb).quantize(8)
    out = io.BytesIO()
    pal.save(out, "PNG", transparency=0)
    img = decode(out.getvalue())
    assert img.alpha is not None and set(np.unique(img.alpha)) <= {0, 255}
    np.testing.assert_array_equal(img.pixels, np.asarray(pal.convert("RGB")))
    out = io.BytesIO()
    PILImage.fromarray(smooth()).convert("CMYK").save(out, "JPEG", quality=95)
    img = decode(out.getvalue())
    assert img.pixels.shape == (48, 64, 3) and mae(img.pixels, smooth()) < 3.0
    grey16 = (np.arange(48 * 64, dtype=np.uint16) * 21).reshape(48, 64)
    out = io.BytesIO()
    PILImage.fromarray(grey16).save(out, "PNG")
    img = decode(out.getvalue())
    assert img.bit_depth == 16
    np.testing.assert_array_equal(img.pixels[..., 0], grey16)


def test_16bit_png_exif_orientation_applied() -> None:
    exif = PILImage.Exif()
    exif[0x0112] = 6
    src = gradient(dtype=np.uint16)
    img = decode(encode(Image(pixels=src, bit_depth=16, exif=exif.tobytes()), "png"))
    assert img.bit_depth == 16 and img.size == (48, 64)
    np.testing.assert_array_equal(img.pixels, np.rot90(src, k=-1))


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk, checking each CRC (a valid file or an assertion error)."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + payload) == crc, kind
        chunks.append((kind, payload))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    return chunks


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_fast_png_default_is_valid_and_lossless(depth: int, with_alpha: bool) -> None:
    """The default PNG writer (run-length deflate, for speed) on a real photo: a valid file
    (chunk CRCs, one zlib stream of the exact filtered size) that decodes to the same pixels,
    16-bit and alpha included."""
    import zlib

    from conftest import shared_path

    photo = decode(shared_path("testdata", "photos", "06.png"))  # RGBA
    pixels = photo.pixels if depth == 8 else photo.pixels.astype(np.uint16) * 257 + 3
    alpha = None
    if with_alpha:
        alpha = photo.alpha if depth == 8 else photo.alpha.astype(np.uint16) * 257
    data = encode(Image(pixels=pixels, alpha=alpha, bit_depth=depth), "png")
    chunks = _png_chunks(data)
    ihdr = chunks[0][1]
    channels = 4 if with_alpha else 3
    assert (ihdr[8], ihdr[9]) == (depth, 6 if with_alpha else 2)
    raw = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    h, w = pixels.shape[:2]
    assert len(raw) == h * (1 + w * channels * depth // 8)
    back = decode(data)
    assert back.bit_depth == depth
    np.testing.assert_array_equal(back.pixels, pixels)
    if with_alpha:
        np.testing.assert_array_equal(back.alpha, alpha)
    else:
        assert back.alpha is None
    with PILImage.open(io.BytesIO(data)) as im:
        im.verify()


def _gray_source(fmt: str, depth: int = 8, with_alpha: bool = False) -> tuple[bytes, np.ndarray]:
    """A single-channel file (and its grey values) as a scanner or an editor writes one."""
    import cv2

    top = 65535 if depth == 16 else 255
    grey = (np.linspace(0, 1, 48 * 64).reshape(48, 64) * top).astype(
        np.uint16 if depth == 16 else np.uint8)
    if depth == 16 and with_alpha:  # no encoder here writes 16-bit grey + alpha but ours
        from restora.io.png import write_png

        out = io.BytesIO()
        write_png(out, np.repeat(grey[..., None], 3, axis=2), grey[::-1].copy(), gray=True)
        return out.getvalue(), grey
    if depth == 16:
        ok, buf = cv2.imencode(".png", grey)
        assert ok
        return buf.tobytes(), grey
    pil = PILImage.fromarray(grey, "L")
    if with_alpha:
        pil = PILImage.merge("LA", [pil, PILImage.fromarray(grey[::-1], "L")])
    out = io.BytesIO()
    pil.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue(), grey


@pytest.mark.parametrize("depth,with_alpha", [(8, False), (8, True), (16, False), (16, True)])
def test_grey_png_in_grey_png_out(depth: int, with_alpha: bool) -> None:
    data, grey = _gray_source("PNG", depth, with_alpha)
    img = decode(data)
    assert img.info["gray"] and img.pixels.shape == (48, 64, 3) and img.bit_depth == depth
    out = encode(img, "png")
    assert out[24] == depth and out[25] == (4 if with_alpha else 0)  # IHDR: grey (+ alpha)
    back = decode(out)
    np.testing.assert_array_equal(back.pixels[..., 0], grey)
    np.testing.assert_array_equal(back.pixels, img.pixels)
    if with_alpha:
        np.testing.assert_array_equal(back.alpha, img.alpha)
    assert len(out) < len(encode(Image(pixels=img.pixels, alpha=img.alpha), "png"))


def test_grey_jpeg_in_grey_jpeg_out_and_colour_when_coloured() -> None:
    data, grey = _gray_source("JPEG")
    img = decode(data)
    assert img.info["gray"]
    out = encode(img, "jpeg")
    assert PILImage.open(io.BytesIO(out)).mode == "L"
    assert mae(decode(out).pixels, img.pixels) < 1.5
    # a step coloured it (restore-photo's colorize): written in colour
    tinted = img.pixels.copy()
    tinted[..., 0] = np.minimum(255, tinted[..., 0].astype(int) + 20)
    coloured = img.with_pixels(tinted)
    assert coloured.info["gray"]
    assert PILImage.open(io.BytesIO(encode(coloured, "jpeg"))).mode == "RGB"
    assert encode(coloured, "png")[25] == 2
    # WebP has no grey mode; an RGB source whose channels happen to be equal stays RGB
    assert PILImage.open(io.BytesIO(encode(img, "webp"))).mode == "RGB"
    rgb_source = decode(_pil_bytes(np.repeat(grey[..., None], 3, axis=2), "PNG"))
    assert "gray" not in rgb_source.info and encode(rgb_source, "png")[25] == 2


def test_grey_output_carries_no_rgb_profile() -> None:
    from restora.io.color import srgb_profile_bytes

    data, grey = _gray_source("PNG")
    img = decode(data)
    img.icc_profile = srgb_profile_bytes()
    out = PILImage.open(io.BytesIO(encode(img, "png")))
    assert out.mode == "L" and "icc_profile" not in out.info
