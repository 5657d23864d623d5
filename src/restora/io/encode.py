"""Encoding to PNG, JPEG and WebP, the WebP preview, and the output-format rule.

Output-format rule, the one place CLI and service take it from (``output_for``):

* ``enhance-faces``: always PNG (lossless; 16-bit depth and alpha kept), named
  ``<stem>_enhanced.png``, as the SnapOtter document specifies.
* ``restore-photo`` (and any other tool): ``output_format_for`` the source format. Formats we can
  write keep their format (JPEG -> JPEG, PNG -> PNG, WebP -> WebP); everything else (AVIF,
  HEIC/HEIF, camera RAW, PSD, EXR, HDR, TIFF, BMP, GIF, TGA) becomes PNG, which is lossless and
  keeps 16-bit depth and alpha. Named ``<stem>_restored.<ext>``.

Grey in, grey out: a result whose source had a single channel (grey JPEG, PNG, TIFF, PSD;
``info["gray"]``) and whose pixels still have R == G == B is written as grey PNG (8/16-bit,
with alpha when it has one) or grey JPEG; WebP has no grey mode. A result something coloured
(restore-photo's colorize) is written in colour.

Metadata: EXIF (orientation already 1) is written to every format. Pixels are sRGB after decode,
so when the source carried an ICC profile the output is tagged sRGB: the source's own bytes if
they are an sRGB profile, a standard sRGB profile otherwise (re-attaching, say, a Display P3
profile to converted pixels would shift colours twice).

PNG cost: deflate with the run-length strategy (``zlib.Z_RLE``) after PNG's per-row filters. On
a 2.5 MP photo it writes in 0.19 CPU-s against 0.82 s at zlib level 6 (Pillow's default), and the
file is 3 % smaller there; on the smaller test photos files are 3-15 % larger
(``benchmarks/encode.py``). Lossless either way; no new dependency.

PNG is written by our streaming writer (:mod:`restora.io.png`, same bytes as a standard
encoder, no copy of the image: upscaled results reach hundreds of megapixels). Depth and
alpha: PNG keeps 16 bits and alpha. JPEG and WebP are 8-bit; 16-bit samples are
rounded to nearest. JPEG has no alpha, so transparent images are composited onto white (what a
viewer shows for a transparent background on paper). JPEG at quality >= 90 uses 4:4:4 chroma so
restored detail is not blurred by subsampling.
"""

from __future__ import annotations

import io
import zlib
from pathlib import PurePath
from typing import BinaryIO, Literal, NamedTuple

import numpy as np
from PIL import Image as PILImage

from restora.errors import InvalidParameter, OutputTooLarge
from restora.io.color import is_srgb, srgb_profile_bytes
from restora.io.image import Image, is_grayscale
from restora.io.png import write_png

OutputFormat = Literal["png", "jpeg", "webp"]
_WRITABLE: tuple[str, ...] = ("png", "jpeg", "webp")
#: zlib settings for PNG (see the module doc): the level hardly matters with the RLE strategy.
PNG_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE


def output_format_for(source_format: str) -> OutputFormat:
    """The format a result is written in for an input of ``source_format`` (see module doc)."""
    fmt = source_format.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt in ("jpeg", "webp"):
        return fmt  # type: ignore[return-value]
    return "png"


#: the longest side each format can store (WebP: 14-bit sizes; JPEG: 16-bit; PNG: 2^31 - 1)
MAX_SIDE: dict[str, int] = {"png": 2**31 - 1, "jpeg": 65_535, "webp": 16_383}


def check_encodable(fmt: str, width: int, height: int) -> None:
    """Refuse (413 ``output_too_large``) a result the format cannot hold, before any work is
    spent on it: a WebP side over 16383 px or a JPEG side over 65535 px."""
    fmt = "jpeg" if fmt.lower() == "jpg" else fmt.lower()
    limit = MAX_SIDE.get(fmt)
    if limit is not None and max(width, height) > limit:
        raise OutputTooLarge(
            f"The result would be {width}x{height}, but {fmt.upper()} stores at most {limit:,} "
            "pixels per side; ask for PNG, or a smaller size.", width=width, height=height,
            format=fmt, limit=limit)


#: file extension written for each output format
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}
#: tool -> file-name suffix (``<stem>_<suffix>.<ext>``)
_SUFFIX = {"enhance-faces": "enhanced", "restore-photo": "restored", "face-recovery": "recovered",
           "face-refiner": "refined", "codeformer": "codeformer"}
#: tools whose output format is fixed whatever the input (the seed documents say so)
_FIXED_FORMAT: dict[str, OutputFormat] = {"enhance-faces": "png"}


class OutputFile(NamedTuple):
    """Format and file name of a tool's result."""

    format: OutputFormat
    filename: str


def output_for(tool: str, input_name: str | None, source_format: str,
               fmt: str | None = None) -> OutputFile:
    """The output format and name of ``tool``'s result for an input (see the module doc).

    ``fmt`` forces a writable format (an API's explicit ``outputFormat``); tools without a
    suffix of their own are named ``<stem>_<tool>.<ext>``.
    """
    if fmt is not None and fmt.lower() not in ("auto", ""):
        chosen: OutputFormat = output_format_for(fmt)
        if chosen != ("jpeg" if fmt.lower() in ("jpg", "jpeg") else fmt.lower()):
            raise InvalidParameter("format", f"Output format must be png, jpeg or webp, not {fmt!r}.")
    else:
        chosen = _FIXED_FORMAT.get(tool) or output_format_for(source_format)
    stem = PurePath(str(input_name or "")).stem or "image"
    suffix = _SUFFIX.get(tool, tool.replace("-", "_"))
    return OutputFile(chosen, f"{stem}_{suffix}.{EXTENSIONS[chosen]}")


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 with round-to-nearest (uint8 passes through)."""
    if arr.dtype == np.uint8:
        return arr
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def writes_gray(image: Image) -> bool:
    """Whether ``image`` is written with one colour channel: its source had one
    (``info["gray"]``) and its pixels still have R == G == B (nothing coloured them)."""
    return bool(image.info.get("gray")) and is_grayscale(image.pixels)


def _output_icc(image: Image) -> bytes | None:
    if not image.icc_profile:
        return None
    return image.icc_profile if is_srgb(image.icc_profile) else srgb_profile_bytes()


def encode(image: Image, fmt: str = "png", *, quality: int = 95) -> bytes:
    """Encode ``image`` as ``png``, ``jpeg`` or ``webp`` bytes (``quality`` 1-100 for lossy)."""
    out = io.BytesIO()
    encode_to(out, image, fmt, quality=quality)
    return out.getvalue()


def encode_to(fh: BinaryIO, image: Image, fmt: str = "png", *, quality: int = 95) -> None:
    """Encode ``image`` into the binary file ``fh`` (see :func:`encode`).

    PNG streams band by band (:mod:`restora.io.png`): no copy of the image is made, so a large
    upscaled result costs only its own array; JPEG and WebP go through Pillow (one copy).
    """
    fmt = fmt.lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in _WRITABLE:
        raise InvalidParameter("format", f"Output format must be one of png, jpeg or webp, not {fmt!r}.")
    if not 1 <= int(quality) <= 100:
        raise InvalidParameter("quality", f"Quality must be between 1 and 100, not {quality}.")
    check_encodable(fmt, image.width, image.height)
    gray = fmt != "webp" and writes_gray(image)
    # the source profile is an RGB one (or was converted to sRGB); a grey file cannot carry it,
    # and untagged grey is read as sRGB's curve, which is what the pixels are in
    icc = None if gray else _output_icc(image)
    exif = image.exif or None
    if fmt == "png":
        write_png(fh, image.pixels, image.alpha, icc=icc, exif=exif, level=PNG_LEVEL,
                  strategy=PNG_STRATEGY, gray=gray)
        return
    rgb = to_8bit(image.pixels)
    alpha = to_8bit(image.alpha) if image.alpha is not None else None
    kwargs: dict = {}
    if icc:
        kwargs["icc_profile"] = icc
    if exif:
        kwargs["exif"] = exif
    if fmt == "jpeg":
        if alpha is not None:
            a = alpha.astype(np.float32)[..., None] / 255.0
            rgb = np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)
        pil = (PILImage.fromarray(np.ascontiguousarray(rgb[..., 0]), "L") if gray
               else PILImage.fromarray(rgb, "RGB"))
        pil.save(fh, "JPEG", quality=int(quality), optimize=True,
                 subsampling=0 if quality >= 90 else 2, **kwargs)
    else:
        _pil_rgba(rgb, alpha).save(fh, "WEBP", quality=int(quality), method=4, **kwargs)


def make_preview(image: Image, longest: int = 1024) -> bytes:
    """A WebP preview whose longest side is at most ``longest`` (no metadata, alpha kept).

    A large image is first area-averaged to twice the preview size on its own array (no
    full-size copy, no 16 -> 8-bit copy of the whole image), then resized with Lanczos.
    """
    if longest < 1:
        raise InvalidParameter("longest", f"Preview size must be at least 1 pixel, not {longest}.")
    pixels, alpha = image.pixels, image.alpha
    big = max(pixels.shape[:2])
    if big > 2 * longest:
        import cv2

        f = 2 * longest / big
        size = (max(1, round(pixels.shape[1] * f)), max(1, round(pixels.shape[0] * f)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        if alpha is not None:
            alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    pil = _pil_rgba(to_8bit(pixels), to_8bit(alpha) if alpha is not None else None)
    scale = longest / max(pil.size)
    if scale < 1.0:
        size = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
        pil = pil.resize(size, PILImage.Resampling.LANCZOS)
    out = io.BytesIO()
    pil.save(out, "WEBP", quality=80, method=4)
    return out.getvalue()


def _pil_rgba(rgb: np.ndarray, alpha: np.ndarray | None) -> PILImage.Image:
    if alpha is None:
        return PILImage.fromarray(np.ascontiguousarray(rgb), "RGB")
    return PILImage.fromarray(np.dstack([rgb, alpha]), "RGBA")
