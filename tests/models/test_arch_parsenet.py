"""ParseNet conformance: the tiny seeded golden and the full-size ``parsing_parsenet.pth`` layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shared_path

from restora.models.arch.parsenet import ParseNet

DTYPES = {"float32": torch.float32, "int64": torch.int64}


def test_tiny_golden() -> None:
    spec = json.loads(shared_path("conformance", "parsenet.tiny.json").read_text())
    net = ParseNet(**spec["constructor_kwargs"])
    net.load_state_dict(torch.load(shared_path("conformance", "parsenet.tiny.pth"), weights_only=True), strict=True)
    net.eval()
    z = np.load(shared_path("conformance", "parsenet.tiny.npz"), allow_pickle=False)
    with torch.no_grad():
        out_mask, out_img = net(torch.from_numpy(z["input"]))
    assert out_mask.shape == (1, 19, 64, 64) and out_img.shape == (1, 3, 64, 64)
    assert np.abs(out_mask.numpy() - z["out_mask"]).max() <= spec["recommended_atol"]
    assert np.abs(out_img.numpy() - z["out_img"]).max() <= spec["recommended_atol"]


def test_full_size_layout_loads_strictly() -> None:
    spec = json.loads(shared_path("conformance", "parsenet.keys.json").read_text())
    with torch.device("meta"):
        net = ParseNet(**spec["constructor_kwargs"])
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()]
    assert ours == [(k["key"], k["shape"], k["dtype"]) for k in spec["keys"]]
    state = {k["key"]: torch.empty(k["shape"], dtype=DTYPES[k["dtype"]], device="meta") for k in spec["keys"]}
    net.load_state_dict(state, strict=True, assign=True)
    assert sum(v.numel() for v in state.values() if v.is_floating_point()) == spec["num_float_elements"]
    # the official defaults are exactly the reference constructor's defaults
    defaults = spec["constructor_kwargs_with_defaults"]
    with torch.device("meta"):
        explicit = ParseNet(**defaults)
    assert list(explicit.state_dict()) == list(net.state_dict())


def test_unknown_norm_is_rejected() -> None:
    with pytest.raises(ValueError, match="norm_type"):
        ParseNet(in_size=64, out_size=64, norm_type="spade")
