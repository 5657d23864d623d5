"""Pure pieces: Topaz credits, resize, seeded grain, settings validation, seed transform."""

from __future__ import annotations

import math

import numpy as np
import pytest

from restora.errors import InvalidParameter
from restora.service import finishing
from restora.service import params as P


@pytest.mark.parametrize("w,h,credits", [
    (512, 512, 1), (1000, 1000, 1), (2000, 2000, 1), (4000, 4000, 1), (6000, 4000, 1),
    (6000, 4001, 2), (8000, 4000, 2), (8000, 5000, 2), (10000, 5000, 3), (8000, 8000, 3),
    (10000, 10000, 5), (12000, 10000, 6), (20000, 10000, 10),
])
def test_credit_table(w, h, credits):
    assert finishing.credits_for(w, h) == credits


def test_target_size_keeps_aspect_when_one_side_given():
    assert finishing.target_size(400, 300, 800, None) == (800, 600)
    assert finishing.target_size(400, 300, None, 150) == (200, 150)
    assert finishing.target_size(400, 300, 100, 100) == (100, 100)
    assert finishing.target_size(400, 300, None, None) == (400, 300)


def _gradient(h=96, w=128, dtype=np.uint8):
    top = np.iinfo(dtype).max
    ramp = np.linspace(0, top, w, dtype=np.float64)
    img = np.repeat(ramp[None, :, None], h, axis=0).repeat(3, axis=2)
    return img.astype(dtype)


@pytest.mark.parametrize("model", ["silver", "gaussian", "grey"])
def test_grain_is_seeded_and_bounded(model):
    img = _gradient()
    kw = dict(model=model, density=0.7, size=2.0, strength=0.5)
    a = finishing.add_grain(img, seed=1, **kw)
    b = finishing.add_grain(img, seed=1, **kw)
    c = finishing.add_grain(img, seed=2, **kw)
    assert a.dtype == img.dtype and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    diff = a.astype(np.int32) - img.astype(np.int32)
    assert 2.0 < diff.std() < 40.0


def test_grain_models_differ_in_colour_and_tone_response():
    img = _gradient()
    kw = dict(density=1.0, size=1.0, strength=0.6, seed=5)
    grey = finishing.add_grain(img, model="grey", **kw).astype(np.int32) - img
    colour = finishing.add_grain(img, model="gaussian", **kw).astype(np.int32) - img
    silver = finishing.add_grain(img, model="silver", **kw).astype(np.int32) - img
    mid = slice(40, 88)  # columns around mid-grey, away from clipping
    # grey and silver are monochrome: the same offset in R, G and B
    assert np.array_equal(grey[:, mid, 0], grey[:, mid, 1])
    assert np.array_equal(silver[:, mid, 0], silver[:, mid, 2])
    assert not np.array_equal(colour[:, mid, 0], colour[:, mid, 1])
    # silver grain is strongest in the mid-tones and fades towards black
    dark, middle = silver[:, 3:10, 0].std(), silver[:, 60:68, 0].std()
    assert middle > 2 * dark


def test_grain_size_makes_coarser_grain_and_16_bit_works():
    img = _gradient(dtype=np.uint16)
    fine = finishing.add_grain(img, model="grey", density=1.0, size=1.0, strength=0.5, seed=3)
    coarse = finishing.add_grain(img, model="grey", density=1.0, size=4.0, strength=0.5, seed=3)

    def neighbour_corr(x):
        n = (x.astype(np.float64) - img)[:, 40:88, 0]
        return np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1]

    assert fine.dtype == np.uint16
    assert neighbour_corr(coarse) > neighbour_corr(fine) + 0.3


def test_resize_exact_size():
    img = _gradient(30, 40)
    assert finishing.resize(img, 80, 60).shape == (60, 80, 3)
    assert finishing.resize(img, 20, 15).shape == (15, 20, 3)


def test_refiner_seed_transform_is_exact():
    for seed in (1, 5, 7, 10, 123456789, 2147483647):
        assert P.refiner_seed(seed) == math.floor(seed * 12 / 10) + 17 == (seed * 6) // 5 + 17
    assert P.refiner_seed(2147483647) == 2576980393


def test_settings_validation_messages():
    s = P.validate(P.EnhanceSettings, {"strength": 1, "faces": [{"x": 1, "y": 2, "w": 3,
                                                                  "h": 4}]})
    assert s.strength == 1.0 and s.faces[0].score == 1.0
    with pytest.raises(InvalidParameter) as info:
        P.validate(P.EnhanceSettings, {"onlyCenterFace": "yes"})
    assert info.value.field == "onlyCenterFace"
    with pytest.raises(InvalidParameter) as info:
        P.validate(P.RestoreSettings, {"bogus": 1})
    assert info.value.field == "bogus" and "Unknown setting" in info.value.message


def test_parse_faces_forms():
    faces = P.parse_faces('[{"x": 1, "y": 2, "w": 3, "h": 4, "score": 0.5}]')
    assert faces == [{"x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0, "score": 0.5}]
    faces = P.parse_faces('{"faces": [{"box": [5, 6, 7, 8]}]}')
    assert faces[0]["x"] == 5 and faces[0]["score"] == 1.0
    for bad in ('{"faces": 3}', '[{"box": [1, 2]}]', '[{"x": 1}]', "nope"):
        with pytest.raises(InvalidParameter):
            P.parse_faces(bad)
