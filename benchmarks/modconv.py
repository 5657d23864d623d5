"""StyleGAN2 modulated convs with a constant weight: CPU-second ratio old / new on GFPGAN v1.4.

``ModulatedConv2d`` scales the input by the style, runs one ordinary conv with the checkpoint's
constant weight and scales the output by the demodulation factor. The old path (per-sample
modulated + demodulated weights, the batch as one grouped conv) lives only here: the benchmark
swaps it in while the old side runs (torch) or is exported (ONNX). Full-size GFPGAN v1.4 512
with seeded random weights, batch 1 and 4 (each batch exported at its own fixed shape, as the
old grouped conv needs), both sides on the same input in paired, interleaved rounds on torch
eager (fp32, ``inference_mode``), OpenVINO fp32 and ONNX Runtime fp32 (TorchScript ONNX export).
Ratio = old CPU-s / new CPU-s (higher: new is faster), median over rounds; max |d| and PSNR
(peak 2: outputs in [-1, 1]) are new against old on the same engine.

    PYTHONPATH=src python benchmarks/modconv.py [--batches 1 4] [--engines torch openvino]

Prints ratios, never bare seconds.
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from _shared import (cpu_seconds, openvino_runner, parse_timing_args, random_network, ratio_text,
                     timing_parser)
from restora.models.arch import stylegan2
from restora.models.engines import TorchEngine, export_onnx, package_version
from restora.models.nets import InputSpec, Network



def old_forward(self: stylegan2.ModulatedConv2d, x: torch.Tensor, style: torch.Tensor,
                gain: float = 1.0) -> torch.Tensor:
    """The old path: per-sample weight W * s (demodulated), one grouped conv for the batch,
    then StyleConv's gain as its own multiply."""
    b = x.shape[0]
    style = self.modulation(style).float().view(b, 1, self.in_channels, 1, 1)
    weight = self.weight.float() * style
    if self.demodulate:
        demod = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + self.eps)
        weight = weight * demod.view(b, self.out_channels, 1, 1, 1)
    weight = weight.to(x.dtype).view(b * self.out_channels, self.in_channels,
                                     self.kernel_size, self.kernel_size)
    if self.sample_mode == "upsample":
        x = stylegan2.resample(x, 2)
    elif self.sample_mode == "downsample":
        x = stylegan2.resample(x, 0.5)
    h, w = x.shape[2:]
    out = F.conv2d(x.reshape(1, b * self.in_channels, h, w), weight,
                   padding=self.padding, groups=b)
    out = out.view(b, self.out_channels, *out.shape[2:])
    return out * gain if gain != 1.0 else out


@contextlib.contextmanager
def old_path() -> Iterator[None]:
    cls = stylegan2.ModulatedConv2d
    saved = cls.forward
    cls.forward = old_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.forward = saved  # type: ignore[method-assign]


def batch_inputs(net: Network, batch: int) -> tuple[list[InputSpec], list[np.ndarray]]:
    """Batch-``batch`` specs (fixed shapes) and a seeded input: a random image, normal noise."""
    one = net.inputs(1)
    specs = [InputSpec(s.name, (batch, *s.shape[1:])) for s in one]
    rng = np.random.default_rng(20240611)
    x = [np.clip(rng.standard_normal(specs[0].shape) * 0.5, -1, 1).astype(np.float32)]
    x += [rng.standard_normal(s.shape).astype(np.float32) for s in specs[1:]]
    return specs, x


def ort_runner(path: Path, x: list[np.ndarray], threads: int
               ) -> Callable[[], list[np.ndarray]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: a for i, a in zip(sess.get_inputs(), x)}
    return lambda: sess.run(None, feed)


def compare(a: list[Any], b: list[Any]) -> str:
    u = np.asarray(a[0], np.float64)
    v = np.asarray(b[0], np.float64)
    d = float(np.abs(u - v).max())
    mse = float(np.mean((u - v) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(4.0 / mse)
    return f"max|d| {d:.2e}  PSNR {psnr:.1f} dB"


def run(batches: list[int], engines: list[str], rounds: int, threads: int) -> None:
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, openvino {package_version('openvino')}, onnxruntime "
          f"{package_version('onnxruntime')}, {threads} threads, median of {rounds} paired "
          "rounds; ratio = old CPU-s / new CPU-s (higher is faster)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        net = random_network("gfpgan-v1.4", folder)
        for batch in batches:
            specs, x = batch_inputs(net, batch)
            graph = net.graph()
            engine = TorchEngine(graph, "cpu")

            def torch_new() -> list[Any]:
                return [o.float().numpy() for o in engine.run(x)]

            def torch_old() -> list[Any]:
                with old_path():
                    return torch_new()

            pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}
            if "torch" in engines:
                pairs["torch"] = (torch_old, torch_new)
            onnx_engines = [e for e in engines if e != "torch" and package_version(e)]
            if onnx_engines:
                with old_path():
                    export_onnx(net, specs, x, folder / "old.onnx")
                export_onnx(net, specs, x, folder / "new.onnx")
            if "openvino" in onnx_engines:
                with old_path():
                    ov_old = openvino_runner(net, specs, x, folder / "old.onnx", threads)
                pairs["openvino"] = (ov_old, openvino_runner(net, specs, x, folder / "new.onnx",
                                                             threads))
            if "onnxruntime" in onnx_engines:
                pairs["onnxruntime"] = (ort_runner(folder / "old.onnx", x, threads),
                                        ort_runner(folder / "new.onnx", x, threads))
            for engine_name, (old, new) in pairs.items():
                old_out, new_out = old(), new()  # also the warm-up
                ratios = []
                for r in range(rounds):  # alternate which side runs first
                    if r % 2:
                        tn, to = cpu_seconds(new), cpu_seconds(old)
                    else:
                        to, tn = cpu_seconds(old), cpu_seconds(new)
                    ratios.append(to / max(tn, 1e-9))
                print(f"gfpgan-512-b{batch}  {engine_name:11s} {ratio_text(ratios)}  "
                      f"{compare(old_out, new_out)}")
                sys.stdout.flush()


def main() -> None:
    parser = timing_parser(__doc__)
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 4])
    parser.add_argument("--engines", nargs="*", default=["torch", "openvino", "onnxruntime"],
                        choices=["torch", "openvino", "onnxruntime"])
    args = parse_timing_args(parser)
    run(args.batches, args.engines, args.rounds, args.threads)


if __name__ == "__main__":
    main()
