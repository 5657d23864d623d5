"""Format detection looks at content only; camera raws are told apart from plain TIFF."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import gradient
from PIL import Image as PILImage

from restora.io import decode, sniff_format


def _tiff_ifd(entries: list[tuple[int, int, int, int]], extra: bytes = b"") -> bytes:
    """A little-endian TIFF whose IFD0 has the given (tag, type, count, value) SHORT/LONG entries."""
    body = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<I", value) if typ in (2, 4) else struct.pack("<HH", value, 0)
        body += struct.pack("<HHI", tag, typ, count) + packed
    return b"II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", 0) + extra


def _with_make(make: bytes, entries: list[tuple[int, int, int, int]]) -> bytes:
    n = len(entries) + 1
    make_at = 8 + 2 + 12 * n + 4
    return _tiff_ifd([*entries, (271, 2, len(make), make_at)], make)


@pytest.mark.parametrize(("head", "fmt"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "avif"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heif"),
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "heif"),
    (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom", "raw"),  # Canon CR3
    (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", None),  # an MP4 video
    (b"II*\x00\x10\x00\x00\x00CR\x02\x00", "raw"),  # Canon CR2
    (b"IIRO\x08\x00\x00\x00", "raw"),  # Olympus ORF
    (b"IIU\x00\x08\x00\x00\x00", "raw"),  # Panasonic RW2
    (b"FUJIFILMCCD-RAW 0201", "raw"),
    (b"8BPS\x00\x01", "psd"),
    (b"8BPS\x00\x02", "psd"),  # PSB
    (b"8BPS\x00\x07", None),
    (b"v/1\x01\x02\x00\x00\x00", "exr"),
    (b"#?RADIANCE\n", "hdr"),
    (b"#?RGBE\n", "hdr"),
    (b"PK\x03\x04", None),
    (b"%PDF-1.7", None),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
])
def test_magic_bytes(head: bytes, fmt: str | None) -> None:
    assert sniff_format(head + b"\x00" * 64) == fmt


def test_tiff_based_raws_versus_plain_tiff() -> None:
    # NEF-style: Nikon make, reduced-resolution IFD0 pointing at sub-IFDs with the sensor data.
    assert sniff_format(_with_make(b"NIKON CORPORATION\x00", [(254, 4, 1, 1), (330, 4, 1, 0)])) == "raw"
    # ARW-style: Sony make with sub-IFDs.
    assert sniff_format(_with_make(b"SONY\x00", [(256, 4, 1, 160), (330, 4, 1, 0)])) == "raw"
    # A DNG from any maker.
    assert sniff_format(_tiff_ifd([(256, 4, 1, 8), (50706, 1, 4, 0x00000401)])) == "raw"
    # A scanner's TIFF, and an edited export that kept the camera's Make: plain TIFF.
    assert sniff_format(_with_make(b"EPSON scanner\x00", [(256, 4, 1, 8), (254, 4, 1, 0)])) == "tiff"
    assert sniff_format(_with_make(b"Canon\x00", [(256, 4, 1, 8)])) == "tiff"


def test_file_name_is_never_trusted(tmp_path: Path) -> None:
    src = gradient()
    out = io.BytesIO()
    PILImage.fromarray(src).save(out, "PNG")
    path = tmp_path / "really-a-png.jpg"
    path.write_bytes(out.getvalue())
    img = decode(path)
    assert img.format == "png"
    np.testing.assert_array_equal(img.pixels, src)


def test_tga_needs_a_consistent_header() -> None:
    out = io.BytesIO()
    PILImage.fromarray(gradient()).save(out, "TGA")
    data = out.getvalue()
    assert sniff_format(data) == "tga"
    broken = bytearray(data)
    broken[2] = 7  # image type 7 does not exist
    assert sniff_format(bytes(broken)) is None
    broken = bytearray(data)
    broken[16] = 12  # 12 bits per pixel is not a TGA depth
    assert sniff_format(bytes(broken)) is None
    assert sniff_format(b"hello world, this is text" * 4) is None


def test_16bit_tiff_orientation_applied() -> None:
    import tifffile

    src = gradient(dtype=np.uint16)
    out = io.BytesIO()
    tifffile.imwrite(out, src, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    img = decode(out.getvalue())
    assert img.bit_depth == 16 and img.info["orientation_applied"] == 6
    np.testing.assert_array_equal(img.pixels, np.rot90(src, k=-1))
