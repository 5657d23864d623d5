"""Measure dlib face-descriptor distances on the real photos in ../shared/testdata.

Prints (not a test): same-person and different-person distances, and how far blur, downscaling
and JPEG move a face's descriptor from its clean version. docs/enhance-faces.md quotes the output;
the identity thresholds in restora.pipeline.identity rest on these numbers.

    .venv/bin/python benchmarks/identity_distances.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import cv2
import numpy as np

from restora.io.decode import as_image
from restora.models.runtime import Runtime
from restora.pipeline import detect as det
from restora.pipeline.align import align_face
from restora.pipeline.identity import crop_sharpness

#: Faces known to be one person in two different photos (file, index in YuNet's largest-first order).
SAME = {"hepburn": [("photos/04.jpg", 0), ("gray/Hepburn01.png", 0)],
        "dicaprio": [("photos/05.jpg", 0), ("photos/06.png", "left")]}
#: Photos 01 and 02 may show the same band: their cross pairs are neither same nor different.
UNSURE = {("photos/01.jpg", "photos/02.png")}


def faces_of(path: Path, yunet) -> list[tuple[np.ndarray, float, float]]:
    """(512 aligned uint8 crop, inter-eye px, box centre x) per face, largest first."""
    img = as_image(path).pixels
    dets = det.detect_faces(yunet, img, conf_threshold=0.6)
    dets, _ = det.largest_first(dets, 64)
    return [(align_face(det.to_uint8(img), d.landmarks, 512).crop, d.eye_distance,
             (d.box[0] + d.box[2]) / 2) for d in dets]


def degrade(crop: np.ndarray, kind: str, level: float) -> np.ndarray:
    if kind == "blur":
        return cv2.GaussianBlur(crop, (0, 0), level)
    if kind == "eyes":  # downscale so the eyes are `level` px apart (126 px at 512), then back
        n = max(8, int(round(512 * level / 126.0)))
        small = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (512, 512), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(level)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    args = ap.parse_args()
    data = Path(args.shared) / "testdata"
    from restora.models.arch.yunet import YuNet

    yunet = YuNet(str(Path(args.shared) / "models" / "face_detection_yunet_2026may.onnx"))
    rt = Runtime()
    net = rt.load("dlib-resnet")
    faces: dict[tuple[str, int], tuple[np.ndarray, float]] = {}
    for rel in [*(f"photos/{p.name}" for p in sorted((data / "photos").iterdir())),
                *(f"gray/{p.name}" for p in sorted((data / "gray").iterdir()))]:
        found = faces_of(data / rel, yunet)
        for i, (crop, eyes, _) in enumerate(found):
            faces[(rel, i)] = (crop, eyes)
        if rel == "photos/06.png":
            left = min(range(len(found)), key=lambda i: found[i][2])
            SAME["dicaprio"][1] = (rel, left)
    keys = list(faces)
    desc = dict(zip(keys, net.embed([faces[k][0] for k in keys])))
    same_pairs = [tuple(v) for v in SAME.values()]
    print(f"{len(keys)} faces")
    for name, (a, b) in SAME.items():
        print(f"same person {name}: {a} vs {b}: {float(net.distance(desc[a], desc[b])):.3f} "
              f"(eyes {faces[a][1]:.0f} / {faces[b][1]:.0f} px)")
    diff = []
    unsure = []
    for a, b in itertools.combinations(keys, 2):
        if (a, b) in same_pairs or (b, a) in same_pairs:
            continue
        d = float(net.distance(desc[a], desc[b]))
        (unsure if (a[0], b[0]) in UNSURE or (b[0], a[0]) in UNSURE else diff).append((d, a, b))
    diff.sort()
    ds = np.array([d for d, _, _ in diff])
    print(f"different people: {len(ds)} pairs, min {ds.min():.3f}, 1st pct "
          f"{np.percentile(ds, 1):.3f}, 5th pct {np.percentile(ds, 5):.3f}, median "
          f"{np.median(ds):.3f}")
    for d, a, b in diff[:5]:
        print(f"  closest different: {d:.3f} {a} vs {b} (eyes {faces[a][1]:.0f}/{faces[b][1]:.0f})")
    if unsure:
        u = np.array([d for d, _, _ in unsure])
        print(f"photos 01 x 02 (maybe the same band): min {u.min():.3f}, median {np.median(u):.3f}")
    big = [k for k in keys if faces[k][1] >= 45]
    print(f"\ndegradation of {len(big)} faces with eyes >= 45 px: distance to the clean crop "
          "(median / max), and the crop's detail (Laplacian variance, median / min)")
    for kind, levels in (("blur", (1, 2, 3, 4, 6, 8)), ("eyes", (48, 32, 24, 16, 12, 8)),
                         ("jpeg", (50, 30, 15, 8, 4))):
        for level in levels:
            crops = [degrade(faces[k][0], kind, level) for k in big]
            d = net.distance(net.embed(crops), np.stack([desc[k] for k in big]))
            sharp = np.array([crop_sharpness(c) for c in crops])
            print(f"  {kind:5s} {level:>3}: {np.median(d):.3f} / {d.max():.3f}   detail "
                  f"{np.median(sharp):.1f} / {sharp.min():.1f}")
    print("\nsmall faces in the photos: distance of the face at its own resolution vs "
          "downscaled further (eyes px -> 0.5x)")
    for k in keys:
        crop, eyes = faces[k]
        if eyes < 45:
            half = degrade(crop, "eyes", eyes / 2)
            d = float(net.distance(net.embed([half])[0], desc[k]))
            print(f"  {k}: eyes {eyes:.0f} px, detail {crop_sharpness(crop):.1f}, "
                  f"half-resolution distance {d:.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
