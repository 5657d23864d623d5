"""Input limits, checked from headers before any pixel is decoded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from restora.errors import (CorruptImage, FileTooLarge, ImageTooLarge, OutputTooLarge,
                            TooManyFrames)

if TYPE_CHECKING:
    from restora.config import Settings


@dataclass(frozen=True)
class Limits:
    """Maximum input size: file bytes, pixels of the largest frame, and frame count; and the
    largest result (``max_output_pixels``)."""

    max_bytes: int = 50_000_000
    max_pixels: int = 50_000_000
    max_frames: int = 1000
    max_output_pixels: int = 100_000_000

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Limits":
        return cls(max_bytes=settings.max_bytes, max_pixels=settings.max_pixels,
                   max_frames=settings.max_frames,
                   max_output_pixels=settings.max_output_pixels)

    def check_output(self, width: int, height: int) -> None:
        """Refuse a result of ``width`` x ``height`` over ``max_output_pixels`` (413)."""
        if width * height > self.max_output_pixels:
            raise OutputTooLarge(
                f"The result would be {width}x{height} ({width * height:,} pixels), more than "
                f"the {self.max_output_pixels:,}-pixel output limit (RESTORA_MAX_OUTPUT_PIXELS).",
                width=width, height=height, limit=self.max_output_pixels)

    def check_bytes(self, n: int) -> None:
        if n > self.max_bytes:
            raise FileTooLarge(
                f"The file is {n:,} bytes, larger than the {self.max_bytes:,}-byte limit.",
                size=n, limit=self.max_bytes)

    def check_pixels(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise CorruptImage(f"The image header declares an invalid size of {width}x{height}.")
        if width * height > self.max_pixels:
            raise ImageTooLarge(
                f"The image is {width}x{height} ({width * height:,} pixels), more than the "
                f"{self.max_pixels:,}-pixel limit.", width=width, height=height, limit=self.max_pixels)

    def check_frames(self, n: int) -> None:
        if n > self.max_frames:
            raise TooManyFrames(f"The file has {n:,} frames, more than the {self.max_frames:,}-frame limit.",
                                frames=n, limit=self.max_frames)
