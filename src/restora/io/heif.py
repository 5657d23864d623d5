"""HEIC/HEIF via pillow-heif (used directly: no global Pillow plugin registration).

libheif applies the container's rotation/mirror (irot/imir) while decoding, and those are the
authoritative orientation for HEIF, so the EXIF orientation is *not* applied again; it is only
reset to 1 in the kept EXIF. 10/12-bit images come back as 16-bit by bit replication.
"""

from __future__ import annotations

import io

import numpy as np

from restora.io.color import icc_to_srgb, icc_to_srgb_16, is_srgb, reset_orientation
from restora.io.image import Image
from restora.io.limits import Limits


def decode_heif(data: bytes, fmt: str, limits: Limits) -> Image:
    import pillow_heif
    from PIL import Image as PILImage

    heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    limits.check_frames(len(heif))
    limits.check_pixels(*heif.size)  # size after transforms; the count is the same either way
    bits = int(heif.info.get("bit_depth", 8))
    arr = np.asarray(heif)  # decodes the primary image here, after the checks
    alpha = None
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        alpha, arr = np.ascontiguousarray(arr[..., 3]), arr[..., :3]
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.uint16 and 8 < bits < 16:
        # libheif left-aligns n-bit samples; replicate the top bits so full scale is 65535.
        arr = arr | (arr >> bits)
        if alpha is not None:
            alpha = alpha | (alpha >> bits)
    icc = heif.info.get("icc_profile") or None
    if icc and not is_srgb(icc):
        if arr.dtype == np.uint16:
            arr = icc_to_srgb_16(arr, icc)
        else:
            arr = np.asarray(icc_to_srgb(PILImage.fromarray(arr, "RGB"), icc)).copy()
    depth = 16 if arr.dtype == np.uint16 else 8
    info = {"source_bit_depth": bits}
    if len(heif) > 1:
        info["frames"] = len(heif)
    return Image(pixels=arr, alpha=alpha, format=fmt, bit_depth=depth,
                 exif=reset_orientation(heif.info.get("exif") or None), icc_profile=icc, info=info)
