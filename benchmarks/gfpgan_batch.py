"""GFPGAN v1.4 exported for batches: CPU seconds per face at batch 2 and 4 against batch 1, and
the peak memory of each.

Full-size GFPGAN v1.4 (512) with seeded random weights, exported through the product's cache
with every input (the image and each noise map) at batch 1 (run one face at a time, as
``OneAtATime`` does: the baseline), at a free batch dimension (``free``), and at a fixed batch 2
or 4 (``fixed``: what a graph reshaped to the batch would cost, without dynamic shapes). Per
engine and precision, the same 4 faces (probe-like images, normal noise) run through each graph
in calls of its batch; every round runs the baseline and each variant once, in a rotating
order; ratio = baseline CPU-s / variant CPU-s in that round (higher: the variant is cheaper per
face), median over rounds. ``max|d|`` is the variant's output against the baseline's, per face,
on the same engine.

Peak memory (``--memory``, OpenVINO fp32 by default): for each graph its own process loads the
module (as the Runtime does), opens the cached graph and runs the 4 faces once; peak = that
process's ``VmHWM`` (its own high-water mark: the parent's pages are not counted), which
includes the interpreter, torch, the weights and the engine. Add the delta against batch 1 to a
photo's peak at batch 1 (benchmarks/memory.py) for the photo-level cost.

    PYTHONPATH=src python benchmarks/gfpgan_batch.py [--rounds 5] [--threads 2]
        [--engines openvino:fp32 onnxruntime:fp32 openvino:bf16] [--memory openvino:fp32]

Prints ratios and peaks, never bare seconds.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _shared import cpu_seconds, parse_timing_args, random_network, ratio_text, timing_parser
from restora.models.engines import (EngineFactory, EngineUnavailable, bf16_supported,
                                    package_version)
from restora.models.nets import GFPGANRestorer, InputSpec

MODEL_ID = "gfpgan-v1.4"
#: faces per round: every batch below divides it
FACES = 4
#: graph name -> (batch dimension of the export, faces per call)
GRAPHS: dict[str, tuple[int | None, int]] = {
    "b1": (1, 1), "free b1": (None, 1), "free b2": (None, 2), "free b4": (None, 4),
    "fixed b2": (2, 2), "fixed b4": (4, 4)}


def descriptor(base: Any, batch: int | None) -> GFPGANRestorer:
    """``base``'s GFPGAN with every graph input at ``batch`` (None: free)."""

    class Batched(GFPGANRestorer):
        def inputs(self, b: int | None = None, height: int | None = None,
                   width: int | None = None) -> list[InputSpec]:
            return [InputSpec(s.name, (batch, *s.shape[1:])) for s in super().inputs()]

    return Batched(base.spec, base.module)


def faces(net: GFPGANRestorer) -> list[np.ndarray]:
    """``FACES`` seeded faces: the image batch, then one noise batch per layer."""
    rng = np.random.default_rng(20261202)
    x = net.probe_image(rng, (FACES, 3, 512, 512))
    return [x, *(rng.standard_normal((FACES, 1, s, s)).astype(np.float32)
                 for s in net.noise_sides())]


def runner(engine: Any, x: list[np.ndarray], per_call: int) -> Callable[[], np.ndarray]:
    """A call that runs ``x``'s faces through ``engine``, ``per_call`` faces at a time."""
    def run() -> np.ndarray:
        return np.concatenate([np.asarray(engine.run([a[i:i + per_call] for a in x])[0])
                               for i in range(0, FACES, per_call)])
    return run


def load(graph: str, folder: Path, threads: int, engine: str, precision: str,
         base: Any = None) -> tuple[GFPGANRestorer, Any]:
    """The graph's descriptor (weights from ``folder``) and its cached exported engine."""
    path = folder / f"{MODEL_ID}.pth"
    if base is None:
        base = random_network(MODEL_ID, folder / "home")
    net = descriptor(base, GRAPHS[graph][0])
    factory = EngineFactory(choice=engine, cache_dir=folder / "engines", threads=threads,
                            model_path=lambda _n: path)
    return net, factory.exported(net, engine, precision, verify=False)


def child(folder: Path, threads: int, engine: str, precision: str, graph: str) -> None:
    """One memory run (its own process): load, open the cached graph, run the faces once,
    print this process's peak RSS in KiB."""
    torch.set_num_threads(threads)
    net, eng = load(graph, folder, threads, engine, precision)
    runner(eng, faces(net), GRAPHS[graph][1])()
    status = Path("/proc/self/status").read_text().splitlines()
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))


def peak_gib(folder: Path, threads: int, engine: str, precision: str, graph: str) -> float:
    cmd = [sys.executable, __file__, "--child", str(folder), str(threads), engine, precision,
           graph]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(f"  {graph}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
        return float("nan")
    return int(done.stdout.split()[-1]) / 2**20


def run(pairs: list[tuple[str, str]], graphs: list[str], rounds: int, threads: int,
        memory: list[tuple[str, str]]) -> None:
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, onnxruntime {package_version('onnxruntime')}, openvino "
          f"{package_version('openvino')}, {threads} threads, {FACES} faces per round, median "
          f"of {rounds} rounds; ratio = batch-1 graph CPU-s / variant CPU-s in the same round "
          "for the same faces (higher: cheaper per face)")
    with tempfile.TemporaryDirectory(prefix="restora-gfpgan-batch-") as tmp:
        folder = Path(tmp)
        base = random_network(MODEL_ID, folder / "home")
        torch.save(base.module.state_dict(), folder / f"{MODEL_ID}.pth")
        x = faces(base)
        for engine, precision in pairs:
            if package_version(engine) is None or (
                    precision == "bf16" and not bf16_supported()):
                print(f"{engine} {precision}: not available here")
                continue
            try:
                t0 = time.monotonic()
                engines = {g: load(g, folder, threads, engine, precision, base)[1]
                           for g in ["b1", *graphs]}
                print(f"{engine} {precision}: {len(engines)} graphs exported in "
                      f"{time.monotonic() - t0:.0f} s")
            except EngineUnavailable as exc:
                print(f"{engine} {precision}: {exc}")
                continue
            calls = {g: runner(e, x, GRAPHS[g][1]) for g, e in engines.items()}
            outs = {g: c() for g, c in calls.items()}  # the warm-up (first allocations)
            ratios: dict[str, list[float]] = {g: [] for g in graphs}
            order = list(calls)
            for r in range(rounds):
                k = r % len(order)
                spent = {g: cpu_seconds(calls[g]) for g in order[k:] + order[:k]}
                for g in graphs:
                    ratios[g].append(spent["b1"] / max(spent[g], 1e-9))
            for g in graphs:
                d = float(np.abs(outs[g] - outs["b1"]).max())
                print(f"  {engine} {precision} {g:9s} {ratio_text(ratios[g])}  "
                      f"max|d| vs b1 {d:.2e}")
            sys.stdout.flush()
            del engines, calls
            if (engine, precision) in memory:
                print(f"  peak RSS (VmHWM), load + {FACES} faces:", end="")
                b1 = peak_gib(folder, threads, engine, precision, "b1")
                print(f" b1 {b1:.2f} GiB", end="")
                for g in graphs:
                    p = peak_gib(folder, threads, engine, precision, g)
                    print(f"; {g} {p:.2f} GiB ({p - b1:+.2f})", end="")
                print()
                sys.stdout.flush()


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        folder, threads, engine, precision, graph = sys.argv[2:]
        child(Path(folder), int(threads), engine, precision, graph)
        return
    parser = timing_parser(__doc__)
    parser.add_argument("--engines", nargs="*",
                        default=["openvino:fp32", "onnxruntime:fp32", "openvino:bf16"],
                        help="engine:precision pairs to time")
    parser.add_argument("--graphs", nargs="*", default=[g for g in GRAPHS if g != "b1"],
                        choices=[g for g in GRAPHS if g != "b1"],
                        help="variants against the batch-1 graph")
    parser.add_argument("--memory", nargs="*", default=["openvino:fp32"],
                        help="engine:precision pairs whose peak RSS to measure")
    args = parse_timing_args(parser)
    def pairs(specs: list[str]) -> list[tuple[str, str]]:
        return [(engine, precision) for engine, precision in (p.split(":", 1) for p in specs)]

    run(pairs(args.engines), args.graphs, args.rounds, args.threads, pairs(args.memory))


if __name__ == "__main__":
    main()
