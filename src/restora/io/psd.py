"""Photoshop PSD/PSB: the flattened composite, via psd-tools.

The size is read from the 26-byte file header and checked before psd-tools parses anything.
When the file carries Photoshop's merged image ("maximize compatibility"), that composite is
used at full depth (16-bit stays 16-bit); otherwise psd-tools composites the layers (8-bit).
32-bit (float, linear) documents are tone-mapped like EXR/HDR.
"""

from __future__ import annotations

import io
import struct

import numpy as np

from restora.errors import CorruptImage
from restora.io.color import icc_to_srgb, icc_to_srgb_16, is_srgb
from restora.io.image import Image
from restora.io.limits import Limits

_RGB, _GRAYSCALE = 3, 1
_ICC_RESOURCE = 1039


def read_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, depth, colour mode) from the PSD file header."""
    if len(data) < 26:
        raise CorruptImage("The PSD file is shorter than its 26-byte header.")
    _sig, _version, _reserved, _channels, height, width, depth, mode = struct.unpack(
        ">4sH6sHIIHH", data[:26])
    if depth not in (1, 8, 16, 32):
        raise CorruptImage(f"The PSD header declares an invalid bit depth of {depth}.")
    return width, height, depth, mode


def decode_psd(data: bytes, fmt: str, limits: Limits) -> Image:
    width, height, depth, mode = read_header(data)
    limits.check_pixels(width, height)
    from PIL import Image as PILImage
    from psd_tools import PSDImage  # imported after the cheap check: a bomb costs nothing
    # Per-allocation ceiling for psd-tools: layers may declare rectangles larger than the canvas.
    budget = max(limits.max_pixels * 4 * 4, 1 << 24)
    psd = PSDImage.open(io.BytesIO(data), max_alloc_bytes=budget)
    icc = psd.image_resources.get_data(_ICC_RESOURCE) or None
    icc = bytes(icc) if icc else None
    info: dict = {"layers": len(list(psd.descendants()))}
    alpha: np.ndarray | None = None
    if mode in (_RGB, _GRAYSCALE) and depth in (8, 16) and psd.has_preview():
        arr = psd.numpy()  # the stored merged image, float32 in [0, 1]
        if arr.ndim == 2:
            arr = arr[..., None]
        colour = 1 if mode == _GRAYSCALE else 3
        if arr.shape[2] > colour:
            alpha_f = arr[..., colour]
        else:
            alpha_f = None
        arr = arr[..., :colour]
        if colour == 1:
            arr = np.repeat(arr, 3, axis=2)
        top = 65535 if depth == 16 else 255
        dtype = np.uint16 if depth == 16 else np.uint8
        pixels = np.rint(np.clip(arr, 0, 1) * top).astype(dtype)
        if alpha_f is not None:
            alpha = np.rint(np.clip(alpha_f, 0, 1) * top).astype(dtype)
        info["composite"] = "merged image"
        if colour == 1:
            info["gray"] = True  # a single-channel source: written back as one (encode)
        if icc and not is_srgb(icc) and mode == _RGB:
            pixels = (icc_to_srgb_16(pixels, icc) if depth == 16 else
                      np.asarray(icc_to_srgb(PILImage.fromarray(pixels, "RGB"), icc)).copy())
    elif depth == 32:
        from restora.io.hdr import tone_map

        arr = psd.numpy()
        pixels = tone_map(np.repeat(arr[..., :1], 3, axis=2) if mode == _GRAYSCALE else arr[..., :3])
        info["composite"] = "merged image"
        info["tone_map"] = "reinhard-extended + srgb"
    else:
        # No merged image (or CMYK/Lab/indexed): psd-tools composites the layers in 8-bit and
        # applies the document's ICC profile itself.
        pil = psd.composite(apply_icc=True)
        if pil.mode in ("RGBA", "LA"):
            alpha = np.asarray(pil.getchannel("A")).copy()
        pixels = np.asarray(pil.convert("RGB")).copy()
        info["composite"] = "layers composited"
    return Image(pixels=pixels, alpha=alpha, format=fmt, bit_depth=16 if pixels.dtype == np.uint16 else 8,
                 exif=None, icc_profile=icc, info=info)
