"""StyleGAN2's modulated conv: input scaling + one constant-weight conv + output demodulation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from restora.models.arch.gfpgan import GFPGANv1Clean
from restora.models.arch.stylegan2 import ModulatedConv2d
from restora.models.engines import export_onnx, probe_inputs
from restora.models.nets import wrap


def per_sample_weights(conv: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor
                       ) -> torch.Tensor:
    """The reference's formula in float64: per sample, weight W * s (demodulated) and a conv."""
    w = conv.weight.detach().double()[0]  # (out, in, k, k)
    s = F.linear(style.double(), conv.modulation.weight.double(), conv.modulation.bias.double())
    x = x.double()
    if conv.sample_mode is not None:
        x = F.interpolate(x, scale_factor=2 if conv.sample_mode == "upsample" else 0.5,
                          mode="bilinear", align_corners=False)
    outs = []
    for i in range(x.shape[0]):
        wi = w * s[i].view(1, -1, 1, 1)
        if conv.demodulate:
            wi = wi * torch.rsqrt(wi.pow(2).sum(dim=(1, 2, 3)) + conv.eps).view(-1, 1, 1, 1)
        outs.append(F.conv2d(x[i:i + 1], wi, padding=conv.padding))
    return torch.cat(outs)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("sample_mode", [None, "upsample", "downsample"])
@pytest.mark.parametrize("demodulate", [True, False])
def test_equals_per_sample_weight_modulation(demodulate: bool, sample_mode: str | None,
                                              batch: int) -> None:
    torch.manual_seed(batch)
    kernel = 3 if demodulate else 1
    conv = ModulatedConv2d(12, 7, kernel, 16, demodulate=demodulate,
                           sample_mode=sample_mode).eval()
    with torch.no_grad():  # styles of different signs and sizes per channel and sample
        conv.modulation.bias.normal_(0, 2)
    x = torch.randn(batch, 12, 10, 10)
    style = torch.randn(batch, 16) * torch.tensor([1.0, 30.0, 0.01])[:batch, None]
    with torch.inference_mode():
        got = conv(x, style)
        scaled = conv(x, style, gain=2**0.5)  # StyleConv's gain, folded into the factor
    want = per_sample_weights(conv, x, style)
    assert got.dtype == torch.float32
    assert got.shape == want.shape
    assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()
    assert (scaled.double() - want * 2**0.5).abs().max() <= 1e-5 * want.abs().max() * 2**0.5


def test_half_precision_does_not_overflow_with_large_styles() -> None:
    # The reference's demodulated weights have unit norm whatever the style's size; scaling the
    # input by a raw style of ~1e3 would overflow fp16 (x * s > 65504), the normalised one not.
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 4, 3, 8).eval()
    with torch.no_grad():
        conv.modulation.bias.fill_(2000.0)
    x = torch.randn(1, 8, 6, 6) * 60
    style = torch.randn(1, 8)
    want = per_sample_weights(conv, x, style)
    with torch.inference_mode():
        got = conv.half()(x.half(), style.half())
    assert got.dtype == torch.float16
    assert torch.isfinite(got).all()
    assert (got.double() - want).abs().max() <= 1e-2 * want.abs().max()


def test_exported_gfpgan_convs_have_constant_weights(tmp_path: Path) -> None:
    # Every conv of the exported graph is an ordinary conv on a weight stored in the model, which
    # the engines pre-pack once; the old per-sample modulated weights were computed per run.
    onnx = pytest.importorskip("onnx")
    kwargs = json.loads(shared_path("conformance", "gfpgan_v1.4.tiny.json").read_text())
    kwargs = kwargs["constructor_kwargs"]
    torch.manual_seed(0)
    net = wrap(GFPGANv1Clean(**kwargs).eval(), "face-restoration", arch="gfpgan_v1_clean",
               hparams=kwargs)
    specs = net.inputs(1)
    path = tmp_path / "gfpgan.onnx"
    export_onnx(net, specs, probe_inputs(net, specs), path)
    model = onnx.load(str(path))
    stored = {i.name for i in model.graph.initializer}
    for n in model.graph.node:  # the exporter shares a folded weight through an Identity
        if n.op_type == "Constant" or (n.op_type == "Identity" and n.input[0] in stored):
            stored.update(n.output)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) > 2 * 5  # the decoder's style convs and to-RGB convs are among them
    assert all(n.input[1] in stored for n in convs)
    assert all(a.i == 1 for n in convs for a in n.attribute if a.name == "group")
    try:
        import openvino as ov
    except ImportError:
        return
    ops = ov.Core().read_model(str(path)).get_ordered_ops()
    convs_ov = [op for op in ops if op.get_type_name() in ("Convolution", "GroupConvolution")]
    assert {op.get_type_name() for op in convs_ov} == {"Convolution"}
    for op in convs_ov:
        source = op.input_value(1).get_node()
        while source.get_type_name() == "Convert":  # a compressed constant's decompression
            source = source.input_value(0).get_node()
        assert source.get_type_name() == "Constant", op.get_friendly_name()
