"""OpenEXR and Radiance HDR: scene-linear float data tone-mapped to 8-bit sRGB.

Tone-mapping operator (``tone_map``), applied to linear RGB:

1. Negative and non-finite values are set to 0.
2. Exposure normalisation: luminance ``L = 0.2126 R + 0.7152 G + 0.0722 B`` (Rec. 709), scaled
   so the log-average luminance maps to middle grey: ``Lm = 0.18 * L / exp(mean(log(1e-6 + L)))``.
3. Extended Reinhard on luminance: ``Ld = Lm * (1 + Lm / Lw^2) / (1 + Lm)`` with
   ``Lw = max(1, max(Lm))``, so the brightest pixel reaches white without clipping.
4. Colour is scaled by ``Ld / L`` (hue and saturation kept), clipped to [0, 1], encoded with the
   sRGB OETF and rounded to 8 bits.

Headers are read first (EXR via the OpenEXR package, HDR from its text header) so the pixel limit
holds before any float buffer is allocated.
"""

from __future__ import annotations

import io
import re

import numpy as np

from restora.errors import CorruptImage
from restora.io.image import Image
from restora.io.limits import Limits

TONE_MAP = "exposure-normalised extended Reinhard (key 0.18) + sRGB OETF"
_RES = re.compile(rb"^([-+])([XY]) (\d+) ([-+])([XY]) (\d+)$")


def srgb_oetf(x: np.ndarray) -> np.ndarray:
    """Linear [0, 1] -> sRGB-encoded [0, 1] (IEC 61966-2-1)."""
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055)


def tone_map(rgb: np.ndarray) -> np.ndarray:
    """Scene-linear H x W x 3 float -> H x W x 3 uint8 sRGB (operator in the module doc)."""
    rgb = np.nan_to_num(np.asarray(rgb, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    rgb = np.maximum(rgb, 0.0)
    lum = rgb @ np.array([0.2126, 0.7152, 0.0722])
    key = float(np.exp(np.mean(np.log(1e-6 + lum))))
    lm = lum * (0.18 / key)
    white = max(1.0, float(lm.max()) if lm.size else 1.0)
    ld = lm * (1.0 + lm / (white * white)) / (1.0 + lm)
    scale = np.divide(ld, lum, out=np.zeros_like(lum), where=lum > 0)
    out = np.clip(rgb * scale[..., None], 0.0, 1.0)
    return np.rint(srgb_oetf(out) * 255.0).astype(np.uint8)


def _to_uint8_alpha(a: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1) * 255).astype(np.uint8)


def decode_exr(data: bytes, fmt: str, limits: Limits) -> Image:
    import OpenEXR

    head = OpenEXR.File(io.BytesIO(data), header_only=True)
    limits.check_frames(len(head.parts))
    for part in head.parts:  # every part is allocated when the file is read, so check each
        lo, hi = part.header["dataWindow"]
        limits.check_pixels(int(hi[0]) - int(lo[0]) + 1, int(hi[1]) - int(lo[1]) + 1)
    channels = OpenEXR.File(io.BytesIO(data)).channels()
    alpha = None
    if "RGBA" in channels:
        px = channels["RGBA"].pixels
        rgb, alpha = px[..., :3], _to_uint8_alpha(px[..., 3])
    elif "RGB" in channels:
        rgb = channels["RGB"].pixels
    elif all(c in channels for c in "RGB"):
        rgb = np.stack([channels[c].pixels for c in "RGB"], axis=-1)
        if "A" in channels:
            alpha = _to_uint8_alpha(channels["A"].pixels)
    elif "Y" in channels:
        rgb = np.repeat(channels["Y"].pixels[..., None], 3, axis=2)
    else:
        raise CorruptImage(f"The EXR file has no RGB or Y channels (found {sorted(channels)}).")
    return Image(pixels=tone_map(rgb), alpha=alpha, format=fmt, bit_depth=8,
                 info={"tone_map": TONE_MAP, "peak": float(np.nanmax(rgb)) if rgb.size else 0.0})


def hdr_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a Radiance header: text lines, a blank line, then the resolution."""
    end = data.find(b"\n\n", 0, 65536)
    if end < 0:
        raise CorruptImage("The Radiance HDR header is not terminated.")
    line_end = data.find(b"\n", end + 2, end + 2 + 64)
    match = _RES.match(data[end + 2:line_end].strip()) if line_end > 0 else None
    if match is None:
        raise CorruptImage("The Radiance HDR resolution line is missing or malformed.")
    first, second = int(match.group(3)), int(match.group(6))
    return (second, first) if match.group(2) == b"Y" else (first, second)


def decode_hdr(data: bytes, fmt: str, limits: Limits) -> Image:
    import cv2

    limits.check_pixels(*hdr_size(data))
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    if bgr is None:
        raise CorruptImage("The Radiance HDR pixel data could not be decoded.")
    rgb = bgr[..., ::-1].astype(np.float32)
    return Image(pixels=tone_map(rgb), format=fmt, bit_depth=8,
                 info={"tone_map": TONE_MAP, "peak": float(rgb.max()) if rgb.size else 0.0})
