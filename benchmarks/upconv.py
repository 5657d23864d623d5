"""Nearest-x2-upsample + 3x3 conv at low resolution: CPU-second ratio old / new, per network.

The networks compute every upsample-then-conv with ``restora.models.arch.upconv`` (4 phases of
2x2 taps at the input's resolution). The old path (interpolate, pad, 3x3 conv at the upsampled
resolution) lives only here: the benchmark swaps it into the architectures' modules while the
old side runs (torch) or is exported (OpenVINO). Full-size networks with seeded random weights; both sides run the same
input in paired, interleaved rounds on torch eager (fp32, ``inference_mode``) and on OpenVINO
fp32 (TorchScript ONNX export, opset 17). Ratio = old CPU-s / new CPU-s (higher: new is faster),
median over rounds; max |d| is new against old on the same engine.

    PYTHONPATH=src python benchmarks/upconv.py [--nets parsenet-512 ...] [--rounds 5]

Prints ratios, never bare seconds.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from _shared import (cpu_seconds, openvino_runner, parse_timing_args, random_network, ratio_text,
                     timing_parser)
from restora.models.arch import parsenet, rrdbnet, vqgan
from restora.models.engines import TorchEngine, package_version, probe_inputs

#: benchmark name -> (registry id of the full-size network, free side or None)
NETS: dict[str, tuple[str, int | None]] = {
    "parsenet-512": ("parsenet", None),
    "codeformer-512": ("codeformer", None),
    "rrdbnet-x2-256": ("realesrgan-x2plus", 256 + 2 * 16),
}


def naive_upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           padding: str = "zeros") -> torch.Tensor:
    """The old path: upsample, pad the upsampled image by 1, 3x3 conv at high resolution."""
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    mode = {"zeros": "constant", "reflect": "reflect"}[padding]
    return F.conv2d(F.pad(up, (1, 1, 1, 1), mode=mode), weight, bias)


@contextlib.contextmanager
def old_path() -> Iterator[None]:
    modules = (parsenet, rrdbnet, vqgan)
    saved = [m.upsample_conv3x3 for m in modules]
    for m in modules:
        m.upsample_conv3x3 = naive_upsample_conv3x3  # type: ignore[assignment]
    try:
        yield
    finally:
        for m, f in zip(modules, saved):
            m.upsample_conv3x3 = f  # type: ignore[assignment]


def max_abs(a: list[Any], b: list[Any]) -> float:
    return max(float(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64)).max())
               for u, v in zip(a, b))


def run(names: list[str], rounds: int, threads: int) -> None:
    torch.set_num_threads(threads)
    have_ov = package_version("openvino") is not None
    print(f"torch {torch.__version__}, openvino {package_version('openvino')}, {threads} threads, "
          f"median of {rounds} paired rounds; ratio = old CPU-s / new CPU-s (higher is faster)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in names:
            model_id, side = NETS[name]
            net = random_network(model_id, folder)
            specs = net.inputs(1, side, side)
            x = probe_inputs(net, specs)
            engine = TorchEngine(net.graph(), "cpu")

            def torch_new() -> list[Any]:
                return [o.numpy() for o in engine.run(x)]

            def torch_old() -> list[Any]:
                with old_path():
                    return torch_new()

            pairs = {"torch": (torch_old, torch_new)}
            if have_ov:
                with old_path():
                    ov_old = openvino_runner(net, specs, x, folder / "old.onnx", threads)
                pairs["openvino"] = (ov_old,
                                     openvino_runner(net, specs, x, folder / "new.onnx", threads))
            for engine_name, (old, new) in pairs.items():
                old_out, new_out = old(), new()  # also the warm-up
                ratios = [cpu_seconds(old) / max(cpu_seconds(new), 1e-9) for _ in range(rounds)]
                print(f"{name:16s} {engine_name:9s} {ratio_text(ratios)}  "
                      f"max|d| {max_abs(old_out, new_out):.2e}")
                sys.stdout.flush()


def main() -> None:
    parser = timing_parser(__doc__)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    args = parse_timing_args(parser)
    run(args.nets, args.rounds, args.threads)


if __name__ == "__main__":
    main()
