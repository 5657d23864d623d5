"""Benchmark the default PNG writer against Pillow's default (zlib level 6), with the preview.

Encodes photos/02.png (RGBA, 1204 x 645) and the same photo resized to 2.5 MP (RGB) and to
16-bit, as ``restora enhance-faces`` writes its output: the PNG plus ``preview.webp``. Prints the
CPU seconds of each and the ratio level-6 / default from paired runs (median of ``--runs``), and
the file sizes.

    .venv/bin/python benchmarks/encode.py [--runs 5]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def level6(image: Any) -> bytes:
    """The previous default: Pillow at compress level 6 (OpenCV at 6 for 16-bit)."""
    import cv2
    from PIL import Image as PILImage

    if image.pixels.dtype == np.uint16:
        bgr = image.pixels[..., ::-1]
        if image.alpha is not None:
            bgr = np.dstack([bgr, image.alpha])
        return cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 6])[1].tobytes()
    arr = image.pixels if image.alpha is None else np.dstack([image.pixels, image.alpha])
    out = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(arr)).save(out, "PNG", compress_level=6)
    return out.getvalue()


def cpu(fn: Any) -> tuple[float, int]:
    t0 = time.process_time()
    size = len(fn())
    return time.process_time() - t0, size


def main() -> int:
    import cv2

    from restora.io import Image, decode, encode, make_preview

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    photo = decode(SHARED / "testdata" / "photos" / "02.png")
    big = cv2.resize(photo.pixels, (2160, 1157), interpolation=cv2.INTER_LANCZOS4)
    cases = {"02.png RGBA 0.8 MP": photo,
             "RGB 2.5 MP": Image(pixels=big, bit_depth=8),
             "RGB 2.5 MP 16-bit": Image(pixels=big.astype(np.uint16) * 257, bit_depth=16)}
    report = []
    for name, image in cases.items():
        rows = []
        for _ in range(args.runs):
            new_s, new_b = cpu(lambda: encode(image, "png"))
            old_s, old_b = cpu(lambda: level6(image))
            prev_s, _ = cpu(lambda: make_preview(image))
            rows.append((new_s, old_s, prev_s, new_b, old_b))
        new = statistics.median(r[0] for r in rows)
        old = statistics.median(r[1] for r in rows)
        prev = statistics.median(r[2] for r in rows)
        report.append({"case": name, "default_png_cpu_s": round(new, 3), "level6_png_cpu_s": round(old, 3),
                       "preview_cpu_s": round(prev, 3),
                       "ratio_level6_to_default": round(statistics.median(r[1] / r[0] for r in rows), 2),
                       "ratio_with_preview": round(statistics.median(
                           (r[1] + r[2]) / (r[0] + r[2]) for r in rows), 2),
                       "default_bytes": rows[0][3], "level6_bytes": rows[0][4],
                       "size_change_pct": round(100.0 * (rows[0][3] / rows[0][4] - 1.0), 1)})
    for r in report:
        print(f"{r['case']}: default PNG {r['default_png_cpu_s']} CPU-s, level 6 {r['level6_png_cpu_s']} "
              f"CPU-s ({r['ratio_level6_to_default']}x; {r['ratio_with_preview']}x with the "
              f"{r['preview_cpu_s']} s preview); file {r['size_change_pct']:+}% "
              f"({r['default_bytes']} vs {r['level6_bytes']} bytes)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
