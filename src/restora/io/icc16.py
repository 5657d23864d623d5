"""Exact 16-bit ICC conversion for matrix/TRC RGB profiles (Display P3, Adobe RGB, ProPhoto...).

Pillow cannot hand 16-bit RGB to LittleCMS, so for the common matrix/TRC profiles the same maths
is done here in float: per-channel tone curve (``curv`` table or gamma, ``para`` types 0-4) ->
XYZ (D50 PCS) with the profile's colorants -> linear sRGB with the D50-adapted sRGB colorants
LittleCMS itself uses -> clip -> sRGB curve. LUT-based profiles (``A2B0``) return ``None`` and the
caller falls back to the interpolated 8-bit lattice.
"""

from __future__ import annotations

import struct

import numpy as np

Curve = np.ndarray  # 65536-entry float32 table: uint16 code value -> linear


def _tags(icc: bytes) -> dict[bytes, bytes]:
    (count,) = struct.unpack(">I", icc[128:132])
    out = {}
    for i in range(min(count, 256)):
        sig, off, size = struct.unpack(">4sII", icc[132 + 12 * i:144 + 12 * i])
        out[sig] = icc[off:off + size]
    return out


def _xyz(tag: bytes) -> np.ndarray:
    if tag[:4] != b"XYZ ":
        raise ValueError("not an XYZ tag")
    return np.array(struct.unpack(">3i", tag[8:20]), dtype=np.float64) / 65536.0


def _curve(tag: bytes) -> Curve:
    x = np.arange(65536, dtype=np.float64) / 65535.0
    kind = tag[:4]
    if kind == b"curv":
        (n,) = struct.unpack(">I", tag[8:12])
        if n == 0:
            y = x
        elif n == 1:
            y = x ** (struct.unpack(">H", tag[12:14])[0] / 256.0)
        else:
            table = np.frombuffer(tag[12:12 + 2 * n], dtype=">u2").astype(np.float64) / 65535.0
            y = np.interp(x, np.linspace(0.0, 1.0, n), table)
    elif kind == b"para":
        (ftype,) = struct.unpack(">H", tag[8:10])
        nparams = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}[ftype]
        p = [v / 65536.0 for v in struct.unpack(f">{nparams}i", tag[12:12 + 4 * nparams])]
        g, a, b, c, d, e, f = (p + [0.0] * 7)[:7]
        if ftype == 0:
            y = x ** g
        elif ftype == 1:
            y = np.where(x >= -b / a, np.maximum(a * x + b, 0) ** g, 0.0)
        elif ftype == 2:
            y = np.where(x >= -b / a, np.maximum(a * x + b, 0) ** g + c, c)
        elif ftype == 3:
            y = np.where(x >= d, np.maximum(a * x + b, 0) ** g, c * x)
        else:
            y = np.where(x >= d, np.maximum(a * x + b, 0) ** g + e, c * x + f)
    else:
        raise ValueError("unsupported curve type")
    return y.astype(np.float32)


def matrix_trc(icc: bytes) -> tuple[np.ndarray, list[Curve]] | None:
    """(3x3 RGB->XYZ matrix, three curves) for a matrix/TRC RGB profile, else ``None``."""
    try:
        if icc[16:20] != b"RGB " or icc[20:24] != b"XYZ ":
            return None
        tags = _tags(icc)
        if b"A2B0" in tags:  # LittleCMS would prefer the LUT; so do we (via the lattice)
            return None
        matrix = np.stack([_xyz(tags[k]) for k in (b"rXYZ", b"gXYZ", b"bXYZ")], axis=1)
        curves = [_curve(tags[k]) for k in (b"rTRC", b"gTRC", b"bTRC")]
    except (KeyError, ValueError, struct.error, ZeroDivisionError):
        return None
    return matrix, curves


def _srgb_matrix() -> np.ndarray:
    from restora.io.color import srgb_profile

    prof = srgb_profile().profile
    cols = [prof.red_colorant[0], prof.green_colorant[0], prof.blue_colorant[0]]
    return np.array(cols, dtype=np.float64).T


def convert_16(rgb: np.ndarray, icc: bytes) -> np.ndarray | None:
    """uint16 RGB in ``icc`` -> uint16 sRGB, or ``None`` if the profile is not matrix/TRC."""
    model = matrix_trc(icc)
    if model is None:
        return None
    matrix, curves = model
    to_srgb = (np.linalg.inv(_srgb_matrix()) @ matrix).astype(np.float32)
    lin = np.stack([curves[c][rgb[..., c]] for c in range(3)], axis=-1)
    out = np.clip(lin @ to_srgb.T, 0.0, 1.0)
    enc = np.where(out <= 0.0031308, 12.92 * out, 1.055 * np.power(out, 1 / 2.4) - 0.055)
    return np.rint(enc * 65535.0).astype(np.uint16)
