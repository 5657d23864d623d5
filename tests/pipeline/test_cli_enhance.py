"""``restora enhance-faces`` end to end with the tiny networks (RESTORA_MODELS manifest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared_path
from restora.cli import app, main
from restora.io import decode
from tiny_models import write_tiny_manifest


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(tmp_path)))
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_folder_in_png_and_preview_out_with_json(env: Path) -> None:
    src = env / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(shared_path("testdata", "photos", "03.jpg"), src / "03.jpg")
    shutil.copy(shared_path("testdata", "photos", "06.png"), src / "sub" / "06.png")
    (src / "notes.txt").write_text("not an image")
    result = CliRunner().invoke(app, ["enhance-faces", str(src), "-o", str(env / "out"),
                                      "--model", "gfpgan", "--seed", "1", "--json"])
    assert result.exit_code == 0, result.output
    records = json_lines(result.stdout)
    assert [Path(r["input"]).name for r in records] == ["03.jpg", "06.png"]
    for r in records:
        assert r["model"] == "tiny-gfpgan" and r["facesDetected"] >= 1
        face = r["faces"][0]
        assert {"x", "y", "w", "h", "score", "landmarks"} <= set(face) and len(face["landmarks"]) == 5
        assert {"detect", "restore", "paste", "encode"} <= set(r["timings"])
        out = decode(Path(r["output"]))
        assert out.format == "png" and (out.width, out.height) == (r["width"], r["height"])
        assert Path(r["preview"]).read_bytes()[8:12] == b"WEBP"
    assert records[0]["output"] == str(env / "out" / "03_enhanced.png")
    assert records[1]["output"] == str(env / "out" / "sub" / "06_enhanced.png")  # sub-folder kept
    assert decode(env / "out" / "sub" / "06_enhanced.png").alpha is not None  # RGBA stays RGBA


def test_single_file_to_a_png_path_with_codeformer(env: Path) -> None:
    target = env / "result.png"
    result = CliRunner().invoke(app, ["enhance-faces", str(shared_path("testdata", "photos", "04.jpg")),
                                      "-o", str(target), "--model", "codeformer", "--fidelity", "0.7",
                                      "--upscale", "2"])
    assert result.exit_code == 0, result.output
    assert "04.jpg" in result.stdout and "tiny-codeformer" in result.stdout
    out = decode(target)
    assert (out.width, out.height) == (450, 450)
    assert (env / "result.preview.webp").is_file()


def test_16bit_input_gives_16bit_png(env: Path) -> None:
    import cv2

    rgb = decode(shared_path("testdata", "photos", "03.jpg")).pixels
    path = env / "deep.png"
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]).astype(np.uint16) * 257)
    result = CliRunner().invoke(app, ["enhance-faces", str(path), "-o", str(env / "o"), "--model", "gfpgan"])
    assert result.exit_code == 0, result.output
    out = decode(env / "o" / "deep_enhanced.png")
    assert out.pixels.dtype == np.uint16 and out.bit_depth == 16


def test_errors_are_one_line_and_nonzero(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (env / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["enhance-faces", str(env / "broken.jpg"), "-o", str(env / "o")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error[corrupt_image]:")
    assert main(["enhance-faces", str(env / "missing.jpg")]) != 0
    assert capsys.readouterr().err.startswith("error[file_not_found]:")
    assert main(["enhance-faces", str(env / "broken.jpg"), "--upscale", "3"]) != 0
    assert capsys.readouterr().err.startswith("error[invalid_parameter]:")
    photos = [str(shared_path("testdata", "photos", name)) for name in ("03.jpg", "04.jpg")]
    assert main(["enhance-faces", *photos, "-o", str(env / "one.png")]) != 0
    assert "need an output folder" in capsys.readouterr().err


def test_a_bad_file_in_a_batch_does_not_stop_the_others(env: Path) -> None:
    src = env / "batch"
    src.mkdir()
    shutil.copy(shared_path("testdata", "photos", "04.jpg"), src / "a.jpg")
    (src / "b.jpg").write_bytes(b"garbage")
    result = CliRunner().invoke(app, ["enhance-faces", str(src), "-o", str(env / "o"),
                                      "--model", "gfpgan", "--json"])
    assert result.exit_code == 1
    records = json_lines(result.stdout)
    assert records[0]["facesDetected"] == 1 and records[1]["error"]["code"] == "unsupported_format"
    assert (env / "o" / "a_enhanced.png").is_file() and not (env / "o" / "b_enhanced.png").exists()


def test_installed_console_script(env: Path) -> None:
    """The real ``restora`` entry point (a subprocess, as users run it)."""
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("restora")  # installed by scripts/install.sh
    assert exe.is_file(), f"console script missing: {exe}"
    photo = shared_path("testdata", "photos", "05.jpg")
    proc = subprocess.run([str(exe), "enhance-faces", str(photo), "-o", str(env / "sp"), "--json",
                           "--model", "gfpgan", "--seed", "3"], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    (record,) = json_lines(proc.stdout)
    assert record["model"] == "tiny-gfpgan" and Path(record["output"]).is_file()


def test_a_missing_model_stops_the_batch(env: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder = env / "detectors-only"
    folder.mkdir()
    manifest = write_tiny_manifest(folder, include={"retinaface-mobilenet0.25-facelibcfg"})
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    src = env / "two"
    src.mkdir()
    for name in ("03.jpg", "04.jpg"):
        shutil.copy(shared_path("testdata", "photos", name), src / name)
    assert main(["enhance-faces", str(src), "-o", str(env / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("error[model_not_installed]") == 1 and "restora models pull" in err


def test_reference_photos_and_identity_in_json(env: Path) -> None:
    photo06 = shared_path("testdata", "photos", "06.png")
    result = CliRunner().invoke(app, [
        "enhance-faces", str(photo06), "-o", str(env / "out"), "--model", "gfpgan", "--seed", "0",
        "--reference", str(shared_path("testdata", "photos", "05.jpg")),
        "--reference", str(shared_path("testdata", "gray", "Hepburn01.png")),
        "--only-reference-faces", "--json"])
    assert result.exit_code == 0, result.output
    record = json_lines(result.stdout)[0]
    assert record["identityModel"] == "dlib-resnet"
    refs = record["references"]
    assert [r["name"] for r in refs] == ["05.jpg", "Hepburn01.png"]
    left = min(range(2), key=lambda i: record["faces"][i]["x"])
    assert refs[0]["face"] == left and refs[1]["face"] is None  # Hepburn is not in 06
    assert [f["restored"] for f in record["faces"]] == [i == left for i in range(2)]
    for face in record["faces"]:
        assert face["identity"]["verdict"] in ("same", "uncertain", "changed", "unknown")
        assert face["identity"]["model"] == "dlib-resnet"


def test_bad_reference_photo_is_one_line_error(env: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    photo = str(shared_path("testdata", "photos", "03.jpg"))
    assert main(["enhance-faces", photo, "-o", str(env / "out"), "--reference",
                 str(env / "nope.jpg")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error[invalid_parameter]: reference photo")
    (env / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["enhance-faces", photo, "-o", str(env / "out"), "--reference",
                 str(env / "broken.png")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png" in err[0]
    assert not (env / "out").exists()  # nothing ran


def test_too_many_reference_photos_stop_before_the_batch(env: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    photos = [str(shared_path("testdata", "photos", name)) for name in ("03.jpg", "04.jpg")]
    ref = str(shared_path("testdata", "gray", "Hepburn01.png"))
    args = ["enhance-faces", *photos, "-o", str(env / "out")]
    assert main([*args, *(["--reference", ref] * 9)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error[invalid_parameter]: at most 8 reference photos, got 9"], err
    assert not (env / "out").exists()  # nothing ran
