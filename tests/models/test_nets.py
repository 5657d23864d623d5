"""Model descriptors: the facts pipelines read and the one call, on the tiny conformance models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from tiny_models import write_tiny_manifest

from restora.config import Settings
from restora.models.nets import (CodeFormerRestorer, FaceDetector, FaceParser, FaceRestorer,
                                 GFPGANRestorer, Upscaler, facts, wrap)
from restora.models.runtime import Runtime


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    tmp = tmp_path_factory.mktemp("nets")
    return Runtime(Settings(home=tmp / "home", models=write_tiny_manifest(tmp)), device="cpu")


def test_facts_come_from_the_spec_without_loading(runtime: Runtime) -> None:
    reg = runtime.registry
    x2, x4 = facts(reg.get("tiny-realesrgan-x2")), facts(reg.get("tiny-realesrgan-x4"))
    assert isinstance(x2, Upscaler) and (x2.scale, x2.multiple) == (2, 2)
    assert (x4.scale, x4.multiple) == (4, 1)
    assert facts(reg.get("realesr-general-x4v3")).scale == 4
    gfpgan = facts(reg.get("gfpgan-v1.4"))
    assert isinstance(gfpgan, GFPGANRestorer) and gfpgan.input_size == 512
    assert gfpgan.kind == "gfpgan" and gfpgan.task == "face-restoration"
    codeformer = facts(reg.get("codeformer"))
    assert isinstance(codeformer, CodeFormerRestorer) and codeformer.dtypes == ("float32",)
    parser = facts(reg.get("parsenet"))
    assert isinstance(parser, FaceParser) and parser.input_size == 512 and parser.classes == 19
    assert isinstance(facts(reg.get("yunet")), FaceDetector)
    assert facts(reg.get("ddcolor-paper-tiny")).multiple == 32
    assert runtime.loaded() == []


def test_one_call_on_numpy_or_tensors(runtime: Runtime) -> None:
    net = runtime.load("tiny-codeformer")
    assert isinstance(net, FaceRestorer) and net.engine_name == "torch"
    assert net.precision == "fp32"
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 512, 512)).astype(np.float32)
    a = net(x, fidelity=0.7)
    b = net(torch.from_numpy(x), fidelity=0.7)
    assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
    assert a.shape == (1, 3, 512, 512)
    assert np.array_equal(a, b.numpy())
    # w as a tensor input runs the fusion even at 0: it adds exact zeros, so the same image as
    # the module's skip at w = 0
    with torch.no_grad():
        skipped = net.module(torch.from_numpy(x), w=0.0, adain=True)[0].numpy()
    assert np.abs(net(x, fidelity=0.0) - skipped).max() <= 1e-6


def test_codeformer_matches_its_golden_through_the_descriptor(runtime: Runtime) -> None:
    conf = shared_path("conformance")
    meta = json.loads((conf / "codeformer.tiny.json").read_text())
    z = np.load(conf / "codeformer.tiny.npz")
    net = runtime.load("tiny-codeformer")
    for key in z.files:
        if key.startswith("output_w"):
            w = float(key.removeprefix("output_w").replace("p", ".").replace("_", "."))
            got = net(z["input"], fidelity=w)
            assert np.abs(got - z[key]).max() <= meta.get("recommended_atol", 1e-3), key


def test_seeded_gfpgan_noise_is_reproducible(runtime: Runtime) -> None:
    net = runtime.load("tiny-gfpgan")
    n = net.input_size
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, n, n)).astype(np.float32)

    def seeded(seed: int) -> np.ndarray:
        return net(x, generator=torch.Generator().manual_seed(seed))

    first, again, other = seeded(3), seeded(3), seeded(4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # the same draws as the module's own per-layer noise (the pre-descriptor behaviour)
    with torch.no_grad():
        ref = net.module(torch.from_numpy(x), return_rgb=False, randomize_noise=True,
                         generator=torch.Generator().manual_seed(3))[0].numpy()
    assert np.array_equal(first, ref)


def test_detector_descriptor_detects(runtime: Runtime) -> None:
    import cv2

    rgb = cv2.imread(str(shared_path("conformance", "retinaface_photo_03.png")))[:, :, ::-1]
    det = runtime.load("retinaface-mobilenet0.25-facelibcfg")
    rows = det(np.ascontiguousarray(rgb), 0.8)
    assert rows.shape == (1, 15)
    assert np.array_equal(rows, det.module.detect(np.ascontiguousarray(rgb), 0.8))


def test_wrap_builds_a_descriptor_for_any_module(tmp_path: Path) -> None:
    ident = wrap(torch.nn.Identity(), "face-restoration")
    assert isinstance(ident, FaceRestorer) and ident.input_size == 512
    x = np.zeros((1, 3, 512, 512), np.float32)
    assert np.array_equal(ident(x, fidelity=0.3), x)


def test_parser_class_maps_are_the_argmax_of_its_logits(runtime: Runtime) -> None:
    """class_maps takes the argmax where the logits are (on a GPU, there: test_gpu.py)."""
    parser = runtime.load("tiny-parsenet")
    assert isinstance(parser, FaceParser)
    n = parser.input_size
    x = np.random.default_rng(5).uniform(-1, 1, (2, 3, n, n)).astype(np.float32)
    maps = parser.class_maps(x)
    assert maps.dtype == np.int64 and maps.shape == (2, n, n)
    assert np.array_equal(maps, parser(x).argmax(axis=1))
    assert len(np.unique(maps)) > 1  # not a constant map
