"""enhance_faces end to end with the tiny conformance networks and the real detectors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_path
from restora.config import Settings
from restora.errors import Cancelled, InvalidParameter, ModelNotInstalled, UnknownModel
from restora.io import Image, decode
from restora.models.runtime import Runtime
from restora.pipeline.enhance import enhance_faces
from restora.models.nets import wrap
from restora.pipeline.restore import restore_faces
from tiny_models import write_tiny_manifest

ALL = None
DETECTORS = {"retinaface-mobilenet0.25-facelibcfg", "yunet-2026may"}


def make_runtime(tmp: Path, include: set[str] | None = ALL) -> Runtime:
    manifest = write_tiny_manifest(tmp, include=include)
    return Runtime(Settings(models=manifest, home=tmp / "home"), device="cpu")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    return make_runtime(tmp_path_factory.mktemp("enhance"))


def photo(name: str) -> Image:
    return decode(shared_path("testdata", "photos", name))


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def face_region(result, pad: int = 0) -> np.ndarray:
    h, w = result.image.height, result.image.width
    mask = np.zeros((h, w), bool)
    s = result.scale
    for f in result.faces:
        mask[max(0, (f.y - pad) * s):(f.y + f.h + pad) * s, max(0, (f.x - pad) * s):(f.x + f.w + pad) * s] = True
    return mask


def test_gfpgan_restores_every_face_and_nothing_else(runtime: Runtime) -> None:
    src = photo("00.jpg")
    result = enhance_faces(src, runtime=runtime, model="gfpgan", seed=0)
    assert result.faces_detected == 4 and len(result.faces) == 4
    assert result.model == "tiny-gfpgan" and result.model_kind == "gfpgan"
    assert result.mask == "parsenet" and result.upscaler is None and result.scale == 1
    out = result.image.pixels
    assert out.shape == src.pixels.shape and out.dtype == np.uint8
    changed = np.any(out != src.pixels, axis=2)
    for f in result.faces:
        assert 0 <= f.x and 0 <= f.y and f.x + f.w <= src.width and f.y + f.h <= src.height
        assert changed[f.y:f.y + f.h, f.x:f.x + f.w].mean() > 0.2
    # far from every face (2 box sizes away) the photo is untouched
    assert not (changed & ~face_region(result, pad=60)).any()
    d = result.to_dict()
    assert d["facesDetected"] == 4 and len(d["faces"][0]["landmarks"]) == 5
    assert set(d["timings"]) >= {"decode", "detect", "align", "restore", "upscale", "paste"}
    assert (d["width"], d["height"]) == (src.width, src.height)


def test_seed_makes_gfpgan_reproducible(runtime: Runtime) -> None:
    src = photo("03.jpg")
    a = enhance_faces(src, runtime=runtime, model="gfpgan", seed=7).image.pixels
    b = enhance_faces(src, runtime=runtime, model="gfpgan", seed=7).image.pixels
    c = enhance_faces(src, runtime=runtime, model="gfpgan", seed=8).image.pixels
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_results_do_not_depend_on_free_memory(runtime: Runtime, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """Unseeded too: batch sizes follow the device, not the memory free at the moment (which
    used to split the faces differently and move results by a grey level)."""
    src = photo("00.jpg")
    net = runtime.load("tiny-codeformer")
    batches: list[int] = []
    hook = net.module.register_forward_pre_hook(
        lambda _m, args: batches.append(int(args[0].shape[0])))
    try:
        plenty = enhance_faces(src, runtime=runtime, model="codeformer").image.pixels
        real = os.sysconf
        # the OS now reports a single free page
        monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_AVPHYS_PAGES" else real(name))
        scarce = enhance_faces(src, runtime=runtime, model="codeformer").image.pixels
    finally:
        hook.remove()
    # the four faces in two forward passes both times (the CPU budget: two 512 faces a batch)
    assert batches == [2, 2, 2, 2]
    assert np.array_equal(plenty, scarce)


def test_each_model_detects_with_its_reference_rule(runtime: Runtime) -> None:
    """GFPGAN: the photo's own resolution, RetinaFace at 0.97 (GFPGANer); CodeFormer: 640 px,
    0.8 (its inference). On the small photos 01 and 05, enlarged to 640 px, RetinaFace finds one
    false face more; at native resolution it finds the 4 and 1 faces YuNet finds."""
    for name, gfpgan, codeformer in (("01.jpg", 4, 5), ("05.jpg", 1, 2)):
        src = photo(name)
        g = enhance_faces(src, runtime=runtime, model="gfpgan", strength=0.0)
        c = enhance_faces(src, runtime=runtime, model="codeformer", strength=0.0)
        assert (g.faces_detected, c.faces_detected) == (gfpgan, codeformer), name
        assert all(f.score > 0.97 for f in g.faces)


THIN_SCRIPT = """
import io, resource, sys
import numpy as np
from PIL import Image as PILImage
from restora.config import Settings
from restora.models.runtime import Runtime
from restora.pipeline.enhance import enhance_faces

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def encoded(w, h, orientation):
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    PILImage.fromarray(pixels).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()

manifest, home, photo = sys.argv[1:4]
runtime = Runtime(Settings(models=manifest, home=home), device="cpu")
detectors = ("retinaface-mobilenet0.25-facelibcfg", "yunet-2026may")
for model in ("gfpgan", "codeformer"):  # warm-up: loads every network, a normal photo at 640
    for detector in detectors:
        enhance_faces(photo, runtime=runtime, model=model, detector=detector, seed=0)
base = peak_mib()
for w, h, orientation in ((4000, 1, 1), (400, 1, 1), (300, 1, 6), (4000, 3, 1), (2, 3000, 1)):
    for model in ("gfpgan", "codeformer"):
        for detector in detectors:
            r = enhance_faces(encoded(w, h, orientation), runtime=runtime, model=model,
                              detector=detector)
            size = (r.image.width, r.image.height)
            assert size == ((h, w) if orientation == 6 else (w, h)), size
    # a client box over the whole thin image: the landmark search (the face is then too
    # small to restore: reported, not restored)
    r = enhance_faces(encoded(4000, 1, 1), runtime=runtime, model="gfpgan", seed=0,
                      faces=[{"x": 0, "y": 0, "w": 4000, "h": 1}])
    assert r.faces_detected == 1 and r.landmark_source == "box" and not r.faces[0].restored
print(round(peak_mib() - base, 1))
"""


def test_thin_images_do_not_amplify_memory(tmp_path: Path) -> None:
    """4000 x 1, 400 x 1, 300 x 1 rotated by EXIF, ...: the short-side rule enlarged them to
    gigabytes for the detector; now the peak RSS does not grow past a normal photo's."""
    import subprocess
    import sys

    manifest = write_tiny_manifest(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    out = subprocess.run([sys.executable, "-c", THIN_SCRIPT, str(manifest), str(tmp_path / "home"),
                          str(shared_path("testdata", "photos", "02.png"))],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    growth = float(out.stdout.strip().splitlines()[-1])
    assert growth < 100, f"peak RSS grew by {growth} MiB on thin images"


def test_codeformer_honours_fidelity(runtime: Runtime) -> None:
    src = photo("04.jpg")
    r0 = enhance_faces(src, runtime=runtime, model="codeformer", fidelity=0.0)
    r1 = enhance_faces(src, runtime=runtime, model="codeformer", fidelity=1.0)
    assert r0.model == "tiny-codeformer" and r0.model_kind == "codeformer"
    assert not np.array_equal(r0.image.pixels, r1.image.pixels)


def test_batches_give_the_same_faces_as_one_at_a_time(runtime: Runtime) -> None:
    restorer = runtime.load("tiny-codeformer")
    rng = np.random.default_rng(1)
    crops = [rng.random((512, 512, 3), dtype=np.float32) for _ in range(2)]
    together = restore_faces(crops, restorer, fidelity=0.5, batch_size=2)
    single = restore_faces(crops, restorer, fidelity=0.5, batch_size=1)
    for a, b in zip(together, single):
        assert a.shape == (512, 512, 3) and a.dtype == np.float32
        assert np.abs(a - b).max() < 1e-3


def test_strength_zero_returns_the_input_pixels(runtime: Runtime) -> None:
    src = photo("02.png")
    result = enhance_faces(src, runtime=runtime, strength=0.0)
    assert result.faces_detected == 4 and result.model is None
    assert np.array_equal(result.image.pixels, src.pixels)
    assert np.array_equal(result.image.alpha, src.alpha)


def test_identity_restorer_through_the_whole_pipeline(runtime: Runtime) -> None:
    src = photo("02.png")
    smooth = cv2.GaussianBlur(src.pixels, (0, 0), 2.0)
    img = src.with_pixels(smooth, src.alpha)
    ident = wrap(Identity(), "face-restoration")
    result = enhance_faces(img, runtime=runtime, restorer=ident, strength=1.0)
    assert result.faces_detected == 4
    diff = np.abs(result.image.pixels.astype(np.int32) - smooth).max(axis=2)
    assert diff[1:-1, 1:-1].max() <= 2
    assert np.array_equal(result.image.alpha, src.alpha)


def test_auto_picks_by_face_and_says_why(runtime: Runtime) -> None:
    # the first choice per face (identity off: no further candidates are tried)
    small = enhance_faces(photo("04.jpg"), runtime=runtime, seed=0, identity=False)  # 22 px
    assert small.model_kind == "codeformer" and "degraded" in small.reason
    assert small.faces[0].restoration["model"] == "tiny-codeformer"
    assert small.faces[0].identity.verdict == "unknown"
    large = enhance_faces(photo("03.jpg"), runtime=runtime, seed=0, identity=False)  # 47 px
    assert large.model_kind == "gfpgan" and large.reason.startswith("auto: gfpgan")


def test_auto_uses_the_only_installed_restorer(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, DETECTORS | {"tiny-gfpgan"})
    result = enhance_faces(photo("00.jpg"), runtime=rt, seed=0)
    assert result.model == "tiny-gfpgan" and "only" in result.reason
    assert result.mask == "square"  # no ParseNet installed: the feathered square alone


def test_missing_restorer_is_a_clear_error(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, DETECTORS)
    with pytest.raises(ModelNotInstalled) as info:
        enhance_faces(photo("03.jpg"), runtime=rt)
    assert "restora models pull" in info.value.message
    # ...but an image without faces needs no restorer
    flat = Image(pixels=np.full((300, 400, 3), 90, np.uint8))
    assert enhance_faces(flat, runtime=rt).faces_detected == 0


def test_no_face_returns_the_image_unchanged_or_upscaled(runtime: Runtime, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (0, 0), 2)
    img = Image(pixels=noise)
    same = enhance_faces(img, runtime=runtime)
    assert same.faces_detected == 0 and same.model is None and same.reason == "no faces detected"
    assert np.array_equal(same.image.pixels, noise)
    big = enhance_faces(img, runtime=runtime, upscale=2)
    assert big.image.pixels.shape == (240, 320, 3) and big.upscaler == "tiny-realesrgan-x2"
    rt = make_runtime(tmp_path, DETECTORS | {"tiny-gfpgan"})
    lanczos = enhance_faces(img, runtime=rt, upscale=4, bg_upscale=True)
    assert lanczos.upscaler == "lanczos" and lanczos.image.pixels.shape == (480, 640, 3)
    assert any("Lanczos" in w for w in lanczos.warnings)


def test_upscale_keeps_faces_and_alpha_in_place(runtime: Runtime) -> None:
    src = photo("06.png")  # RGBA
    assert src.alpha is not None
    result = enhance_faces(src, runtime=runtime, model="gfpgan", upscale=2, seed=1)
    assert result.upscaler == "tiny-realesrgan-x2" and result.scale == 2
    assert result.image.pixels.shape == (src.height * 2, src.width * 2, 3)
    assert result.image.alpha is not None and result.image.alpha.shape == (src.height * 2, src.width * 2)
    # faces are reported in input coordinates
    assert all(f.x + f.w <= src.width and f.y + f.h <= src.height for f in result.faces)
    x4 = enhance_faces(photo("04.jpg"), runtime=runtime, model="gfpgan", upscale=4,
                       face_upsample=True, seed=1)
    assert x4.upscaler == "tiny-realesrgan-x4" and x4.image.width == 4 * 225


def test_bg_upscale_at_scale_one_keeps_the_size(runtime: Runtime) -> None:
    src = photo("04.jpg")
    result = enhance_faces(src, runtime=runtime, model="gfpgan", bg_upscale=True, seed=1)
    assert result.upscaler == "tiny-realesrgan-x2" and result.image.pixels.shape == src.pixels.shape


def test_grayscale_photos_stay_gray(runtime: Runtime) -> None:
    src = photo("03.jpg")
    gray = cv2.cvtColor(cv2.cvtColor(src.pixels, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    result = enhance_faces(src.with_pixels(gray), runtime=runtime, model="gfpgan", seed=2)
    out = result.image.pixels
    assert result.faces_detected == 1
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    f = result.faces[0]
    face_out = out[f.y:f.y + f.h, f.x:f.x + f.w].astype(float)
    face_in = gray[f.y:f.y + f.h, f.x:f.x + f.w].astype(float)
    assert not np.array_equal(face_out, face_in)
    assert face_out.mean() > 0.5 * face_in.mean()  # not the black faces of the reference


def test_16bit_round_trip(runtime: Runtime) -> None:
    src = photo("03.jpg")
    deep = src.with_pixels(src.pixels.astype(np.uint16) * 257)
    r8 = enhance_faces(src, runtime=runtime, model="gfpgan", seed=4)
    r16 = enhance_faces(deep, runtime=runtime, model="gfpgan", seed=4)
    out = r16.image.pixels
    assert out.dtype == np.uint16 and r16.image.bit_depth == 16
    # same faces, same restoration: the 16-bit result rounds to the 8-bit one (a level or two)
    assert np.abs(out.astype(np.int64) / 257.0 - r8.image.pixels).max() <= 2.5
    # untouched pixels keep their full 16-bit values
    far = ~face_region(r16, pad=60)
    assert np.array_equal(out[far], deep.pixels[far])


def test_client_boxes_skip_detection(runtime: Runtime) -> None:
    src = photo("02.png")
    boxes = [{"x": 406, "y": 84, "w": 130, "h": 174}, {"x": 0, "y": 560, "w": 60, "h": 60}]
    result = enhance_faces(src, runtime=runtime, model="gfpgan", faces=boxes, seed=0)
    assert result.faces_detected == 2 and result.landmark_source == "mixed"
    assert (result.faces[0].x, result.faces[0].y, result.faces[0].w, result.faces[0].h) == (406, 84, 130, 174)
    assert result.warnings


def test_only_center_face(runtime: Runtime) -> None:
    result = enhance_faces(photo("00.jpg"), runtime=runtime, model="gfpgan", only_center_face=True)
    assert result.faces_detected == 1
    f = result.faces[0]
    assert abs(f.x + f.w / 2 - 491 / 2) < 100  # one of the two middle faces


def test_progress_and_cancel(runtime: Runtime) -> None:
    seen: list[tuple[str, float]] = []
    enhance_faces(photo("03.jpg"), runtime=runtime, model="gfpgan", progress=lambda s, p: seen.append((s, p)))
    stages = [s for s, _ in seen]
    for name in ("decode", "detect", "align", "restore", "upscale", "paste", "done"):
        assert name in stages
    pct = [p for _, p in seen]
    assert pct == sorted(pct) and pct[-1] == 100.0
    cancel = threading.Event()

    def stop_after_detect(stage: str, _p: float) -> None:
        if stage == "align":
            cancel.set()

    with pytest.raises(Cancelled):
        enhance_faces(photo("03.jpg"), runtime=runtime, model="gfpgan", cancel=cancel,
                      progress=stop_after_detect)


def test_bad_options_are_rejected_before_work(runtime: Runtime) -> None:
    for kwargs in ({"strength": 1.5}, {"fidelity": -0.1}, {"upscale": 3}, {"sensitivity": 2}):
        with pytest.raises(InvalidParameter):
            enhance_faces(b"not even an image", runtime=runtime, **kwargs)
    with pytest.raises(InvalidParameter):
        enhance_faces(photo("03.jpg"), runtime=runtime, model="yunet-2026may")
    with pytest.raises(UnknownModel):  # even when there is no face to restore
        enhance_faces(Image(pixels=np.zeros((64, 64, 3), np.uint8)), runtime=runtime, model="nope")


def test_tiled_upscaling_has_no_seams(runtime: Runtime) -> None:
    """Odd-sized image, small tiles: the same result as one big tile (within half a grey level)."""
    from restora.pipeline.upscale import find_upscaler, load_upscaler, super_resolve

    rgb = photo("04.jpg").pixels[:101, :77].astype(np.float32) / 255.0
    for scale in (2, 4):
        up = load_upscaler(runtime, find_upscaler(runtime, scale))
        assert up.scale == scale
        whole = super_resolve(up, rgb, tile=1000)
        tiled = super_resolve(up, rgb, tile=32, pad=16)
        assert whole.shape == (101 * scale, 77 * scale, 3)
        assert np.abs(whole - tiled).max() < 0.5 / 255


def test_upscaling_streams_tiles_into_the_output(runtime: Runtime) -> None:
    """Peak numpy memory of a network upscale is the output plus a few tiles: never a float
    copy of the image or the canvas (which would be 4 bytes per channel of the output)."""
    import tracemalloc

    from restora.pipeline.upscale import find_upscaler, load_upscaler, upscale_pixels

    up = load_upscaler(runtime, find_upscaler(runtime, 2))
    src = cv2.resize(photo("03.jpg").pixels, (1200, 900), interpolation=cv2.INTER_AREA)
    upscale_pixels(src[:40, :40], 2, up)  # engine built before measuring
    tracemalloc.start()
    try:
        out = upscale_pixels(src, 2, up)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (1800, 2400, 3) and out.dtype == np.uint8
    from restora.pipeline.upscale import TILE, TILE_PAD

    float_tile = (TILE + 2 * TILE_PAD) ** 2 * 2**2 * 3 * 4  # one super-resolved tile in float
    float_canvas = out.size * 4
    assert peak < out.nbytes + 6 * float_tile < float_canvas, peak
    # background enhancement at scale 1 keeps the input size, also streamed
    same = upscale_pixels(src, 1, up)
    assert same.shape == src.shape and same.dtype == np.uint8
    # the per-tile result equals super-resolving the whole image at once, then rounding
    from restora.pipeline.upscale import super_resolve, to_dtype

    small = src[:101, :77]
    whole = to_dtype(super_resolve(up, small.astype(np.float32) / 255.0, tile=1000), np.uint8)
    assert np.abs(upscale_pixels(small, 2, up).astype(int) - whole).max() <= 1


def test_small_faces_get_the_coarse_parser_and_large_pastes_the_exact_one(tmp_path: Path
                                                                         ) -> None:
    """The paste scale reaches the parser: with a coarse (bf16) parser verdict of "within from
    1 parse px per output px, and faster", the faces of 00.jpg pasted at upscale 1 (about 1
    parse px per output px with the tiny networks) use it where they reach that scale, so the
    photo differs from a run without the coarse graph; at upscale 2 every face is pasted larger
    and both runs give the same pixels."""
    import json
    import shutil

    from restora.models.engines import MIXED, bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no bf16 (the coarse parsing graph is OpenVINO bf16)")
    manifest = write_tiny_manifest(tmp_path)
    warm = tmp_path / "warm"

    def run(cache: Path, upscale: int):
        rt = Runtime(Settings(models=manifest, home=tmp_path / "home", engine_cache=cache),
                     device="cpu", engine="auto")
        rt.engines.amx = False  # fp32 is the exact graph on every CPU (AMX: bf16 tried first)
        return enhance_faces(photo("00.jpg"), runtime=rt, model="gfpgan", upscale=upscale,
                             seed=3)

    run(warm, 1)
    verdicts = {}
    for name, scale in (("coarse", 1), ("exact", None)):
        cache = tmp_path / name
        shutil.copytree(warm, cache)
        for precision, k in (("bf16", scale), (MIXED, None)):  # bf16 the only coarse graph
            meta_path = next(p for p in cache.rglob("meta.json")
                             if json.loads(p.read_text())["key"]["model_id"] == "tiny-parsenet"
                             and json.loads(p.read_text())["key"]["precision"] == precision)
            meta = json.loads(meta_path.read_text())
            meta_path.write_text(json.dumps({**meta, "scale": k, "cpu_s": 0.0}))
        verdicts[name] = cache
    small = {name: run(cache, 1) for name, cache in verdicts.items()}
    # some faces of 00.jpg reach 1 parse px per output px, some do not: both graphs ran
    assert small["coarse"].engines["tiny-parsenet"].endswith("/fp32+bf16")
    assert small["exact"].engines["tiny-parsenet"].endswith("/fp32")
    assert not np.array_equal(small["coarse"].image.pixels, small["exact"].image.pixels)
    large = {name: run(cache, 2) for name, cache in verdicts.items()}
    np.testing.assert_array_equal(large["coarse"].image.pixels, large["exact"].image.pixels)
    # the report says what this job ran: no face reached the coarse graph's scale
    assert large["coarse"].engines["tiny-parsenet"].endswith("/fp32")
