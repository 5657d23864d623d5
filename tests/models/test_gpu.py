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
    """Against torch float32 on the CPU, GFPGAN's noise drawn there for both (a CPU generator):
    TF32 convolutions, cuDNN's default, once put CodeFormer at 28.8 dB here; a parser that runs
    in TF32 first must leave torch's switches as it found them."""
    cpu, gpu = runtimes
    found = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    parser = gpu.load("tiny-parsenet")  # may take TF32: each forward puts back what it found
    parser(np.zeros((1, 3, parser.input_size, parser.input_size), np.float32))
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == found
    for model_id, kw in (("tiny-gfpgan", {}), ("tiny-codeformer", {"fidelity": 0.5})):
        net_cpu, net_gpu = cpu.load(model_id), gpu.load(model_id)
        n = net_cpu.input_size
        x = np.random.default_rng(0).uniform(-1, 1, (3, 3, n, n)).astype(np.float32)
        if model_id == "tiny-gfpgan":
            ref = net_cpu(x, generator=torch.Generator().manual_seed(1))
            got = net_gpu(x, generator=torch.Generator().manual_seed(1))
            assert net_gpu.precision == "fp16"  # the face-restoration GPU policy
        else:
            ref, got = net_cpu(x, **kw), net_gpu(x, **kw)
            assert net_gpu.precision == "fp32"  # CodeFormer declares float32 only
        assert net_gpu.engine_name == "torch"
        ok, measure = policy_for("face-restoration").check([ref], [got])
        assert ok, f"{model_id}: {measure}"


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


def check_photo_networks(device: str, tmp_path: Path, engine: str = "auto") -> None:
    """The photo networks on ``device`` against the CPU's torch fp32, each within its task's
    bound, and restore-photo end to end there (a torn patch filled by LaMa, colour added).
    (``device="cpu", engine="torch"`` runs the same checks where there is no GPU.)"""
    from conftest import shared_path
    from tiny_models import tiny_ddcolor_entry, tiny_photo_repair_entries

    from restora.io import decode
    from restora.pipeline.photo import restore_photo

    manifest = write_tiny_manifest(tmp_path, include=set(), extra=[
        *tiny_photo_repair_entries(), tiny_ddcolor_entry(input_size=256)])
    settings = Settings(home=tmp_path / "home", models=manifest)
    cpu = Runtime(settings, device="cpu", engine="torch")
    dev = Runtime(settings, device=device, engine=engine)
    rng = np.random.default_rng(4)
    hole = np.zeros((1, 1, 256, 256), np.float32)
    hole[..., 64:128, 96:192] = 1.0
    rgb = rng.uniform(0, 1, (1, 3, 256, 256)).astype(np.float32)
    inputs = {"tiny-lama": np.concatenate([rgb * (1 - hole), hole], 1),
              "tiny-scratch-unet": rng.uniform(-1, 1, (1, 1, 256, 384)).astype(np.float32),
              "tiny-ddcolor": np.repeat(rgb.mean(1, keepdims=True), 3, 1)}
    for model_id, x in inputs.items():
        ref, net = cpu.load(model_id), dev.load(model_id)
        got = net(x)
        assert net.precision == "fp32"  # FFTs, a threshold, Lab: float32 on the GPU too
        ok, measure = policy_for(net.task).check([ref(x)], [got])
        assert ok, f"{model_id} on {device}: {measure}"
    img = decode(shared_path("testdata", "gray", "Hepburn01.png"))
    user = np.zeros((img.height, img.width), bool)
    user[100:160, 80:200] = True
    result = restore_photo(img, runtime=dev, face_enhancement=False, colorize=True, mask=user)
    assert result.reports["scratch-removal"]["fill"]["wideFill"] == "lama"
    assert result.colorized and result.mask[user].all()


def test_photo_networks_on_cuda(tmp_path: Path) -> None:
    check_photo_networks("cuda", tmp_path)


def test_tf32_only_where_the_task_allows_it(runtimes: tuple[Runtime, Runtime]) -> None:
    """TF32 is a GPU candidate for parsing and detection (checked by the probe), never for the
    restorers: CodeFormer stays IEEE float32. A TF32 network's output stays within its bound of
    the CPU's float32."""
    cpu, gpu = runtimes
    assert gpu.load("tiny-codeformer").precision == "fp32"
    parser = gpu.load("tiny-parsenet")
    assert parser.precision in ("fp16", "bf16", "tf32", "fp32")
    n = parser.input_size
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, n, n)).astype(np.float32)
    ok, measure = policy_for("face-parsing").check([cpu.load("tiny-parsenet")(x)], [parser(x)])
    assert ok, f"tiny-parsenet in {parser.precision}: {measure}"


def test_parser_class_maps_on_cuda_match_the_logits(runtimes: tuple[Runtime, Runtime]) -> None:
    """On CUDA the argmax runs on the GPU and only the maps come back; the same maps as the
    argmax of the logits brought back."""
    _, gpu = runtimes
    parser = gpu.load("tiny-parsenet")
    n = parser.input_size
    x = np.random.default_rng(6).uniform(-1, 1, (3, 3, n, n)).astype(np.float32)
    maps = parser.class_maps(x)
    assert maps.dtype == np.int64 and maps.shape == (3, n, n)
    assert np.array_equal(maps, parser(x).argmax(axis=1))
