"""``restora models ...``: list, pull, import, verify, path (through the real entry point)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, shared_path
from tiny_models import write_tiny_manifest

from restora.cli import main
from restora.models.engines import MIXED


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def tiny_file() -> Path:
    return shared_path("conformance", "rrdbnet_s2.tiny.pth")


@pytest.fixture
def importable(tmp_path: Path, restora_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A manifest with a model that installs into the models folder (published hash, no file)."""
    digest = hashlib.sha256(tiny_file().read_bytes()).hexdigest()
    hparams = json.loads(shared_path("conformance", "rrdbnet_s2.tiny.json").read_text())[
        "constructor_kwargs"]
    manifest = write_tiny_manifest(tmp_path, include={"tiny-parsenet"}, extra=[
        {"id": "x2-small", "task": "upscale", "arch": "rrdbnet", "hparams": hparams,
         "filename": "x2_small.pth", "urls": ["http://127.0.0.1:9/x2_small.pth"],
         "sha256": digest, "license": "test", "commercial_use": True}])
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    return restora_home / "models" / "x2_small.pth"


def test_list_json_in_a_subprocess(tmp_path: Path, restora_home: Path) -> None:
    env = {**os.environ, "RESTORA_HOME": str(restora_home),
           "RESTORA_MODELS": str(write_tiny_manifest(tmp_path)),
           "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "restora.cli", "models", "list", "--json"],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    data = json.loads(proc.stdout)
    rows = {m["id"]: m for m in data["models"]}
    gf = rows["gfpgan-v1.4"]
    assert gf["task"] == "face-restoration" and gf["size"] == 348632874
    assert gf["sha256"].startswith("e2cd4703") and gf["license"] == "Apache-2.0"
    assert gf["commercialUse"] and not gf["installed"] and not gf["default"]
    assert not rows["codeformer"]["commercialUse"]
    tiny = rows["tiny-gfpgan"]
    assert tiny["installed"] and tiny["default"] and tiny["custom"]
    assert data["bundles"]["face-detection"] == ["yunet", "retinaface-mobilenet0.25"]
    assert data["modelsDir"] == str(restora_home / "models")


def test_list_table(capsys: pytest.CaptureFixture[str], restora_home: Path) -> None:
    rc, out, _ = run(capsys, "models", "list")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "task", "size", "licence", "commercial", "installed",
                                "default"]
    cf = next(line for line in lines if line.startswith("codeformer "))
    assert cf.split()[:4] == ["codeformer", "face-restoration", "376.6", "MB"]
    assert " no " in cf
    assert "upscale-enhance (gfpgan-v1.4, codeformer" in out


def test_import_with_id_then_verify_then_corruption(capsys: pytest.CaptureFixture[str],
                                                    importable: Path) -> None:
    rc, out, _ = run(capsys, "models", "import", str(tiny_file()), "--id", "x2-small")
    assert rc == 0 and f"x2-small: installed at {importable}" in out
    assert importable.read_bytes() == tiny_file().read_bytes()
    rc, out, _ = run(capsys, "models", "verify")
    assert rc == 0 and "ok          x2-small" in out
    assert "tiny-parsenet" in out  # custom models with a local path are checked too
    # Flip one byte in the middle: verify must notice and fail.
    data = bytearray(importable.read_bytes())
    data[len(data) // 2] ^= 0xFF
    importable.write_bytes(bytes(data))
    rc, out, err = run(capsys, "models", "verify", "x2-small")
    assert rc == 1
    assert "MISMATCH    x2-small" in err and "restora models pull x2-small" in err


def test_import_wrong_file_installs_nothing(capsys: pytest.CaptureFixture[str],
                                            importable: Path) -> None:
    wrong = shared_path("conformance", "rrdbnet_s4.tiny.pth")
    rc, _, err = run(capsys, "models", "import", str(wrong), "--id", "x2-small")
    assert rc == 1 and err.startswith("error[checksum_mismatch]:")
    assert "nothing was installed" in err
    assert not importable.exists()
    models_dir = importable.parent
    assert not models_dir.exists() or {p.name for p in models_dir.iterdir()} <= {".locks"}


def test_import_identifies_by_hash(capsys: pytest.CaptureFixture[str], importable: Path,
                                   tmp_path: Path) -> None:
    rc, out, _ = run(capsys, "models", "import", str(tiny_file()))
    assert rc == 0 and out.startswith("x2-small: installed")
    assert importable.is_file()
    unknown = tmp_path / "random.pth"
    unknown.write_bytes(os.urandom(1000))
    rc, _, err = run(capsys, "models", "import", str(unknown))
    assert rc == 1 and "error[unknown_model]" in err and "--id" in err


def test_import_records_hash_for_unverified_models(capsys: pytest.CaptureFixture[str],
                                                   restora_home: Path, tmp_path: Path) -> None:
    fake = tmp_path / "detection_Resnet50_Final.pth"
    fake.write_bytes(b"stand-in bytes for a checkpoint")
    rc, _, _ = run(capsys, "models", "import", str(fake), "--id", "retinaface-resnet50")
    assert rc == 0
    recorded = json.loads((restora_home / "models" / "recorded-hashes.json").read_text())
    assert recorded["detection_Resnet50_Final.pth"] == hashlib.sha256(fake.read_bytes()).hexdigest()
    rc, out, _ = run(capsys, "models", "verify", "retinaface-resnet50")
    assert rc == 0 and "ok          retinaface-resnet50" in out


def test_path(capsys: pytest.CaptureFixture[str], restora_home: Path) -> None:
    rc, out, _ = run(capsys, "models", "path")
    assert rc == 0 and out.strip() == str(restora_home / "models")
    rc, out, _ = run(capsys, "models", "path", "realesrgan-x4plus")
    assert out.strip() == str(restora_home / "models" / "RealESRGAN_x4plus.pth")
    rc, _, err = run(capsys, "models", "path", "realesrgan-x4")
    assert rc == 1 and "did you mean" in err
    # `restora models path "$ID"` with ID unset printed the folder as if no id was given
    rc, out, err = run(capsys, "models", "path", "")
    assert rc == 1 and out == "" and err.startswith("error[unknown_model]: unknown model ''")
    rc, out, err = run(capsys, "models", "import", "")  # was ". is not a file"
    assert rc == 1 and err == ("error[invalid_parameter]: FILE is empty; give a checkpoint "
                               "file\n")


def test_pull_errors(capsys: pytest.CaptureFixture[str], restora_home: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    rc, _, err = run(capsys, "models", "pull", "upscale-enhanse")
    assert rc == 1 and "error[unknown_model]" in err and "upscale-enhance" in err
    monkeypatch.setenv("RESTORA_OFFLINE", "1")
    rc, _, err = run(capsys, "models", "pull", "face-detection")
    assert rc == 1 and err.startswith("error[offline]:")
    assert "restora models import FILE --id yunet" in err
    assert not (restora_home / "models" / "face_detection_yunet_2023mar.onnx").exists()


def test_a_model_without_a_download_url_is_never_suggested_for_pull(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, restora_home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest's own model (a local 'path', no URL) was suggested for `restora models pull`
    (itself, or the bundle it was added to), and pulling it stopped the whole pull with the
    other models not tried. Suggestions now name only what can be downloaded, pulling a
    URL-less model says in one line why it cannot, and the other models still come."""
    from restora.config import Settings
    from restora.models.registry import Registry

    entry = {"task": "face-restoration", "arch": "gfpgan_v1_clean", "license": "test",
             "commercial_use": True}
    manifest = tmp_path / "models.json"
    manifest.write_text(json.dumps({"models": [
        {"id": "nolink", "path": str(tmp_path / "gone.pth"), "default": True,
         "bundles": ["upscale-enhance"], **entry},
        {"id": "nolink-det", "task": "face-detection", "arch": "yunet", "license": "test",
         "commercial_use": True, "path": str(tmp_path / "gone.onnx"), "default": True}]}))
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    photo = shutil.copy(shared_path("testdata", "photos", "04.jpg"), tmp_path / "a.jpg")

    rc, out, err = run(capsys, "enhance-faces", str(photo), "-o", str(tmp_path / "out"))
    assert rc == 1 and "models pull" not in err, err
    assert "'nolink' cannot be downloaded: it has no download URL" in err
    assert "'nolink-det' cannot be downloaded" in err and len(err.splitlines()) == 1

    rc, out, err = run(capsys, "enhance-faces", str(photo), "-o", str(tmp_path / "out"),
                       "--model", "codeformer")  # downloadable, bundled with nolink
    assert rc == 1 and "`restora models pull photo-restoration`" in err, err
    assert "upscale-enhance" not in err and "'nolink-det' cannot be downloaded" in err
    registry = Registry.from_settings(Settings())
    assert registry.not_installed(registry.get("gfpgan-v1.4")).details["command"] == \
        "restora models pull gfpgan-v1.4"  # the bundle would fail on nolink
    assert registry.pull_target(registry.get("yunet")) == "face-detection"

    rc, out, err = run(capsys, "models", "pull", "nolink")
    assert rc == 1 and out == "" and err.splitlines() == [
        f"error[model_not_installed]: 'nolink' cannot be downloaded: it has no download URL "
        f"(its file {tmp_path / 'gone.pth'} does not exist); fix its 'path' in the model "
        "manifest, or install a copy with `restora models import FILE --id nolink`"], err
    monkeypatch.setenv("RESTORA_OFFLINE", "1")
    rc, out, err = run(capsys, "models", "pull", "nolink", "face-detection")
    lines = err.splitlines()
    assert rc == 1 and lines[0].startswith("error[model_not_installed]: 'nolink' cannot")
    assert lines[1].startswith("error[offline]: model 'yunet'"), err  # the others were tried
    assert "nolink" not in "\n".join(lines[2:]) and "(no URL known)" not in err


def test_pull_already_installed(capsys: pytest.CaptureFixture[str], importable: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(capsys, "models", "import", str(tiny_file()), "--id", "x2-small")[0] == 0
    monkeypatch.setenv("RESTORA_OFFLINE", "1")  # installed models need no network
    rc, out, _ = run(capsys, "models", "pull", "x2-small", "tiny-parsenet")
    assert rc == 0
    assert "x2-small: already installed" in out and "tiny-parsenet: already installed" in out


# --- restora models engines ---------------------------------------------------------------------

@pytest.fixture
def auto_engine(restora_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """RESTORA_ENGINE=auto (the suite defaults to torch) and the home's engine cache folder."""
    monkeypatch.setenv("RESTORA_ENGINE", "auto")
    return restora_home / "engines"


def test_engines_prepare_then_list(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   auto_engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a parser (exact graph + coarse candidates), an upscaler, and YuNet (OpenCV: not exported)
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(
        tmp_path, include={"tiny-parsenet", "tiny-realesrgan-x2", "yunet-2026may"})))
    rc, out, err = run(capsys, "models", "engines", "--prepare", "--json")
    assert rc == 0, err
    data = json.loads(out)  # progress lines went to stderr: stdout is only the JSON
    assert data["engineCache"] == str(auto_engine)
    assert set(data["prepared"]) == {"tiny-parsenet", "tiny-realesrgan-x2"}
    assert data["failed"] == {}
    assert data["prepared"]["tiny-parsenet"].split("/")[0] in ("openvino", "onnxruntime")
    assert "tiny-parsenet: " + data["prepared"]["tiny-parsenet"] in err
    assert "tiny-realesrgan-x2: " + data["prepared"]["tiny-realesrgan-x2"] in err
    assert "yunet-2026may" not in err
    entries = data["engines"]
    assert {e["modelId"] for e in entries} == {"tiny-parsenet", "tiny-realesrgan-x2"}
    assert [e["modelId"] for e in entries] == sorted(e["modelId"] for e in entries)
    for e in entries:
        assert e["verdict"] in ("kept", "refused", "export failed", "not checked") or (
            e["verdict"] == f"coarse (k >= {e['coarseFrom']})")
        assert {"engine", "engineVersion", "precision", "measure", "scale", "cpuSeconds",
                "coarseFrom", "coarseNote"} <= set(e)
        assert (Path(e["path"]) / "meta.json").is_file()
        assert Path(e["path"]).parent.parent == auto_engine
    assert any(e["verdict"] == "kept" for e in entries)
    # what each model runs on is a kept entry in the cache, and a parser's coarse graphs (after
    # the "+") are the entries listed as coarse
    for model_id, chosen in data["prepared"].items():
        engine, precision = chosen.split("/")
        exact, *coarse = precision.split("+")
        assert any(e["modelId"] == model_id and e["engine"] == engine and
                   e["precision"] == exact and e["verdict"] == "kept" for e in entries)
        assert sorted(coarse) == sorted(e["precision"] for e in entries if e["modelId"] ==
                                        model_id and e["verdict"].startswith("coarse"))
    parser = [e for e in entries if e["modelId"] == "tiny-parsenet"]
    assert all(e["cpuSeconds"] is not None for e in parser if e["verdict"] != "export failed")
    assert len(list(auto_engine.glob("*/*/meta.json"))) == len(entries)

    # a second run without --prepare lists the same entries, exporting nothing
    rc, out, err = run(capsys, "models", "engines", "--json")
    assert rc == 0 and "prepared" not in json.loads(out)
    assert json.loads(out)["engines"] == entries
    rc, out, _ = run(capsys, "models", "engines")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["model", "engine", "precision", "verdict", "scale", "cpu_s",
                                "measure"]
    assert len(lines) == 1 + len(entries)
    for line, e in zip(lines[1:], entries):
        assert line.split()[:3] == [e["modelId"], e["engine"], e["precision"]]
        assert e["verdict"] in line and (e["measure"] or e["reason"]) in line


#: a new process: each model id's engine as the environment's settings open it, and whether
#: OpenVINO imported its compiled blob (None: not an OpenVINO graph)
_OPEN_IN_A_NEW_PROCESS = """
import json, sys
from restora.config import Settings
from restora.models.runtime import Runtime
rt = Runtime(Settings())
out = {}
for model_id in sys.argv[1:]:
    net = rt.load(model_id)
    engine = net.built_engine()
    engine = getattr(engine, "inner", engine)
    out[model_id] = [net.engine_label, getattr(engine, "from_cache", None)]
print(json.dumps(out))
"""


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def test_engines_prepare_settles_compiled_blobs(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path, auto_engine: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """After --prepare, the next process imports every OpenVINO graph it opens: CodeFormer's,
    whose weightless blob OpenVINO 2026.4 refuses (three processes to settle without this),
    and GFPGAN's, whose weightless blob it imports. A second --prepare settles nothing, and a
    compiled folder that cannot be written does not make --prepare fail."""
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(
        tmp_path, include={"tiny-codeformer", "tiny-gfpgan"})))
    rc, out, err = run(capsys, "models", "engines", "--prepare", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert {m: label.split("/")[0] for m, label in data["prepared"].items()} == {
        "tiny-codeformer": "openvino", "tiny-gfpgan": "openvino"}
    settled = data["settled"]
    assert settled and all(s["imported"] for s in settled), settled
    assert f"settled {len(settled)} compiled graph(s)" in err
    # GFPGAN's blob was imported by --prepare's own second open (after the check's compile)
    assert "tiny-codeformer" in {s["modelId"] for s in settled}
    for s in settled:
        assert 1 <= s["compiles"] <= 3 and s["graph"] == "graph"
        assert (Path(s["path"]).parent / "compiled" / "graph.imported").is_file()

    proc = subprocess.run([sys.executable, "-c", _OPEN_IN_A_NEW_PROCESS, "tiny-codeformer",
                           "tiny-gfpgan"], env=_subprocess_env(), capture_output=True,
                          text=True, timeout=300, check=True)
    opened = json.loads(proc.stdout.splitlines()[-1])
    assert opened == {m: [label, True] for m, label in data["prepared"].items()}, opened

    compiled = sorted(p for p in auto_engine.glob("*/*/compiled/*"))
    stamps = [p.stat().st_mtime_ns for p in compiled]
    rc, out, err = run(capsys, "models", "engines", "--prepare", "--json")
    assert rc == 0, err
    assert json.loads(out)["settled"] == [] and "settled 0 compiled graph(s)" in err
    assert sorted(auto_engine.glob("*/*/compiled/*")) == compiled
    assert [p.stat().st_mtime_ns for p in compiled] == stamps

    # CodeFormer's blob gone and its compiled folder read-only: it is compiled in each process,
    # which --prepare reports without failing
    cf = Path(next(s["path"] for s in settled if s["modelId"] == "tiny-codeformer")).parent
    folder = cf / "compiled"
    for p in folder.glob("*.blob"):
        p.unlink()
    (folder / "graph.imported").unlink()
    folder.chmod(0o555)
    # root writes anywhere: without CAP_DAC_OVERRIDE the folder's mode holds for it too
    as_user = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            folder.chmod(0o755)
            pytest.skip("root needs setpriv to drop CAP_DAC_OVERRIDE")
        as_user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    try:
        proc = subprocess.run([*as_user, sys.executable, "-m", "restora.cli", "models",
                               "engines", "--prepare", "--json"], env=_subprocess_env(),
                              capture_output=True, text=True, timeout=300)
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["failed"] == {}
    assert [(s["modelId"], s["imported"]) for s in data["settled"]] == [
        ("tiny-codeformer", False)], data["settled"]
    assert "settled 0 compiled graph(s); 1 not" in proc.stderr
    assert not list(folder.glob("*.blob"))


def _cache_entry(root: Path, model_id: str, model: str, precision: str, *, ok: bool,
                 cpu_s: float | None, scale: int | None = None, task: str | None = None,
                 bound: str | None = None, recorded: bool = True) -> dict:
    """An export cache entry as the engine factory writes it after its accuracy check (the
    verdict and its measurements in meta.json, through ExportCache), without exporting.
    ``recorded=False``: as verified before the verdict recorded its task (bound only)."""
    from restora.models.engines import EXPORT_FORMAT, ExportCache, policy_for

    task = task or ("face-parsing" if model_id == "parsenet" else "upscale")
    key = {"model": model, "model_id": model_id, "engine": "openvino",
           "engine_version": "2026.0.0", "precision": precision,
           "shape": "x:?x3x512x512", "format": EXPORT_FORMAT, "torch": "2.9.0"}
    cache = ExportCache(root)
    folder = cache.folder(key)
    folder.mkdir(parents=True)
    (folder / "graph.xml").write_text("<net/>")
    measure = f"{precision} measure"
    meta: dict = {"ok": ok, "measure": measure, "bound": bound or policy_for(task).bound}
    if recorded:
        meta["task"] = task
    if not ok:
        meta["reason"] = f"outside the {task} bound ({measure})"
    if cpu_s is not None:
        meta["cpu_s"] = cpu_s
    if precision in ("bf16", MIXED):
        meta.update(scale=scale, scale_measure=f"from k = {scale}")
    cache.write(folder, key, meta)
    return key


def test_engines_say_which_graphs_auto_runs_for_small_faces(
        capsys: pytest.CaptureFixture[str], auto_engine: Path) -> None:
    """A parser's graphs refused as the exact graph show ``coarse (k >= K)`` where ``auto``
    parses faces pasted small on them (engines.coarse_tiers on their verdicts), and stay
    ``refused``, with the reason, where they serve no scale."""
    one, two = "1" * 64, "2" * 64  # two parser files (weights replaced): two sets of graphs
    _cache_entry(auto_engine, "parsenet", one, "int8", ok=False, cpu_s=0.02)
    _cache_entry(auto_engine, "parsenet", one, "fp32", ok=True, cpu_s=0.1)
    _cache_entry(auto_engine, "parsenet", one, "bf16", ok=False, cpu_s=0.05, scale=4)
    _cache_entry(auto_engine, "parsenet", one, MIXED, ok=False, cpu_s=0.09, scale=2)
    # verified before verdicts recorded their task: it is the task whose bound they record
    _cache_entry(auto_engine, "parsenet", two, "fp32", ok=True, cpu_s=0.1, recorded=False)
    _cache_entry(auto_engine, "parsenet", two, MIXED, ok=False, cpu_s=0.05, scale=2,
                 recorded=False)
    _cache_entry(auto_engine, "parsenet", two, "bf16", ok=False, cpu_s=0.06, scale=4,
                 recorded=False)
    _cache_entry(auto_engine, "realesrgan-x2plus", one, "fp32", ok=True, cpu_s=None)
    # a parser the registry does not know (a benchmark's), checked against a bound worded as no
    # policy words it now: its task is the one its verdicts record
    old = "an earlier wording of the face-parsing bound"
    _cache_entry(auto_engine, "bench-parsenet", one, "fp32", ok=True, cpu_s=0.1,
                 task="face-parsing", bound=old)
    _cache_entry(auto_engine, "bench-parsenet", one, "bf16", ok=False, cpu_s=0.05, scale=2,
                 task="face-parsing", bound=old)
    rc, out, _ = run(capsys, "models", "engines", "--json")
    assert rc == 0
    rows = {(e["modelId"], e["modelSha256"][0], e["precision"]): e
            for e in json.loads(out)["engines"]}
    assert {k: (e["verdict"], e["coarseFrom"]) for k, e in rows.items()} == {
        ("parsenet", "1", "fp32"): ("kept", None),  # the first file's exact graph
        ("parsenet", "1", "int8"): ("refused", None),  # not a coarse candidate
        ("parsenet", "1", "bf16"): ("coarse (k >= 4)", 4),  # 0.05 <= 0.8 x 0.1
        ("parsenet", "1", MIXED): ("refused", None),  # 0.09 > 0.8 x 0.1
        ("parsenet", "2", "fp32"): ("kept", None),
        ("parsenet", "2", MIXED): ("coarse (k >= 2)", 2),
        ("parsenet", "2", "bf16"): ("refused", None),  # from k = 4, no quicker than k = 2's
        ("realesrgan-x2plus", "1", "fp32"): ("kept", None),
        ("bench-parsenet", "1", "fp32"): ("kept", None),
        ("bench-parsenet", "1", "bf16"): ("coarse (k >= 2)", 2)}
    note = {k[1:]: e["coarseNote"] for k, e in rows.items() if k[0] == "parsenet"}
    assert note["1", MIXED] == ("not used for small faces: probe 0.09 CPU-s > 0.8 x the exact "
                                "graph's 0.1")
    assert note["2", "bf16"] == (f"not used for small faces: openvino/{MIXED} serves from "
                                 "k >= 2 and is at least as quick (0.05 CPU-s)")
    assert note["1", "bf16"] == ("used for faces pasted at 4 or more parse px per output px "
                                 "(probe 0.05 CPU-s, openvino/fp32's 0.1)")
    assert note["1", "int8"] is None and note["1", "fp32"] is None
    assert rows["realesrgan-x2plus", "1", "fp32"]["coarseNote"] is None

    rc, out, _ = run(capsys, "models", "engines")
    assert rc == 0
    table = [line for line in out.splitlines()[1:] if line.startswith("parsenet ")]
    assert len(table) == 7
    assert [line for line in table if "coarse (k >= 4)" in line][0].endswith(
        "bf16 measure; used for faces pasted at 4 or more parse px per output px (probe "
        "0.05 CPU-s, openvino/fp32's 0.1)")
    assert sum(line.endswith(f"{MIXED} measure; not used for small faces: probe 0.09 CPU-s > "
                             "0.8 x the exact graph's 0.1") for line in table) == 1


def test_engines_prepare_reports_a_broken_model_and_goes_on(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, auto_engine: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = json.loads(shared_path("conformance", "rrdbnet_s4.tiny.json").read_text())
    broken = tmp_path / "broken_x4.pth"
    data = shared_path("conformance", "rrdbnet_s4.tiny.pth").read_bytes()
    broken.write_bytes(data[:len(data) // 2])  # a download cut off halfway
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(
        tmp_path, include={"tiny-realesrgan-x2"}, extra=[
            {"id": "broken-x4", "task": "upscale", "arch": "rrdbnet", "path": str(broken),
             "hparams": good["constructor_kwargs"], "license": "test",
             "commercial_use": True}])))
    rc, out, err = run(capsys, "models", "engines", "--prepare")
    assert rc == 1
    errors = [line for line in err.splitlines() if line.startswith("broken-x4:")]
    assert len(errors) == 1 and "error" in errors[0]
    assert "Traceback" not in err and "broken-x4" not in out
    assert "tiny-realesrgan-x2: " in out  # the others were still prepared
    assert any(line.startswith("tiny-realesrgan-x2 ") for line in out.splitlines())
    assert list(auto_engine.glob("*/*/meta.json"))


def test_engines_empty_cache(capsys: pytest.CaptureFixture[str], restora_home: Path) -> None:
    rc, out, _ = run(capsys, "models", "engines")
    assert rc == 0 and len(out.splitlines()) == 1
    assert "no exported engines" in out and "restora models engines --prepare" in out
    rc, out, _ = run(capsys, "models", "engines", "--json")
    assert rc == 0 and json.loads(out)["engines"] == []


def test_engines_prepare_says_why_nothing_was_exported(capsys: pytest.CaptureFixture[str],
                                                       restora_home: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORA_ENGINE", "torch")
    rc, out, _ = run(capsys, "models", "engines", "--prepare")
    assert rc == 0 and out.splitlines()[-1].endswith(
        "(RESTORA_ENGINE=torch runs the modules themselves: nothing is exported)")


def test_engines_bad_setting_is_one_line(capsys: pytest.CaptureFixture[str],
                                         restora_home: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORA_ENGINE", "fastest")
    rc, _, err = run(capsys, "models", "engines", "--prepare")
    assert rc == 1 and err.startswith("error[invalid_settings]: RESTORA_ENGINE")
    assert len(err.splitlines()) == 1


def test_engines_prune_deletes_what_this_install_cannot_use(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, auto_engine: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``--prune`` deletes entries keyed on another engine, torch or NNCF version, export
    format or precision, or a model file not installed, unreadable ones, and exports left
    unfinished; current entries, fresh builds and entries another process holds stay."""
    from filelock import FileLock

    from restora.models.engines import (
        EXPORT_FORMAT,
        ExportCache,
        _torch_version,
        package_version,
        quantizer_version,
    )

    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(
        tmp_path, include={"tiny-parsenet"})))
    cache = ExportCache(auto_engine)
    model = cache.model_hash(shared_path("conformance", "parsenet.tiny.pth"))
    current = {"model": model, "model_id": "tiny-parsenet", "engine": "openvino",
               "engine_version": package_version("openvino"), "precision": "fp32",
               "shape": "x:?x3x64x64", "format": EXPORT_FORMAT, "torch": _torch_version()}

    def entry(**changes: object) -> Path:
        key = {**current, **changes}
        folder = cache.folder(key)
        folder.mkdir(parents=True)
        (folder / "graph.xml").write_bytes(b"x" * 1000)
        cache.write(folder, key, {"ok": True, "measure": "m", "task": "face-parsing"})
        return folder

    keep = [entry(), entry(precision=MIXED), entry(precision="int8", nncf=quantizer_version())]
    stale = {entry(engine_version="2020.1.0"): "openvino 2020.1.0, installed",
             entry(torch="1.0.0"): "exported with torch 1.0.0",
             entry(precision="bf16-fp32out"): "precision bf16-fp32out is no longer built",
             entry(format=EXPORT_FORMAT - 1): f"export format {EXPORT_FORMAT - 1}",
             entry(model="f" * 64): "its model file is not installed",
             entry(precision="int8", nncf="0.1"): "quantized with NNCF 0.1"}
    broken = entry(precision="bf16")
    (broken / "meta.json").write_text("{")
    stale[broken] = "unreadable meta.json"
    old_build = auto_engine / model[:16] / ".build-old"
    old_build.mkdir()
    os.utime(old_build, (1, 1))
    stale[old_build] = "an export left unfinished"
    fresh_build = auto_engine / model[:16] / ".build-now"
    fresh_build.mkdir()
    held = entry(engine_version="2019.1.0")  # stale, but another process holds its lock
    with FileLock(str(held) + ".lock"):
        rc, out, err = run(capsys, "models", "engines", "--prune", "--json")
    assert rc == 0, err
    data = json.loads(out)
    pruned = {Path(p["path"]): p for p in data["pruned"]}
    assert set(pruned) == set(stale)
    for folder, why in stale.items():
        assert why in pruned[folder]["why"] and not folder.exists()
        assert not Path(str(folder) + ".lock").exists()
    assert pruned[old_build]["modelId"] is None and pruned[broken]["bytes"] > 1000
    assert pruned[next(iter(stale))]["modelId"] == "tiny-parsenet"
    assert all(f.is_dir() for f in [*keep, fresh_build, held])
    assert {Path(e["path"]) for e in data["engines"]} == {*keep, held}
    # the text form says what went and why; an empty cache folder goes too
    rc, out, _ = run(capsys, "models", "engines", "--prune")
    assert rc == 0 and "pruned 1 cache entries" in out and "2019.1.0" in out
    assert not held.exists()
    for folder in [*keep, fresh_build]:
        shutil.rmtree(folder)
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(
        tmp_path, include={"tiny-realesrgan-x2"})))
    entry()  # tiny-parsenet's file is no longer installed under these settings
    rc, out, _ = run(capsys, "models", "engines", "--prune")
    assert rc == 0 and "its model file is not installed" in out
    assert not (auto_engine / model[:16]).exists()


def test_import_never_replaces_an_installed_file_it_cannot_check(
        capsys: pytest.CaptureFixture[str], restora_home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest model's own file (no SHA-256 known) was replaced by whatever was imported
    with `--id` (a photo, another checkpoint): the user's weights were gone."""
    own = Path(shutil.copy(tiny_file(), tmp_path / "my_x2.pth"))
    hparams = json.loads(shared_path("conformance", "rrdbnet_s2.tiny.json").read_text())[
        "constructor_kwargs"]
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(tmp_path, include=set(), extra=[
        {"id": "my-x2", "task": "upscale", "arch": "rrdbnet", "hparams": hparams,
         "path": str(own), "license": "test", "commercial_use": True}])))
    photo = shared_path("testdata", "photos", "04.jpg")
    rc, out, err = run(capsys, "models", "import", str(photo), "--id", "my-x2")
    assert rc == 1 and out == ""
    assert err.startswith("error[import_failed]: 'my-x2' is already installed at ") and \
        "nothing was installed" in err and len(err.splitlines()) == 1, err
    assert own.read_bytes() == tiny_file().read_bytes()
    assert not (restora_home / "models" / "recorded-hashes.json").exists()
    # the file itself, or a copy of the same bytes, is fine (and records its hash)
    copy = Path(shutil.copy(tiny_file(), tmp_path / "copy.pth"))
    for source in (own, copy):
        rc, out, _ = run(capsys, "models", "import", str(source), "--id", "my-x2")
        assert rc == 0 and out.startswith(f"my-x2: installed at {own}")
    assert own.read_bytes() == tiny_file().read_bytes()


def test_manifest_url_credentials_stay_out_of_list_and_help(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, restora_home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A private mirror's user:token and signed query are never printed by `models list
    --json` or the manual-install help; the host and path still are."""
    secret = "https://alice:s3cr3t-token@mirror.example/w/x2.pth?X-Signature=abc123"
    manifest = write_tiny_manifest(tmp_path, extra=[
        {"id": "x2-private", "task": "upscale", "arch": "rrdbnet",
         "hparams": {"scale": 2}, "filename": "x2_private.pth", "urls": [secret],
         "license": "test", "commercial_use": True}])
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    rc, out, err = run(capsys, "models", "list", "--json")
    assert rc == 0 and "s3cr3t" not in out + err and "abc123" not in out + err
    row = {m["id"]: m for m in json.loads(out)["models"]}["x2-private"]
    assert row["urls"] == ["https://***@mirror.example/w/x2.pth?***"]
    monkeypatch.setenv("RESTORA_OFFLINE", "1")
    rc, out, err = run(capsys, "models", "pull", "x2-private")
    assert rc == 1 and "s3cr3t" not in out + err and "abc123" not in out + err
    assert "mirror.example/w/x2.pth" in err and "credentials hidden" in err
