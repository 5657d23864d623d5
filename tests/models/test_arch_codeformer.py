"""CodeFormer against the reference: tiny seeded golden at w = 0, 0.5, 1 and the official layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import shared_path

from restora.models.arch import codeformer
from restora.models.arch.codeformer import CodeFormer

# Logits and lq_feat tolerance stated by the conformance README (observed 4.3e-05 / 7.4e-06).
FEATURE_ATOL = 5e-4


def _conf(name: str) -> Path:
    return shared_path("conformance", name)


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(_conf("codeformer.tiny.json").read_text())


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    with np.load(_conf("codeformer.tiny.npz"), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def tiny(golden: dict[str, Any]) -> CodeFormer:
    net = CodeFormer(**golden["constructor_kwargs"], nf=golden["vq_autoencoder"]["nf"],
                     norm_groups=golden["groupnorm"]["num_groups"])
    state = torch.load(_conf("codeformer.tiny.pth"), weights_only=True)
    assert list(state) == list(net.state_dict()), "parameter order differs from the reference"
    net.load_state_dict(state, strict=True)
    return net.eval()


def test_channel_table_matches_golden(tiny: CodeFormer, golden: dict[str, Any]) -> None:
    assert tiny.channels == golden["channels_table"]


@pytest.mark.parametrize(("w", "key"), [(0.0, "output_w0"), (0.5, "output_w0p5"),
                                        (1.0, "output_w1")])
def test_tiny_golden_reproduced(tiny: CodeFormer, golden: dict[str, Any],
                                arrays: dict[str, np.ndarray], w: float, key: str) -> None:
    with torch.no_grad():
        out, logits, lq_feat = tiny(torch.from_numpy(arrays["input"]), w=w, adain=True)
    # Code choice first: a wrong token changes the image far beyond the tolerance.
    assert np.abs(logits.numpy() - arrays["logits"]).max() <= FEATURE_ATOL
    assert np.abs(lq_feat.numpy() - arrays["lq_feat"]).max() <= FEATURE_ATOL
    top_idx = torch.topk(torch.softmax(logits, dim=2), 1, dim=2).indices[..., 0]
    assert np.array_equal(top_idx.numpy(), arrays["top_idx"])
    err = np.abs(out.numpy() - arrays[key]).max()
    assert err <= golden["recommended_atol"], f"w={w}: max abs error {err}"


def test_code_only(tiny: CodeFormer, arrays: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        result = tiny(torch.from_numpy(arrays["input"]), code_only=True)
    assert len(result) == 2
    logits, lq_feat = result
    assert np.abs(logits.numpy() - arrays["logits"]).max() <= FEATURE_ATOL
    assert lq_feat.shape == (1, 256, 16, 16)


def test_input_size() -> None:
    assert codeformer.input_size({}) == 512
    assert codeformer.input_size({"dim_embd": 512}) == 512


def _manifest() -> dict[str, Any]:
    return json.loads(_conf("codeformer.keys.json").read_text())


def _official_on_meta() -> CodeFormer:
    with torch.device("meta"):
        return CodeFormer(**_manifest()["constructor_kwargs"])


def test_defaults_are_the_official_configuration() -> None:
    hard = _manifest()["hard_coded_inside_constructor"]
    with torch.device("meta"):
        net = CodeFormer()
    assert net.nf == hard["nf"] and list(net.ch_mult) == hard["ch_mult"]
    assert net.encoder.blocks[1].norm1.num_groups == hard["groupnorm_groups"]
    assert net.encoder.blocks[1].norm1.eps == hard["groupnorm_eps"]
    assert [k for k in net.state_dict()] == [e["key"] for e in _manifest()["keys"]]


def test_official_layout_matches_manifest() -> None:
    manifest = _manifest()
    net = _official_on_meta()
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in net.state_dict().items()]
    theirs = [(e["key"], e["shape"], e["dtype"]) for e in manifest["keys"]]
    assert ours == theirs  # same names, shapes, dtypes, and the reference order
    assert len(ours) == manifest["num_tensors"] == 515
    assert sum(v.numel() for v in net.state_dict().values()) == manifest["num_float_elements"]


def test_official_size_state_dict_loads_strictly() -> None:
    manifest = _manifest()
    net = _official_on_meta()
    # Meta tensors: full-size shapes without 376 MB of memory.
    state = {e["key"]: torch.empty(e["shape"], dtype=getattr(torch, e["dtype"]), device="meta")
             for e in manifest["keys"]}
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # The full configuration, fusion included, wires through end to end (shapes only).
    with torch.no_grad():
        out, logits, lq_feat = net(torch.empty(2, 3, 512, 512, device="meta"), w=0.5, adain=True)
    assert out.shape == (2, 3, 512, 512)
    assert logits.shape == (2, 256, 1024)
    assert lq_feat.shape == (2, 256, 16, 16)

    bad = dict(state)
    bad["ft_layers.0.self_attn.in_proj_weight"] = torch.empty(512, 1536, device="meta")
    with pytest.raises(RuntimeError, match="size mismatch"):
        net.load_state_dict(bad, strict=True)
    bad["unexpected.weight"] = torch.empty(1, device="meta")
    del bad["ft_layers.0.self_attn.in_proj_weight"]
    with pytest.raises(RuntimeError, match="Unexpected key"):
        net.load_state_dict(bad, strict=True)
