"""``restora models ...``: list, pull, import, verify, path (through the real entry point)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, shared_path
from tiny_models import write_tiny_manifest

from restora.cli import main


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


def test_pull_errors(capsys: pytest.CaptureFixture[str], restora_home: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    rc, _, err = run(capsys, "models", "pull", "upscale-enhanse")
    assert rc == 1 and "error[unknown_model]" in err and "upscale-enhance" in err
    monkeypatch.setenv("RESTORA_OFFLINE", "1")
    rc, _, err = run(capsys, "models", "pull", "face-detection")
    assert rc == 1 and err.startswith("error[offline]:")
    assert "restora models import FILE --id yunet" in err
    assert not (restora_home / "models" / "face_detection_yunet_2023mar.onnx").exists()


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
        assert e["verdict"] in ("kept", "refused", "export failed", "not checked")
        assert {"engine", "engineVersion", "precision", "measure", "scale",
                "cpuSeconds"} <= set(e)
        assert (Path(e["path"]) / "meta.json").is_file()
        assert Path(e["path"]).parent.parent == auto_engine
    assert any(e["verdict"] == "kept" for e in entries)
    # what each model runs on is a kept entry in the cache
    for model_id, chosen in data["prepared"].items():
        engine, precision = chosen.split("/")
        for p in precision.split("+"):
            assert any(e["modelId"] == model_id and e["engine"] == engine and
                       e["precision"] == p and e["verdict"] == "kept" for e in entries)
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
