"""Camera RAW (DNG, CR2, CR3, NEF, ARW, ORF, RW2, RAF, ...) through rawpy/LibRaw.

Opening reads the metadata only; the image size is checked before ``postprocess`` demosaics.
Rendering: camera white balance, AHD demosaic, sRGB primaries and the sRGB transfer curve, 16-bit
output, no auto-brightening (a faithful, not a "pleasing", rendering). LibRaw applies the
camera's orientation flag itself.
"""

from __future__ import annotations

import io

import numpy as np

from restora.io.image import Image
from restora.io.limits import Limits


def decode_raw(data: bytes, fmt: str, limits: Limits) -> Image:
    import rawpy

    with rawpy.RawPy() as raw:
        raw.open_buffer(io.BytesIO(data))
        sizes = raw.sizes
        limits.check_pixels(int(sizes.raw_width), int(sizes.raw_height))  # the unpacked sensor buffer
        limits.check_pixels(int(sizes.iwidth), int(sizes.iheight))
        rgb = raw.postprocess(
            output_bps=16,
            use_camera_wb=True,
            no_auto_bright=True,
            gamma=(2.4, 12.92),  # sRGB curve (power, toe slope)
            output_color=rawpy.ColorSpace.sRGB,
            demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD,
        )
    rgb = np.ascontiguousarray(rgb, dtype=np.uint16)
    return Image(pixels=rgb, alpha=None, format=fmt, bit_depth=16, exif=None, icc_profile=None,
                 info={"raw": "LibRaw AHD, camera WB, sRGB, no auto-bright"})
