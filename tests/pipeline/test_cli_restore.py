"""``restora restore-photo`` on real files: folders, formats, previews, JSON, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from restora.cli import main
from restora.io import decode


def copy_photo(rel: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared_path("testdata", *rel.split("/")), dest)
    return dest


def test_folder_run_keeps_formats_and_writes_previews(restora_home: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    copy_photo("photos/03.jpg", src / "a" / "03.jpg")
    copy_photo("photos/06.png", src / "b" / "06.png")
    out = tmp_path / "out"
    rc = main(["restore-photo", str(src), "-o", str(out), "--json"])
    assert rc == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2
    by_name = {Path(r["input"]).name: r for r in records}
    assert by_name["03.jpg"]["format"] == "jpeg" and by_name["06.png"]["format"] == "png"
    jpg, png = out / "a" / "03_restored.jpg", out / "b" / "06_restored.png"
    assert Path(by_name["03.jpg"]["output"]) == jpg and Path(by_name["06.png"]["output"]) == png
    assert (out / "a" / "03_restored.preview.webp").is_file()
    assert (out / "b" / "06_restored.preview.webp").is_file()
    assert decode(jpg).format == "jpeg"
    restored = decode(png)
    assert restored.format == "png" and restored.alpha is not None  # 06.png is RGBA
    assert np.array_equal(restored.alpha, decode(src / "b" / "06.png").alpha)
    for r in records:  # no face model in this RESTORA_HOME: skipped, with the way out
        assert r["reports"]["face-enhancement"]["install"].startswith("restora models pull")
        assert {"steps", "scratchCoverage", "isGrayscale", "timings"} <= set(r)


def test_single_file_with_explicit_name_and_options(restora_home: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = copy_photo("faces/0143.png", tmp_path / "face.png")
    target = tmp_path / "result.webp"
    rc = main(["restore-photo", str(src), "-o", str(target), "--no-face-enhancement",
               "--no-scratch-removal", "--denoise-strength", "50", "--fidelity", "0.5"])
    assert rc == 0
    assert decode(target).format == "webp"
    assert (tmp_path / "result.preview.webp").is_file()
    assert "face.png ->" in capsys.readouterr().out


def test_colorize_without_model_fails_with_the_install_command(
        restora_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = copy_photo("gray/Einstein01.png", tmp_path / "e.png")
    rc = main(["restore-photo", str(src), "-o", str(tmp_path / "out"), "--colorize"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error[model_not_installed]" in err and "restora models pull" in err
    assert not (tmp_path / "out").exists()


def test_bad_settings_are_rejected(restora_home: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    src = copy_photo("photos/03.jpg", tmp_path / "x.jpg")
    assert main(["restore-photo", str(src), "--denoise-strength", "150"]) == 1
    assert "error[invalid_parameter]" in capsys.readouterr().err
    assert main(["restore-photo", str(src), "--orientation", "sideways"]) == 1
    err = capsys.readouterr().err
    assert "error[invalid_parameter]" in err and "orientation" in err


def test_a_long_job_is_announced_with_the_whole_job_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With every job "long", the CLI's line and the result's warning are the job's own
    estimate (here the fill's, from its first crop), once."""
    from restora.pipeline._timing import estimate_text
    from tiny_models import tiny_photo_repair_entries, write_tiny_manifest

    manifest = write_tiny_manifest(tmp_path, include=set(),
                                   extra=tiny_photo_repair_entries(scratch=False))
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESTORA_LONG_JOB_S", "0")
    src = copy_photo("photos/06.png", tmp_path / "torn.png")
    h, w = decode(src).pixels.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    for k, (y, x) in enumerate([(40, 40), (40, 600), (420, 40), (420, 600)]):
        mask[y:y + 60 + 10 * k, x:x + 90] = 255  # four torn patches, one crop each
    from PIL import Image as PILImage

    PILImage.fromarray(mask).save(tmp_path / "mask.png")
    rc = main(["restore-photo", str(src), "-o", str(tmp_path / "out.png"), "--mask",
               str(tmp_path / "mask.png"), "--no-face-enhancement", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    record = json.loads(out.strip().splitlines()[-1])
    est = record["estimate"]
    assert est["long"] and est["work"] == {"inpaintRegions": 3}
    line = estimate_text(est)
    assert line.endswith("(3 damaged region(s) to fill)")
    assert f"torn.png: {line}" in err
    assert [x for x in record["warnings"] if "will take" in x] == [line]
