"""Decoders built on Pillow: JPEG, PNG, WebP, AVIF, TIFF, BMP, GIF (first frame) and TGA.

Pillow's ``open`` is lazy: it parses the header only, so size and frame count are checked against
the limits before a single pixel is decoded. Pillow cannot hold 16-bit RGB, so 16-bit PNG and TIFF
are decoded by OpenCV (``IMREAD_UNCHANGED`` keeps 16 bits; it ignores PNG EXIF orientation, which
we apply like for every other format, but applies TIFF's orientation tag, as Pillow does).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image as PILImage

from restora.errors import CorruptImage, ImageTooLarge, UnsupportedFormat
from restora.io.color import (apply_orientation, exif_orientation, icc_applies, icc_to_srgb,
                              icc_to_srgb_16, is_srgb, reset_orientation)
from restora.io.image import Image
from restora.io.limits import Limits

# Sniffed name -> the only Pillow plugin allowed to read it (no guessing by Pillow).
_PLUGIN = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF", "tiff": "TIFF",
           "bmp": "BMP", "gif": "GIF", "tga": "TGA"}


def open_lazy(data: bytes, fmt: str, limits: Limits) -> PILImage.Image:
    """Open the header with Pillow and enforce the pixel and frame limits."""
    if fmt == "png" and len(data) >= 24:
        # IHDR sits at a fixed offset: check it before Pillow's own (coarser) bomb guard runs.
        limits.check_pixels(*struct.unpack(">II", data[16:24]))
    # Pillow's own bomb guard (a process-wide setting we leave alone) only ever adds a stricter
    # check above ours; its error is mapped to the same typed error.
    try:
        im = PILImage.open(io.BytesIO(data), formats=[_PLUGIN[fmt]])
    except PILImage.DecompressionBombError as exc:
        raise ImageTooLarge("The image header declares a size large enough to be a decompression "
                            "bomb.") from exc
    limits.check_pixels(*im.size)
    limits.check_frames(int(getattr(im, "n_frames", 1)))
    return im


def decode_pillow(data: bytes, fmt: str, limits: Limits) -> Image:
    im = open_lazy(data, fmt, limits)
    # TIFF orientation is a TIFF tag that both Pillow (on load, dropping the tag) and OpenCV
    # apply themselves; it is read here only to report it.
    tiff_orientation = _tiff_orientation(im, fmt)
    icc = im.info.get("icc_profile") or None
    # A damaged or mismatched profile is ignored (the pixels are still usable), not fatal.
    convert = bool(icc) and not is_srgb(icc) and icc_applies(icc, _colour_mode(im))
    if _is_16bit(im, fmt, data):
        rgb, alpha = _decode_16bit(data, fmt)
        depth = 16
        convert = convert and _colour_mode(im) == "RGB"  # grey 16-bit profiles: left as is
        if convert:
            rgb = icc_to_srgb_16(rgb, icc)
    else:
        im.load()
        rgb, alpha, depth = _pil_to_arrays(im, icc if convert else None)
    exif = _exif_bytes(im)
    info: dict = {}
    # Pillow reports 16-bit grey + alpha PNGs as RGBA: IHDR's colour type says grey (0, 4)
    if _colour_mode(im) == "L" or (fmt == "png" and len(data) > 25 and data[25] in (0, 4)):
        info["gray"] = True  # a single-channel source: written back as one (encode)
    if convert:
        info["icc_converted"] = True
    if fmt == "tiff":
        orientation, pending = tiff_orientation, 1
    else:
        orientation = pending = exif_orientation(exif)
    rgb = apply_orientation(rgb, pending)
    if alpha is not None:
        alpha = apply_orientation(alpha, pending)
    if orientation != 1:
        info["orientation_applied"] = orientation
    frames = int(getattr(im, "n_frames", 1))
    if frames > 1:
        info["frames"] = frames  # only the first is decoded
    return Image(pixels=rgb, alpha=alpha, format=fmt, bit_depth=depth,
                 exif=reset_orientation(exif), icc_profile=icc, info=info)


def _colour_mode(im: PILImage.Image) -> str:
    """The colour space Pillow's mode implies, ignoring alpha and palettes."""
    if im.mode in ("CMYK",):
        return "CMYK"
    if im.mode in ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return "L"
    return "RGB"


def _tiff_orientation(im: PILImage.Image, fmt: str) -> int:
    if fmt != "tiff":
        return 1
    value = getattr(im, "tag_v2", {}).get(274, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _exif_bytes(im: PILImage.Image) -> bytes | None:
    raw = im.info.get("exif")
    if isinstance(raw, bytes) and raw:
        return raw
    return None


def _is_16bit(im: PILImage.Image, fmt: str, data: bytes) -> bool:
    if fmt == "png":
        # IHDR: bit depth at byte 24, colour type at 25 (2 = RGB, 6 = RGBA, 4 = grey + alpha).
        return data[24] == 16 and data[25] in (2, 4, 6)
    if fmt == "tiff":
        bits = getattr(im, "tag_v2", {}).get(258)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return bool(bits) and bits[0] == 16 and len(bits) >= 2 and im.mode not in ("I;16", "I;16B")
    return False


def _decode_16bit(data: bytes, fmt: str) -> tuple[np.ndarray, np.ndarray | None]:
    import cv2  # heavy import, only for 16-bit colour

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise CorruptImage(f"The 16-bit {fmt.upper()} image data could not be decoded.")
    if arr.dtype != np.uint16:
        raise UnsupportedFormat(f"This {fmt.upper()} sample layout is not supported.")
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2), None
    channels = arr.shape[2]
    if channels == 2:  # grey + alpha
        return np.repeat(arr[..., :1], 3, axis=2), np.ascontiguousarray(arr[..., 1])
    rgb = np.ascontiguousarray(arr[..., 2::-1])
    alpha = np.ascontiguousarray(arr[..., 3]) if channels == 4 else None
    return rgb, alpha


def _pil_to_arrays(im: PILImage.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Pillow image (any mode) -> (RGB, alpha, bit depth); ``icc``, if given, is converted to sRGB."""
    mode = im.mode
    alpha: np.ndarray | None = None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(im)
        grey = np.clip(grey, 0, 65535).astype(np.uint16)
        return np.repeat(grey[..., None], 3, axis=2), None, 16
    if mode == "F":
        grey = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        grey = np.rint(grey * 65535).astype(np.uint16)
        return np.repeat(grey[..., None], 3, axis=2), None, 16
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "RGBa", "La"):
        if mode in ("RGBa", "La"):
            im = im.convert("RGBA")
        alpha = np.asarray(im.getchannel("A")).copy()
        im = im.convert("RGB") if im.mode == "RGBA" else im.convert("L")
        mode = im.mode
    if mode == "1":
        im = im.convert("L")
        mode = "L"
    if icc and mode in ("RGB", "L", "CMYK"):
        im = icc_to_srgb(im, icc)
    elif mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy(), alpha, 8
