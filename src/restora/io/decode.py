"""``decode``: bytes or a path in, a normalised :class:`Image` out.

Order of checks, cheapest first, so hostile input never costs memory or time: a path must be a
regular file (checked before and after a non-blocking open) within the byte limit before it is
read, then empty file, format sniffed from the content, header-declared size and frame count,
then the real decode. Every decoder exception is wrapped into a typed :class:`RestoraError`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING

from restora.errors import (CorruptImage, EmptyFile, FileNotFound, FileNotReadable,
                            InvalidParameter, RestoraError, UnsupportedFormat)
from restora.io.image import Image
from restora.io.limits import Limits
from restora.io.sniff import sniff_format

if TYPE_CHECKING:
    from restora.config import Settings

Decoder = Callable[[bytes, str, Limits], Image]


def _decoder(fmt: str) -> Decoder:
    if fmt in ("jpeg", "png", "webp", "avif", "tiff", "bmp", "gif", "tga"):
        from restora.io.pillow_decode import decode_pillow
        return decode_pillow
    if fmt == "heif":
        from restora.io.heif import decode_heif
        return decode_heif
    if fmt == "psd":
        from restora.io.psd import decode_psd
        return decode_psd
    if fmt == "raw":
        from restora.io.raw import decode_raw
        return decode_raw
    if fmt in ("exr", "hdr"):
        from restora.io.hdr import decode_exr, decode_hdr
        return decode_exr if fmt == "exr" else decode_hdr
    raise UnsupportedFormat(f"The {fmt} format is not supported.")


def read_input(src: bytes | bytearray | memoryview | str | os.PathLike, limits: Limits) -> bytes:
    """The input's bytes, refusing oversized files before reading them.

    A path must name a regular file: a folder, FIFO, device or socket is refused with
    :class:`FileNotReadable` without reading from it (a FIFO would block until a writer came,
    a device like ``/dev/zero`` never ends). The file is opened non-blocking and checked on the
    opened descriptor, so a path swapped for a FIFO after any earlier check cannot hang the
    read either; at most ``max_bytes + 1`` bytes are read.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        limits.check_bytes(len(data))
        return data
    if not isinstance(src, (str, os.PathLike)):
        raise InvalidParameter("image", f"expected bytes or a path, got {type(src).__name__}")
    fd, size = _open_regular(src)
    try:
        limits.check_bytes(size)
        with open(fd, "rb", closefd=False) as fh:
            # size + 1 (never more than the limit + 1): a file that grew since stat stays bounded
            data = fh.read(min(size, limits.max_bytes) + 1)
    except OSError as exc:
        raise _unreadable(src, exc) from None
    finally:
        os.close(fd)
    limits.check_bytes(len(data))
    return data


def _open_regular(path: str | os.PathLike, *, look_first: bool = True) -> tuple[int, int]:
    """(descriptor, size) of ``path`` opened for reading, if it is a regular file.

    Checked on the path first (``look_first``), since opening a device can itself do
    something, and always on the descriptor, which is what gets read: the path may have been
    swapped meanwhile. The open is non-blocking, so a FIFO swapped in returns at once (to be
    refused) instead of waiting for a writer; the descriptor is made blocking for the read.
    """
    try:
        if look_first:  # symlinks followed: a link to a photo is fine
            _check_regular(os.stat(path).st_mode, path)
        fd = os.open(path, _OPEN_FLAGS)
    except ValueError:  # a NUL byte in the name
        raise FileNotReadable("The file could not be read: its name contains a NUL byte.",
                              path=repr(path), reason="invalid name") from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    try:
        st = os.fstat(fd)
        _check_regular(st.st_mode, path)
        os.set_blocking(fd, True)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise _unreadable(path, exc) from None
        raise
    return fd, st.st_size


#: non-blocking: opening a FIFO with no writer returns at once instead of waiting for one;
#: no controlling terminal from a tty; not inherited by child processes
_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
               | getattr(os, "O_CLOEXEC", 0))

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _check_regular(mode: int, path: str | os.PathLike) -> None:
    """Refuse anything but a regular file, naming what it is."""
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    raise FileNotReadable(f"The file could not be read: it is {kind}, not a regular file.",
                          path=str(path), reason=kind.removeprefix("a "))


def _unreadable(path: str | os.PathLike, exc: OSError) -> FileNotReadable:
    """The typed error of an ``open``/``read`` that failed: missing, not permitted, ..."""
    where = str(path)
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return FileNotFound("The file could not be read: it does not exist.", path=where,
                            reason="not found")
    if exc.errno == errno.ENXIO:  # open() of a socket
        return FileNotReadable("The file could not be read: it is a socket, not a regular "
                               "file.", path=where, reason="socket")
    why = exc.strerror or type(exc).__name__
    return FileNotReadable(f"The file could not be read: {why}.", path=where,
                           reason=why.lower())


def _run(decoder: Decoder, data: bytes, fmt: str, limits: Limits) -> Image:
    """Call ``decoder``, turning anything it raises into a typed error."""
    try:
        return decoder(data, fmt, limits)
    except RestoraError:
        raise
    except MemoryError as exc:
        raise CorruptImage(f"The {fmt.upper()} image needs more memory than is available.") from exc
    except Exception as exc:  # noqa: BLE001 - decoders signal damage with a zoo of types
        # Callers get one typed error, never a decoder's traceback.
        raise CorruptImage(f"The {fmt.upper()} image is damaged or truncated and could not be "
                           f"decoded ({type(exc).__name__}).", format=fmt) from exc


def decode(src: bytes | str | os.PathLike, *, limits: Limits | None = None) -> Image:
    """Decode an image file (bytes or path) into an sRGB :class:`Image`, within ``limits``."""
    limits = limits or Limits()
    data = read_input(src, limits)
    if not data:
        raise EmptyFile("The file is empty.")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormat("The file is not an image in a supported format.")
    try:
        image = _run(_decoder(fmt), data, fmt, limits)
    except CorruptImage as exc:
        if fmt != "tiff":
            raise
        # A TIFF-structured raw whose IFD0 gave no sign of it: let LibRaw have a go, but keep
        # the TIFF error if LibRaw cannot read it either.
        try:
            image = _run(_decoder("raw"), data, "raw", limits)
        except CorruptImage:
            raise exc from None
    image.info.setdefault("source_bytes", len(data))
    return image


_PILLOW_FORMATS = ("jpeg", "png", "webp", "avif", "tiff", "bmp", "gif", "tga")


def probe_size(data: bytes, *, limits: Limits | None = None) -> tuple[int, int] | None:
    """Displayed (width, height) from the header alone, checking the limits on the way.

    ``None`` for formats whose size is only known by decoding (HEIF, RAW, PSD, EXR, HDR) or a
    header that cannot be read (the decode will report it). EXIF rotations by 90 degrees swap
    the sides, as decode will.
    """
    from restora.io.color import exif_orientation

    limits = limits or Limits()
    fmt = sniff_format(data) if data else None
    if fmt not in _PILLOW_FORMATS:
        return None
    from restora.io.pillow_decode import open_lazy

    try:
        im = open_lazy(data, fmt, limits)
    except RestoraError:
        raise
    except Exception:  # noqa: BLE001 - a damaged header is decode's to report
        return None
    w, h = im.size
    exif = im.info.get("exif") if fmt != "tiff" else None
    if isinstance(exif, bytes) and exif_orientation(exif) >= 5:
        w, h = h, w
    return w, h


def as_image(src: Image | bytes | bytearray | memoryview | str | os.PathLike,
             settings: Settings | None = None) -> Image:
    """``src`` itself if already an :class:`Image`, else decoded within the settings' limits.

    The entry point of the pipelines, which accept an image, encoded bytes or a path.
    """
    from restora.config import Settings

    limits = Limits.from_settings(settings or Settings())
    if isinstance(src, Image):
        return check_image(src, limits)
    if isinstance(src, (bytes, bytearray, memoryview, str, os.PathLike)):
        data = bytes(src) if isinstance(src, (bytearray, memoryview)) else src
        return decode(data, limits=limits)
    raise InvalidParameter("image", f"expected an Image, bytes or a path, got {type(src).__name__}")


def check_image(image: Image, limits: Limits) -> Image:
    """``image`` itself, if it is what :func:`decode` gives (H x W x 3 uint8/uint16 pixels, at
    least 1 x 1, alpha None or H x W of their dtype) and within the pixel limit.

    An Image handed in directly skips decoding, so its checks too: a float, grey or empty array
    failed deep inside OpenCV or numpy (or came back as float pixels), and no size was refused.
    Raises :class:`InvalidParameter` on ``image`` or :class:`ImageTooLarge`.
    """
    import numpy as np

    px, alpha = image.pixels, image.alpha
    if (not isinstance(px, np.ndarray) or px.ndim != 3 or px.shape[2] != 3
            or px.dtype not in (np.uint8, np.uint16) or not px.size):
        desc = f"{px.dtype} {px.shape}" if isinstance(px, np.ndarray) else type(px).__name__
        raise InvalidParameter("image", "an Image's pixels must be a non-empty H x W x 3 uint8 "
                               f"or uint16 RGB array, got {desc}")
    if alpha is not None and (not isinstance(alpha, np.ndarray) or alpha.shape != px.shape[:2]
                              or alpha.dtype != px.dtype):
        desc = f"{alpha.dtype} {alpha.shape}" if isinstance(alpha, np.ndarray) else \
            type(alpha).__name__
        raise InvalidParameter("image", f"an Image's alpha must be None or H x W {px.dtype} "
                               f"like its pixels {px.shape[:2]}, got {desc}")
    limits.check_pixels(px.shape[1], px.shape[0])
    return image
