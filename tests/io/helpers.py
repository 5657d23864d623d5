"""Synthetic but real test images: smooth gradients with texture, written by real encoders."""

from __future__ import annotations

import numpy as np


def gradient(h: int = 48, w: int = 64, dtype: type = np.uint8) -> np.ndarray:
    """An H x W x 3 image with distinct values along both axes and in every channel."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = x / (w - 1)
    g = y / (h - 1)
    b = 0.5 + 0.5 * np.sin((x + 2 * y) / 7.0)
    img = np.stack([r, g, b], axis=-1)
    top = 65535 if dtype == np.uint16 else 255
    return np.rint(img * top).astype(dtype)


def smooth(h: int = 48, w: int = 64) -> np.ndarray:
    """A low-frequency 8-bit image that lossy codecs reproduce closely."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([x / (w - 1), y / (h - 1), 1 - (x + y) / (w + h - 2)], axis=-1)
    return np.rint(32 + img * 190).astype(np.uint8)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _s15f16(v: float) -> bytes:
    import struct

    return struct.pack(">i", round(v * 65536))


def display_p3_profile() -> bytes:
    """An ICC v2 matrix/TRC profile with Display P3 primaries (D50-adapted) and the sRGB curve.

    Written byte by byte per ICC.1:2001-04 so the test does not depend on a profile file.
    """
    import struct

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \x00\x00\x00\x00" + _s15f16(x) + _s15f16(y) + _s15f16(z)

    def text_desc(s: str) -> bytes:
        ascii_ = s.encode() + b"\x00"
        return (b"desc\x00\x00\x00\x00" + struct.pack(">I", len(ascii_)) + ascii_
                + b"\x00" * 8 + b"\x00" * 3 + b"\x00" * 67)

    lin = np.linspace(0, 1, 1024)
    curve = np.where(lin <= 0.04045, lin / 12.92, ((lin + 0.055) / 1.055) ** 2.4)  # decode curve
    trc = b"curv\x00\x00\x00\x00" + struct.pack(">I", 1024) + np.rint(curve * 65535).astype(">u2").tobytes()
    tags = [
        (b"desc", text_desc("Display P3 (test)")),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)),
        (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)),
        (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)),
        (b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc),
        (b"cprt", b"text\x00\x00\x00\x00public domain\x00"),
    ]
    table = b""
    body = b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, data in tags:
        while (offset + len(body)) % 4:
            body += b"\x00"
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"none" + b"\x02\x10\x00\x00" + b"mntr" + b"RGB " + b"XYZ "
              + b"\x00" * 12 + b"acsp" + b"APPL" + b"\x00" * 4 + b"\x00" * 8 + b"\x00" * 8
              + b"\x00" * 4 + _s15f16(0.9642) + _s15f16(1.0) + _s15f16(0.8249) + b"none")
    header += b"\x00" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


# Display P3 linear -> sRGB linear (both D65), for expected values independent of LittleCMS.
P3_TO_SRGB = np.array([[1.2249, -0.2247, 0.0],
                       [-0.0420, 1.0419, 0.0],
                       [-0.0197, -0.0786, 1.0979]])


def srgb_decode(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0, 1)
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


def dng(scene: np.ndarray, *, white: int = 4095) -> bytes:
    """A real CFA DNG (RGGB Bayer, 12-bit) whose camera space is linear sRGB."""
    import io

    import tifffile

    h, w, _ = scene.shape
    cfa = np.empty((h, w))
    cfa[0::2, 0::2] = scene[0::2, 0::2, 0]
    cfa[0::2, 1::2] = scene[0::2, 1::2, 1]
    cfa[1::2, 0::2] = scene[1::2, 0::2, 1]
    cfa[1::2, 1::2] = scene[1::2, 1::2, 2]
    raw = np.rint(cfa * white).astype(np.uint16)
    # ColorMatrix1 maps XYZ (D65) to camera RGB; the XYZ->linear-sRGB matrix makes camera == sRGB.
    xyz_to_srgb = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]
    matrix = [v for x in xyz_to_srgb for v in (round(x * 10000), 10000)]
    tags = [
        (254, "I", 1, 0, True),  # NewSubfileType: full resolution
        (271, "s", 0, "Restora", True),
        (272, "s", 0, "SyntheticCam", True),
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern RGGB
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "Restora SyntheticCam", True),  # UniqueCameraModel
        (50714, "I", 1, 0, True),  # BlackLevel
        (50717, "I", 1, white, True),  # WhiteLevel
        (50721, "2i", 9, matrix, True),  # ColorMatrix1
        (50728, "2I", 3, [1, 1] * 3, True),  # AsShotNeutral: neutral white balance
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1 = D65
    ]
    out = io.BytesIO()
    tifffile.imwrite(out, raw, photometric=32803, extratags=tags, metadata=None)
    return out.getvalue()
