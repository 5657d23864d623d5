"""benchmarks/gpu.py runs where no GPU is (its rows on the CPU with the tiny weights), so the
script a lent GPU machine runs has not rotted in between (GPU machines are rare here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_benchmark, shared_path
from tiny_models import write_tiny_manifest

from restora.config import Settings
from restora.models.runtime import Runtime


def test_gpu_benchmark_rows_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_benchmark("gpu")
    monkeypatch.setattr(bench, "NETWORKS", ("tiny-gfpgan", "tiny-codeformer", "tiny-parsenet"))
    settings = Settings(models=write_tiny_manifest(tmp_path), home=tmp_path / "home")
    runtimes = {label: Runtime(settings, device="cpu", engine="torch")
                for label in ("cpu", "fp32", "auto")}
    faces = shared_path("testdata", "faces")
    against = bench.cpu_reference_rows(runtimes, faces, "cpu")
    assert [r["network"] for r in against] == list(bench.NETWORKS)
    assert all(r[label]["ok"] for r in against for label in ("fp32", "auto"))
    rows = bench.network_rows(runtimes, faces, [2], 1, "cpu", autotune=True)
    assert [(r["network"], r["engine"]) for r in rows] == [
        (n, label) for n in bench.NETWORKS for label in ("fp32", "auto", "autotune")]
    for row in rows:
        assert row["batch"] == 2 and row["faces_per_s"] > 0 and row["first_call_s"] > 0
        assert row["peak_gpu_gib"] is None  # no GPU
        if row["engine"] != "fp32":
            assert row["bound"]["ok"], row
