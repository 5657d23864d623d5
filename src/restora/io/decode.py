"""``decode``: bytes or a path in, a normalised :class:`Image` out.

Order of checks, cheapest first, so hostile input never costs memory: file size (``stat`` before
reading), empty file, format sniffed from the content, header-declared size and frame count, then
the real decode. Every decoder exception is wrapped into a typed :class:`RestoraError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from restora.errors import (CorruptImage, EmptyFile, InvalidParameter, RestoraError,
                            UnsupportedFormat)
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
    """The input's bytes, refusing oversized files before reading them."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        limits.check_bytes(len(data))
        return data
    try:
        size = os.stat(src).st_size
        limits.check_bytes(size)
        with open(src, "rb") as fh:
            # size + 1 (never more than the limit + 1): a file that grew since stat stays bounded
            data = fh.read(min(size, limits.max_bytes) + 1)
    except RestoraError:
        raise
    except OSError as exc:
        raise UnsupportedFormat(f"The file could not be read: {exc.strerror or exc}.") from exc
    limits.check_bytes(len(data))
    return data


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
