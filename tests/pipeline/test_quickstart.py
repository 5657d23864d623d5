"""The README's first screen: exactly two commands (quick start, tests); `.ci/run` runs the second;
the quick start's sample photo ships in the repository and the main job works on it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from conftest import REPO
from restora.cli import main
from restora.io import decode
from tiny_models import write_tiny_manifest


def first_code_block(text: str) -> list[str]:
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README has no bash block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines()
            if line.split("#")[0].strip()]


def test_readme_first_screen_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    readme = (REPO / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:25])
    commands = first_code_block(first_screen)
    assert commands == ["./scripts/quickstart.sh", "./scripts/test.sh"], commands
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert commands[1] in ci and "export CI=true" in ci
    assert not any("pytest" in line for line in ci)  # the test command lives in one place
    for script in ("quickstart.sh", "test.sh", "install.sh"):
        path = REPO / "scripts" / script
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True)
    quick = (REPO / "scripts" / "quickstart.sh").read_text()
    assert "Model files must be downloaded first" in quick
    assert "samples/astronaut.jpg" in quick and "SQLite" in quick


def test_the_sample_photo_ships_and_the_main_job_restores_its_face(
        tmp_path: Path, monkeypatch, capsys) -> None:
    sample = REPO / "samples" / "astronaut.jpg"
    assert sample.is_file() and sample.stat().st_size < 100_000
    assert (REPO / "samples" / "README.md").read_text().count("public domain") == 1
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(tmp_path)))
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert main(["enhance-faces", str(sample), "-o", str(out), "--model", "gfpgan",
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["facesDetected"] == 1  # the astronaut's face is found and restored
    image = decode(Path(record["output"]))
    assert (image.width, image.height) == (320, 320)
