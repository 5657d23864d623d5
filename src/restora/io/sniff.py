"""Format detection from content (magic bytes), never from the file name.

``sniff_format`` returns one of the ``Image.format`` names or ``None``. TIFF-based camera raws are
told apart from plain TIFF by their IFD0 (DNGVersion tag, Canon's ``CR`` marker, or a camera maker
with raw-style sub-IFDs). TGA has no magic number, so it is tried last, by validating every header
field against the specification.
"""

from __future__ import annotations

import struct

# ISO-BMFF brands (ftyp box) that mean AVIF, HEIF/HEIC, or Canon CR3 raw.
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1",
                b"msf1", b"mif2"}
_CR3_BRANDS = {b"crx "}

# Makers whose TIFF-structured raws (NEF, ARW, PEF, SR2, ...) carry no format marker of their own.
_RAW_MAKERS = ("nikon", "sony", "pentax", "ricoh", "canon", "olympus", "om digital", "fujifilm",
               "panasonic", "leica", "hasselblad", "phase one", "samsung", "kodak", "minolta",
               "konica", "epson", "sigma", "mamiya", "leaf")

_TAG_NEW_SUBFILE_TYPE = 254
_TAG_MAKE = 271
_TAG_SUB_IFDS = 330
_TAG_DNG_VERSION = 50706


def sniff_format(data: bytes) -> str | None:
    """The format name for ``data`` from its leading bytes, or ``None`` if unrecognised."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _sniff_bmff(data)
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "raw" if _tiff_is_raw(data) else "tiff"
    if head.startswith((b"IIRO", b"IIRS", b"IIU\x00", b"FUJIFILMCCD-RAW", b"\x00MRM", b"FOVb")):
        return "raw"  # ORF, RW2, RAF, MRW, X3F
    if head[6:14] == b"HEAPCCDR":
        return "raw"  # CRW
    if head.startswith(b"8BPS") and head[4:6] in (b"\x00\x01", b"\x00\x02"):
        return "psd"
    if head.startswith(b"v/1\x01"):
        return "exr"
    if head.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "hdr"
    if head.startswith(b"BM") and _looks_like_bmp(data):
        return "bmp"
    if _looks_like_tga(data):
        return "tga"
    return None


def _sniff_bmff(data: bytes) -> str | None:
    size = struct.unpack(">I", data[:4])[0]
    if size < 16 or size > len(data) or size > 4096:
        return None
    box = data[8:size]
    brands = {box[0:4]} | {box[i:i + 4] for i in range(8, len(box) - 3, 4)}
    if brands & _CR3_BRANDS:
        return "raw"
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIF_BRANDS:
        return "heif"
    return None


def _looks_like_bmp(data: bytes) -> bool:
    if len(data) < 26:
        return False
    offset, dib = struct.unpack("<II", data[10:18])
    return dib in (12, 16, 40, 52, 56, 64, 108, 124) and 14 + dib <= offset <= len(data)


def _looks_like_tga(data: bytes) -> bool:
    """Validate a TGA header field by field (the format has no magic at the start)."""
    if len(data) < 18:
        return False
    id_len, cmap_type, img_type = data[0], data[1], data[2]
    _cmap_first, cmap_len, cmap_bits = struct.unpack("<HHB", data[3:8])  # first index: any value
    width, height, depth, desc = struct.unpack("<HHBB", data[12:18])
    if cmap_type not in (0, 1) or img_type not in (1, 2, 3, 9, 10, 11):
        return False
    if width == 0 or height == 0 or desc & 0xC0:  # bits 6-7 (interleaving) are always 0 today
        return False
    colour_mapped = img_type in (1, 9)
    if colour_mapped != (cmap_type == 1):
        return False
    if colour_mapped:
        if depth not in (8, 16) or cmap_bits not in (15, 16, 24, 32) or cmap_len == 0:
            return False
    elif img_type in (3, 11):
        if depth not in (8, 16) or cmap_type:
            return False
    elif depth not in (15, 16, 24, 32):
        return False
    cmap_bytes = cmap_len * ((cmap_bits + 7) // 8) if cmap_type else 0
    # Some pixel data must follow; a short file is then reported as truncated, not as unknown.
    return len(data) > 18 + id_len + cmap_bytes


def _tiff_is_raw(data: bytes) -> bool:
    """True for TIFF-structured camera raws (DNG, CR2, NEF, ARW, PEF, ...), not plain TIFF."""
    if data[8:10] == b"CR":
        return True  # Canon CR2 marker right after the TIFF header
    tags = _ifd0_tags(data)
    if tags is None:
        return False
    if _TAG_DNG_VERSION in tags:
        return True
    make = tags.get(_TAG_MAKE)
    if isinstance(make, bytes) and make.lower().strip(b"\x00 ").decode("latin-1").startswith(_RAW_MAKERS):
        # Cameras store a reduced preview in IFD0 and the sensor data in sub-IFDs; an edited
        # TIFF that merely kept the camera's Make has a full-resolution IFD0 and no sub-IFDs.
        return _TAG_SUB_IFDS in tags or tags.get(_TAG_NEW_SUBFILE_TYPE) == 1
    return False


def _ifd0_tags(data: bytes) -> dict[int, object] | None:
    """IFD0 of a classic TIFF: tag -> int (SHORT/LONG scalars) or bytes (ASCII); others -> None."""
    if data[2:4] not in (b"*\x00", b"\x00*"):
        return None  # BigTIFF: no raw format uses it
    endian = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(endian + "I", data[4:8])
        (count,) = struct.unpack(endian + "H", data[offset:offset + 2])
        tags: dict[int, object] = {}
        for i in range(min(count, 512)):
            entry = data[offset + 2 + 12 * i: offset + 14 + 12 * i]
            tag, typ, n = struct.unpack(endian + "HHI", entry[:8])
            value: object = None
            if typ == 3 and n == 1:
                value = struct.unpack(endian + "H", entry[8:10])[0]
            elif typ == 4 and n == 1:
                value = struct.unpack(endian + "I", entry[8:12])[0]
            elif typ == 2:
                if n <= 4:
                    value = entry[8:8 + n]
                else:
                    (ptr,) = struct.unpack(endian + "I", entry[8:12])
                    value = data[ptr:ptr + min(n, 256)]
            tags[tag] = value
        return tags
    except struct.error:
        return None
