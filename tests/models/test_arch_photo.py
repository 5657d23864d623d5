"""Conformance of the two photo-repair networks against ``../shared/conformance/photo``.

LaMa big-lama (``FFCResNetGenerator``) and the BOPBTL scratch U-Net: the official layouts key for
key (strict, shapes and dtypes, reference order) and the tiny seeded goldens through the
reference pre- and post-processing. Tolerances are the folder's ``recommended_atol`` values;
measured (this machine, 2 threads) every float output is bitwise equal to the golden.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import shared_path
from restora.models.arch.lama import LaMa
from restora.models.arch.scratch_unet import ScratchUNet
from restora.pipeline.photo import learned


def _conf(name: str) -> dict:
    return json.loads(shared_path("conformance", "photo", name).read_text())


def _tiny(cls: type, name: str) -> tuple[torch.nn.Module, dict, np.lib.npyio.NpzFile]:
    meta = _conf(f"{name}.tiny.json")
    model = cls(**meta["constructor_kwargs"])
    sd = torch.load(shared_path("conformance", "photo", f"{name}.tiny.pth"), weights_only=True)
    model.load_state_dict(sd, strict=True)
    model.eval()
    z = np.load(shared_path("conformance", "photo", f"{name}.tiny.npz"), allow_pickle=False)
    return model, meta, z


@pytest.mark.parametrize(("name", "cls"), [("lama", LaMa), ("scratchunet", ScratchUNet)])
def test_official_layout_key_for_key(name: str, cls: type) -> None:
    spec = _conf(f"{name}.keys.json")
    model = cls(**spec["constructor_kwargs"])
    mine = [(k, list(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in model.state_dict().items()]
    assert mine == [(e["key"], e["shape"], e["dtype"]) for e in spec["keys"]]
    floats = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    assert floats == spec["num_float_elements"]  # 51,057,027 (LaMa), 37,648,257 (U-Net)


def test_lama_tiny_golden_network_and_predict_pipeline() -> None:
    model, meta, z = _tiny(LaMa, "lama")
    atol = meta["recommended_atol"]
    for case in meta["cases"]:
        n = case["name"]
        image, holes = learned.lama_preprocess(z[f"{n}_image_rgb_uint8"], z[f"{n}_mask_uint8"])
        x = torch.cat([image * (1 - holes), holes], 1)
        assert torch.equal(x, torch.from_numpy(z[f"{n}_input"]))  # padding + binarisation
        with torch.no_grad():
            pred = model(x)
        assert float((pred - torch.from_numpy(z[f"{n}_predicted_image"])).abs().max()) <= atol
        inpainted = model.inpaint(image, holes)
        assert float((inpainted - torch.from_numpy(z[f"{n}_inpainted"])).abs().max()) <= atol
        out = learned.lama_inpaint(model, z[f"{n}_image_rgb_uint8"], z[f"{n}_mask_uint8"])
        gold = z[f"{n}_inpainted_rgb_uint8"]
        assert out.shape == gold.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - gold).max() <= 1  # measured: identical
        known = z[f"{n}_mask_uint8"] == 0
        assert np.array_equal(out[known], z[f"{n}_image_rgb_uint8"][known])


def test_lama_odd_width_bottleneck_needs_the_fft_size() -> None:
    """rect197x262 has a 25 x 33 bottleneck (rfft width 17 -> 33): the ``s=`` detail."""
    model, meta, z = _tiny(LaMa, "lama")
    case = next(c for c in meta["cases"] if c["name"] == "rect197x262")
    assert case["bottleneck_hw"] == [25, 33]
    with torch.no_grad():
        pred = model(torch.from_numpy(z["rect197x262_input"]))
    assert pred.shape[-2:] == (200, 264)


def test_scratch_unet_tiny_golden_detection_pipeline() -> None:
    model, meta, z = _tiny(ScratchUNet, "scratchunet")
    for case in meta["cases"]:
        n = case["case"]
        mode = "full_size" if n.endswith("full_size") else "scale_256"
        crop = n.removesuffix("_full_size").removesuffix("_scale_256")
        x, size = learned.scratch_preprocess(z[f"{crop}_source_rgb_uint8"], mode)
        assert list(size) == case["transformed_hw"]
        assert list(x.shape[-2:]) == case["network_input_hw"]
        assert float((x - torch.from_numpy(z[f"{n}_input"])).abs().max()) <= \
            meta["recommended_atol_input"]
        with torch.no_grad():
            logits = model(x)
        assert float((logits - torch.from_numpy(z[f"{n}_logits"])).abs().max()) <= \
            meta["recommended_atol"]
        prob = torch.sigmoid(logits)
        assert float((prob - torch.from_numpy(z[f"{n}_prob"])).abs().max()) <= \
            meta["recommended_atol_prob"]
        mask = learned.scratch_reference_mask(logits, size)
        gold = z[f"{n}_mask_uint8"] > 0
        # exact except where the golden probability sits within atol of the 0.4 threshold
        gprob = torch.nn.functional.interpolate(torch.from_numpy(z[f"{n}_prob"]), list(size),
                                                mode="nearest")[0, 0].numpy()
        near = np.abs(gprob - learned.SCRATCH_THRESHOLD) <= meta["recommended_atol_prob"]
        assert np.array_equal(mask[~near], gold[~near])  # measured: all pixels equal


def test_scratch_unet_uses_the_loaded_blur_filter() -> None:
    """The tiny golden's ``filt`` buffers are random: a hard-coded [1 2 1] blur would fail."""
    model, _, z = _tiny(ScratchUNet, "scratchunet")
    filt = model.down_sample[0][4].filt
    base = torch.tensor([1.0, 2.0, 1.0])
    assert not torch.allclose(filt[0, 0], (base[:, None] * base[None, :]) / 16)
    n = "hepburn_200x264_scale_256"
    with torch.no_grad():
        a = model(torch.from_numpy(z[f"{n}_input"]))
        model.down_sample[0][4].filt.copy_((base[:, None] * base[None, :] / 16).expand_as(filt))
        b = model(torch.from_numpy(z[f"{n}_input"]))
    assert float((a - b).abs().max()) > 1e-3


def test_probability_maps_to_full_resolution_in_bands() -> None:
    prob = np.zeros((16, 32), np.float32)
    prob[4:8, 10:20] = 0.9
    import cv2

    expected = cv2.resize(prob, (320, 160), interpolation=cv2.INTER_LINEAR) >= 0.4
    whole = learned.probability_to_mask(prob, 160, 320)
    banded = learned.probability_to_mask(prob, 160, 320, band_pixels=320 * 7)  # 7-row bands
    assert expected.sum() > 0
    assert np.array_equal(whole, expected) and np.array_equal(banded, expected)
