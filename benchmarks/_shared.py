"""What several benchmarks share: seeded full-size networks, CPU timing, an OpenVINO runner, the
paired-timing options."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: OpenVINO float32 on the CPU, one stream, as the product compiles its graphs
OV_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


def random_network(model_id: str, folder: Path) -> Any:
    """The built-in model ``model_id`` at full size with seeded random weights (no gradients),
    as its descriptor."""
    import torch

    from restora.config import Settings
    from restora.models.nets import describe
    from restora.models.registry import Registry
    from restora.models.runtime import architecture_class

    spec = Registry.from_settings(Settings(home=folder)).get(model_id)
    torch.manual_seed(0)
    module = architecture_class(spec.arch)(**spec.hparams).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return describe(spec, module)


def cpu_seconds(fn: Callable[[], Any]) -> float:
    """Process CPU seconds of one call (all threads)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def openvino_runner(net: Any, specs: Sequence[Any], x: Sequence[np.ndarray], path: Path,
                    threads: int) -> Callable[[], list[np.ndarray]]:
    """Export ``net``'s graph to ``path`` and return a call that runs it on ``x`` with
    OpenVINO float32 (outputs copied: the request reuses its buffers)."""
    import openvino as ov

    from restora.models.engines import export_onnx

    export_onnx(net, list(specs), list(x), path)
    compiled = ov.Core().compile_model(str(path), "CPU",
                                       {**OV_CONFIG, "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return lambda: [np.asarray(v).copy() for v in request.infer(list(x)).values()]


def ratio_text(ratios: Sequence[float]) -> str:
    """``ratio 1.23x  (min 1.10, max 1.40)``: the median of paired ratios and their range."""
    return (f"ratio {statistics.median(ratios):5.2f}x  (min {min(ratios):.2f}, "
            f"max {max(ratios):.2f})")


def timing_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser (described by ``doc``'s first line) with the options every paired
    benchmark takes: ``--rounds`` and ``--threads``; read it with :func:`parse_timing_args`."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="paired rounds, at least 5 (the machine is noisy)")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def parse_timing_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line, refused with fewer than 5 paired rounds."""
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("at least 5 paired rounds (the machine is noisy)")
    return args
