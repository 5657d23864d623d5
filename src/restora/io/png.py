"""A streaming PNG writer: rows are filtered and deflated in bands straight into a file.

Why our own: Pillow copies an RGB array into its own 4-bytes-per-pixel image before encoding
and OpenCV wants BGR (a full copy); for a 384 MP upscaled result each copy is 1.2-1.5 GB. Here
memory is the band being written (``BAND`` rows), whatever the image's size, and 8- and 16-bit
RGB/RGBA go through the same path. The bytes are standard PNG: per row the filter with the
smallest sum of absolute signed residuals (the usual adaptive heuristic, the one libpng and
Pillow use), deflated with the run-length strategy (see :mod:`restora.io.encode`). On a 19 MP
photo it writes the same file size as Pillow in ~1.3x Pillow's CPU time.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

#: rows filtered per step: ~32 rows x 24000 px x 8 bytes stays a few MB of temporaries
BAND = 32
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(fh: BinaryIO, kind: bytes, payload: bytes) -> None:
    fh.write(struct.pack(">I", len(payload)) + kind + payload
             + struct.pack(">I", zlib.crc32(kind + payload)))


def _filter_band(rows: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG-filter ``rows`` (R x N bytes; ``prev`` the raw row above, zeros for the first) with
    the per-row adaptive choice; returns R x (N + 1) bytes, the filter type first."""
    x = rows.astype(np.int16)
    up = np.empty_like(x)
    up[0] = prev
    up[1:] = x[:-1]
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    upleft = np.zeros_like(x)
    upleft[:, bpp:] = up[:, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    # filter types 0-4: None, Sub, Up, Average, Paeth (residuals mod 256)
    cands = [x, x - left, x - up, x - ((left + up) >> 1), x - paeth]
    residual = [c.astype(np.uint8) for c in cands]
    cost = np.stack([np.abs(r.view(np.int8).astype(np.int16)).sum(axis=1, dtype=np.int64)
                     for r in residual])
    choice = cost.argmin(axis=0)
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = choice
    for k, r in enumerate(residual):
        sel = choice == k
        if sel.any():
            out[sel, 1:] = r[sel]
    return out


def write_png(fh: BinaryIO, pixels: np.ndarray, alpha: np.ndarray | None = None, *,
              icc: bytes | None = None, exif: bytes | None = None, level: int = 1,
              strategy: int = zlib.Z_RLE, gray: bool = False) -> None:
    """Write ``pixels`` (H x W x 3 uint8 or uint16) and optional ``alpha`` (H x W, same dtype)
    as a PNG to ``fh``, band by band; ``icc`` goes in iCCP, ``exif`` in eXIf. ``gray`` writes
    the first channel alone (grey, or grey with alpha): for pixels whose channels are equal."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected H x W x 3 uint8/uint16 pixels, got {pixels.shape} "
                         f"{pixels.dtype}")
    if alpha is not None and alpha.dtype != pixels.dtype:
        top = 65535 if pixels.dtype == np.uint16 else 255
        alpha = np.rint(alpha.astype(np.float32) * (top / (65535 if alpha.dtype == np.uint16
                                                           else 255))).astype(pixels.dtype)
    h, w = pixels.shape[:2]
    channels = (1 if gray else 3) + (alpha is not None)
    depth = 16 if pixels.dtype == np.uint16 else 8
    bpp = channels * depth // 8
    fh.write(SIGNATURE)
    # grey, grey with alpha, truecolour, truecolour with alpha
    colour = (0 if alpha is None else 4) if gray else (2 if alpha is None else 6)
    _chunk(fh, b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
    if icc:
        _chunk(fh, b"iCCP", b"icc\x00\x00" + zlib.compress(icc))
    if exif:
        _chunk(fh, b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    z = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    prev = np.zeros(w * bpp, np.uint8)
    for y in range(0, h, BAND):
        band = pixels[y:y + BAND, :, :1] if gray else pixels[y:y + BAND]
        if alpha is not None:
            band = np.concatenate([band, alpha[y:y + BAND, :, None]], axis=2)
        if depth == 16:
            band = band.astype(">u2")  # PNG samples are big-endian
        raw = np.ascontiguousarray(band).view(np.uint8).reshape(band.shape[0], w * bpp)
        data = z.compress(_filter_band(raw, prev, bpp).tobytes())
        prev = raw[-1].copy()
        if data:
            _chunk(fh, b"IDAT", data)
    _chunk(fh, b"IDAT", z.flush())
    _chunk(fh, b"IEND", b"")
