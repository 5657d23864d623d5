"""Damage benchmark: synthetic old-print damage on real photos, per damage type.

Our own generator draws, on the photos of ``../shared/testdata`` (seeded, reproducible):

* ``scratches``: 6 straight or slightly bent lines, 1-4 px wide, bright or dark, contrast
  30-120 levels against what they cross;
* ``cracks``: branched crack networks (random walks that fork), 1-2 px, dark, contrast 35-90;
* ``dust``: 40 specks of 1-3 px radius, contrast 20-50 levels (under 50), plus 6 lint fibres
  (thin curved 1 px strands, 15-45 px long);
* ``folds``: 2 long fold lines across the print, 2-4 px wide, faint (10-25 levels), bright;
* ``torn``: a torn corner (ragged polygon at a corner, paper-white) and a missing area
  (irregular blob inside the print, paper colour).

The truth mask is every drawn pixel whose luma moved by more than 4 levels (a dark scratch over
black is no damage). For each type: precision / recall / F1 of the repaired mask against the
truth (a detected pixel within 1 px of the truth counts: a repaired rim is not an error), PSNR and
SSIM inside the damage (truth pixels) and over the whole image, against the undamaged photo.
On the clean photos: the share of the area detected as damage (false-positive coverage; the
repaired share, which adds the 1 px rim, is printed beside it) and SSIM of the full default
pipeline's output against the input. Mask scores use the detector's own mask
(``detect_damage``); PSNR/SSIM use the full pipeline (no denoise, no faces).

Runs the classical path by default (an empty RESTORA_HOME: no models), the targets of the
README apply to it. ``--models`` uses whatever RESTORA_HOME/RESTORA_MODELS provide.

    python benchmarks/damage.py [--photos photos/02.png,photos/03.jpg] [--types cracks,dust]
        [--clean photos/00.jpg] [--detect-only] [--json out.json] [--models]

Seeds follow a photo's place in the full list, so a run on a few photos or types draws the
same damage as the full run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RESTORA_SHARED", REPO.parent / "shared"))
DAMAGED_PHOTOS = ["photos/02.png", "photos/03.jpg", "photos/04.jpg", "photos/06.png",
                  "gray/Einstein01.png", "gray/Hepburn01.png"]
CLEAN_PHOTOS = ["photos/00.jpg", "photos/01.jpg", "photos/02.png", "photos/03.jpg",
                "photos/04.jpg", "photos/05.jpg", "photos/06.png", "gray/Einstein01.png",
                "gray/Hepburn01.png", "gray/169_John_Lennon_00.png"]
TYPES = ("scratches", "cracks", "dust", "folds", "torn")
TARGETS = {  # classical path: (metric, threshold)
    "scratches": ("f1", 0.75), "cracks": ("recall", 0.6), "folds": ("recall", 0.6),
    "torn": ("recall", 0.8),
}
CLEAN_MAX_COVERAGE = 0.3  # percent
CLEAN_MIN_SSIM = 0.99


def luma(px: np.ndarray) -> np.ndarray:
    return px.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


# --- the generator --------------------------------------------------------------------------

def _shade(base: np.ndarray, mask: np.ndarray, delta: np.ndarray | float) -> np.ndarray:
    """Move the masked pixels' luma by ``delta`` (keeping their tint), clipped."""
    out = base.astype(np.float32)
    d = np.broadcast_to(np.asarray(delta, np.float32), mask.shape)
    out[mask] += d[mask][:, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _polyline(m: np.ndarray, pts: np.ndarray, width: int) -> None:
    cv2.polylines(m, [pts.astype(np.int32).reshape(-1, 1, 2)], False, 1, width, cv2.LINE_8)


def draw_scratches(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    out = rgb.copy()
    for i in range(6):
        m = np.zeros((h, w), np.uint8)
        p0 = rng.uniform((0, 0), (w, h))
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(0.3, 0.8) * max(h, w)
        t = np.linspace(0, 1, 12)[:, None]
        bend = rng.uniform(-0.03, 0.03) * length * np.sin(np.pi * t)
        d = np.array([np.cos(ang), np.sin(ang)])
        pts = p0 + t * length * d + bend * np.array([-d[1], d[0]])
        _polyline(m, pts, int(rng.integers(1, 5)))
        contrast = rng.uniform(30, 120)
        sign = 1 if i % 2 == 0 else -1
        out = _shade(out, m > 0, sign * contrast)
    return out, _truth(rgb, out)


def draw_cracks(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    m = np.zeros((h, w), np.uint8)
    step = max(h, w) / 120
    for _ in range(2):  # two networks
        stack = [(rng.uniform((0.2 * w, 0.2 * h), (0.8 * w, 0.8 * h)), rng.uniform(0, 2 * np.pi),
                  int(rng.integers(50, 90)))]
        while stack:
            p, ang, n = stack.pop()
            pts = [p]
            for _ in range(n):
                ang += rng.normal(0, 0.35)
                p = p + step * np.array([np.cos(ang), np.sin(ang)])
                pts.append(p)
                if rng.random() < 0.05 and len(stack) < 12:  # fork
                    stack.append((p, ang + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2),
                                  int(n * 0.5)))
            _polyline(m, np.array(pts), int(rng.integers(1, 3)))
    contrast = rng.uniform(35, 90)
    out = _shade(rgb, m > 0, -contrast)
    return out, _truth(rgb, out)


def draw_dust(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    out = rgb.copy()
    for i in range(40):
        m = np.zeros((h, w), np.uint8)
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(m, c, int(rng.integers(1, 4)), 1, -1)
        out = _shade(out, m > 0, (1 if i % 2 else -1) * rng.uniform(20, 50))
    for _ in range(6):  # lint: thin curved fibres
        m = np.zeros((h, w), np.uint8)
        p = rng.uniform((0, 0), (w, h))
        ang = rng.uniform(0, 2 * np.pi)
        pts = [p]
        for _ in range(int(rng.integers(15, 45)) // 3):
            ang += rng.normal(0, 0.4)
            p = p + 3 * np.array([np.cos(ang), np.sin(ang)])
            pts.append(p)
        _polyline(m, np.array(pts), 1)
        out = _shade(out, m > 0, rng.choice([-1, 1]) * rng.uniform(30, 60))
    return out, _truth(rgb, out)


def draw_folds(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    out = rgb.copy()
    for _ in range(2):
        m = np.zeros((h, w), np.uint8)
        if rng.random() < 0.5:  # roughly horizontal or vertical, edge to edge
            y0, y1 = rng.uniform(0.2, 0.8, 2) * h
            pts = np.array([[0, y0], [w, y1]])
        else:
            x0, x1 = rng.uniform(0.2, 0.8, 2) * w
            pts = np.array([[x0, 0], [x1, h]])
        _polyline(m, pts, int(rng.integers(2, 5)))
        out = _shade(out, m > 0, rng.uniform(10, 25))
    return out, _truth(rgb, out)


def draw_torn(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    m = np.zeros((h, w), np.uint8)
    s = min(h, w)
    # torn corner: a ragged triangle at a random corner
    cx, cy = (0 if rng.random() < 0.5 else w), (0 if rng.random() < 0.5 else h)
    a, b = rng.uniform(0.12, 0.25, 2) * s
    n = 14
    edge = np.stack([np.linspace(a, 0, n), np.linspace(0, b, n)], 1)
    edge += rng.normal(0, 0.02 * s, edge.shape)
    sx, sy = (1 if cx == 0 else -1), (1 if cy == 0 else -1)
    poly = np.vstack([[0, 0], edge]) * [sx, sy] + [cx, cy]
    cv2.fillPoly(m, [poly.astype(np.int32)], 1)
    # missing area: an irregular blob inside
    c = rng.uniform((0.3 * w, 0.3 * h), (0.7 * w, 0.7 * h))
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    r = rng.uniform(0.03, 0.07) * s * rng.uniform(0.6, 1.4, 16)
    blob = c + np.stack([np.cos(ang) * r, np.sin(ang) * r], 1)
    cv2.fillPoly(m, [blob.astype(np.int32)], 1)
    paper = np.array([236, 230, 214], np.uint8)
    out = rgb.copy()
    out[m > 0] = paper
    return out, _truth(rgb, out)


def _truth(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.abs(luma(after) - luma(before)) > 4


GENERATORS = {"scratches": draw_scratches, "cracks": draw_cracks, "dust": draw_dust,
              "folds": draw_folds, "torn": draw_torn}


# --- metrics --------------------------------------------------------------------------------

def mask_scores(found: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    k = np.ones((3, 3), np.uint8)
    near_truth = cv2.dilate(truth.astype(np.uint8), k) > 0
    near_found = cv2.dilate(found.astype(np.uint8), k) > 0
    precision = float((found & near_truth).sum() / max(1, found.sum()))
    recall = float((truth & near_found).sum() / max(1, truth.sum()))
    f1 = 2 * precision * recall / max(1e-9, precision + recall)
    return precision, recall, f1


def psnr(a: np.ndarray, b: np.ndarray, sel: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = float(d[sel].mean() if sel is not None else d.mean())
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(a, b, channel_axis=2, data_range=255, full=True)
    return full.mean(axis=2)


# --- runs -----------------------------------------------------------------------------------

def load(rel: str) -> np.ndarray:
    from restora.io import decode

    return decode(SHARED / "testdata" / rel).pixels


def seed(rel: str, index: int, kind: str) -> int:
    """The damage seed of a photo: by its place in DAMAGED_PHOTOS, so that a run on a few
    photos draws the same damage as the full run."""
    pi = DAMAGED_PHOTOS.index(rel) if rel in DAMAGED_PHOTOS else index
    return 1000 * pi + TYPES.index(kind)


def run(photos: list[str], clean: list[str], runtime: object, types: tuple[str, ...] = TYPES,
        detect_only: bool = False) -> dict:
    """Every number of the tables; ``detect_only`` skips the pipeline (mask scores and clean
    coverage only, a few times faster while iterating on the detector)."""
    from restora.io import Image
    from restora.pipeline.photo import restore_photo
    from restora.pipeline.photo.damage import detect_damage
    from restora.pipeline.photo.denoise import estimate_noise

    rows: dict[str, list[dict]] = {t: [] for t in TYPES}
    for pi, rel in enumerate(photos):
        rgb = load(rel)
        for kind in types:
            rng = np.random.default_rng(seed(rel, pi, kind))
            damaged, truth = GENERATORS[kind](rgb, rng)
            # mask quality: the detector's own mask (the pipeline's repaired mask adds a rim)
            t0 = time.perf_counter()
            found, report = detect_damage(damaged, estimate_noise(damaged).luma, runtime)
            p, r, f = mask_scores(found, truth)
            if detect_only:
                rows[kind].append({"photo": rel, "truthPct": round(100 * float(truth.mean()), 3),
                                   "precision": p, "recall": r, "f1": f,
                                   "seconds": time.perf_counter() - t0,
                                   "detector": report.get("detector")})
                print(f"{kind:9s} {rel:24s} P {p:.2f} R {r:.2f} F1 {f:.2f}", file=sys.stderr)
                continue
            t0 = time.perf_counter()
            res = restore_photo(Image(damaged), runtime=runtime, face_enhancement=False,
                                denoise=False)
            secs = time.perf_counter() - t0
            out = res.image.pixels
            sm = ssim_map(out, rgb)
            rows[kind].append({
                "photo": rel, "truthPct": round(100 * float(truth.mean()), 3),
                "precision": p, "recall": r, "f1": f,
                "psnrDamageBefore": psnr(damaged, rgb, truth), "psnrDamage": psnr(out, rgb, truth),
                "ssimDamage": float(sm[truth].mean()) if truth.any() else 1.0,
                "psnrBefore": psnr(damaged, rgb), "psnr": psnr(out, rgb),
                "ssim": float(sm.mean()), "seconds": secs,
                "detector": res.reports["scratch-removal"].get("detector")})
            print(f"{kind:9s} {rel:24s} P {p:.2f} R {r:.2f} F1 {f:.2f}  PSNR(damage) "
                  f"{rows[kind][-1]['psnrDamageBefore']:.1f}->{rows[kind][-1]['psnrDamage']:.1f}"
                  f"  {secs:.1f}s", file=sys.stderr)
    clean_rows = []
    for rel in clean:
        rgb = load(rel)
        if detect_only:
            found, _ = detect_damage(rgb, estimate_noise(rgb).luma, runtime)
            clean_rows.append({"photo": rel, "coverage": 100 * float(found.mean())})
            print(f"clean     {rel:24s} coverage {clean_rows[-1]['coverage']:.3f} %",
                  file=sys.stderr)
            continue
        res = restore_photo(Image(rgb), runtime=runtime, face_enhancement=False)
        clean_rows.append({"photo": rel, "coverage": res.scratch_coverage,
                           "repaired": 100 * float(res.mask.mean()),
                           "ssim": float(ssim_map(res.image.pixels, rgb).mean())})
        print(f"clean     {rel:24s} coverage {clean_rows[-1]['coverage']:.3f} % SSIM "
              f"{clean_rows[-1]['ssim']:.4f}", file=sys.stderr)
    return {"damage": rows, "clean": clean_rows}


def summary(res: dict) -> list[str]:
    lines = ["| type | precision | recall | F1 | PSNR damage (before -> after) | SSIM damage | "
             "PSNR overall (before -> after) | SSIM overall | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in TYPES:
        rs = res["damage"][kind]
        if not rs:
            continue
        m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k not in
             ("photo", "detector")}
        target = TARGETS.get(kind)
        met = "-" if target is None else ("yes" if m[target[0]] >= target[1] else "no")
        tgt = "-" if target is None else f"{target[0]} >= {target[1]}"
        repair = (f"{m['psnrDamageBefore']:.1f} -> {m['psnrDamage']:.1f} | "
                  f"{m['ssimDamage']:.3f} | {m['psnrBefore']:.1f} -> {m['psnr']:.1f} | "
                  f"{m['ssim']:.4f}") if "psnr" in m else "- | - | - | -"
        lines.append(f"| {kind} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} | "
                     f"{repair} | {tgt} | {met} |")
    lines += ["", "| clean photo | detected % | repaired % (with rim) | SSIM | met |",
              "|---|---|---|---|---|"]
    for r in res["clean"]:
        if "ssim" not in r:  # detection only: coverage is all that was measured
            ok = r["coverage"] <= CLEAN_MAX_COVERAGE
            lines.append(f"| {r['photo']} | {r['coverage']:.3f} | - | - | "
                         f"{'yes' if ok else 'no'} (coverage only) |")
            continue
        ok = r["coverage"] <= CLEAN_MAX_COVERAGE and r["ssim"] >= CLEAN_MIN_SSIM
        lines.append(f"| {r['photo']} | {r['coverage']:.3f} | {r['repaired']:.3f} | "
                     f"{r['ssim']:.4f} | {'yes' if ok else 'no'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", help="comma-separated paths under testdata (damaged set)")
    ap.add_argument("--clean", help="comma-separated paths under testdata (clean set; \"\" for "
                    "none)")
    ap.add_argument("--types", help=f"comma-separated damage types (default: all of "
                    f"{','.join(TYPES)})")
    ap.add_argument("--detect-only", action="store_true",
                    help="mask scores and clean coverage only, without the repair pipeline "
                    "(fast, for iterating on the detector)")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--models", action="store_true",
                    help="use installed models (default: none, the classical path)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from restora.config import Settings
    from restora.models.runtime import Runtime

    tmp = None
    if not args.models:
        tmp = tempfile.TemporaryDirectory()
        os.environ["RESTORA_HOME"] = tmp.name
        os.environ.pop("RESTORA_MODELS", None)
    runtime = Runtime(Settings(), device="cpu")
    photos = args.photos.split(",") if args.photos else DAMAGED_PHOTOS
    clean = args.clean.split(",") if args.clean else CLEAN_PHOTOS
    types = tuple(args.types.split(",")) if args.types else TYPES
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        ap.error(f"unknown damage type(s): {', '.join(unknown)}")
    res = run(photos, clean if args.clean != "" else [], runtime, types, args.detect_only)
    print("\n".join(summary(res)))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
