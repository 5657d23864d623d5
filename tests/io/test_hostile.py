"""Hostile input: every case fails fast, with little memory, as the right typed error."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import dng, gradient, smooth
from PIL import Image as PILImage

from restora.errors import (CorruptImage, EmptyFile, FileNotFound, FileNotReadable, FileTooLarge,
                            ImageTooLarge, InvalidParameter, RestoraError, TooManyFrames,
                            UnsupportedFormat)
from restora.io import Limits, decode


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _pil(arr: np.ndarray, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(arr).save(out, fmt, **kw)
    return out.getvalue()


def _expect(err: type[RestoraError], src, limits: Limits | None = None, *, seconds: float = 1.0,
            peak_bytes: int = 8_000_000) -> RestoraError:
    """Decode ``src``, expecting ``err``; assert it was quick, small and one clean sentence."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(err) as info:
            decode(src, limits=limits)
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f}s"
    assert peak < peak_bytes, f"traced peak {peak:,} bytes"
    exc = info.value
    assert exc.code == err.code and str(exc).endswith(".") and "\n" not in str(exc)
    return exc


# --- header-declared bombs: rejected from the header --------------------------------------------

def _png_bomb(side: int = 100_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + _png_chunk(b"IEND", b""))


def test_png_declaring_100000x100000_fails_fast() -> None:
    exc = _expect(ImageTooLarge, _png_bomb())
    assert exc.details["width"] == 100_000
    # Even with our limit raised past Pillow's own bomb guard, nothing is allocated.
    _expect(ImageTooLarge, _png_bomb(), Limits(max_pixels=10**12))


def _gif_bomb() -> bytes:
    screen = struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x4c\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def _bmp_bomb() -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, 100_000, 100_000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + dib + b"\x00" * 64


def _tiff_bomb() -> bytes:
    entries = [(256, 4, 1, 100_000), (257, 4, 1, 100_000), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 8 + 2 + 12 * 8 + 4), (278, 4, 1, 100_000), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, typ, n, val) if typ == 4 else struct.pack("<HHIHH", tag, typ, n, val, 0)
        for tag, typ, n, val in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def _tga_bomb() -> bytes:
    return struct.pack("<BBBHHBHHHHBB", 0, 0, 10, 0, 0, 0, 0, 0, 65535, 65535, 24, 0) + b"\xff\x00\x00\x00" * 8


def _psd_bomb() -> bytes:
    header = b"8BPS" + struct.pack(">H6sHIIHH", 1, b"", 3, 30_000, 30_000, 8, 3)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + b"\x00" * 64


def _hdr_bomb() -> bytes:
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n" + b"\x02\x02\x00\x10" * 16


def _exr_bomb() -> bytes:
    import OpenEXR

    out = io.BytesIO()
    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"RGB": np.ones((4, 4, 3), np.float32)}).write(out)
    data = bytearray(out.getvalue())
    for name in (b"dataWindow\x00box2i\x00", b"displayWindow\x00box2i\x00"):
        at = data.index(name) + len(name) + 4  # after the attribute's byte count
        data[at + 8:at + 16] = struct.pack("<ii", 99_999, 99_999)  # xMax, yMax
    return bytes(data)


@pytest.mark.parametrize("make", [_gif_bomb, _bmp_bomb, _tiff_bomb, _tga_bomb, _psd_bomb, _hdr_bomb,
                                  _exr_bomb], ids=lambda f: f.__name__.strip("_"))
def test_header_bombs_rejected_from_header(make: Callable[[], bytes]) -> None:
    _expect(ImageTooLarge, make())


# --- configured limits hold for every decoder ----------------------------------------------------

def _small_samples() -> dict[str, bytes]:
    import OpenEXR
    import pillow_heif

    heic = io.BytesIO()
    pillow_heif.from_pillow(PILImage.fromarray(smooth())).save(heic, quality=80)
    exr = io.BytesIO()
    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"RGB": np.ones((48, 64, 3), np.float32)}).write(exr)
    import cv2

    from psd_tools import PSDImage

    psd = PSDImage.new("RGB", (64, 48), depth=8)
    psd.create_pixel_layer_from_array(gradient(), name="only")
    psd_bytes = io.BytesIO()
    psd.save(psd_bytes)
    return {
        "jpeg": _pil(gradient(), "JPEG"), "png": _pil(gradient(), "PNG"), "webp": _pil(gradient(), "WEBP"),
        "avif": _pil(smooth(), "AVIF"), "heif": heic.getvalue(), "tiff": _pil(gradient(), "TIFF"),
        "bmp": _pil(gradient(), "BMP"), "gif": _pil(gradient(), "GIF"), "tga": _pil(gradient(), "TGA"),
        "psd": psd_bytes.getvalue(), "raw": dng(np.full((48, 64, 3), 0.3)), "exr": exr.getvalue(),
        "hdr": cv2.imencode(".hdr", np.ones((48, 64, 3), np.float32))[1].tobytes(),
    }


@pytest.fixture(scope="module")
def samples() -> dict[str, bytes]:
    return _small_samples()


FORMATS = ["jpeg", "png", "webp", "avif", "heif", "tiff", "bmp", "gif", "tga", "psd", "raw", "exr", "hdr"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_pixel_limit_applies_to_every_format(samples: dict[str, bytes], fmt: str) -> None:
    assert decode(samples[fmt]).format == fmt  # the sample itself is fine
    exc = _expect(ImageTooLarge, samples[fmt], Limits(max_pixels=48 * 64 - 1))
    assert exc.details["limit"] == 48 * 64 - 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_files_are_corrupt(samples: dict[str, bytes], fmt: str) -> None:
    data = samples[fmt]
    _expect(CorruptImage, data[: len(data) // 2], seconds=2.0)


def test_byte_limit_for_bytes_and_paths(tmp_path: Path) -> None:
    data = _pil(gradient(), "PNG")
    _expect(FileTooLarge, data, Limits(max_bytes=len(data) - 1))
    sparse = tmp_path / "huge.png"
    with sparse.open("wb") as fh:  # 1 GB on paper, nothing on disk: stat must refuse it unread
        fh.write(data)
        fh.truncate(1_000_000_000)
    exc = _expect(FileTooLarge, sparse)
    assert exc.details["size"] == 1_000_000_000


def test_frame_limit() -> None:
    frames = [PILImage.fromarray(np.full((8, 8, 3), 60 * k, np.uint8)) for k in range(4)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    assert decode(out.getvalue()).info["frames"] == 4
    _expect(TooManyFrames, out.getvalue(), Limits(max_frames=3))


def test_limits_from_settings() -> None:
    from restora.config import Settings

    limits = Limits.from_settings(Settings(max_bytes=10, max_pixels=20, max_frames=3))
    assert limits == Limits(max_bytes=10, max_pixels=20, max_frames=3)
    assert Limits() == Limits.from_settings(Settings())


# --- not images, disguised files, polyglots -----------------------------------------------------

def test_empty_bytes_and_empty_file(tmp_path: Path) -> None:
    _expect(EmptyFile, b"")
    empty = tmp_path / "photo.jpg"
    empty.write_bytes(b"")
    _expect(EmptyFile, empty)


def test_zip_renamed_jpg(tmp_path: Path) -> None:
    path = tmp_path / "holiday.jpg"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not a photo")
    _expect(UnsupportedFormat, path)


def test_html_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "avatar.png"
    path.write_text("<!DOCTYPE html><html><body><script>alert(1)</script></body></html>")
    _expect(UnsupportedFormat, path)


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    # it was unsupported_format ("The file could not be read: No such file or directory")
    exc = _expect(FileNotFound, tmp_path / "nope.png")
    assert isinstance(exc, FileNotReadable) and exc.details["reason"] == "not found"
    assert str(exc) == "The file could not be read: it does not exist."
    _expect(FileNotFound, tmp_path / "nope" / "x.png")


# --- paths that are not regular files: refused at once, never read -------------------------------

def _in_thread(call: Callable[[], object], unblock: Callable[[], None]) -> BaseException | None:
    """What ``call`` raised, run in a thread: a call still blocked after a long while is a
    failure (``unblock`` then frees the thread) instead of a test suite that hangs."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            raised.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        unblock()
        thread.join(10)
        pytest.fail("blocked reading the path")
    return raised[0]


def _writer_for(fifo: Path) -> Callable[[], None]:
    """Open and close ``fifo`` for writing: a reader blocked in open (or read) returns."""
    def unblock() -> None:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    return unblock


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_without_a_writer_is_refused_without_blocking(tmp_path: Path) -> None:
    """A path that is (or became, after the caller's checks) a FIFO blocked in open until a
    writer came: forever in a batch."""
    from restora.io.decode import _open_regular, read_input

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    exc = _in_thread(lambda: decode(fifo), _writer_for(fifo))
    assert isinstance(exc, FileNotReadable) and exc.code == "file_not_readable"
    assert str(exc) == "The file could not be read: it is a FIFO (named pipe), not a regular file."
    assert exc.details == {"path": str(fifo), "reason": "FIFO (named pipe)"}
    exc = _in_thread(lambda: read_input(str(fifo), Limits()), _writer_for(fifo))
    assert isinstance(exc, FileNotReadable)
    # the check on the opened descriptor alone (a path swapped after the stat): the
    # non-blocking open returns and the FIFO is refused
    exc = _in_thread(lambda: _open_regular(fifo, look_first=False), _writer_for(fifo))
    assert isinstance(exc, FileNotReadable) and "FIFO" in str(exc)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_an_endless_device_is_refused_not_read_to_the_byte_limit() -> None:
    """/dev/zero has size 0, so one byte was read and it was unsupported_format; a device
    whose stat size lies would have been read to the byte limit."""
    from restora.io.decode import _open_regular

    limits = Limits(max_bytes=1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(FileNotReadable, match="it is a character device, not a regular "
                                                  "file") as info:
            decode("/dev/zero", limits=limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.details["reason"] == "character device"
    assert peak < 1_000_000
    with pytest.raises(FileNotReadable, match="character device"):
        _open_regular("/dev/zero", look_first=False)


def test_a_folder_and_a_socket_are_refused(tmp_path: Path) -> None:
    exc = _expect(FileNotReadable, tmp_path)
    assert str(exc) == "The file could not be read: it is a folder, not a regular file."
    if hasattr(socket, "AF_UNIX"):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(tmp_path / "s.png"))
            assert _expect(FileNotReadable, tmp_path / "s.png").details["reason"] == "socket"


def test_a_name_with_a_nul_byte_and_a_non_path_are_typed_errors() -> None:
    # os.stat raised ValueError (a traceback); an int was taken for a file descriptor
    assert _expect(FileNotReadable, "photo\0.jpg").details["reason"] == "invalid name"
    with pytest.raises(InvalidParameter, match="expected bytes or a path, got int"):
        decode(0)  # type: ignore[arg-type]


def test_a_file_it_may_not_read_is_not_readable_not_unsupported(tmp_path: Path) -> None:
    """Permission denied was unsupported_format (415 in HTTP terms, "format" in the CLI).
    Run in a child without the capability that lets root read anything."""
    locked = tmp_path / "locked.jpg"
    locked.write_bytes(b"\xff\xd8\xff" + b"\0" * 64)
    locked.chmod(0)
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root reads any file; dropping CAP_DAC_OVERRIDE needs setpriv")
        as_user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    code = ("import json, sys\n"
            "from restora.errors import RestoraError\n"
            "from restora.io import decode\n"
            "try:\n    decode(sys.argv[1])\n"
            "except RestoraError as exc:\n    print(json.dumps([exc.code, exc.message, exc.details]))\n")
    proc = subprocess.run([*as_user, sys.executable, "-c", code, str(locked)], text=True,
                          capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        "file_not_readable", "The file could not be read: Permission denied.",
        {"path": str(locked), "reason": "permission denied"}]


def test_gif_javascript_polyglot_is_corrupt() -> None:
    # Starts like a GIF so naive checks pass, but the rest is a script, not image data.
    _expect(CorruptImage, b"GIF89a/*\x00\x00*/=1;alert(document.domain);//" + b" " * 64)


def test_jpeg_html_polyglot_is_corrupt() -> None:
    _expect(CorruptImage, b"\xff\xd8\xff\xe0<html><script>alert(1)</script></html>")


def test_png_zip_polyglot_decodes_as_the_png_only() -> None:
    src = gradient()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.js", "alert(1)")
    img = decode(_pil(src, "PNG") + archive.getvalue())  # content decides; the tail is ignored
    assert img.format == "png"
    np.testing.assert_array_equal(img.pixels, src)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's note on garbage TIFF tags
def test_garbage_bytes() -> None:
    rng = np.random.default_rng(0)
    _expect(UnsupportedFormat, rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for _ in range(300):  # random blobs, some with a real magic prefix: always a typed error
        blob = rng.integers(0, 256, int(rng.integers(1, 600)), dtype=np.uint8).tobytes()
        prefix = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"8BPS\x00\x01",
                  b"v/1\x01", b"#?RADIANCE\n"][int(rng.integers(0, 9))]
        with pytest.raises((UnsupportedFormat, CorruptImage, ImageTooLarge, TooManyFrames)):
            decode(prefix + blob)
