"""GPU throughput (issue 15, item 6): faces per second on CUDA, per network and batch, at the
precision ``auto`` picks there and at float32, with the deviation between the two; then
``enhance-faces`` end to end on real photos.

Full-size networks with seeded random weights (``enhance_faces.write_random_models``; the parser
may be a trained surrogate, ``--parsenet-weights``), fed the real aligned faces of
``../shared/testdata/faces``. Each row: median wall seconds of ``--runs`` calls after two
warm-ups, as the pipeline calls the descriptor (numpy in, numpy out: the host <-> GPU copies
count), faces/s = batch / that, the peak GPU memory of the row, and the task's own bound
(``policy_for(task).check``) of the ``auto`` output against IEEE float32 on the same GPU. Each
network's float32 and ``auto`` outputs are also checked against torch float32 on the CPU (the
reference every bound is written against), on the same faces and, for GFPGAN, the same noise.

On a GPU machine: ``scripts/gpu_check.sh`` (it also runs the GPU tests). Here, a smoke test of
the same code on the CPU: ``--device cpu --batches 1 --runs 1 --photos 00.jpg``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enhance_faces import SHARED, write_random_models  # noqa: E402

NETWORKS = ("bench-gfpgan", "bench-codeformer", "bench-parsenet")


def load_faces(folder: Path, n: int, size: int) -> np.ndarray:
    """``n`` real aligned faces (repeated if the folder holds fewer) as NCHW RGB in [-1, 1]."""
    import cv2

    crops = []
    for path in sorted(folder.iterdir()):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:
            crops.append(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA))
    if not crops:
        raise SystemExit(f"no face images in {folder}")
    batch = np.stack([crops[i % len(crops)][:, :, ::-1] for i in range(n)])
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 127.5 - 1.0


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_calls(call: Any, runs: int, device: str) -> tuple[float, Any, float]:
    """Median wall seconds of ``runs`` calls after two warm-ups, the last output, and the first
    warm-up's seconds (what a shape's first call costs: cuDNN's autotuning, for one)."""
    _sync(device)
    t0 = time.perf_counter()
    out = call()
    _sync(device)
    first = time.perf_counter() - t0
    out = call()
    times = []
    for _ in range(runs):
        _sync(device)
        t0 = time.perf_counter()
        out = call()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out, first


def _labels(runtimes: dict[str, Any], autotune: bool = False) -> list[tuple[str, Any]]:
    """(label, runtime) per timed row: IEEE float32, then what auto picks, then (``autotune``)
    auto again with cuDNN's benchmark mode on (an experiment: Restora never turns it on)."""
    rows = [("fp32", runtimes["fp32"]), ("auto", runtimes["auto"])]
    return rows + [("autotune", runtimes["auto"])] if autotune else rows


class _CudnnBenchmark:
    """cuDNN's benchmark mode (algorithms timed per shape, cached) inside the block only."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        import torch

        torch.backends.cudnn.benchmark = self.on

    def __exit__(self, *_: Any) -> None:
        import torch

        torch.backends.cudnn.benchmark = False


def cpu_reference_rows(runtimes: dict[str, Any], faces: Path,
                       device: str) -> list[dict[str, Any]]:
    """Each network's outputs on ``device`` against torch float32 on the CPU, 2 faces."""
    import torch

    from restora.models.engines import policy_for

    rows = []
    cpu = runtimes["cpu"]
    for model_id in NETWORKS:
        ref_net = cpu.load(model_id)
        x = load_faces(faces, 2, ref_net.input_size)
        kwargs: dict[str, Any] = {"fidelity": 0.5} if "codeformer" in model_id else {}

        def call(net: Any, x: np.ndarray = x, kwargs: dict = kwargs) -> np.ndarray:
            if "gfpgan" in model_id:  # noise drawn on the CPU: the same on every device
                kwargs = {"generator": torch.Generator().manual_seed(0)}
            return np.asarray(net(x, **kwargs))

        ref = call(ref_net)
        row: dict[str, Any] = {"network": model_id, "task": ref_net.task}
        for label, runtime in _labels(runtimes):
            net = runtime.load(model_id)
            got = call(net)
            ok, measure = policy_for(ref_net.task).check([ref], [got])
            row[label] = {"precision": net.precision, "ok": bool(ok), "measure": measure}
        rows.append(row)
    return rows


def network_rows(runtimes: dict[str, Any], faces: Path, batches: list[int], runs: int,
                 device: str, autotune: bool = False) -> list[dict[str, Any]]:
    import torch

    from restora.models.engines import policy_for

    rows = []
    for model_id in NETWORKS:
        for batch in batches:
            outputs: dict[str, np.ndarray] = {}
            for label, runtime in _labels(runtimes, autotune):
                net = runtime.load(model_id)
                x = load_faces(faces, batch, net.input_size)
                kwargs: dict[str, Any] = {"fidelity": 0.5} if "codeformer" in model_id else {}

                def call(net: Any = net, x: np.ndarray = x, kwargs: dict = kwargs) -> Any:
                    if "gfpgan" in model_id:  # the same seeded noise in every call
                        kwargs = {"generator": torch.Generator(device=device).manual_seed(0)}
                    return np.asarray(net(x, **kwargs))

                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                with _CudnnBenchmark(label == "autotune"):
                    seconds, out, first = timed_calls(call, runs, device)
                outputs[label] = out
                peak = torch.cuda.max_memory_allocated() / 2**30 \
                    if device.startswith("cuda") else None
                rows.append({"network": model_id, "batch": batch, "engine": label,
                             "precision": net.precision,
                             "seconds": round(seconds, 5),
                             "faces_per_s": round(batch / seconds, 2),
                             "first_call_s": round(first, 3),
                             "peak_gpu_gib": None if peak is None else round(peak, 2)})
                if label != "fp32":
                    task = runtimes["auto"].load(model_id).task
                    ok, measure = policy_for(task).check([outputs["fp32"]], [out])
                    rows[-1]["bound"] = {"ok": bool(ok), "measure": measure}
    return rows


def photo_rows(runtime: Any, photos: list[Path], runs: int, device: str) -> list[dict[str, Any]]:
    from restora.pipeline.enhance import enhance_faces

    rows = []
    for path in photos:
        data = path.read_bytes()
        for model in ("bench-gfpgan", "bench-codeformer"):
            faces = 0

            def call(model: str = model) -> Any:
                nonlocal faces
                result = enhance_faces(data, runtime=runtime, model=model, seed=0)
                faces = len(result.faces)
                return result

            seconds, result, _ = timed_calls(call, runs, device)
            rows.append({"photo": path.name, "model": model, "faces": faces,
                         "seconds": round(seconds, 4),
                         "faces_per_s": round(faces / seconds, 2) if faces else 0.0,
                         "engines": result.engines,
                         "stages": {k: round(v, 4) for k, v in result.timings.items()}})
    return rows


def profile_photo(runtime: Any, path: Path, top: int) -> None:
    """cProfile of one ``enhance-faces`` run (after the timed ones): where the host's time goes."""
    import cProfile
    import pstats

    from restora.pipeline.enhance import enhance_faces

    data = path.read_bytes()
    profile = cProfile.Profile()
    profile.enable()
    enhance_faces(data, runtime=runtime, model="bench-gfpgan", seed=0)
    profile.disable()
    print(f"profile of enhance-faces {path.name} (bench-gfpgan), by own time:")
    pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", default="1,4,8,16",
                        help="comma-separated batch sizes (faces per call)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--photos", default="00.jpg,02.png,06.png",
                        help="comma-separated photos of ../shared/testdata/photos ('' for none)")
    parser.add_argument("--parsenet-weights", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="also time auto with cuDNN's benchmark mode on (an experiment)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then profile one enhance-faces run of the first photo (GFPGAN) "
                             "and print its N functions of most own time")
    args = parser.parse_args()

    import torch

    from restora.config import Settings
    from restora.models.runtime import Runtime

    batches = [int(b) for b in args.batches.split(",") if b]
    photos = [SHARED / "testdata" / "photos" / p for p in args.photos.split(",") if p]
    with tempfile.TemporaryDirectory(prefix="restora-gpu-") as tmp:
        folder = Path(tmp)
        manifest = write_random_models(folder, True, args.parsenet_weights)
        settings = Settings(models=manifest, home=folder / "home")
        # torch float32 against auto (the task's GPU precision: fp16 where the network allows)
        runtimes = {"cpu": Runtime(settings, device="cpu", engine="torch"),
                    "fp32": Runtime(settings, device=args.device, engine="torch"),
                    "auto": Runtime(settings, device=args.device, engine="auto")}
        gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
        faces = SHARED / "testdata" / "faces"
        report: dict[str, Any] = {"device": gpu, "torch": torch.__version__,
                                  "against_cpu": cpu_reference_rows(runtimes, faces, args.device)}
        del runtimes["cpu"]
        for row in report["against_cpu"]:
            print(f"{row['network']:17s} against torch fp32 on the CPU: " + "; ".join(
                f"{label} ({v['precision']}) {'within' if v['ok'] else 'OUTSIDE'} {v['measure']}"
                for label, v in row.items() if isinstance(v, dict)))
        report["networks"] = network_rows(runtimes, faces, batches, args.runs, args.device,
                                          args.cudnn_benchmark)
        for row in report["networks"]:
            bound = f"  {'within' if row['bound']['ok'] else 'OUTSIDE'} the bound: " \
                    f"{row['bound']['measure']}" if "bound" in row else ""
            peak = f", peak {row['peak_gpu_gib']} GiB" if row["peak_gpu_gib"] is not None else ""
            print(f"{row['network']:17s} batch {row['batch']:3d} {row['engine']:8s} "
                  f"{row['precision']:5s} {row['faces_per_s']:8.2f} faces/s (first call "
                  f"{row['first_call_s']:.3f} s){peak}{bound}")
        del runtimes["fp32"]
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        report["photos"] = photo_rows(runtimes["auto"], photos, args.runs, args.device)
        for row in report["photos"]:
            print(f"enhance-faces {row['photo']:7s} {row['model']:16s} {row['faces']} faces "
                  f"{row['seconds']:.3f} s = {row['faces_per_s']:.2f} faces/s {row['engines']} "
                  f"stages {row['stages']}")
        if args.profile and photos:
            profile_photo(runtimes["auto"], photos[0], args.profile)
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
