"""Benchmark ``enhance_faces`` on photos/00.jpg (4 faces) with full-size networks on random weights.

Prints per-stage times, the sum of the restorer's forward passes, the ratio end-to-end / forwards
(the pipeline's overhead around the network; goal <= 1.10 on CPU) and the peak RSS.

    .venv/bin/python benchmarks/enhance_faces.py [--model gfpgan|codeformer|both] [--no-parsenet]
        [--runs 3] [--threads N] [--photo PATH]
    .venv/bin/python benchmarks/enhance_faces.py --paste-only   # paste-back vs full-canvas method

Random weights are written once into a temporary folder and registered through a model manifest,
so the networks load through the Runtime exactly as official files would. The detector is the
real RetinaFace MobileNet-0.25 from ../shared/conformance.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def write_random_models(folder: Path, with_parsenet: bool) -> Path:
    """Save full-size random-weight checkpoints and a manifest naming them; return the manifest."""
    import importlib

    import torch

    from restora.config import Settings
    from restora.models.registry import ARCHITECTURES, Registry

    reg = Registry.from_settings(Settings(models=None, home=folder / "home"))
    entries = []
    wanted = [("gfpgan-v1.4", "bench-gfpgan"), ("codeformer", "bench-codeformer")]
    if with_parsenet:
        wanted.append(("parsenet", "bench-parsenet"))
    for builtin, new_id in wanted:
        spec = reg.get(builtin)
        torch.manual_seed(0)
        module, _, cls = ARCHITECTURES[spec.arch].partition(":")
        net = getattr(importlib.import_module(module), cls)(**spec.hparams)
        path = folder / f"{new_id}.pth"
        torch.save(net.state_dict(), path)
        entries.append({"id": new_id, "task": spec.task, "arch": spec.arch, "path": str(path),
                        "hparams": dict(spec.hparams), "default": True, "license": "benchmark"})
        del net
    entries.append({"id": "bench-retinaface", "task": "face-detection", "arch": "retinaface",
                    "path": str(SHARED / "conformance" / "retinaface_mobilenet0.25_facelibcfg.pth"),
                    "hparams": {"network_name": "mobile0.25"}, "default": True, "license": "MIT"})
    manifest = folder / "models.json"
    manifest.write_text(json.dumps({"models": entries}))
    return manifest


class ForwardTimer:
    """Accumulates wall time spent inside a module's forward calls (via hooks)."""

    def __init__(self, module: Any) -> None:
        self.total = 0.0
        self.calls = 0
        self._t0 = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, *_: Any) -> None:
        self._t0 = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.total += time.perf_counter() - self._t0
        self.calls += 1

    def reset(self) -> None:
        self.total, self.calls = 0.0, 0


def bench(kind: str, runtime: Any, photo: bytes, runs: int) -> dict[str, Any]:
    from restora.pipeline.enhance import enhance_faces

    model_id = f"bench-{kind}"
    timer = ForwardTimer(runtime.load(model_id))
    installed = [s.id for s in runtime.registry.all() if s.task == "face-parsing"
                 and runtime.registry.is_installed(s)]
    parser = ForwardTimer(runtime.load(installed[0])) if installed else None
    enhance_faces(photo, runtime=runtime, model=model_id, seed=0)  # warm-up: loads, first calls
    rows = []
    for _ in range(runs):
        timer.reset()
        if parser is not None:
            parser.reset()
        t0 = time.perf_counter()
        result = enhance_faces(photo, runtime=runtime, model=model_id, seed=0)
        total = time.perf_counter() - t0
        rows.append({"total": total, "forward": timer.total, "calls": timer.calls,
                     "parser": parser.total if parser is not None else 0.0,
                     "stages": dict(result.timings), "faces": result.faces_detected,
                     "mask": result.mask})
    best = min(rows, key=lambda r: r["total"])
    return {"model": kind, "runs": runs, "faces": best["faces"], "mask": best["mask"],
            "forward_calls": best["calls"],
            "end_to_end_s": round(statistics.median(r["total"] for r in rows), 3),
            "forwards_s": round(statistics.median(r["forward"] for r in rows), 3),
            "ratio": round(statistics.median(r["total"] / r["forward"] for r in rows), 3),
            "parsenet_s": round(statistics.median(r["parser"] for r in rows), 3),
            "ratio_all_networks": round(statistics.median(
                r["total"] / (r["forward"] + r["parser"]) for r in rows), 3),
            "stages_s": {k: round(statistics.median(r["stages"][k] for r in rows), 3)
                         for k in best["stages"]}}


def full_canvas_paste(canvas: Any, faces: list[Any]) -> Any:
    """The references' paste-back, for comparison: every face warped over the whole canvas,
    masks eroded and blurred at full size, blended in float64."""
    import cv2
    import numpy as np

    h, w = canvas.shape[:2]
    out = canvas.astype(np.float64)
    for item in faces:
        n = item.face.shape[0]
        face = cv2.warpAffine(item.face * 255.0, item.matrix, (w, h))
        mask = cv2.warpAffine(np.ones((n, n), np.float32), item.matrix, (w, h))
        mask = cv2.erode(mask, np.ones((2, 2), np.uint8))
        edge = int(np.sqrt(mask.sum())) // 20
        mask = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
        soft = cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0).astype(np.float64)[..., None]
        out = soft * face + (1.0 - soft) * out
    return np.clip(out, 0, 255).astype(np.uint8)


def paste_compare(photo: Path, scale: int = 4, repeats: int = 3) -> dict[str, Any]:
    """Paste 4 faces into the photo upscaled ``scale`` x: region-only float32 vs full canvas."""
    import cv2
    import numpy as np

    from restora.models.arch.yunet import YuNet
    from restora.pipeline.align import align_face, compose, invert, scale_map
    from restora.pipeline.detect import detect_faces
    from restora.pipeline.paste import PasteFace, paste_faces, square_mask

    rgb = np.ascontiguousarray(cv2.imread(str(photo))[:, :, ::-1])
    big = cv2.resize(rgb, (rgb.shape[1] * scale, rgb.shape[0] * scale), interpolation=cv2.INTER_LANCZOS4)
    yunet = YuNet(SHARED / "models" / "face_detection_yunet_2026may.onnx")
    items = []
    for d in detect_faces(yunet, rgb, conf_threshold=0.6):
        a = align_face(rgb, d.landmarks, 512)
        items.append(PasteFace(face=a.crop.astype(np.float32) / 255.0, mask=square_mask(512),
                               matrix=compose(scale_map(float(scale)), invert(a.matrix))))
    timings = {}
    for name, fn in (("region_float32", lambda: paste_faces(big, items)),
                     ("full_canvas_float64", lambda: full_canvas_paste(big, items))):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        timings[name] = round(best, 4)
    return {"canvas": f"{big.shape[1]}x{big.shape[0]}", "faces": len(items), **timings}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("gfpgan", "codeformer", "both"), default="both")
    parser.add_argument("--no-parsenet", action="store_true", help="feathered square mask only")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--photo", type=Path, default=SHARED / "testdata" / "photos" / "00.jpg")
    parser.add_argument("--paste-only", action="store_true",
                        help="only compare paste-back on a 4x canvas with the full-canvas method")
    args = parser.parse_args()
    if args.paste_only:
        print(json.dumps(paste_compare(SHARED / "testdata" / "photos" / "02.png")))
        return 0

    import torch

    from restora.config import Settings
    from restora.models.runtime import Runtime

    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = ["gfpgan", "codeformer"] if args.model == "both" else [args.model]
    with tempfile.TemporaryDirectory(prefix="restora-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        manifest = write_random_models(folder, not args.no_parsenet)
        print(f"wrote random full-size checkpoints in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        runtime = Runtime(Settings(models=manifest, home=folder / "home"), device="cpu")
        photo = args.photo.read_bytes()
        report = {"photo": str(args.photo), "torch_threads": torch.get_num_threads(),
                  "results": [bench(k, runtime, photo, args.runs) for k in kinds]}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    report["peak_rss_mib"] = round(rss / 1024, 1)
    for r in report["results"]:
        stages = ", ".join(f"{k} {v:.3f}" for k, v in r["stages_s"].items())
        print(f"{r['model']}: {r['faces']} faces, mask {r['mask']}, {r['forward_calls']} forward "
              f"call(s); end-to-end {r['end_to_end_s']:.3f} s, restorer forwards "
              f"{r['forwards_s']:.3f} s, ratio {r['ratio']:.3f}; ParseNet {r['parsenet_s']:.3f} s, "
              f"ratio to all network forwards {r['ratio_all_networks']:.3f}\n  stages (s): {stages}")
    print(f"peak RSS {report['peak_rss_mib']} MiB, torch threads {report['torch_threads']}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
