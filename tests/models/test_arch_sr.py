"""Real-ESRGAN conformance: RRDBNet (x2plus, x4plus) and SRVGGNetCompact (general-x4v3) tiny
goldens and the full-size checkpoint layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shared_path
from torch import nn

from restora.models.arch.rrdbnet import RRDBNet
from restora.models.arch.srvgg import SRVGGNetCompact

DTYPES = {"float32": torch.float32, "int64": torch.int64}
ARCHS: dict[str, type[nn.Module]] = {"rrdbnet_s2": RRDBNet, "rrdbnet_s4": RRDBNet, "srvggnet": SRVGGNetCompact}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_tiny_golden(name: str) -> None:
    spec = json.loads(shared_path("conformance", f"{name}.tiny.json").read_text())
    net = ARCHS[name](**spec["constructor_kwargs"])
    state = torch.load(shared_path("conformance", f"{name}.tiny.pth"), weights_only=True)
    net.load_state_dict(state, strict=True)
    net.eval()
    z = np.load(shared_path("conformance", f"{name}.tiny.npz"), allow_pickle=False)
    with torch.no_grad():
        out = net(torch.from_numpy(z["input"]))
    assert list(out.shape) == spec["arrays"]["output"]
    assert np.abs(out.numpy() - z["output"]).max() <= spec["recommended_atol"]


@pytest.mark.parametrize("manifest, arch", [("realesrgan_x2plus.keys.json", RRDBNet),
                                            ("realesrgan_x4plus.keys.json", RRDBNet),
                                            ("srvggnet_general_x4v3.keys.json", SRVGGNetCompact)])
def test_full_size_layout_loads_strictly(manifest: str, arch: type[nn.Module]) -> None:
    spec = json.loads(shared_path("conformance", manifest).read_text())
    with torch.device("meta"):
        net = arch(**spec["constructor_kwargs"])
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()]
    assert ours == [(k["key"], k["shape"], k["dtype"]) for k in spec["keys"]]
    state = {k["key"]: torch.empty(k["shape"], dtype=DTYPES[k["dtype"]], device="meta") for k in spec["keys"]}
    net.load_state_dict(state, strict=True, assign=True)
    assert sum(v.numel() for v in state.values()) == spec["num_float_elements"]


def test_rrdbnet_scale_one_keeps_size() -> None:
    """Scale 1 unshuffles by 4 (48 input channels) and upsamples x4 back to the input size."""
    torch.manual_seed(0)
    net = RRDBNet(3, 3, scale=1, num_feat=8, num_block=1, num_grow_ch=4).eval()
    assert net.conv_first.in_channels == 48
    with torch.no_grad():
        out = net(torch.rand(1, 3, 16, 24))
    assert out.shape == (1, 3, 16, 24)


def test_rrdbnet_rejects_unsupported_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(3, 3, scale=3)
