"""The decoded image as every stage of the pipeline sees it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Image:
    """Pixels plus what the output needs to be faithful to the input.

    ``pixels`` is always H x W x 3 RGB in sRGB (ICC profiles are applied at decode), ``uint8`` or
    ``uint16``; ``alpha`` is H x W of the same dtype or ``None``. EXIF orientation has been applied
    to the pixels and reset to 1 in ``exif``.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    format: str = "png"  # sniffed source format: jpeg, png, webp, avif, heif, tiff, bmp, gif, tga, psd, raw, exr, hdr
    bit_depth: int = 8  # 8 or 16 (of ``pixels``)
    exif: bytes | None = None  # EXIF block with orientation reset to 1
    icc_profile: bytes | None = None  # the source profile (pixels are already sRGB)
    #: decoder notes, e.g. the tone-mapping operator for HDR, "gray" for a single-channel source
    info: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow reports it."""
        return self.width, self.height

    @property
    def max_value(self) -> int:
        return 65535 if self.pixels.dtype == np.uint16 else 255

    def with_pixels(self, pixels: np.ndarray, alpha: np.ndarray | None = None) -> "Image":
        """A copy with new pixels (and alpha), keeping format metadata."""
        depth = 16 if pixels.dtype == np.uint16 else 8
        return replace(self, pixels=pixels, alpha=alpha, bit_depth=depth)


def is_grayscale(pixels: np.ndarray) -> bool:
    """True when every pixel of H x W x 3 ``pixels`` has R == G == B."""
    return bool(np.array_equal(pixels[..., 0], pixels[..., 1])
                and np.array_equal(pixels[..., 1], pixels[..., 2]))
