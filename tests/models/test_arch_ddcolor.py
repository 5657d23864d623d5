"""DDColor against the reference: checkpoint layout, reduced-width golden, official architectures.

Data: ``../shared/conformance/ddcolor`` (README there). Tolerances are the ones it states.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from restora.errors import ModelError
from restora.models.arch.ddcolor import DDColor, input_size


def ddcolor_dir() -> Path:
    return shared_path("conformance", "ddcolor")


def goldens() -> dict:
    return json.loads((ddcolor_dir() / "goldens.json").read_text())


def reduced_hparams() -> dict:
    """Constructor kwargs of the reduced-width golden model (README section 3)."""
    hp = goldens()["tiny"]["hyperparameters"]
    dec = hp["color_decoder"]
    assert dec["in_channels"] == [hp["nf"], hp["nf"], hp["nf"] // 2]  # what DDColor derives
    assert dec["color_embed_dim"] == hp["nf"] // 2 and dec["nheads"] == 8 and not dec["pre_norm"]
    assert dec["position_embedding_feats_per_axis"] == dec["hidden_dim"] // 2
    return {"encoder_name": "convnext-t", "nf": hp["nf"], "num_queries": hp["num_queries"],
            "num_scales": hp["num_scales"], "dec_layers": hp["dec_layers"],
            "num_output_channels": hp["num_output_channels"], "last_norm": hp["last_norm"],
            "do_normalize": hp["do_normalize"], "encoder_depths": hp["encoder"]["depths"],
            "encoder_dims": hp["encoder"]["dims"], "hidden_dim": dec["hidden_dim"],
            "dim_feedforward": dec["dim_feedforward"]}


def official_kwargs(config: str) -> dict:
    keys = json.loads((ddcolor_dir() / "keys.json").read_text())
    return dict(keys["configs"][config]["constructor_args"])


def compare(got: dict[str, torch.Tensor], golden, tolerances: dict[str, float],
            default_tol: float) -> dict[str, float]:
    errors = {}
    for name in golden.files:
        if name.startswith("input"):
            continue
        want = golden[name]
        have = got[name].detach().numpy()
        assert have.shape == want.shape, name
        errors[name] = float(np.abs(have - want).max())
    bad = {k: v for k, v in errors.items() if v > tolerances.get(k, default_tol)}
    assert not bad, f"beyond tolerance: {bad} (all: {errors})"
    return errors


def run_golden(model: DDColor, golden) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        got = model.trace(torch.from_numpy(golden["input"]))
        got["output_rect"] = model(torch.from_numpy(golden["input_rect"]))
    got["dec_out3_channel_mean"] = got["dec_out3"].mean((2, 3))
    got["color_decoder_out_channel_mean"] = got["color_decoder_out"].mean((2, 3))
    return got


# --- layout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["tiny", "large"])
def test_official_layout_loads_strictly(config: str) -> None:
    keys = json.loads((ddcolor_dir() / "keys.json").read_text())["configs"][config]
    with torch.device("meta"):  # shapes only: no 220 MB / 912 MB allocation
        model = DDColor(**keys["constructor_args"])
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    state = model.state_dict()
    expected = {e["key"] for e in keys["state_dict"]}
    assert not set(state) ^ expected, sorted(set(state) ^ expected)[:10]
    assert len(state) == keys["num_keys"]
    for entry in keys["state_dict"]:
        tensor = state[entry["key"]]
        assert list(tensor.shape) == entry["shape"], entry["key"]
        assert str(tensor.dtype).removeprefix("torch.") == entry["dtype"], entry["key"]
        assert entry["key"] in (params if entry["kind"] == "parameter" else buffers), entry["key"]
    assert sum(t.numel() for t in state.values()) == keys["total_elements"]

    official = {e["key"]: torch.empty(e["shape"], dtype=getattr(torch, e["dtype"]), device="meta")
                for e in keys["state_dict"]}
    model.load_state_dict(official, strict=True, assign=True)
    for mutate in ("missing", "unexpected"):
        broken = dict(official)
        if mutate == "missing":
            broken.pop("decoder.last_shuf.conv.0.weight_u")
        else:
            broken["decoder.last_shuf.conv.0.weight"] = broken["decoder.last_shuf.conv.0.weight_orig"]
        with pytest.raises(RuntimeError):
            model.load_state_dict(broken, strict=True, assign=True)


def test_input_size_and_argument_checks() -> None:
    assert input_size({}) == 512
    assert input_size(official_kwargs("large")) == 512
    assert input_size({"input_size": 256}) == 256
    with pytest.raises(ModelError):
        input_size({"input_size": [256, 512]})
    with pytest.raises(ModelError):
        DDColor(encoder_name="convnext-b")
    with pytest.raises(ModelError):
        DDColor(last_norm="Weight")


# --- golden A: reduced widths -------------------------------------------------------------------

def tiny_model() -> DDColor:
    model = DDColor(**reduced_hparams())
    model.load_state_dict(torch.load(ddcolor_dir() / "tiny.pth", weights_only=True), strict=True)
    return model.eval()


def test_reduced_golden_outputs_and_intermediates() -> None:
    tol = goldens()["tiny"]["tolerance_max_abs"]
    golden = np.load(ddcolor_dir() / "tiny.npz", allow_pickle=False)
    errors = compare(run_golden(tiny_model(), golden), golden, tol, tol["every_other_array"])
    assert errors["output"] < 1e-3 and errors["enc_norm0"] < 1e-4


def test_reduced_model_rejects_sizes_not_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_model()(torch.zeros(1, 3, 64, 80))


# --- golden B: official architectures, hash-defined weights -------------------------------------

def _hash_tensor(index: int, count: int, center: float, scale: float) -> np.ndarray:
    """The recipe's weight rule: murmur3 fmix32 of a per-element counter, mapped to center +- scale.

    uint32 arrays wrap on overflow, which is exactly the rule's "mod 2**32".
    """
    x = np.arange(count, dtype=np.uint32)
    x *= np.uint32(0x9E3779B1)
    x += np.uint32((index + 1) * 0x85EBCA77 % 2**32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    u = (x + 0.5) / 2**32  # float64
    return (center + scale * (2 * u - 1)).astype(np.float32)


def rebuild_official(config: str) -> dict[str, torch.Tensor]:
    recipe = json.loads((ddcolor_dir() / f"official_{config}_recipe.json").read_text())
    uv = torch.load(ddcolor_dir() / f"official_{config}_sn_uv.pth", weights_only=True)
    state, mismatched = {}, []
    for e in recipe["entries"]:
        shape = e["shape"]
        if e["rule"] == "hash":
            t = torch.from_numpy(_hash_tensor(e["index"], int(np.prod(shape, dtype=np.int64)),
                                              e["center"], e["scale"]).reshape(shape))
        elif e["rule"] == "zeros":
            t = torch.zeros(shape, dtype=torch.int64)
        elif e["rule"] == "constant":
            t = torch.tensor(e["values"], dtype=torch.float32).reshape(shape)
        else:
            assert e["rule"] == "sn_file", e
            t = uv[e["key"]]
        if hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest() != e["sha256_le_bytes"]:
            mismatched.append(e["key"])
        state[e["key"]] = t
    assert not mismatched, f"weights not rebuilt bit for bit: {mismatched[:5]}"
    return state


def _check_official(config: str) -> None:
    state = rebuild_official(config)
    with torch.device("meta"):
        model = DDColor(**official_kwargs(config))
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    golden = np.load(ddcolor_dir() / f"official_{config}_golden.npz", allow_pickle=False)
    tol = goldens()["official"][config]["tolerance_max_abs"]
    compare(run_golden(model, golden), golden, tol, tol["every_other_array"])


def test_official_tiny_architecture_golden() -> None:
    _check_official("tiny")


@pytest.mark.slow
def test_official_large_architecture_golden() -> None:
    # ~5 s CPU and ~1.4 GB peak: 228 M hashed weights plus a ConvNeXt-L forward at 64 px.
    _check_official("large")
