"""Per network x engine x precision: CPU-second ratio against torch eager fp32, and deviation.

Full-size networks with random weights (no checkpoint needed), our own modules exported
through the same cache the Runtime uses. For each network, every engine runs the same input
in paired, interleaved rounds (torch fp32, then each engine, repeated); the report is the
median over rounds of (torch CPU seconds / engine CPU seconds), so a machine that slows down
mid-run slows both sides of a pair. CPU seconds are process CPU time (all threads), which is
what a shared 2-core machine pays. Deviation is the task's bound measurement against torch fp32
(PSNR, class changes off boundaries, max |d|; see docs/engines.md).

    python benchmarks/engines.py                      # every network, 5 rounds, 2 threads
    python benchmarks/engines.py --nets rrdbnet-x2-256 parsenet-512 --rounds 7 --compile --fp16

Prints ratios, never bare seconds.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _shared import cpu_seconds, parse_timing_args, random_network, ratio_text, timing_parser
from restora.models.engines import (STREAM, EngineFactory, EngineUnavailable, TorchEngine,
                                    bf16_supported, package_version, policy_for, probe_inputs,
                                    quantizer_version)
from restora.models.nets import Network

#: benchmark name -> (registry id of the full-size network, batch, free side or None)
NETS: dict[str, tuple[str, int, int | None]] = {
    "gfpgan-512-b1": ("gfpgan-v1.4", 1, None),
    "gfpgan-512-b4": ("gfpgan-v1.4", 4, None),
    "codeformer-512": ("codeformer", 1, None),
    "parsenet-512": ("parsenet", 1, None),
    "retinaface-r50-640": ("retinaface-resnet50", 1, 640),
    "rrdbnet-x2-256": ("realesrgan-x2plus", 1, 256 + 2 * 16),
    "lama-512": ("lama-big", 1, 512),  # the fill's largest crop (LAMA_SIDE)
}


def build(model_id: str, folder: Path) -> tuple[Network, Path]:
    """The full-size network with seeded random weights, saved so the cache can hash it."""
    net = random_network(model_id, folder)
    path = folder / f"{model_id}.pth"
    torch.save(net.module.state_dict(), path)
    return net, path


def inputs_for(net: Network, batch: int, side: int | None) -> list[np.ndarray]:
    specs = net.inputs(batch, side, side)
    return probe_inputs(net, specs)


def fp16_supported() -> bool:
    import openvino as ov

    return "FP16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def run(names: list[str], rounds: int, threads: int, compile_: bool, fp16: bool = False
        ) -> None:
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, onnxruntime {package_version('onnxruntime')}, "
          f"openvino {package_version('openvino')}, {threads} threads, median of {rounds} "
          "paired rounds; ratio = torch eager fp32 CPU-s / engine CPU-s (higher is faster)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in names:
            model_id, batch, side = NETS[name]
            net, path = build(model_id, folder)
            factory = EngineFactory(choice="auto", cache_dir=folder / "engines",
                                    threads=threads, model_path=lambda _n, p=path: p)
            x = inputs_for(net, batch, side)
            ref_engine = TorchEngine(net.graph(), "cpu")
            ref = [np.asarray(o.float().numpy()) for o in ref_engine.run(x)]
            candidates: dict[str, Any] = {}
            if compile_:
                candidates["torch-compile fp32"] = TorchEngine(net.graph(), "cpu", compile=True)
            tried = [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]
            if fp16:
                tried.append(("openvino", "fp16"))
            if net.int8_calibration and quantizer_version() is not None:
                tried.append(("openvino", "int8"))
            if net.stream_graph() is not None:
                tried.append(("openvino", STREAM))
            for engine, precision in tried:
                if precision != "fp32" and package_version("openvino") is None:
                    continue
                if precision in ("bf16", STREAM) and not bf16_supported():
                    continue
                if precision == "fp16" and not fp16_supported():
                    continue
                try:
                    candidates[f"{engine} {precision}"] = factory.exported(
                        net, engine, precision, verify=False)
                except EngineUnavailable as exc:
                    print(f"  {name}: {engine} {precision} unavailable: {exc}")
            ratios: dict[str, list[float]] = {k: [] for k in candidates}
            for k, eng in candidates.items():  # warm-up (compilation, first allocation)
                eng.run(x)
            for _ in range(rounds):
                for k, eng in candidates.items():
                    base = cpu_seconds(lambda: ref_engine.run(x))
                    ratios[k].append(base / max(cpu_seconds(lambda: eng.run(x)), 1e-9))
            policy = policy_for(net.task)
            for k, eng in candidates.items():
                got = [np.asarray(o if isinstance(o, np.ndarray) else o.float().numpy())
                       for o in eng.run(x)]
                _, measure = policy.check_for(k.split()[-1])(ref, got)
                print(f"{name:20s} {k:20s} {ratio_text(ratios[k])}  {measure}")
            sys.stdout.flush()


def main() -> None:
    parser = timing_parser(__doc__)
    parser.add_argument("--nets", nargs="*", default=list(NETS), choices=list(NETS))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--fp16", action="store_true",
                        help="also time OpenVINO fp16 (CPUs that report FP16, e.g. AVX512-FP16)")
    args = parse_timing_args(parser)
    run(args.nets, args.rounds, args.threads, args.compile, args.fp16)


if __name__ == "__main__":
    main()
