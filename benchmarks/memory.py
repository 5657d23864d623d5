"""Peak memory of every tool on a 24 MP photo, each run as its own ``python -m restora`` process.

The photo is built from real photos of ``../shared/testdata`` (resized and stacked to
6000 x 4000, 4 faces, saved as a JPEG in a temporary folder). Models come from a manifest the
script writes (``RESTORA_MODELS``) in a temporary ``RESTORA_HOME``:

* the detector is the real RetinaFace MobileNet-0.25 of the conformance folder (it finds the
  photo's 4 faces);
* face networks: the tiny conformance GFPGAN / CodeFormer / ParseNet by default, full size
  with seeded random weights with ``--full-faces`` (a 5-face run took 8 min on the shared
  2 cores). Their memory is the weights plus one batch of 512 crops' activations, whatever
  the photo's size, so the script also measures, each in its own process, the full-size
  networks' load + one forward at the pipeline's batch size: add that to a tiny row;
* upscalers: RRDBNet x2 / x4 with 4 features and 1 block (seeded random weights): a full-size
  RRDBNet over 24 MP is 384 tiles of seconds to minutes each on 2 cores. Tiles bound its
  activations, so one full-size RRDBNet tile forward (x2 and x4) is measured on its own too;
* old-photo networks: the tiny conformance scratch U-Net, LaMa and DDColor.

The canvas, the paste and the encoder do not depend on the networks' width, which is what the
tiny rows measure.

Peak = the child's maximum resident set size (``os.wait4``'s ``ru_maxrss``), which includes
the interpreter, torch and the model weights.

    PYTHONPATH=src python benchmarks/memory.py                 # every case
    PYTHONPATH=src python benchmarks/memory.py --cases faces-x2-bg photo --engine torch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RESTORA_SHARED", REPO.parent / "shared")).resolve()
WIDTH, HEIGHT = 6000, 4000

#: case -> (command, arguments); the input and output are appended
CASES: dict[str, tuple[str, list[str]]] = {
    "faces-x1": ("enhance-faces", ["--upscale", "1"]),
    "faces-x1-bg": ("enhance-faces", ["--upscale", "1", "--bg-upscale"]),
    "faces-x2-bg": ("enhance-faces", ["--upscale", "2", "--bg-upscale"]),
    "faces-x2-facesup": ("enhance-faces", ["--upscale", "2", "--bg-upscale", "--face-upsample"]),
    "faces-x4-bg": ("enhance-faces", ["--upscale", "4", "--bg-upscale"]),
    "photo": ("restore-photo", []),
    "photo-gray-colorize": ("restore-photo", ["--colorize"]),
}

#: face networks built full size with seeded random weights under ``--full-faces``
FULL = ("gfpgan-v1.4", "codeformer", "parsenet")
#: the slim RRDBNet of the canvas runs (same code path as Real-ESRGAN, a fraction of the work)
SLIM_RRDB = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 4, "num_block": 1, "num_grow_ch": 4}


def build_photo(folder: Path, gray: bool = False) -> Path:
    """A 6000 x 4000 JPEG of real photos: photos/02.png (4 faces) over the top, photos/00.jpg
    upside down below (texture without detectable faces, so the face count stays at 4 and
    the full-size face networks' time stays reasonable)."""
    import numpy as np
    from PIL import Image

    top = Image.open(SHARED / "testdata/photos/02.png").convert("RGB")
    low = Image.open(SHARED / "testdata/photos/00.jpg").convert("RGB")
    canvas = Image.new("RGB", (WIDTH, HEIGHT))
    th = round(top.height * WIDTH / top.width)
    canvas.paste(top.resize((WIDTH, th), Image.Resampling.LANCZOS), (0, 0))
    rest = HEIGHT - th
    lw = round(low.width * rest / low.height)
    scaled = low.resize((lw, rest), Image.Resampling.LANCZOS).transpose(
        Image.Transpose.FLIP_TOP_BOTTOM)
    for x in range(0, WIDTH, lw):
        canvas.paste(scaled, (x, th))
    if gray:
        canvas = Image.fromarray(np.asarray(canvas.convert("L"))).convert("RGB")
    path = folder / ("photo24mp_gray.jpg" if gray else "photo24mp.jpg")
    canvas.save(path, "JPEG", quality=92)
    return path


def build_models(folder: Path, full_faces: bool) -> Path:
    """Manifest of the networks described in the module doc; returns its path."""
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import tiny_ddcolor_entry, tiny_manifest_entries, tiny_photo_repair_entries

    from restora.config import Settings
    from restora.models.registry import Registry
    from restora.models.runtime import architecture_class

    reg = Registry.from_settings(Settings(home=folder / "none"))
    entries: list[dict[str, Any]] = []
    tiny = {e["id"]: e for e in tiny_manifest_entries()}
    for scale in (2, 4):
        path = folder / f"slim-rrdb-x{scale}.pth"
        hparams = {**SLIM_RRDB, "scale": scale}
        torch.manual_seed(scale)
        torch.save(architecture_class("rrdbnet")(**hparams).state_dict(), path)
        entries.append({"id": f"slim-rrdb-x{scale}", "task": "upscale", "arch": "rrdbnet",
                        "path": str(path), "hparams": hparams, "default": scale == 2,
                        "license": "benchmark", "commercial_use": True})
    # the real RetinaFace MobileNet-0.25 weights: random detector weights find random faces
    entries.append(tiny["retinaface-mobilenet0.25-facelibcfg"])
    if not full_faces:
        entries += [tiny["tiny-gfpgan"], tiny["tiny-codeformer"], tiny["tiny-parsenet"]]
    for model_id in FULL if full_faces else ():
        spec = reg.get(model_id)
        path = folder / f"{model_id}.pth"
        if not path.exists():
            torch.manual_seed(0)
            module = architecture_class(spec.arch)(**spec.hparams).eval()
            torch.save(module.state_dict(), path)
            del module
        entries.append({"id": f"bench-{model_id}", "task": spec.task, "arch": spec.arch,
                        "path": str(path), "hparams": dict(spec.hparams), "default": True,
                        "license": "benchmark", "commercial_use": True})
    entries += tiny_photo_repair_entries()
    entries.append(tiny_ddcolor_entry())
    manifest = folder / "models.json"
    manifest.write_text(json.dumps({"models": entries}, indent=2))
    return manifest


def peak_of(cmd: list[str], env: dict[str, str], timeout: float
            ) -> tuple[int, float, str, str]:
    """(exit code, peak RSS in GiB, last stderr lines, stdout) of ``cmd`` run to completion."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    return proc.returncode, usage.ru_maxrss / 2**20, " | ".join(tail), stdout


NET_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    from restora.config import Settings
    from restora.models.registry import Registry
    from restora.models.runtime import architecture_class
    from restora.models.nets import describe
    from restora.pipeline.restore import batch_for
    torch.set_num_threads(2)
    model_id = sys.argv[1]
    spec = Registry.from_settings(Settings(home="/nonexistent")).get(model_id)
    module = architecture_class(spec.arch)(**spec.hparams).eval()
    net = describe(spec, module)
    kind = "parsenet" if spec.task == "face-parsing" else net.kind
    n = batch_for(kind, 512, "cpu")
    x = np.random.default_rng(0).uniform(-1, 1, (n, 3, 512, 512)).astype(np.float32)
    with torch.inference_mode():
        net(x)
    print(n)
""")

TILE_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    from restora.config import Settings
    from restora.models.registry import Registry
    from restora.models.runtime import architecture_class
    from restora.models.nets import describe
    torch.set_num_threads(2)
    model_id, side = sys.argv[1], int(sys.argv[2])
    if model_id.startswith("tiny"):
        sys.path.insert(0, sys.argv[3])
        from tiny_models import tiny_manifest_entries
        import dataclasses
        e = {x["id"]: x for x in tiny_manifest_entries()}[model_id]
        spec = Registry.from_settings(Settings(home="/nonexistent")).get("realesrgan-x2plus")
        module = architecture_class("rrdbnet")(**e["hparams"]).eval()
        spec = dataclasses.replace(spec, id=model_id, hparams=e["hparams"])
    else:
        spec = Registry.from_settings(Settings(home="/nonexistent")).get(model_id)
        module = architecture_class(spec.arch)(**spec.hparams).eval()
    net = describe(spec, module)
    x = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
    with torch.inference_mode():
        net(x)
""")


def net_peaks(env: dict[str, str]) -> list[tuple[str, int, float]]:
    """(model, batch, peak GiB) of loading each full-size face network and one forward at the
    pipeline's CPU batch size."""
    out = []
    for model_id in FULL:
        rc, peak, tail, stdout = peak_of([sys.executable, "-c", NET_SCRIPT, model_id], env, 900)
        out.append((model_id, int(stdout.strip() or 0) if rc == 0 else 0,
                    peak if rc == 0 else float("nan")))
        if rc:
            print(f"  net {model_id}: exit {rc}: {tail}")
    return out


def tile_peaks(env: dict[str, str], side: int) -> list[tuple[str, float]]:
    out = []
    for model_id in ("tiny-realesrgan-x2", "realesrgan-x2plus", "tiny-realesrgan-x4",
                     "realesrgan-x4plus"):
        rc, peak, tail, _ = peak_of([sys.executable, "-c", TILE_SCRIPT, model_id, str(side),
                                     str(REPO / "tests")], env, 600)
        out.append((model_id, peak if rc == 0 else float("nan")))
        if rc:
            print(f"  tile {model_id}: exit {rc}: {tail}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--engine", default="torch",
                        help="RESTORA_ENGINE for the runs (default torch: no export in the peak)")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds per case")
    parser.add_argument("--no-tiles", action="store_true",
                        help="skip the full-size network runs (tiles and face batches)")
    parser.add_argument("--full-faces", action="store_true",
                        help="full-size random-weight face networks in the tool runs")
    parser.add_argument("--prepare", action="store_true",
                        help="first run `restora models engines --prepare` (the deploy step: "
                             "exports and checks every network's engine) as its own process, "
                             "so the cases measure warm caches")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"shared data folder not found at {SHARED} (set RESTORA_SHARED)")
    sys.path.insert(0, str(REPO / "src"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="restora-mem-") as tmp:
        folder = Path(tmp)
        photo = build_photo(folder)
        gray = build_photo(folder, gray=True) if "photo-gray-colorize" in args.cases else None
        manifest = build_models(folder, args.full_faces)
        env = {**os.environ, "RESTORA_HOME": str(folder / "home"),
               "RESTORA_MODELS": str(manifest), "RESTORA_ENGINE": args.engine,
               "RESTORA_OFFLINE": "1", "RESTORA_THREADS": "2",
               # x4 of 24 MP is 384 MP: over the default output limit (100 MP), raised here
               # to measure it
               "RESTORA_MAX_OUTPUT_PIXELS": "400000000",
               "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                              os.environ.get("PYTHONPATH", "")])}
        faces = (f"full-size random weights: {', '.join(FULL)}" if args.full_faces else
                 "tiny conformance GFPGAN/CodeFormer/ParseNet")
        print(f"input {WIDTH}x{HEIGHT} JPEG ({photo.stat().st_size / 1e6:.1f} MB); engine "
              f"{args.engine}; real RetinaFace MobileNet-0.25; {faces}; slim RRDBNet x2/x4 "
              "(4 features, 1 block); tiny conformance scratch U-Net, LaMa, DDColor")
        if args.prepare:
            t0 = time.monotonic()
            rc, peak, tail, _ = peak_of([sys.executable, "-m", "restora", "models", "engines",
                                         "--prepare"], env, args.timeout)
            rows.append({"case": "prepare", "command": "models engines", "options": "--prepare",
                         "exit": rc, "output": "-", "faces": "-", "peakGiB": round(peak, 2),
                         "seconds": round(time.monotonic() - t0, 1), "stderr": tail if rc else ""})
            print(f"  models engines --prepare: exit {rc}, peak {peak:.2f} GiB, "
                  f"{time.monotonic() - t0:.0f} s" + (f"  [{tail}]" if rc else ""))
        for case in args.cases:
            command, extra = CASES[case]
            src = gray if case == "photo-gray-colorize" else photo
            out = folder / "out" / case
            cmd = [sys.executable, "-m", "restora", command, str(src), "-o", str(out), *extra,
                   "--json"]
            t0 = time.monotonic()
            rc, peak, tail, stdout = peak_of(cmd, env, args.timeout)
            try:
                record = json.loads(stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                record = {}
            faces = record.get("facesDetected", record.get("facesEnhanced", "-"))
            seconds = time.monotonic() - t0
            produced = sorted(p for p in out.glob("*") if "preview" not in p.name) \
                if out.exists() else []
            size = "-"
            if rc == 0 and produced:
                from PIL import Image

                Image.MAX_IMAGE_PIXELS = None
                with Image.open(produced[0]) as im:
                    size = f"{im.width}x{im.height}"
            rows.append({"case": case, "command": command, "options": " ".join(extra),
                         "exit": rc, "output": size, "faces": faces,
                         "peakGiB": round(peak, 2), "estimates": record.get("estimates"),
                         "seconds": round(seconds, 1), "stderr": tail if rc else ""})
            print(f"  {case}: exit {rc}, {size}, {faces} face(s), peak {peak:.2f} GiB, "
                  f"{seconds:.0f} s"
                  + (f"  [{tail}]" if rc else ""))
            sys.stdout.flush()
            if out.exists():
                for p in out.glob("*"):
                    p.unlink()
        tiles = [] if args.no_tiles else tile_peaks(env, 256 + 2 * 16)
        nets = [] if args.no_tiles else net_peaks(env)
    print()
    print("| tool | options | exit | output | faces | peak GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['command']} | {r['options'] or '(defaults)'}"
              f"{' (gray input)' if 'gray' in r['case'] else ''} | {r['exit']} | {r['output']} "
              f"| {r['faces']} | {r['peakGiB']:.2f} |")
    if tiles:
        print()
        print("One 288x288 RRDBNet tile forward (torch, 2 threads), process peak:")
        for model_id, peak in tiles:
            print(f"  {model_id:22s} {peak:.2f} GiB")
        d2 = tiles[1][1] - tiles[0][1]
        d4 = tiles[3][1] - tiles[2][1]
        print(f"full-size tile adds {d2:+.2f} GiB (x2) and {d4:+.2f} GiB (x4) over the tiny "
              "network: add it to the upscaling rows above for full-size Real-ESRGAN")
    if nets:
        print()
        print("Full-size face network, load + one forward at the pipeline's CPU batch "
              "(torch, 2 threads), process peak:")
        for model_id, batch, peak in nets:
            print(f"  {model_id:22s} batch {batch}: {peak:.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "tiles": tiles, "nets": nets},
                                        indent=2))


if __name__ == "__main__":
    main()
