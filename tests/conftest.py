"""Shared fixtures: the ``../shared`` data folder and an isolated RESTORA_HOME."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# The suite runs networks on torch eager unless a test picks an engine: goldens are torch float32
# numbers, and exporting graphs into every test's fresh RESTORA_HOME would cost minutes. The
# engines themselves are tested against torch in tests/models/test_engines.py. (CI may set
# RESTORA_ENGINE=auto to run everything on the fast engines.)
os.environ.setdefault("RESTORA_ENGINE", "torch")
SHARED = Path(os.environ.get("RESTORA_SHARED", REPO.parent / "shared")).resolve()


def load_benchmark(name: str) -> Any:
    """``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_path(*parts: str) -> Path:
    """Path under ../shared; skips the test with a clear reason if the folder is absent."""
    path = SHARED.joinpath(*parts)
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (set RESTORA_SHARED)")
    if not path.exists():
        raise FileNotFoundError(f"expected shared fixture missing: {path}")
    return path


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (set RESTORA_SHARED)")
    return SHARED


@pytest.fixture
def restora_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh RESTORA_HOME for the test, so no test sees another's models or jobs."""
    home = tmp_path / "restora-home"
    home.mkdir()
    monkeypatch.setenv("RESTORA_HOME", str(home))
    monkeypatch.delenv("RESTORA_MODELS", raising=False)
    return home
