"""OpenVINO and NNCF send usage telemetry by default; Restora keeps it off in its process.

Each case runs in a fresh interpreter with a fresh HOME and no CI variables (the library
disables itself under CI=true, which would make the check vacuous), counts process forks and
spawns with an audit hook (every telemetry event is sent from a forked copy of the process),
and looks for the client-id folder the library writes under HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

SCRIPT = r"""
import json, sys
forks = []
sys.addaudithook(lambda event, args: forks.append(event)
                 if event in ("os.fork", "os.forkpty", "os.posix_spawn", "subprocess.Popen")
                 else None)
if sys.argv[1] == "quiet":
    from restora.models.engines import telemetry_off
    telemetry_off()
import numpy as np, torch
import openvino as ov, nncf
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
x = torch.rand(1, 3, 16, 16)
torch.onnx.export(net, (x,), sys.argv[2], input_names=["x"], dynamo=False)
model = ov.convert_model(sys.argv[2])
nncf.quantize(model, nncf.Dataset([x.numpy()]), subset_size=1)
import time; time.sleep(1.0)
print(json.dumps(forks))
"""


def run(mode: str, tmp_path: Path) -> tuple[list[str], bool]:
    home = tmp_path / f"home-{mode}"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")}
    env["HOME"] = str(home)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(tmp_path / f"{mode}.onnx")],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), (home / "intel").exists()


def test_openvino_and_nncf_send_nothing_once_telemetry_is_off(tmp_path: Path) -> None:
    forks, wrote_home = run("default", tmp_path)
    # the check can see telemetry: left alone, the libraries fork and write a client id
    assert forks and wrote_home
    forks, wrote_home = run("quiet", tmp_path)
    assert forks == [] and not wrote_home
