"""Awkward but valid inputs through both pipelines, with the real tiny networks.

Degenerate sizes (1 x 1, thin strips), flat and noise images, 16-bit and alpha, faces cut by the
border, user masks and client boxes at their limits: each must either work (an image without
faces comes back unchanged, with a reason) or raise a typed :class:`RestoraError`, never a
numpy/OpenCV/torch exception, and never give NaN or out-of-range pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from restora.config import Settings
from restora.io import Image
from restora.models.runtime import Runtime
from restora.pipeline.photo import restore_photo
from tiny_models import tiny_photo_repair_entries, write_tiny_manifest


@pytest.fixture(scope="module")
def repair_runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    """The tiny scratch U-Net and LaMa, no face model."""
    tmp = tmp_path_factory.mktemp("repair")
    manifest = write_tiny_manifest(tmp, include=set(), extra=tiny_photo_repair_entries())
    return Runtime(Settings(models=manifest, home=tmp / "home"), device="cpu")


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- restore-photo: the learned repair networks on degenerate sizes ---------------------------

@pytest.mark.parametrize("shape", [(8, 2000), (2000, 8)])
def test_scratch_unet_runs_on_strips_thinner_than_its_depth(repair_runtime: Runtime,
                                                            shape: tuple[int, int]) -> None:
    """A strip over 128:1 was bounded to a 16 px network side; the U-Net halves it four times
    and its reflect padding then failed on one row (a torch RuntimeError)."""
    px = noise(*shape)
    result = restore_photo(Image(px), runtime=repair_runtime, face_enhancement=False,
                           denoise=False)
    report = result.reports["scratch-removal"]
    assert report["detector"] == "learned" and min(report["networkSize"]) >= 32
    assert result.image.pixels.shape == px.shape and result.mask.shape == shape


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (7, 7), (8, 3000)])
def test_lama_fills_images_smaller_than_its_downsampling(repair_runtime: Runtime,
                                                         shape: tuple[int, int]) -> None:
    """A whole-image user mask on an image under 16 px on a side: LaMa's three stride-2 steps
    left one row, which its reflect padding refused (a torch RuntimeError)."""
    px = noise(*shape, seed=1)
    result = restore_photo(Image(px), runtime=repair_runtime, face_enhancement=False,
                           denoise=False, mask=np.ones(shape, bool))
    fill = result.reports["scratch-removal"]["fill"]
    assert fill["wideFill"] == "lama" or fill["thinPixels"] > 0
    assert result.image.pixels.shape == px.shape and result.mask.all()
