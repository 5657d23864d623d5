"""Every input format, generated here with its real encoder, decodes to the source pixels."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from helpers import dng, gradient, mae, smooth
from PIL import Image as PILImage

from restora.io import decode, sniff_format
from restora.io.hdr import srgb_oetf, tone_map


def _save(arr: np.ndarray, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(arr).save(out, fmt, **kw)
    return out.getvalue()


# --- lossless Pillow formats: exact ---------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "kw", "name"), [
    ("TIFF", {"compression": "tiff_lzw"}, "tiff"),
    ("TIFF", {}, "tiff"),
    ("BMP", {}, "bmp"),
    ("TGA", {}, "tga"),
    ("TGA", {"compression": "tga_rle"}, "tga"),
])
def test_lossless_formats_exact(fmt: str, kw: dict, name: str) -> None:
    src = gradient()
    data = _save(src, fmt, **kw)
    assert sniff_format(data) == name
    img = decode(data)
    assert img.format == name and img.bit_depth == 8
    np.testing.assert_array_equal(img.pixels, src)


@pytest.mark.parametrize("fmt", ["TGA", "TIFF", "PNG"])
def test_alpha_formats_exact(fmt: str) -> None:
    rgba = np.dstack([gradient(), np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))])
    img = decode(_save(rgba, fmt))
    np.testing.assert_array_equal(img.pixels, rgba[..., :3])
    np.testing.assert_array_equal(img.alpha, rgba[..., 3])


def test_tiff_16bit_keeps_depth() -> None:
    import tifffile

    src = gradient(dtype=np.uint16)
    out = io.BytesIO()
    tifffile.imwrite(out, src, photometric="rgb", compression="zlib")
    img = decode(out.getvalue())
    assert img.format == "tiff" and img.bit_depth == 16
    np.testing.assert_array_equal(img.pixels, src)


def test_gif_first_frame() -> None:
    palette_frames = []
    for k in range(3):  # four flat colours per frame: GIF's palette reproduces them exactly
        arr = np.zeros((32, 40, 3), np.uint8)
        arr[:16, :20] = (255, 0, 0)
        arr[:16, 20:] = (0, 255, 0)
        arr[16:, :20] = (0, 0, 255)
        arr[16:, 20:] = (40 * k, 40 * k, 40 * k)
        palette_frames.append(PILImage.fromarray(arr))
    out = io.BytesIO()
    palette_frames[0].save(out, "GIF", save_all=True, append_images=palette_frames[1:], duration=50)
    img = decode(out.getvalue())
    assert img.format == "gif" and img.info["frames"] == 3
    np.testing.assert_array_equal(img.pixels, np.asarray(palette_frames[0]))


# --- lossy modern formats: bounded error ---------------------------------------------------------

def test_avif_close() -> None:
    src = smooth()
    data = _save(src, "AVIF", quality=90)
    assert sniff_format(data) == "avif"
    img = decode(data)
    assert img.format == "avif" and img.pixels.shape == src.shape
    assert mae(img.pixels, src) < 3.0  # quality 90 on a smooth ramp: mean error below 3 levels


def test_heic_8bit_close() -> None:
    import pillow_heif

    src = smooth()
    out = io.BytesIO()
    pillow_heif.from_pillow(PILImage.fromarray(src)).save(out, quality=90)
    data = out.getvalue()
    assert sniff_format(data) == "heif"
    img = decode(data)
    assert img.format == "heif" and img.bit_depth == 8
    assert mae(img.pixels, src) < 3.0


def test_heif_10bit_becomes_16bit() -> None:
    import pillow_heif

    src16 = smooth().astype(np.uint16) * 257
    heif = pillow_heif.from_bytes(mode="RGB;16", size=(64, 48), data=src16.tobytes())
    out = io.BytesIO()
    heif.save(out, quality=95)  # libheif stores 16-bit input as 10-bit
    img = decode(out.getvalue())
    assert img.bit_depth == 16 and img.pixels.dtype == np.uint16
    assert img.info["source_bit_depth"] == 10
    assert mae(img.pixels, src16) / 257 < 3.0  # in 8-bit levels
    white = pillow_heif.from_bytes(mode="RGB;16", size=(8, 8), data=np.full((8, 8, 3), 65535, np.uint16).tobytes())
    out = io.BytesIO()
    white.save(out, quality=-1)
    assert decode(out.getvalue()).pixels.min() > 65000  # full scale reaches the top, not 65472-ish


# --- PSD -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [8, 16])
def test_layered_psd_flattened(depth: int) -> None:
    from psd_tools import PSDImage

    psd = PSDImage.new("RGB", (60, 40), depth=depth)
    background = np.zeros((40, 60, 3), np.float32)
    background[..., 2] = 1.0
    background[..., 1] = np.linspace(0, 1, 60, dtype=np.float32)[None, :]
    psd.create_pixel_layer_from_array(background, name="background")
    red = np.zeros((20, 30, 4), np.float32)
    red[..., 0] = red[..., 3] = 1.0
    psd.create_pixel_layer_from_array(red, name="red", top=5, left=10)
    out = io.BytesIO()
    psd.save(out)
    img = decode(out.getvalue())
    assert img.format == "psd" and img.info["layers"] == 2 and img.bit_depth == depth
    top = 65535 if depth == 16 else 255
    expected = np.rint(background * top).astype(img.pixels.dtype)
    expected[5:25, 10:40] = (top, 0, 0)  # the opaque red layer covers the background there
    diff = np.abs(img.pixels.astype(np.int64) - expected)
    assert diff.max() <= top // 255 + 1  # the merged image may be quantised to 8 bits


def _psd_image_data_offset(data: bytes) -> int:
    """Start of the merged image data: after header, colour mode, resources, layers (PSD v1)."""
    pos = 26
    for _ in range(3):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        pos += 4 + length
    return pos


def test_psd_without_merged_image_composites_layers() -> None:
    """A file saved without "maximize compatibility": the merged image is blank, layers count."""
    from psd_tools import PSDImage

    def build(colour: tuple[int, int, int], with_layer: bool) -> bytes:
        psd = PSDImage.new("RGB", (40, 30), color=colour, depth=8)
        if with_layer:
            patch = np.zeros((10, 20, 4), np.uint8)
            patch[..., 1] = patch[..., 3] = 255
            psd.create_pixel_layer_from_array(np.full((30, 40, 3), (0, 0, 255), np.uint8), name="bg")
            psd.create_pixel_layer_from_array(patch, name="green", top=10, left=10)
        out = io.BytesIO()
        psd.save(out)
        return out.getvalue()

    layered = build((0, 0, 0), True)
    blank = build((255, 255, 255), False)  # what Photoshop stores when compatibility is off
    data = bytearray(layered[:_psd_image_data_offset(layered)] + blank[_psd_image_data_offset(blank):])
    at = data.index(b"8BIM\x04\x21")  # VersionInfo resource: id, name, size, version, hasRealMergedData
    data[at + 6 + 2 + 4 + 4] = 0
    img = decode(bytes(data))
    assert img.info["composite"] == "layers composited"
    expected = np.zeros((30, 40, 3), np.uint8)
    expected[...] = (0, 0, 255)
    expected[10:20, 10:30] = (0, 255, 0)
    np.testing.assert_array_equal(img.pixels, expected)


# --- camera RAW ----------------------------------------------------------------------------------

def test_dng_raw_decodes_to_scene_colours() -> None:
    scene = np.zeros((64, 96, 3))
    patches = [(0.6, 0.1, 0.1), (0.1, 0.6, 0.1), (0.1, 0.1, 0.6), (0.3, 0.3, 0.3)]
    for i, colour in enumerate(patches):
        scene[:, 24 * i:24 * (i + 1)] = colour
    data = dng(scene)
    assert sniff_format(data) == "raw"
    img = decode(data)
    assert img.format == "raw" and img.bit_depth == 16 and img.pixels.shape == (64, 96, 3)
    for i, colour in enumerate(patches):
        got = img.pixels[16:48, 24 * i + 6:24 * i + 18].reshape(-1, 3).mean(0) / 65535
        expected = srgb_oetf(np.array(colour))
        np.testing.assert_allclose(got, expected, atol=0.02)  # 2% of full scale, patch interiors


def test_plain_tiff_with_camera_make_is_not_raw() -> None:
    import tifffile

    out = io.BytesIO()
    tifffile.imwrite(out, gradient(), photometric="rgb", extratags=[(271, "s", 0, "NIKON CORPORATION", True)])
    assert sniff_format(out.getvalue()) == "tiff"
    assert decode(out.getvalue()).format == "tiff"


# --- HDR formats ---------------------------------------------------------------------------------

def _hdr_scene() -> np.ndarray:
    y, x = np.mgrid[0:40, 0:60].astype(np.float32)
    rgb = np.stack([x / 10, y / 8, (x + y) / 30], axis=-1) + 0.01
    rgb[5:10, 5:10] = 40.0  # a highlight far above 1.0
    return rgb.astype(np.float32)


@pytest.mark.parametrize("half", [False, True])
def test_exr_tone_mapped(half: bool) -> None:
    import OpenEXR

    rgb = _hdr_scene()
    stored = rgb.astype(np.float16) if half else rgb
    alpha = np.linspace(0, 1, 60 * 40, dtype=stored.dtype).reshape(40, 60)
    exr = OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                       {"RGBA": np.dstack([stored, alpha])})
    path = io.BytesIO()
    exr.write(path)
    data = path.getvalue()
    assert sniff_format(data) == "exr"
    img = decode(data)
    assert img.format == "exr" and img.bit_depth == 8 and "Reinhard" in img.info["tone_map"]
    expected = tone_map(stored.astype(np.float32))
    assert np.abs(img.pixels.astype(int) - expected).max() <= 1
    np.testing.assert_allclose(img.alpha, np.rint(alpha.astype(np.float64) * 255), atol=1)
    assert img.pixels[7, 7].min() > 240  # the highlight is white, not clipped garbage


def test_radiance_hdr_tone_mapped() -> None:
    import cv2

    rgb = _hdr_scene()
    ok, buf = cv2.imencode(".hdr", np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    data = buf.tobytes()
    assert sniff_format(data) == "hdr"
    img = decode(data)
    assert img.format == "hdr" and img.pixels.shape == (40, 60, 3)
    diff = np.abs(img.pixels.astype(int) - tone_map(rgb))
    assert diff.mean() < 1.0 and diff.max() <= 8  # RGBE keeps ~1% precision per pixel


def test_tone_map_operator_properties() -> None:
    grey = np.full((8, 8, 3), 0.5, np.float32)
    assert abs(int(tone_map(grey)[0, 0, 0]) - 118) <= 1  # a flat scene lands on middle grey (0.18)
    scene = _hdr_scene()
    # exposure-normalised: 16x brighter input gives the same picture (the 1e-6 log guard aside)
    assert np.abs(tone_map(scene).astype(int) - tone_map(scene * 16)).max() <= 1
    ramp = np.repeat(np.geomspace(1e-3, 1e3, 256, dtype=np.float32)[None, :, None], 3, axis=2)
    out = tone_map(ramp)[0, :, 0].astype(int)
    assert np.all(np.diff(out) >= 0) and out[0] < 5 and out[-1] == 255  # monotonic, black to white
