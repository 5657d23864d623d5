"""Large photos (issue #15, item 5): bounded memory, the output-size limit, the up-front
estimate (library, CLI, service), background upscaling on the fast engine, the streaming PNG.

Memory is checked with tracemalloc (numpy buffers are traced; torch's are not, and tiles bound
those anyway): the upscale + paste path and the PNG encoder must stay well below what one more
full-size copy of the canvas would cost. No timing decides a pass.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import REPO, shared_path
from tiny_models import write_tiny_manifest

from restora.config import Settings
from restora.errors import OutputTooLarge
from restora.io import decode, encode_to
from restora.io.image import Image
from restora.io.png import BAND, write_png
from restora.models.runtime import Runtime
from restora.pipeline.enhance import enhance_faces
from restora.pipeline.paste import PasteFace, paste_faces
from restora.pipeline.upscale import TILE, start_upscale, tile_count


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_manifest(tmp_path_factory.mktemp("models"))


def runtime(manifest: Path, home: Path, **kw: object) -> Runtime:
    return Runtime(Settings(home=home, models=manifest, **kw), device="cpu", engine="torch")


def test_upscale_and_paste_never_copy_the_canvas(manifest: Path, tmp_path: Path) -> None:
    """The canvas path of enhance_faces: tiles streamed into a uint8 canvas, three large
    faces (a 512 crop at ~2.4x, one over the edge) pasted into it in place."""
    rng = np.random.default_rng(1)
    src = cv2.resize(rng.integers(0, 256, (100, 140, 3), dtype=np.uint8), (1400, 1000),
                     interpolation=cv2.INTER_CUBIC)
    up = runtime(manifest, tmp_path / "home").load("tiny-realesrgan-x2")
    up(np.zeros((1, 3, 32, 32), np.float32))  # engine built before measuring
    face = cv2.resize(rng.random((64, 64, 3), dtype=np.float32), (512, 512))
    mask = np.ones((512, 512), np.float32)
    faces = [PasteFace(face=face, mask=mask, square=sq,
                       matrix=np.array([[2.4, 0.3, x], [-0.3, 2.4, y]]))
             for x, y, sq in ((200, 150, True), (800, 700, False), (1900, 1300, True))]
    tracemalloc.start()
    try:
        canvas = start_upscale(src, 2, up).run()
        out = paste_faces(canvas, faces, 0.8, upscale=2, out=canvas)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out is canvas and canvas.shape == (2000, 2800, 3)
    print(f"traced peak {peak / 1e6:.1f} MB for a {canvas.nbytes / 1e6:.1f} MB canvas")
    # The canvas plus one tile's and one face strip's buffers, whose size does not depend on
    # the canvas (TILE, PASTE_STRIP rows of a face's box): ~12 MB here. One more uint8 copy
    # of the canvas (the old paste) would add 16.8 MB, a float32 canvas 67 MB.
    assert peak < canvas.nbytes + 16e6, (peak, canvas.nbytes)


def _encode_peak(img: Image, path: Path) -> int:
    tracemalloc.start()
    try:
        with open(path, "wb") as fh:
            encode_to(fh, img, "png")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_png_streams_without_copying_the_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tall = cv2.resize(rng.integers(0, 256, (80, 40, 3), dtype=np.uint8), (2000, 4000),
                      interpolation=cv2.INTER_CUBIC)
    short = np.ascontiguousarray(tall[:1000])
    p_short = _encode_peak(Image(pixels=short), tmp_path / "short.png")
    p_tall = _encode_peak(Image(pixels=tall), tmp_path / "tall.png")
    print(f"traced peak {p_short / 1e6:.1f} MB ({short.nbytes / 1e6:.0f} MB image), "
          f"{p_tall / 1e6:.1f} MB ({tall.nbytes / 1e6:.0f} MB image)")
    # a band at a time: four times the rows cost no more memory, and far less than a copy
    assert p_tall < 1.2 * p_short + 1e6
    assert p_tall < 0.35 * tall.nbytes
    np.testing.assert_array_equal(np.asarray(PILImage.open(tmp_path / "tall.png")), tall)


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_png_writer_round_trips_across_bands(depth: int, with_alpha: bool) -> None:
    rng = np.random.default_rng(depth)
    dtype = np.uint16 if depth == 16 else np.uint8
    top = 65535 if depth == 16 else 255
    h = 2 * BAND + 7  # bands of BAND rows plus a short last one
    pixels = rng.integers(0, top + 1, (h, 45, 3), dtype=dtype)
    pixels[: h // 2] = np.linspace(0, top, 45, dtype=dtype)[None, :, None]  # smooth part too
    alpha = rng.integers(0, top + 1, (h, 45), dtype=dtype) if with_alpha else None
    buf = io.BytesIO()
    write_png(buf, pixels, alpha, icc=None, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00")
    back = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == dtype
    want = pixels if alpha is None else np.dstack([pixels, alpha])
    got = back[..., [2, 1, 0]] if alpha is None else back[..., [2, 1, 0, 3]]
    np.testing.assert_array_equal(got, want)
    assert b"eXIf" in buf.getvalue()[:200]


# --- output limit -----------------------------------------------------------------------------

def test_too_large_output_is_refused_before_any_work(tmp_path: Path) -> None:
    img = decode(shared_path("testdata", "photos", "03.jpg").read_bytes())  # 400 x 225
    # no models at all: had detection started, this would be ModelNotInstalled
    rt = Runtime(Settings(home=tmp_path / "empty", max_output_pixels=400 * 225 * 4 - 1),
                 device="cpu")
    with pytest.raises(OutputTooLarge) as err:
        enhance_faces(img, runtime=rt, upscale=2)
    assert err.value.http_status == 413 and err.value.code == "output_too_large"
    assert "800x450" in err.value.message and "RESTORA_MAX_OUTPUT_PIXELS" in err.value.message


def test_default_limit_allows_24mp_x2_and_refuses_x4() -> None:
    from restora.io.limits import Limits

    limits = Limits.from_settings(Settings())
    limits.check_output(12000, 8000)  # 24 MP x2 = 96 MP
    with pytest.raises(OutputTooLarge):
        limits.check_output(24000, 16000)  # x4 = 384 MP


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "restora", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_refuses_too_large_output_in_one_line(manifest: Path, tmp_path: Path) -> None:
    src = shared_path("testdata", "photos", "03.jpg")
    env = {"RESTORA_HOME": str(tmp_path / "home"), "RESTORA_MODELS": str(manifest),
           "RESTORA_MAX_OUTPUT_PIXELS": "1000000"}
    r = _cli(["enhance-faces", str(src), "-o", str(tmp_path / "out"), "--upscale", "4"], env,
             tmp_path)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "output_too_large" in lines[0] and "1600x900" in lines[0], \
        r.stderr
    assert "Traceback" not in r.stderr and not list((tmp_path / "out").glob("*"))


# --- estimate ---------------------------------------------------------------------------------

def test_estimate_comes_before_the_faces_and_is_in_the_result(manifest: Path,
                                                              tmp_path: Path) -> None:
    img = decode(shared_path("testdata", "photos", "02.png").read_bytes())  # 1204 x 645
    rt = runtime(manifest, tmp_path / "home")
    events: list[tuple[str, object]] = []
    result = enhance_faces(img, runtime=rt, upscale=2, bg_upscale=True,
                           progress=lambda s, p: events.append(("progress", s)),
                           on_estimate=lambda e: events.append(("estimate", e)))
    kinds = [k if k == "estimate" else v for k, v in events]
    first = kinds.index("estimate")
    assert first < kinds.index("restore") < kinds.index("upscale") < kinds.index("paste")
    est = events[first][1]
    assert isinstance(est, dict)
    total = tile_count(img.height, img.width, TILE)
    assert est["work"] == {"upscaleTiles": total - 2, "faces": 4}
    assert est["basis"] == "upscaleTiles:measured,faces:nominal"
    assert est["seconds"] > 0 and est["long"] is (est["seconds"] >= 60)
    report = result.to_dict()
    assert report["estimate"] == est and report["estimatedSeconds"] == est["seconds"]
    # later estimates use the measured cost per face
    later = [e for k, e in events[first + 1:] if k == "estimate"]
    assert any(isinstance(e, dict) and e["basis"].endswith("faces:measured") for e in later)


def test_estimate_counts_masks_at_what_is_known_of_their_cost(manifest: Path,
                                                             tmp_path: Path) -> None:
    """The up-front cost of a face's mask: the restore's (nominal 1.5 s each) where nothing is
    known; the parser's probe CPU seconds per face over the restorer's where the runtime holds
    both engines with timed probes (set here as a cache verdict sets them, then the real
    verdicts of exported engines); nothing without a face parser installed."""
    img = decode(shared_path("testdata", "photos", "00.jpg").read_bytes())  # 4 faces
    rt = runtime(manifest, tmp_path / "home")
    est = enhance_faces(img, runtime=rt, model="gfpgan").estimate
    assert est is not None and est["work"] == {"faces": 4} and est["basis"] == "faces:nominal"
    assert est["remainingSeconds"] == pytest.approx(4 * (1.5 + 1.5))
    # the runtime now holds both networks, engines built but their probes untimed (torch)
    parser, restorer = rt.load("tiny-parsenet"), rt.load("tiny-gfpgan")
    assert parser.engine is not None and restorer.engine is not None
    again = enhance_faces(img, runtime=rt, model="gfpgan").estimate
    assert again is not None and again["remainingSeconds"] == est["remainingSeconds"]
    parser.engine.probe_cpu_s = 0.1  # a probe of two faces
    restorer.engine.probe_cpu_s = 0.1  # GFPGAN's graph takes one face
    est = enhance_faces(img, runtime=rt, model="gfpgan").estimate
    assert est is not None and est["remainingSeconds"] == pytest.approx(4 * (1.5 + 0.75))
    restorer.engine.probe_cpu_s = None  # one of the two unknown: the nominal assumption
    est = enhance_faces(img, runtime=rt, model="gfpgan").estimate
    assert est is not None and est["remainingSeconds"] == pytest.approx(4 * (1.5 + 1.5))

    # exported engines under auto: every verdict times its probe, restorers' too, so the
    # second job's estimate uses the measured parser / restorer ratio
    auto = Runtime(Settings(home=tmp_path / "auto", models=manifest), device="cpu",
                   engine="auto")
    auto.engines.amx = False  # the same candidates on every CPU
    enhance_faces(img, runtime=auto, model="gfpgan")  # exports and verifies both
    parser, restorer = auto.load("tiny-parsenet"), auto.load("tiny-gfpgan")
    assert restorer.engine_name != "torch" and parser.engine_name != "torch"
    verdicts = [json.loads(m.read_text()) for m in (tmp_path / "auto").rglob("meta.json")]
    timed = [m["cpu_s"] for m in verdicts if m["key"]["model_id"] == "tiny-gfpgan"
             and (m["key"]["engine"], m["key"]["precision"]) == (restorer.engine_name,
                                                                 restorer.precision)]
    assert timed == [restorer.engine.probe_cpu_s] and timed[0] > 0
    ratio = (parser.engine.probe_cpu_s / 2) / restorer.engine.probe_cpu_s  # probes: 2 faces, 1
    est = enhance_faces(img, runtime=auto, model="gfpgan").estimate
    assert est is not None  # rounded to 0.1 s: within half a step (and a float's error, for
    # a value on the half step: 7.35 came back 7.4 once, 0.05000000000000071 off)
    assert est["remainingSeconds"] == pytest.approx(4 * (1.5 + 1.5 * ratio), abs=0.05 + 1e-9)

    square = write_tiny_manifest(tmp_path, include={"tiny-gfpgan", "yunet-2026may"})
    result = enhance_faces(img, runtime=runtime(square, tmp_path / "home"), model="gfpgan")
    assert result.mask == "square" and result.estimate is not None
    assert result.estimate["remainingSeconds"] == pytest.approx(4 * 1.5)


def test_cli_announces_a_long_job_up_front(manifest: Path, tmp_path: Path) -> None:
    src = shared_path("testdata", "photos", "00.jpg")  # 491 x 310, 4 faces
    env = {"RESTORA_HOME": str(tmp_path / "home"), "RESTORA_MODELS": str(manifest),
           "RESTORA_ENGINE": "torch", "RESTORA_LONG_JOB_S": "0"}  # every job is "long"
    r = _cli(["enhance-faces", str(src), "-o", str(tmp_path / "out"), "--upscale", "2",
              "--bg-upscale", "--json"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    n = tile_count(310, 491) - 2
    assert "00.jpg: this will take about" in r.stderr
    assert f"({n} upscale tiles, 4 face(s))" in r.stderr
    record = json.loads(r.stdout.strip().splitlines()[-1])
    assert record["estimate"]["long"] is True and record["estimate"]["work"]["upscaleTiles"] == n
    assert any("this will take about" in w for w in record["warnings"])
    # not long: no line
    env["RESTORA_LONG_JOB_S"] = "100000"
    r = _cli(["enhance-faces", str(src), "-o", str(tmp_path / "out2"), "--upscale", "2"], env,
             tmp_path)
    assert r.returncode == 0 and "this will take" not in r.stderr


def test_service_progress_frames_carry_the_estimate(manifest: Path, tmp_path: Path) -> None:
    import httpx

    sys.path.insert(0, str(REPO / "tests" / "service"))
    from service_helpers import live_server, make_settings, wait_for
    from test_jobs_sse import parse_sse

    from restora.service.app import RUNTIME_FROM_SETTINGS
    from restora.service.tools import default_tools

    settings = make_settings(tmp_path / "home", models=manifest, device="cpu", threads=2,
                             engine="torch")
    src = shared_path("testdata", "photos", "00.jpg").read_bytes()  # 4 faces
    with live_server(settings, tools=default_tools(), runtime=RUNTIME_FROM_SETTINGS) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/api/v1/tools/enhance-faces", files={"file": ("00.jpg", src, "image/jpeg")},
                   data={"settings": json.dumps({"upscale": 2, "bgUpscale": True})})
        assert r.status_code == 202, r.text
        job = r.json()["jobId"]
        snap = wait_for(lambda: (s := c.get(f"/api/v1/jobs/{job}").json())["status"]
                        in ("succeeded", "failed") and s, timeout=120, interval=0.1)
        assert snap["status"] == "succeeded", snap
        assert snap["result"]["estimate"]["work"]["upscaleTiles"] == tile_count(310, 491) - 2
        assert snap["result"]["estimatedSeconds"] == snap["result"]["estimate"]["seconds"]
        frames = [f for f in parse_sse(c.get(f"/api/v1/jobs/{job}/progress").text)
                  if f.get("event") == "progress"]
        with_est = [f["data"] for f in frames if "estimate" in f["data"]]
        assert with_est, frames
        first = with_est[0]["estimate"]
        assert set(first) == {"seconds", "remainingSeconds", "long", "work", "basis"}
        # sent before the faces were restored: an earlier frame than the restore stage's
        steps = [f["data"].get("step") for f in frames]
        assert steps.index(with_est[0]["step"]) <= steps.index("restore")


# --- the fast engine --------------------------------------------------------------------------

def test_background_upscaling_runs_on_the_fast_engine(manifest: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    img = decode(shared_path("testdata", "photos", "03.jpg").read_bytes())
    rt = Runtime(Settings(home=tmp_path / "home", models=manifest), device="cpu", engine="auto")
    result = enhance_faces(img, runtime=rt, upscale=1, bg_upscale=True, model="gfpgan")
    eng = result.to_dict()["engines"]["tiny-realesrgan-x2"]
    # auto: the fastest engine within the upscale bound (PSNR >= 50 dB vs torch fp32)
    assert eng in ("openvino/fp32", "onnxruntime/fp32", "openvino/bf16"), eng
    assert result.upscaler == "tiny-realesrgan-x2"


def test_a_first_job_builds_its_engines_before_the_canvas_and_the_estimate(
        manifest: Path, tmp_path: Path) -> None:
    """On a fresh engine cache, the networks the job surely runs (the faces' restorer, the
    parser with its coarse graphs, the upscaler) are exported in the "load" stage: before the
    estimate, the upscale tiles (the output canvas) and the faces. So no export's memory stacks
    on the canvas, and the estimate's measured cost per face carries no export."""
    pytest.importorskip("openvino")
    img = decode(shared_path("testdata", "photos", "03.jpg").read_bytes())
    home = tmp_path / "home"
    rt = Runtime(Settings(home=home, models=manifest), device="cpu", engine="auto")
    rt.engines.amx = False  # the same candidates on every CPU
    events: list[tuple[str, object]] = []
    entries: dict[str, int] = {}

    def progress(stage: str, _pct: float) -> None:
        events.append(("progress", stage))
        entries.setdefault(stage, len(list(home.rglob("meta.json"))))  # verdicts on entry

    result = enhance_faces(img, runtime=rt, model="gfpgan", upscale=2, bg_upscale=True,
                           progress=progress,
                           on_estimate=lambda e: events.append(("estimate", "")))
    kinds = [k if k == "estimate" else v for k, v in events]
    assert kinds.index("align") < kinds.index("load") < kinds.index("estimate") \
        < kinds.index("restore")
    assert result.faces_detected >= 1 and result.timings["load"] > 0
    engines = result.to_dict()["engines"]
    assert {"tiny-gfpgan", "tiny-parsenet", "tiny-realesrgan-x2"} <= set(engines)
    for model in ("tiny-gfpgan", "tiny-parsenet", "tiny-realesrgan-x2"):
        assert not engines[model].startswith("torch"), engines  # exported, not torch eager
    # every verdict (exports, the parser's coarse graphs included) was written in "load"
    final = len(list(home.rglob("meta.json")))
    assert entries["load"] < entries["restore"] == final
    # a second job finds them all: nothing is built again
    before = {p: p.stat().st_mtime_ns for p in home.rglob("meta.json")}
    enhance_faces(img, runtime=rt, model="gfpgan", upscale=2, bg_upscale=True)
    assert {p: p.stat().st_mtime_ns for p in home.rglob("meta.json")} == before
