"""Benchmark ``enhance_faces`` on photos/00.jpg (4 faces) with full-size networks on random weights.

Prints, per restorer, the median over ``--runs`` (at least 5) of end-to-end CPU seconds (input
bytes -> decode -> detect -> align -> restore -> masks -> paste -> PNG bytes) divided by the CPU
seconds of every network forward (detector, restorer, parser, each on the engine the runtime
picks), each network's share of those forwards, the parser / restorer ratio, the stages' share
of wall time and the peak RSS. Goal (issue 15): end-to-end / forwards <= 1.10 with ParseNet on.

    .venv/bin/python benchmarks/enhance_faces.py [--model gfpgan|codeformer|both] [--no-parsenet]
        [--runs 5] [--threads N] [--photo PATH] [--engine auto|torch|onnxruntime|openvino]
        [--engine-cache DIR]
    .venv/bin/python benchmarks/enhance_faces.py --paste-only   # paste-back vs full-canvas method
    .venv/bin/python benchmarks/enhance_faces.py --reference [--runs 5]

``--reference`` compares Restora with a re-implementation (written here, from reading the
reference code) of each reference pipeline's rules on the same networks and weights:
GFPGANer (facexlib FaceRestoreHelper: detection at the image's own resolution, RetinaFace 0.97,
one forward per face, ParseNet mask alone, full-canvas float64 paste, uint8 truncation) and
CodeFormer's inference script (short side enlarged to 640 for detection, RetinaFace 0.8, one
forward per face, min(ParseNet, eroded square) on the full canvas). It prints, per model, the
landmark gap (max and mean distance between matched faces' landmarks, in input pixels, and the
face counts) on every test photo and aligned face with both real detectors, the PSNR of the two
outputs (strength 1, as the references) over the faces' footprints on photo 06 and the aligned
face 0143 (GFPGAN's noise
injection is switched to its stored noise in both, so only the pipelines differ), and the cost:
the median over ``--runs`` (at least 5) paired runs of reference time / Restora time on photo 03
(end to end from decoded pixels: detection, networks, masks, paste). CodeFormer's script also
enlarges inputs whose short side is under 512 px before everything; that step is left out so
both outputs have the input's size.

Random weights are written once into a temporary folder and registered through a model manifest,
so the networks load through the Runtime exactly as official files would. The detector is the
real RetinaFace MobileNet-0.25 from ../shared/conformance (and YuNet from ../shared/models).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RESTORA_SHARED", REPO.parent / "shared"))


def write_random_models(folder: Path, with_parsenet: bool, parsenet: Path | None = None) -> Path:
    """Save full-size random-weight checkpoints and a manifest naming them; return the manifest.
    ``parsenet``: a trained ParseNet state dict to use instead of random weights (the surrogate
    of ``benchmarks/parsing_precision.py``), so ``auto``'s parsing verdicts mean something."""
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
        if new_id == "bench-parsenet" and parsenet is not None:
            net.load_state_dict(torch.load(parsenet, map_location="cpu", weights_only=True))
        torch.save(net.state_dict(), path)
        entries.append({"id": new_id, "task": spec.task, "arch": spec.arch, "path": str(path),
                        "hparams": dict(spec.hparams), "default": True, "license": "benchmark"})
        del net
    entries.append({"id": "bench-retinaface", "task": "face-detection", "arch": "retinaface",
                    "path": str(SHARED / "conformance" / "retinaface_mobilenet0.25_facelibcfg.pth"),
                    "hparams": {"network_name": "mobile0.25"}, "default": True, "license": "MIT"})
    entries.append({"id": "bench-yunet", "task": "face-detection", "arch": "yunet",
                    "path": str(SHARED / "models" / "face_detection_yunet_2026may.onnx"),
                    "hparams": {}, "license": "MIT"})
    manifest = folder / "models.json"
    manifest.write_text(json.dumps({"models": entries}))
    return manifest


class CpuMeter:
    """Process CPU seconds spent in one descriptor's graph runs, whatever engine runs them.

    It wraps the descriptor's ``run`` (every call goes through it: ``__call__``, RetinaFace's
    ``detect``), so the detector's pre- and post-processing (mean subtraction, priors, NMS)
    count as pipeline, not network. Process CPU time counts every thread (torch's, OpenVINO's,
    ONNX Runtime's), which is what a shared machine pays.
    """

    def __init__(self, net: Any, method: str = "run") -> None:
        self.total = 0.0
        self.calls = 0
        inner = getattr(net, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.total += time.process_time() - t0
                self.calls += 1

        # an instance attribute: shadows the method for this descriptor only
        setattr(net, method, timed)

    def reset(self) -> None:
        self.total, self.calls = 0.0, 0


def bench(kind: str, runtime: Any, photo: bytes, runs: int, upscale: int = 1
          ) -> dict[str, Any]:
    """End-to-end CPU-s / sum of network forward CPU-s, per run, median over ``runs``.

    End-to-end is what a request pays from the input bytes to the result bytes: decode,
    detection, alignment, restoration, masks, paste and the PNG encode of the result (the
    enhance-faces output format). Networks: the detector, the restorer and the parser, each on
    the engine the runtime picks (``RESTORA_ENGINE``, auto by default), and the identity
    check's face-recognition network when one is installed (dlib's landmarks and chip plus its
    network in plain torch, outside the runtime's engines: its ``embed`` is metered).
    """
    from restora.io import encode
    from restora.pipeline.enhance import enhance_faces

    model_id = f"bench-{kind}"
    result = enhance_faces(photo, runtime=runtime, model=model_id, seed=0,
                           upscale=upscale)  # warm-up, exports
    meters = {}
    for role, net_id in (("detector", "bench-retinaface"), ("restorer", model_id),
                         ("parser", "bench-parsenet")):
        if net_id in runtime.loaded():
            meters[role] = CpuMeter(runtime.load(net_id))
    if result.identity_model is not None:
        meters["recognizer"] = CpuMeter(runtime.load(result.identity_model), "embed")
    rows = []
    for _ in range(runs):
        for m in meters.values():
            m.reset()
        t0 = time.process_time()
        w0 = time.perf_counter()
        result = enhance_faces(photo, runtime=runtime, model=model_id, seed=0, upscale=upscale)
        data = encode(result.image, "png")
        total = time.process_time() - t0
        wall = time.perf_counter() - w0
        nets = {k: m.total for k, m in meters.items()}
        rows.append({"total": total, "wall": wall, "nets": nets, "bytes": len(data),
                     "calls": {k: m.calls for k, m in meters.items()},
                     "stages": dict(result.timings), "faces": result.faces_detected,
                     "mask": result.mask, "engines": dict(result.engines)})

    def med(fn: Any) -> float:
        return round(statistics.median(fn(r) for r in rows), 3)

    last = rows[-1]
    report = {"model": kind, "runs": runs, "upscale": upscale, "faces": last["faces"],
              "mask": last["mask"],
              "engines": last["engines"], "calls": last["calls"],
              "end_to_end_over_forwards": med(lambda r: r["total"] / sum(r["nets"].values())),
              "wall_over_cpu": med(lambda r: r["wall"] / r["total"]),
              "share_of_forwards": {k: med(lambda r, k=k: r["nets"][k] / sum(r["nets"].values()))
                                    for k in meters}}
    if "parser" in meters:
        report["parser_over_restorer"] = med(lambda r: r["nets"]["parser"] / r["nets"]["restorer"])
    report["stage_share_of_wall"] = {k: med(lambda r, k=k: r["stages"].get(k, 0.0) / r["wall"])
                                     for k in last["stages"]}
    return report


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
    from restora.pipeline.paste import PasteFace, paste_faces

    rgb = np.ascontiguousarray(cv2.imread(str(photo))[:, :, ::-1])
    big = cv2.resize(rgb, (rgb.shape[1] * scale, rgb.shape[0] * scale), interpolation=cv2.INTER_LANCZOS4)
    yunet = YuNet(SHARED / "models" / "face_detection_yunet_2026may.onnx")
    items = []
    for d in detect_faces(yunet, rgb, conf_threshold=0.6):
        a = align_face(rgb, d.landmarks, 512)
        items.append(PasteFace(face=a.crop.astype(np.float32) / 255.0, mask=None,
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


# --- the reference pipelines' rules, re-implemented for comparison --------------------------

#: facexlib's BGR border fill for crops, and its ParseNet class -> mask table (255 = face).
REF_BORDER_BGR = (135, 133, 132)
REF_PARSE_FACE = [0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0]


def stored_noise(restorer: Any) -> Any:
    """A copy of a GFPGAN descriptor whose noise inputs are its stored noise maps (comparisons
    without luck); other restorers are returned as they are."""
    import copy

    if restorer.kind != "gfpgan":
        return restorer
    fixed = copy.copy(restorer)
    maps = restorer.module.stylegan_decoder.stored_noise()

    def extra_inputs(x: Any, **_: Any) -> list[Any]:
        return [m.to(restorer.device).expand(int(x.shape[0]), -1, -1, -1) for m in maps]

    fixed.extra_inputs = extra_inputs
    return fixed


def reference_detect(detector: Any, bgr: Any, kind: str, yunet: bool = False) -> Any:
    """Rows (N, 15) in input pixels as the reference helper finds them.

    GFPGANer: ``get_face_landmarks_5(eye_dist_threshold=5)``: the image itself, threshold 0.97,
    eye distance from landmarks 0 and 1. CodeFormer: ``resize=640``: scale = max(1, 640 / short
    side), size truncated, INTER_LINEAR, default threshold 0.8, all columns divided by the one
    scale, and the eye distance taken from columns 6-9 (an eye's y against the other's x).
    YuNet (no reference uses it) gets its usual 0.6 under either geometry.
    """
    import cv2
    import numpy as np

    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    if kind == "gfpgan":
        rows = detector.detect(rgb, 0.6 if yunet else 0.97)
        keep = [r for r in rows if np.linalg.norm([r[5] - r[7], r[6] - r[8]]) >= 5]
    else:
        h, w = rgb.shape[:2]
        scale = max(1.0, 640 / min(h, w))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (int(w * scale), int(h * scale)),
                                                    interpolation=cv2.INTER_LINEAR)
        rows = detector.detect(np.ascontiguousarray(small), 0.6 if yunet else 0.8) / scale
        keep = [r for r in rows if np.linalg.norm([r[6] - r[8], r[7] - r[9]]) >= 5]
    return np.array(keep, np.float64).reshape(-1, 15)


def _to_tensor(bgr_uint8: Any) -> Any:
    """img2tensor(bgr / 255, bgr2rgb=True) then normalise to [-1, 1], batch of one."""
    import numpy as np
    import torch

    rgb = bgr_uint8[:, :, ::-1].astype(np.float32) / 255.0
    return (torch.from_numpy(rgb.transpose(2, 0, 1).copy()) - 0.5).div(0.5).unsqueeze(0)


def _to_bgr_uint8(t: Any) -> Any:
    """tensor2img(min_max=(-1, 1), rgb2bgr=True): clamp, to [0, 1], * 255, round, uint8."""
    import numpy as np

    x = ((t.squeeze(0).float().clamp(-1, 1) + 1) / 2).cpu().numpy().transpose(1, 2, 0)
    return (x[:, :, ::-1] * 255.0).round().astype(np.uint8)


def reference_enhance(kind: str, bgr: Any, detector: Any, net: Any, parsenet: Any,
                      fidelity: float = 0.5, yunet: bool = False) -> tuple[Any, Any, list[Any]]:
    """One image through the reference pipeline at upscale 1: (output BGR uint8, detection rows,
    crop -> image matrices). ``net`` and ``parsenet`` are the runtime's descriptors (the same
    networks and weights as Restora's run); crops are at the restorer's input size."""
    import cv2
    import numpy as np
    import torch

    from restora.pipeline.align import face_template

    n = int(net.input_size or 512)
    h, w = bgr.shape[:2]
    rows = reference_detect(detector, bgr, kind, yunet)
    # the background "upsampled" to scale 1 (LANCZOS4 for GFPGANer, LINEAR for CodeFormer)
    canvas = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LANCZOS4 if kind == "gfpgan"
                        else cv2.INTER_LINEAR).astype(np.float64)
    inverses = []
    for row in rows:
        lm = row[5:15].reshape(5, 2)
        matrix = cv2.estimateAffinePartial2D(lm, face_template(n).astype(np.float64),
                                             method=cv2.LMEDS)[0]
        crop = cv2.warpAffine(bgr, matrix, (n, n), borderMode=cv2.BORDER_CONSTANT,
                              borderValue=REF_BORDER_BGR)
        with torch.inference_mode():  # one face per forward, as both references
            face = _to_bgr_uint8(net(_to_tensor(crop), fidelity=fidelity))
            size = int(parsenet.input_size or 512)
            logits = parsenet(_to_tensor(cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)))
        inverse = cv2.invertAffineTransform(matrix)
        inverses.append(inverse)
        inv_face = cv2.warpAffine(face, inverse, (w, h))
        classes = logits.argmax(dim=1).squeeze().cpu().numpy()
        parse = np.zeros(classes.shape)
        for idx, value in enumerate(REF_PARSE_FACE):
            parse[classes == idx] = value
        parse = cv2.GaussianBlur(parse, (101, 101), 11)
        parse = cv2.GaussianBlur(parse, (101, 101), 11)
        parse[:10, :], parse[-10:, :], parse[:, :10], parse[:, -10:] = 0, 0, 0, 0
        parse = cv2.resize(parse / 255.0, (n, n))
        parse = cv2.warpAffine(parse, inverse, (w, h), flags=3)[:, :, None]
        if kind == "gfpgan":  # ParseNet mask alone
            soft, pasted = parse, inv_face
        else:  # always the eroded square, then the smaller of it and the ParseNet mask
            inv_mask = cv2.warpAffine(np.ones((n, n), np.float32), inverse, (w, h))
            eroded = cv2.erode(inv_mask, np.ones((2, 2), np.uint8))
            pasted = eroded[:, :, None] * inv_face
            edge = int(eroded.sum() ** 0.5) // 20
            center = cv2.erode(eroded, np.ones((2 * edge, 2 * edge), np.uint8))
            square = cv2.GaussianBlur(center, (2 * edge + 1, 2 * edge + 1), 0)[:, :, None]
            soft = np.where(parse < square, parse, square)
        canvas = soft * pasted + (1 - soft) * canvas
    return canvas.astype(np.uint8), rows, inverses


def landmark_gap(ours: Any, theirs: Any) -> list[float]:
    """Per reference face, the largest landmark distance to the nearest of our faces (px)."""
    import numpy as np

    gaps = []
    for lm in theirs:
        if len(ours) == 0:
            break
        dist = np.linalg.norm(np.asarray(ours) - lm[None], axis=2)  # faces x 5
        gaps.append(float(dist[np.argmin(dist.mean(axis=1))].max()))
    return gaps


def footprints(matrices: list[Any], n: int, h: int, w: int) -> Any:
    import cv2
    import numpy as np

    region = np.zeros((h, w), bool)
    for m in matrices:
        region |= cv2.warpAffine(np.ones((n, n), np.uint8), m, (w, h), flags=cv2.INTER_NEAREST) > 0
    return region


def psnr(a: Any, b: Any, region: Any, blur: float = 0.0) -> float:
    """PSNR over ``region``; with ``blur`` both images are first smoothed (Gaussian sigma), which
    leaves out what only the resampling kernels change (bicubic here, bilinear there: on the
    noise-like output of random weights that alone costs 10+ dB) and keeps mask and geometry."""
    import cv2
    import numpy as np

    if blur:
        a = cv2.GaussianBlur(a.astype(np.float64), (0, 0), blur)
        b = cv2.GaussianBlur(b.astype(np.float64), (0, 0), blur)
    diff = a.astype(np.float64)[region] - b.astype(np.float64)[region]
    mse = float((diff ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


#: Where the outputs are compared: a photo with two faces and an aligned face whose crop
#: overhangs the image (the edge-frame case).
PSNR_IMAGES = [SHARED / "testdata" / "photos" / "06.png", SHARED / "testdata" / "faces" / "0143.png"]


def _log(rows: list[Any]) -> list[Any]:
    """Print the previous row to stderr (progress of a long run), return the list to append to."""
    if rows:
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def reference_compare(runtime: Any, runs: int) -> dict[str, Any]:
    """Landmark gaps, face-region PSNR and paired cost ratios against the reference rules."""
    import numpy as np

    from restora.io import decode
    from restora.pipeline.align import estimate_matrix, invert
    from restora.pipeline.enhance import enhance_faces

    photos = sorted((SHARED / "testdata" / "photos").iterdir())
    faces = sorted((SHARED / "testdata" / "faces").iterdir())
    detectors = {"retinaface": "bench-retinaface", "yunet": "bench-yunet"}
    parsenet = runtime.load("bench-parsenet")
    report: dict[str, Any] = {"landmarks": [], "psnr": [], "cost": []}
    for kind in ("gfpgan", "codeformer"):
        model = f"bench-{kind}"
        net = runtime.load(model)
        # 1. landmark gap: detection only (strength 0 skips the networks)
        for det_name, det_id in detectors.items():
            detector = runtime.load(det_id)
            gaps, counts = [], []
            for path in photos + faces:
                img = decode(path)
                bgr = np.ascontiguousarray(img.pixels[:, :, ::-1])
                mine = enhance_faces(img, runtime=runtime, model=model, detector=det_id, strength=0.0)
                ours = [np.array(f.landmarks) for f in mine.faces]
                theirs = reference_detect(detector, bgr, kind, yunet=det_name == "yunet")
                counts.append((path.name, len(ours), len(theirs)))
                gaps += landmark_gap(ours, theirs[:, 5:15].reshape(-1, 5, 2))
            differ = [c for c in counts if c[1] != c[2]]
            _log(report["landmarks"]).append({
                "model": kind, "detector": det_name, "faces": sum(c[2] for c in counts),
                "max_gap_px": round(max(gaps), 3), "mean_gap_px": round(float(np.mean(gaps)), 3),
                "count_differs": differ})
        # 2. PSNR over the faces' footprints, RetinaFace, noise fixed in both
        fixed = stored_noise(net)
        n = int(net.input_size or 512)
        detector = runtime.load("bench-retinaface")
        for path in PSNR_IMAGES:
            img = decode(path)
            bgr = np.ascontiguousarray(img.pixels[:, :, ::-1])
            mine = enhance_faces(img, runtime=runtime, model=model, restorer=fixed,
                                 detector="bench-retinaface", strength=1.0)
            ref_bgr, rows, inverses = reference_enhance(kind, bgr, detector, fixed, parsenet)
            h, w = bgr.shape[:2]
            ours_m = [invert(estimate_matrix(np.array(f.landmarks, np.float32), n))
                      for f in mine.faces]
            region = footprints(inverses + ours_m, n, h, w)
            _log(report["psnr"]).append({"model": kind, "image": path.name, "faces": [len(mine.faces), len(rows)],
                                   "psnr_db": round(psnr(mine.image.pixels, ref_bgr[:, :, ::-1], region), 2),
                                   "psnr_smoothed_db": round(psnr(mine.image.pixels, ref_bgr[:, :, ::-1],
                                                                  region, blur=2.0), 2),
                                   "region_px": int(region.sum())})
        # 3. cost: paired runs on photo 03 (1 face), reference method vs Restora
        path = SHARED / "testdata" / "photos" / "03.jpg"
        img = decode(path)
        bgr = np.ascontiguousarray(img.pixels[:, :, ::-1])
        ratios, ours_s, ref_s = [], [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            enhance_faces(img, runtime=runtime, model=model, detector="bench-retinaface", seed=0,
                          strength=1.0)
            t1 = time.perf_counter()
            reference_enhance(kind, bgr, detector, net, parsenet)
            t2 = time.perf_counter()
            ours_s.append(t1 - t0)
            ref_s.append(t2 - t1)
            ratios.append((t2 - t1) / (t1 - t0))
        _log(report["cost"]).append({"model": kind, "image": path.name, "runs": runs,
                               "reference_over_restora": round(statistics.median(ratios), 3),
                               "ratios": [round(r, 3) for r in ratios],
                               "restora_median_s": round(statistics.median(ours_s), 2),
                               "reference_median_s": round(statistics.median(ref_s), 2)})
    return report


def print_reference(ref: dict[str, Any]) -> None:
    for r in ref["landmarks"]:
        print(f"{r['model']} / {r['detector']}: landmark gap to the reference rule max "
              f"{r['max_gap_px']} px, mean {r['mean_gap_px']} px over {r['faces']} faces; face "
              f"counts differ (image, ours, reference): {r['count_differs'] or 'nowhere'}")
    for r in ref["psnr"]:
        print(f"{r['model']} {r['image']}: faces {r['faces'][0]}/{r['faces'][1]}, face-region "
              f"PSNR to the reference {r['psnr_db']} dB ({r['psnr_smoothed_db']} dB both smoothed, "
              f"sigma 2) over {r['region_px']} px")
    for r in ref["cost"]:
        print(f"{r['model']} {r['image']}: reference method / Restora = {r['reference_over_restora']} "
              f"(median of {r['runs']} paired runs; {r['ratios']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("gfpgan", "codeformer", "both"), default="both")
    parser.add_argument("--no-parsenet", action="store_true", help="feathered square mask only")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--engine", choices=("auto", "torch", "onnxruntime", "openvino"),
                        default=None, help="RESTORA_ENGINE for the run (default: auto)")
    parser.add_argument("--engine-cache", type=Path, default=None,
                        help="keep exported graphs here between runs (the random weights are "
                             "seeded, so the files and their hashes repeat)")
    parser.add_argument("--photo", type=Path, default=SHARED / "testdata" / "photos" / "00.jpg")
    parser.add_argument("--parsenet-weights", type=Path, default=None,
                        help="a trained ParseNet state dict (benchmarks/parsing_precision.py's "
                             "surrogate) instead of random weights")
    parser.add_argument("--upscale", type=int, default=1, choices=(1, 2, 4))
    parser.add_argument("--paste-only", action="store_true",
                        help="only compare paste-back on a 4x canvas with the full-canvas method")
    parser.add_argument("--reference", action="store_true",
                        help="agreement and cost against the reference pipelines' rules")
    args = parser.parse_args()
    if args.paste_only:
        print(json.dumps(paste_compare(SHARED / "testdata" / "photos" / "02.png")))
        return 0
    if args.runs < 5:
        parser.error("at least 5 runs (the machine is noisy)")

    import torch

    from restora.config import Settings
    from restora.models.runtime import Runtime

    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = ["gfpgan", "codeformer"] if args.model == "both" else [args.model]
    with tempfile.TemporaryDirectory(prefix="restora-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        manifest = write_random_models(folder, not args.no_parsenet, args.parsenet_weights)
        print(f"wrote random full-size checkpoints in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        settings = Settings(models=manifest, home=folder / "home",
                            engine_cache=args.engine_cache)
        runtime = Runtime(settings, device="cpu", engine=args.engine)
        if args.reference:
            ref = reference_compare(runtime, max(args.runs, 5))
            print_reference(ref)
            print(json.dumps(ref))
            return 0
        photo = args.photo.read_bytes()
        report = {"photo": str(args.photo), "torch_threads": torch.get_num_threads(),
                  "engine": runtime.engines.choice,
                  "results": [bench(k, runtime, photo, args.runs, args.upscale) for k in kinds]}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    report["peak_rss_mib"] = round(rss / 1024, 1)
    for r in report["results"]:
        shares = ", ".join(f"{k} {v:.1%}" for k, v in r["share_of_forwards"].items())
        stages = ", ".join(f"{k} {v:.1%}" for k, v in r["stage_share_of_wall"].items())
        print(f"{r['model']}: {r['faces']} faces, mask {r['mask']}, engines {r['engines']}\n"
              f"  end-to-end CPU-s / network forward CPU-s = {r['end_to_end_over_forwards']:.3f}"
              f" (median of {r['runs']}); forwards: {shares}"
              + (f"; parser / restorer {r['parser_over_restorer']:.2f}"
                 if "parser_over_restorer" in r else "")
              + f"\n  stages (share of wall time): {stages}")
    print(f"peak RSS {report['peak_rss_mib']} MiB, torch threads {report['torch_threads']}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
