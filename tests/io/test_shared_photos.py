"""Every real photo in ../shared/testdata decodes to a sane image."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from restora.io import decode

NAMES = [f"photos/{n}" for n in ("00.jpg", "01.jpg", "02.png", "03.jpg", "04.jpg", "05.jpg", "06.png")]
NAMES += [f"faces/{n}" for n in ("0143.png", "0240.png", "0342.png", "0368.png",
                                  "Solvay_conference_1927_0018.png")]
NAMES += [f"gray/{n}" for n in ("169_John_Lennon_00.png", "Einstein01.png", "Hepburn01.png")]


@pytest.mark.parametrize("name", NAMES)
def test_shared_image_decodes(name: str) -> None:
    path = shared_path("testdata", *name.split("/"))
    img = decode(path)
    assert img.pixels.ndim == 3 and img.pixels.shape[2] == 3 and img.pixels.dtype == np.uint8
    assert img.format == ("jpeg" if name.endswith(".jpg") else "png")
    assert img.pixels.std() > 10  # a real picture, not a blank
    if name in ("photos/02.png", "photos/06.png"):
        assert img.alpha is not None and img.alpha.shape == img.pixels.shape[:2]
    else:
        assert img.alpha is None
    assert decode(path.read_bytes()).pixels.shape == img.pixels.shape
