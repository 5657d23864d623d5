"""GFPGANv1Clean against the reference: tiny seeded golden, official layout, noise modes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import shared_path

from restora.errors import ModelError
from restora.models.arch import gfpgan
from restora.models.arch.gfpgan import GFPGANv1Clean


def _conf(name: str) -> Path:
    return shared_path("conformance", name)


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(_conf("gfpgan_v1.4.tiny.json").read_text())


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    with np.load(_conf("gfpgan_v1.4.tiny.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def tiny(golden: dict[str, Any]) -> GFPGANv1Clean:
    net = GFPGANv1Clean(**golden["constructor_kwargs"])
    state = torch.load(_conf("gfpgan_v1.4.tiny.pth"), weights_only=True)
    assert list(state) == list(net.state_dict()), "parameter order differs from the reference"
    net.load_state_dict(state, strict=True)
    return net.eval()


def _run(net: GFPGANv1Clean, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    with torch.no_grad():
        return net(x, return_rgb=False, **kwargs)[0]


def test_tiny_golden_reproduced(tiny: GFPGANv1Clean, golden: dict[str, Any],
                                arrays: dict[str, np.ndarray]) -> None:
    out = _run(tiny, torch.from_numpy(arrays["input"]), randomize_noise=False)
    assert out.shape == arrays["output"].shape
    err = np.abs(out.numpy() - arrays["output"]).max()
    assert err <= golden["recommended_atol"], f"max abs error {err}"


def test_batch_equals_single_samples(tiny: GFPGANv1Clean, arrays: dict[str, np.ndarray]) -> None:
    # The grouped modulated conv must keep each sample's style to itself.
    x = torch.from_numpy(arrays["input"])
    other = torch.flip(x, dims=[3]) * 0.7
    both = _run(tiny, torch.cat([x, other]), randomize_noise=False)
    torch.testing.assert_close(both[:1], _run(tiny, x, randomize_noise=False), atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1:], _run(tiny, other, randomize_noise=False),
                               atol=1e-5, rtol=0)
    assert (both[0] - both[1]).abs().max() > 1e-3


def test_seeded_noise(tiny: GFPGANv1Clean, arrays: dict[str, np.ndarray]) -> None:
    x = torch.from_numpy(arrays["input"])

    def seeded(seed: int) -> torch.Tensor:
        return _run(tiny, x, randomize_noise=True, generator=torch.Generator().manual_seed(seed))

    first, again, other = seeded(1), seeded(1), seeded(2)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3
    stored = torch.from_numpy(arrays["output"])
    assert (first - stored).abs().max() > 1e-3  # fresh noise, not the stored buffers


def test_rgb_list_and_extra_kwargs(tiny: GFPGANv1Clean, golden: dict[str, Any],
                                   arrays: dict[str, np.ndarray]) -> None:
    x = torch.from_numpy(arrays["input"])
    with torch.no_grad():
        image, rgbs = tiny(x, return_rgb=True, randomize_noise=False, weight=0.5)
    # The intermediate RGB heads do not feed the image.
    assert np.abs(image.numpy() - arrays["output"]).max() <= golden["recommended_atol"]
    assert [tuple(r.shape) for r in rgbs] == [(1, 3, s, s) for s in (8, 16, 32, 64, 128)]


def test_half_precision_runs(golden: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    # Runtime may pick a 16-bit dtype: the modulated-conv weight math must survive it.
    net = GFPGANv1Clean(**golden["constructor_kwargs"])
    net.load_state_dict(torch.load(_conf("gfpgan_v1.4.tiny.pth"), weights_only=True))
    net = net.eval().to(torch.bfloat16)
    x = torch.from_numpy(arrays["input"]).to(torch.bfloat16)
    out = _run(net, x, randomize_noise=False)
    assert out.dtype == torch.bfloat16
    assert np.abs(out.float().numpy() - arrays["output"]).max() < 0.1
    assert _run(net, x, generator=torch.Generator().manual_seed(0)).dtype == torch.bfloat16


def test_input_size() -> None:
    assert gfpgan.input_size({"out_size": 512}) == 512
    assert gfpgan.input_size({"out_size": 128}) == 128


def test_other_variants_run() -> None:
    # The non-official switches (full SFT, one shared w, style MLP) take other code paths.
    torch.manual_seed(0)
    net = GFPGANv1Clean(out_size=32, num_style_feat=16, channel_multiplier=1, narrow=0.0625,
                        sft_half=False, different_w=False, input_is_latent=False).eval()
    out = _run(net, torch.rand(2, 3, 32, 32) * 2 - 1, randomize_noise=False)
    assert out.shape == (2, 3, 32, 32)
    assert torch.isfinite(out).all()
    assert net.final_linear.out_features == 16


def test_decoder_load_path_rejected() -> None:
    with pytest.raises(ModelError):
        GFPGANv1Clean(out_size=32, narrow=0.0625, decoder_load_path="stylegan2.pth")


def _manifest() -> dict[str, Any]:
    return json.loads(_conf("gfpgan_v1.4.keys.json").read_text())


def test_official_layout_matches_manifest() -> None:
    manifest = _manifest()
    with torch.device("meta"):
        net = GFPGANv1Clean(**manifest["constructor_kwargs"])
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in net.state_dict().items()]
    theirs = [(e["key"], e["shape"], e["dtype"]) for e in manifest["keys"]]
    assert ours == theirs  # same names, shapes, dtypes, and the reference order
    assert len(ours) == manifest["num_tensors"] == 285
    assert sum(v.numel() for v in net.state_dict().values()) == manifest["num_float_elements"]


def test_official_size_state_dict_loads_strictly() -> None:
    manifest = _manifest()
    with torch.device("meta"):
        net = GFPGANv1Clean(**manifest["constructor_kwargs"])
        # Meta tensors: full-size shapes without 350 MB of memory.
        state = {e["key"]: torch.empty(e["shape"], dtype=getattr(torch, e["dtype"]))
                 for e in manifest["keys"]}
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # The full configuration wires through end to end (shapes only, on meta).
    with torch.no_grad():
        image, rgbs = net(torch.empty(1, 3, 512, 512, device="meta"), return_rgb=False,
                          randomize_noise=False)
    assert image.shape == (1, 3, 512, 512) and rgbs == []

    bad = dict(state)
    bad["final_linear.weight"] = torch.empty(4096, 8192, device="meta")
    with pytest.raises(RuntimeError, match="size mismatch"):
        net.load_state_dict(bad, strict=True)
    del bad["final_linear.weight"]
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict(bad, strict=True)
