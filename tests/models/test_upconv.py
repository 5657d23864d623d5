"""upsample_conv3x3: nearest x2 + 3x3 conv computed at low resolution equals the upsample path
(both paddings, odd sizes, batches, dtypes) and exports to ONNX Runtime and OpenVINO."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from restora.models.arch.parsenet import ConvLayer
from restora.models.arch.upconv import Padding, upsample_conv3x3

SIZES = [(5, 7), (1, 1), (6, 3), (8, 8)]


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              padding: Padding) -> torch.Tensor:
    """What the architectures computed before: upsample, pad the big image, 3x3 conv."""
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    return F.conv2d(F.pad(up, (1, 1, 1, 1), mode="constant" if padding == "zeros" else "reflect"),
                    weight, bias)


class UpConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, bias: bool, padding: Padding) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, bias=bias)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_conv3x3(x, self.conv.weight, self.conv.bias, self.padding)


def weights(c_in: int, c_out: int, bias: bool, dtype: torch.dtype, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=dtype)
    return w, torch.randn(c_out, generator=g, dtype=dtype) if bias else None


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_equals_upsample_then_conv_fp32(padding: Padding, bias: bool, size: tuple[int, int]) -> None:
    w, b = weights(5, 6, bias, torch.float32)
    x = torch.randn(2, 5, *size, generator=torch.Generator().manual_seed(1))
    got, want = upsample_conv3x3(x, w, b, padding), reference(x, w, b, padding)
    assert got.shape == want.shape == (2, 6, 2 * size[0], 2 * size[1])
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
@pytest.mark.parametrize("size", SIZES)
def test_fp64_differs_by_rounding_only(padding: Padding, size: tuple[int, int]) -> None:
    w, b = weights(4, 3, True, torch.float64)
    x = torch.randn(2, 4, *size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got, want = upsample_conv3x3(x, w, b, padding), reference(x, w, b, padding)
    assert (got - want).abs().max() <= 1e-12 * want.abs().max()


def _conv_runs_on_cpu(dtype: torch.dtype) -> bool:
    try:
        F.conv2d(torch.zeros(1, 1, 3, 3, dtype=dtype), torch.zeros(1, 1, 2, 2, dtype=dtype))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_reduced_precision_modules_under_inference_mode(dtype: torch.dtype, padding: Padding) -> None:
    """The GPU path converts whole modules with ``.to(dtype)``; CPU runs the same ops."""
    if not _conv_runs_on_cpu(dtype):
        pytest.skip(f"this torch has no CPU conv2d for {dtype}")
    torch.manual_seed(3)
    module = UpConv(8, 8, True, padding).eval()
    x = torch.rand(2, 8, 7, 5)
    with torch.inference_mode():
        want = reference(x, module.conv.weight, module.conv.bias, padding)
        got = module.to(dtype)(x.to(dtype))
    assert got.dtype == dtype and got.shape == want.shape
    # bf16 keeps 8 bits of mantissa, fp16 11: errors of a few units in the last place of the sum
    tol = {torch.bfloat16: 3e-2, torch.float16: 4e-3}[dtype]
    assert (got.float() - want).abs().max() <= tol * want.abs().max()


def test_upsampling_convlayer_needs_3x3() -> None:
    with pytest.raises(ValueError, match="kernel_size 3"):
        ConvLayer(4, 4, 5, "up")


def _export(module: nn.Module, path: Path) -> None:
    with torch.no_grad():
        torch.onnx.export(module, (torch.rand(2, 3, 6, 4),), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}}, opset_version=17,
                          dynamo=False)


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_onnx_export_runs_on_onnxruntime_and_openvino(tmp_path: Path, padding: Padding) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(4)
    module = UpConv(3, 4, True, padding).eval()
    path = tmp_path / "upconv.onnx"
    _export(module, path)
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert "Resize" not in ops and "Conv" in ops
    # the phase kernels are folded into one (4 * C_out, C_in, 2, 2) initializer
    assert [list(i.dims) for i in model.graph.initializer if len(i.dims) == 4] == [[16, 3, 2, 2]]
    # another batch and odd sizes than the traced ones: the graph's shapes are dynamic
    x = torch.rand(3, 3, 5, 7)
    with torch.inference_mode():
        want = reference(x, module.conv.weight, module.conv.bias, padding).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    if importlib.util.find_spec("openvino") is None:
        return
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "INFERENCE_NUM_THREADS": 1})
    got = np.asarray(compiled.create_infer_request().infer([x.numpy()])[0])
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
