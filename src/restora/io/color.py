"""Colour and orientation normalisation shared by every decoder.

* EXIF orientation (tag 274) is read from the raw EXIF block, applied to the pixels, and then
  patched to 1 *in place* in the kept bytes, so maker notes and offsets survive byte for byte.
* ICC profiles are applied with LittleCMS (Pillow ``ImageCms``) so pixels come out in sRGB.
  8-bit images are transformed directly. Pillow cannot hold 16-bit RGB, so 16-bit images with a
  matrix/TRC profile are converted exactly in float (``icc16``); LUT profiles go through a
  52^3-node lattice of the LittleCMS transform with trilinear interpolation (a few 8-bit levels
  of error at worst, near gamut clipping; no banding because the lattice is interpolated).
"""

from __future__ import annotations

import io
import struct
from functools import lru_cache

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms

_ORIENTATION = 274
_EXIF_PREFIX = b"Exif\x00\x00"


# --- EXIF orientation ---------------------------------------------------------------------------

def _orientation_entry(exif: bytes) -> tuple[int, str] | None:
    """Byte offset of the orientation value in ``exif`` and the TIFF byte order, if present."""
    base = len(_EXIF_PREFIX) if exif.startswith(_EXIF_PREFIX) else 0
    tiff = exif[base:]
    if tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    endian = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(endian + "I", tiff[4:8])
        (count,) = struct.unpack(endian + "H", tiff[ifd:ifd + 2])
        for i in range(count):
            pos = ifd + 2 + 12 * i
            tag, typ = struct.unpack(endian + "HH", tiff[pos:pos + 4])
            if tag == _ORIENTATION and typ == 3:  # SHORT
                return base + pos + 8, endian
    except struct.error:
        return None
    return None


def exif_orientation(exif: bytes | None) -> int:
    """The EXIF orientation (1-8); 1 when absent or malformed."""
    if not exif:
        return 1
    entry = _orientation_entry(exif)
    if entry is None:
        return 1
    pos, endian = entry
    (value,) = struct.unpack(endian + "H", exif[pos:pos + 2])
    return value if 1 <= value <= 8 else 1


def reset_orientation(exif: bytes | None) -> bytes | None:
    """``exif`` with orientation set to 1, always carrying the ``Exif\\0\\0`` prefix."""
    if not exif:
        return None
    entry = _orientation_entry(exif)
    if entry is not None:
        pos, endian = entry
        exif = exif[:pos] + struct.pack(endian + "H", 1) + exif[pos + 2:]
    return exif if exif.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + exif


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an H x W (x C) array stored with EXIF ``orientation`` into its upright view."""
    if orientation == 2:
        out = arr[:, ::-1]
    elif orientation == 3:
        out = arr[::-1, ::-1]
    elif orientation == 4:
        out = arr[::-1]
    elif orientation == 5:
        out = arr.swapaxes(0, 1)
    elif orientation == 6:
        out = np.rot90(arr, k=-1)
    elif orientation == 7:
        out = np.rot90(arr, k=2).swapaxes(0, 1)
    elif orientation == 8:
        out = np.rot90(arr, k=1)
    else:
        return arr
    return np.ascontiguousarray(out)


# --- ICC ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=1)
def srgb_profile_bytes() -> bytes:
    return srgb_profile().tobytes()


def _profile(icc: bytes) -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(io.BytesIO(icc))


def is_srgb(icc: bytes) -> bool:
    """True when the profile declares itself sRGB (no conversion needed)."""
    try:
        desc = ImageCms.getProfileDescription(_profile(icc)) or ""
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError):
        return False
    return "srgb" in desc.lower().replace(" ", "") or "iec61966-2" in desc.lower()


def icc_applies(icc: bytes, mode: str) -> bool:
    """True when ``icc`` parses and describes ``mode``'s colour space (else it is ignored)."""
    space = {"RGB": "RGB ", "RGBA": "RGB ", "L": "GRAY", "LA": "GRAY", "CMYK": "CMYK"}.get(mode)
    try:
        return space is not None and _profile(icc).profile.xcolor_space == space
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError):
        return False


def icc_to_srgb(im: PILImage.Image, icc: bytes) -> PILImage.Image:
    """Convert an ``RGB``/``L``/``CMYK`` Pillow image in profile ``icc`` to sRGB ``RGB``."""
    return ImageCms.profileToProfile(im, _profile(icc), srgb_profile(), outputMode="RGB")


def icc_to_srgb_16(rgb: np.ndarray, icc: bytes) -> np.ndarray:
    """Convert H x W x 3 uint16 RGB in profile ``icc`` to sRGB, keeping 16 bits.

    Matrix/TRC profiles are converted exactly in float (``icc16``); others through a lattice of
    the 8-bit LittleCMS transform with trilinear interpolation.
    """
    from restora.io.icc16 import convert_16

    exact = convert_16(rgb, icc)
    if exact is not None:
        return exact
    n = 52  # 0, 5, ..., 255: exact 8-bit nodes
    nodes = np.arange(n, dtype=np.uint8) * 5
    r, g, b = np.meshgrid(nodes, nodes, nodes, indexing="ij")
    grid = np.stack([r, g, b], axis=-1).reshape(n * n, n, 3)
    lut_img = icc_to_srgb(PILImage.fromarray(grid, "RGB"), icc)
    lut = np.asarray(lut_img, dtype=np.float32).reshape(n, n, n, 3) / 255.0
    pos = rgb.astype(np.float32) * ((n - 1) / 65535.0)
    i0 = np.minimum(pos.astype(np.int32), n - 2)
    f = pos - i0
    out = np.zeros(rgb.shape, dtype=np.float32)
    for dr in (0, 1):
        wr = f[..., 0] if dr else 1 - f[..., 0]
        for dg in (0, 1):
            wg = f[..., 1] if dg else 1 - f[..., 1]
            for db in (0, 1):
                wb = f[..., 2] if db else 1 - f[..., 2]
                w = (wr * wg * wb)[..., None]
                out += w * lut[i0[..., 0] + dr, i0[..., 1] + dg, i0[..., 2] + db]
    return np.clip(np.rint(out * 65535.0), 0, 65535).astype(np.uint16)
