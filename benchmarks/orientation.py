"""Orientation benchmark: photos lying on their side or upside down (``orientation``).

Every test photo with faces (``../shared/testdata/photos`` and ``gray``) is turned by 0, 90, 180
and 270 degrees; each detector searches it with ``upright``, ``auto`` and ``search``. A photo is
right when faces were found and every face reports the turn it was given. Printed per detector
and mode: turned photos right, upright photos kept right (never turned), mixed photos right (a
photo beside another turned 90 degrees: every face found with its own turn), and the detector's
CPU seconds against ``upright`` on the same photos (median of paired ratios): on upright photos
(what ``auto`` costs where nothing is turned), on the photos turned 90 degrees, and on a photo
without a face (``auto``'s worst case: every turn searched).

The real detectors of ``../shared`` run (RetinaFace-MobileNet0.25 in facelib's configuration,
YuNet); ``--r50`` adds RetinaFace-R50 at full size with seeded random weights, for the cost of
the face-less photo only (random weights find no faces: its accuracy is not measured).

    python benchmarks/orientation.py [--rounds 5] [--r50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from _shared import cpu_seconds, random_network  # noqa: E402

MODES = ("upright", "auto", "search")


def shared() -> Path:
    return ROOT.parent / "shared"


def photos() -> list[tuple[str, np.ndarray]]:
    out = []
    for folder in ("photos", "gray"):
        for path in sorted((shared() / "testdata" / folder).iterdir()):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                out.append((f"{folder}/{path.name}", np.ascontiguousarray(bgr[:, :, ::-1])))
    return out


def turned(rgb: np.ndarray, degrees: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, -(degrees // 90)))


#: (standing, lying) pairs of test photos for the mixed case
MIXED = [("photos/00.jpg", "photos/03.jpg"), ("photos/02.png", "photos/04.jpg"),
         ("photos/06.png", "gray/Einstein01.png"), ("photos/01.jpg", "photos/05.jpg")]


def level(angle: float) -> float:
    """How far ``angle`` (degrees) is from 0, either way round."""
    return abs((angle + 180.0) % 360.0 - 180.0)


def beside(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    h = max(left.shape[0], right.shape[0])
    canvas = np.full((h, left.shape[1] + right.shape[1], 3), 128, np.uint8)
    canvas[:left.shape[0], :left.shape[1]] = left
    canvas[:right.shape[0], left.shape[1]:] = right
    return canvas


def detectors(tmp: Path, with_r50: bool) -> dict[str, object]:
    from restora.config import Settings
    from restora.models.runtime import Runtime
    from tiny_models import write_tiny_manifest

    ids = {"retinaface-mobilenet0.25-facelibcfg", "yunet-2026may"}
    manifest = write_tiny_manifest(tmp, include=ids)
    runtime = Runtime(Settings(models=manifest, home=tmp / "home"), device="cpu")
    nets: dict[str, object] = {i: runtime.load(i) for i in sorted(ids)}
    if with_r50:
        nets["retinaface-resnet50 (random weights)"] = random_network("retinaface-resnet50", tmp)
    return nets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="paired timing rounds")
    parser.add_argument("--r50", action="store_true", help="also time full-size RetinaFace-R50")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    from restora.pipeline import detect as det

    pictures = photos()
    blank = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (480, 640, 3),
                                                               dtype=np.uint8), (0, 0), 6)
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, net in detectors(Path(tmp), args.r50).items():
            thr = det.sensitivity_to_threshold(0.5, net)

            def find(rgb: np.ndarray, mode: str, net=net, thr=thr) -> list:
                return det.detect_faces(net, rgb, conf_threshold=thr, orientation=mode)

            row: dict[str, object] = {}
            if "random" not in name:
                for mode in MODES:
                    right = {0: 0, 1: 0}
                    total = {0: 0, 1: 0}
                    for _, rgb in pictures:
                        for degrees in (0, 90, 180, 270):
                            found = find(turned(rgb, degrees), mode)
                            ok = bool(found) and all(d.rotation == degrees for d in found)
                            right[degrees != 0] += ok
                            total[degrees != 0] += 1
                    row[mode] = {"turnedRight": f"{right[1]}/{total[1]}",
                                 "uprightKept": f"{right[0]}/{total[0]}"}
                # a person lying beside people standing: photo A and photo B turned 90, side
                # by side; right when every face of both is found, each with its landmarks
                # the right way round (eye line at 0 degrees on the left, 90 on the right)
                named = dict(pictures)
                for mode in MODES:
                    ok = 0
                    for a, b in MIXED:
                        left, right_ = named[a], turned(named[b], 90)
                        want = len(find(left, "upright")) + len(find(right_, "search"))
                        got = find(beside(left, right_), mode)
                        ok += len(got) == want and all(
                            level(d.roll - (90 if d.center[0] >= left.shape[1] else 0)) < 30
                            for d in got)
                    row[mode]["mixedRight"] = f"{ok}/{len(MIXED)}"
            cases = {"upright photos": [p for _, p in pictures],
                     "photos turned 90": [turned(p, 90) for _, p in pictures],
                     "no face": [blank]}
            if "random" in name:  # its faces are noise: only the worst case's cost means much
                cases = {"no face": [blank]}
            for label, images in cases.items():
                for mode in ("auto", "search"):
                    ratios = []
                    for _ in range(args.rounds):
                        base = cpu_seconds(lambda: [find(i, "upright") for i in images])
                        cost = cpu_seconds(lambda m=mode: [find(i, m) for i in images])
                        ratios.append(cost / max(base, 1e-9))
                    row[f"{mode} cost, {label}"] = round(statistics.median(ratios), 2)
            report[name] = row
            print(name, flush=True)
            for key, value in row.items():
                print(f"  {key}: {value}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
