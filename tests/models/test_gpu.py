"""The GPU path (CUDA): per-task half precision within the bounds, faces batched, seeded runs
reproducible. Skipped where no CUDA device exists; run these wherever one is available."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import write_tiny_manifest

from restora.config import Settings
from restora.models.engines import policy_for
from restora.models.runtime import Runtime

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Runtime, Runtime]:
    tmp = tmp_path_factory.mktemp("gpu")
    settings = Settings(home=tmp / "home", models=write_tiny_manifest(tmp))
    return (Runtime(settings, device="cpu", engine="torch"),
            Runtime(settings, device="cuda", engine="auto"))


def test_restorers_on_cuda_stay_within_the_bound(runtimes: tuple[Runtime, Runtime]) -> None:
    cpu, gpu = runtimes
    for model_id, kw in (("tiny-gfpgan", {}), ("tiny-codeformer", {"fidelity": 0.5})):
        net_cpu, net_gpu = cpu.load(model_id), gpu.load(model_id)
        n = net_cpu.input_size
        x = np.random.default_rng(0).uniform(-1, 1, (3, 3, n, n)).astype(np.float32)
        if model_id == "tiny-gfpgan":
            ref = net_cpu(x, generator=torch.Generator().manual_seed(1))
            got = net_gpu(x, generator=torch.Generator(device="cuda").manual_seed(1))
            assert net_gpu.precision == "fp16"  # the face-restoration GPU policy
        else:
            ref, got = net_cpu(x, **kw), net_gpu(x, **kw)
            assert net_gpu.precision == "fp32"  # CodeFormer declares float32 only
        assert net_gpu.engine_name == "torch"
        if model_id == "tiny-codeformer":
            ok, measure = policy_for("face-restoration").check([ref], [got])
            assert ok, measure


def test_seeded_gpu_runs_repeat(runtimes: tuple[Runtime, Runtime]) -> None:
    _, gpu = runtimes
    net = gpu.load("tiny-gfpgan")
    n = net.input_size
    x = np.random.default_rng(2).uniform(-1, 1, (4, 3, n, n)).astype(np.float32)
    a = net(x, generator=torch.Generator(device="cuda").manual_seed(5))
    b = net(x, generator=torch.Generator(device="cuda").manual_seed(5))
    assert np.array_equal(a, b)


def test_enhance_faces_on_cuda(runtimes: tuple[Runtime, Runtime], tmp_path: Path) -> None:
    from conftest import shared_path

    from restora.io import decode
    from restora.pipeline.enhance import enhance_faces

    _, gpu = runtimes
    result = enhance_faces(decode(shared_path("testdata", "photos", "00.jpg")), runtime=gpu,
                           model="gfpgan", seed=3)
    assert result.faces_detected >= 1 and result.engine == "torch"
    assert result.precision == "fp16"
