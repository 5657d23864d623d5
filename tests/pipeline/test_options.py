"""One options model per pipeline: defaults and ranges come from restora.pipeline.options."""

from __future__ import annotations

import pytest

from restora.errors import InvalidParameter
from restora.pipeline.enhance import enhance_faces
from restora.pipeline.options import EnhanceOptions, PhotoOptions, parse, with_overrides
from restora.pipeline.photo import restore_photo
from restora.service import params as P


def test_api_settings_take_defaults_from_the_options() -> None:
    assert P.as_options(EnhanceOptions, P.EnhanceSettings()) == EnhanceOptions()
    assert P.as_options(PhotoOptions, P.RestoreSettings()) == PhotoOptions()
    assert PhotoOptions().denoise_strength == 25 and EnhanceOptions().strength == 0.8
    # seed-specific defaults are the API layer's own
    assert P.CodeFormerSettings().options() == EnhanceOptions(model="codeformer", upscale=2)


def test_camel_and_snake_names_and_error_field() -> None:
    a = parse(PhotoOptions, {"denoiseStrength": 60, "scratch_removal": False})
    assert a.denoise_strength == 60 and a.scratch_removal is False
    for data in ({"denoise_strength": 101}, {"denoiseStrength": -1}):
        with pytest.raises(InvalidParameter) as info:
            parse(PhotoOptions, data)
        assert info.value.field == "denoiseStrength"
    with pytest.raises(InvalidParameter) as info:
        parse(EnhanceOptions, {"strenght": 0.5})
    assert info.value.field == "strenght" and "Unknown setting" in info.value.message
    assert parse(EnhanceOptions, {"detector": "auto"}).detector is None


def test_seed_names_in_errors() -> None:
    with pytest.raises(InvalidParameter) as info:
        P.validate(P.CodeFormerSettings, {"upscale": 3}).options()
    assert info.value.field == "upscale"
    with pytest.raises(InvalidParameter) as info:
        P.validate(P.FaceRecoverySettings, {"strength": 1.5}).options(None)
    assert info.value.field == "strength"
    with pytest.raises(InvalidParameter):  # the SnapOtter contract is camelCase only
        P.validate(P.EnhanceSettings, {"only_center_face": True})


def test_overrides_are_validated_as_a_whole() -> None:
    base = EnhanceOptions(strength=0.3)
    assert with_overrides(EnhanceOptions, base, {"upscale": 2}) == EnhanceOptions(strength=0.3,
                                                                                  upscale=2)
    bad = EnhanceOptions.model_construct(strength=5.0)  # never validated
    with pytest.raises(InvalidParameter) as info:
        with_overrides(EnhanceOptions, bad, {})
    assert info.value.field == "strength"


@pytest.mark.parametrize(("fn", "kwargs", "field"), [
    (enhance_faces, {"strength": 2}, "strength"),
    (enhance_faces, {"strenght": 0.5}, "strenght"),
    (enhance_faces, {"upscale": 3}, "upscale"),
    (restore_photo, {"denoise_strength": 250}, "denoiseStrength"),
    (restore_photo, {"colourize": True}, "colourize"),
])
def test_pipelines_reject_bad_options_before_any_work(fn, kwargs, field) -> None:
    with pytest.raises(InvalidParameter) as info:
        fn(b"not an image", **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("model,field,value", [
    (EnhanceOptions, "seed", True), (EnhanceOptions, "upscale", True),
    (EnhanceOptions, "strength", False), (EnhanceOptions, "model", True),
    (PhotoOptions, "denoiseStrength", True), (PhotoOptions, "fidelity", False)])
def test_true_or_false_is_never_taken_for_a_number(model, field, value) -> None:
    """Lax validation took `seed: true` as seed 1 and `upscale: true` as 1 (a client's slip
    ran with settings it never chose); true/false still work for the switches."""
    with pytest.raises(InvalidParameter) as err:
        parse(model, {field: value})
    assert err.value.field == field and str(value).lower() in err.value.message
    assert parse(EnhanceOptions, {"bgUpscale": True, "seed": 3, "upscale": 2}).upscale == 2
    assert parse(PhotoOptions, {"colorize": "true", "denoise": False}).colorize is True
