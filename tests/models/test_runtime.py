"""Runtime: loads the tiny conformance models through a custom manifest, once, and runs them."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import shared_path
from tiny_models import write_tiny_manifest

from restora.config import Settings
from restora.errors import CheckpointError, InvalidParameter, ModelNotInstalled
from restora.models.checkpoint import load_state_dict
from restora.models.runtime import Runtime, architecture_class, choose_device


def conf(name: str) -> Path:
    return shared_path("conformance", name)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    tmp = tmp_path_factory.mktemp("runtime")
    return Runtime(Settings(home=tmp / "home", models=write_tiny_manifest(tmp)), device="cpu")


def _golden(name: str) -> tuple[dict, np.lib.npyio.NpzFile]:
    meta = json.loads(conf(f"{name}.tiny.json").read_text())
    return meta, np.load(conf(f"{name}.tiny.npz"), allow_pickle=False)


def test_tiny_gfpgan_loads_once_and_reproduces_golden(runtime: Runtime) -> None:
    net = runtime.load("tiny-gfpgan")
    assert runtime.load("tiny-gfpgan") is net  # cached: the same object
    assert not net.module.training
    assert all(not p.requires_grad for p in net.module.parameters())
    meta, z = _golden("gfpgan_v1.4")
    with torch.no_grad():
        out = net.module(torch.from_numpy(z["input"]), return_rgb=False,
                         randomize_noise=False)[0]
    assert np.abs(out.numpy() - z["output"]).max() <= meta["recommended_atol"]
    # The descriptor's graph takes the noise as inputs: the stored maps give the golden too.
    stored = [n.numpy() for n in net.module.stylegan_decoder.stored_noise()]
    via_graph = net.run([z["input"], *stored])[0]
    assert np.abs(np.asarray(via_graph) - z["output"]).max() <= meta["recommended_atol"]


def test_tiny_parsenet_and_upscalers_reproduce_goldens(runtime: Runtime) -> None:
    meta, z = _golden("parsenet")
    parser = runtime.load("tiny-parsenet")
    with torch.no_grad():
        mask, img = parser.module(torch.from_numpy(z["input"]))
    assert np.abs(mask.numpy() - z["out_mask"]).max() <= meta["recommended_atol"]
    assert np.abs(img.numpy() - z["out_img"]).max() <= meta["recommended_atol"]
    # the descriptor returns the main output (the mask logits), as numpy for numpy input
    logits = parser(z["input"])
    assert isinstance(logits, np.ndarray)
    assert np.abs(logits - z["out_mask"]).max() <= meta["recommended_atol"]
    for model_id, name in (("tiny-realesrgan-x2", "rrdbnet_s2"),
                           ("tiny-realesrgan-x4", "rrdbnet_s4")):
        meta, z = _golden(name)
        with torch.no_grad():
            out = runtime.load(model_id)(torch.from_numpy(z["input"]))
        assert np.abs(out.numpy() - z["output"]).max() <= meta["recommended_atol"], model_id


def test_tiny_codeformer_loads_strictly(runtime: Runtime) -> None:
    net = runtime.load("tiny-codeformer")
    expected = load_state_dict(conf("codeformer.tiny.pth"))
    got = net.module.state_dict()
    assert set(got) == set(expected)
    key = next(iter(expected))
    assert torch.equal(got[key], expected[key])


def test_detectors_find_faces(runtime: Runtime) -> None:
    import cv2

    rgb = cv2.imread(str(conf("retinaface_photo_03.png")), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    faces = runtime.load("retinaface-mobilenet0.25-facelibcfg").detect(rgb, 0.8)
    assert faces.shape == (1, 15)
    photo = cv2.imread(str(shared_path("testdata", "photos", "03.jpg")))[:, :, ::-1].copy()
    yunet = runtime.load("yunet-2026may")
    assert runtime.load("yunet-2026may") is yunet
    assert yunet.detect(photo).shape == (1, 15)
    assert {"retinaface-mobilenet0.25-facelibcfg", "yunet-2026may"} <= set(runtime.loaded())


def test_concurrent_callers_share_one_load(tmp_path: Path) -> None:
    rt = Runtime(Settings(home=tmp_path / "home", models=write_tiny_manifest(tmp_path)),
                 device="cpu")
    barrier = threading.Barrier(6)
    got: list[object] = []

    def worker() -> None:
        barrier.wait()
        got.append(rt.load("tiny-realesrgan-x4"))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 6 and all(m is got[0] for m in got)
    assert rt.loaded() == ["tiny-realesrgan-x4"]
    rt.unload("tiny-realesrgan-x4")
    assert rt.loaded() == [] and rt.load("tiny-realesrgan-x4") is not got[0]


def test_device_dtype_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORA_DEVICE", "cpu")
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path))
    rt = Runtime()
    assert rt.device == "cpu" and rt.dtype == torch.float32
    assert rt.settings.device == "cpu" and rt.registry.models_dir == tmp_path / "models"
    assert choose_device("auto") in ("cuda", "mps", "cpu")
    with pytest.raises(InvalidParameter, match="unknown device"):
        Runtime(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameter, match="CUDA is not available"):
            Runtime(device="cuda")
    with pytest.raises(InvalidParameter, match="dtype"):
        Runtime(device="cpu", dtype="int8")
    before = torch.get_num_threads()
    try:
        assert Runtime(device="cpu", threads=1).threads == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_half_precision_runtime_converts_weights(tmp_path: Path) -> None:
    rt = Runtime(Settings(home=tmp_path / "home", models=write_tiny_manifest(tmp_path)),
                 device="cpu", dtype="bfloat16")
    net = rt.load("tiny-realesrgan-x2")
    assert {p.dtype for p in net.module.parameters()} == {torch.bfloat16}
    out = net(np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32))
    assert out.dtype == np.float32 and out.shape == (1, 3, 16, 16)


def test_missing_builtin_model_names_bundle_and_commands(tmp_path: Path) -> None:
    rt = Runtime(Settings(home=tmp_path, models=None), device="cpu")
    with pytest.raises(ModelNotInstalled) as err:
        rt.load("gfpgan-v1.4")
    msg = err.value.message
    assert err.value.code == "model_not_installed"
    assert "'gfpgan-v1.4'" in msg and "'upscale-enhance'" in msg
    assert "`restora models pull upscale-enhance`" in msg
    assert "`restora models import FILE --id gfpgan-v1.4`" in msg
    assert msg.count(".") <= 3 and "\n" not in msg  # one sentence (dots are in ids only)
    with pytest.raises(ModelNotInstalled, match="pull realesrgan-x4plus"):  # in no bundle
        rt.load("realesrgan-x4plus")
    assert rt.loaded() == []


def _manifest(tmp_path: Path, **entry: object) -> Settings:
    base = {"id": "m", "task": "upscale", "arch": "rrdbnet", "license": "test",
            "hparams": json.loads(conf("rrdbnet_s2.tiny.json").read_text())["constructor_kwargs"]}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"models": [{**base, **entry}]}))
    return Settings(home=tmp_path / "home", models=path)


def test_missing_custom_file(tmp_path: Path) -> None:
    rt = Runtime(_manifest(tmp_path, path="absent.pth"), device="cpu")
    with pytest.raises(ModelNotInstalled, match="fix 'path' in the model manifest"):
        rt.load("m")


def test_wrong_architecture_is_a_clear_checkpoint_error(tmp_path: Path) -> None:
    rt = Runtime(_manifest(tmp_path, path=str(conf("parsenet.tiny.pth"))), device="cpu")
    with pytest.raises(CheckpointError) as err:
        rt.load("m")
    msg = err.value.message
    assert "does not match RRDBNet" in msg and "missing key(s)" in msg
    assert "unexpected key(s)" in msg and "conv_first.weight" in msg
    assert rt.loaded() == []


def test_wrong_hparams_give_shape_or_build_errors(tmp_path: Path) -> None:
    hp = json.loads(conf("rrdbnet_s4.tiny.json").read_text())["constructor_kwargs"]
    rt = Runtime(_manifest(tmp_path, path=str(conf("rrdbnet_s2.tiny.pth")), hparams=hp),
                 device="cpu")
    with pytest.raises(CheckpointError, match="wrong shape.*conv_first.weight"):
        rt.load("m")
    rt = Runtime(_manifest(tmp_path, path=str(conf("rrdbnet_s2.tiny.pth")),
                           hparams={"no_such_arg": 1}), device="cpu")
    with pytest.raises(CheckpointError, match="cannot build model 'm'"):
        rt.load("m")


def test_checkpoint_nesting_and_prefix(tmp_path: Path) -> None:
    sd = load_state_dict(conf("rrdbnet_s2.tiny.pth"))
    other = {k: torch.zeros_like(v) for k, v in sd.items()}
    nested = tmp_path / "nested.pth"
    torch.save({"params_ema": sd, "params": other}, nested)
    # params_ema wins by default ...
    assert torch.equal(load_state_dict(nested)["conv_first.weight"], sd["conv_first.weight"])
    assert torch.equal(load_state_dict(nested, "params_ema")["conv_first.weight"],
                       sd["conv_first.weight"])
    # ... 'params' when the spec says so (DDColor), and a plain dict stays as it is.
    assert torch.equal(load_state_dict(nested, "params")["conv_first.weight"],
                       other["conv_first.weight"])
    only_params = tmp_path / "params.pth"
    torch.save({"params": sd}, only_params)
    assert set(load_state_dict(only_params, "params_ema")) == set(sd)
    prefixed = tmp_path / "prefixed.pth"
    torch.save({("module." + k if i % 2 else k): v for i, (k, v) in enumerate(sd.items())},
               prefixed)
    assert set(load_state_dict(prefixed, strip_prefix="module.")) == set(sd)
    # Through the runtime: a nested, prefixed file loads strictly and matches the plain one.
    both = tmp_path / "both.pth"
    torch.save({"params": {"module." + k: v for k, v in sd.items()}}, both)
    rt = Runtime(_manifest(tmp_path, path=str(both), nesting="params", strip_prefix="module."),
                 device="cpu")
    assert torch.equal(rt.load("m").module.state_dict()["conv_first.weight"], sd["conv_first.weight"])


class _Payload:
    def __reduce__(self) -> tuple:
        return (print, ("code ran",))


def test_checkpoint_rejects_non_tensor_files(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"x": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="weights-only load failed"):
        load_state_dict(evil)
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable PyTorch checkpoint"):
        load_state_dict(text)
    listy = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict(listy)
    nested = tmp_path / "deep.pth"
    torch.save({"net": {"a": torch.zeros(1)}}, nested)
    with pytest.raises(CheckpointError, match="not a flat dict of tensors"):
        load_state_dict(nested)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "absent.pth")


def test_models_folder_files_are_mapped_and_manifest_paths_read(tmp_path: Path) -> None:
    """A file in the models folder (only ever replaced atomically, by pull or import) is mapped:
    the network's weights are the file's pages, with the same outputs; a manifest's own path is
    read into memory (its owner may rewrite it in place); a file in the old non-zip format
    still loads."""
    import shutil

    tiny = json.loads(write_tiny_manifest(tmp_path, include={"tiny-gfpgan"}).read_text())
    entry = tiny["models"][0]
    home = tmp_path / "home"
    models_dir = Settings(home=home).models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    # no 'path': the file lives in the models folder, as pulled (the URL is never fetched: the
    # file is there)
    managed = {**{k: v for k, v in entry.items() if k != "path"},
               "urls": ["https://models.invalid/tiny.pth"]}
    shutil.copyfile(entry["path"], models_dir / "mapped.pth")
    legacy = dict(managed, id="legacy-gfpgan", filename="legacy.pth")
    torch.save(torch.load(entry["path"], weights_only=True), models_dir / "legacy.pth",
               _use_new_zipfile_serialization=False)
    manifest = tmp_path / "all.json"
    manifest.write_text(json.dumps({"models": [
        entry, dict(managed, id="mapped-gfpgan", filename="mapped.pth"), legacy]}))
    rt = Runtime(Settings(home=home, models=manifest), device="cpu", engine="torch")
    nets = {m: rt.load(m) for m in ("tiny-gfpgan", "mapped-gfpgan", "legacy-gfpgan")}
    maps = Path("/proc/self/maps").read_text()
    assert str(models_dir / "mapped.pth") in maps
    assert entry["path"] not in maps and str(models_dir / "legacy.pth") not in maps
    n = nets["tiny-gfpgan"].input_size
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, n, n)).astype(np.float32)
    outs = [net(x, generator=torch.Generator().manual_seed(1)) for net in nets.values()]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert all(not p.requires_grad for p in nets["mapped-gfpgan"].module.parameters())


class _Initialised(torch.nn.Module):
    """A module whose constructor fills its parameters and also computes tensors of its own."""

    MARK = 12345.678

    def __init__(self, n: int = 4) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, n, 3)
        torch.nn.init.constant_(self.conv.bias, self.MARK)
        torch.nn.init.trunc_normal_(self.conv.weight, std=0.02)
        self.bias_was_filled = bool((self.conv.bias == self.MARK).all())
        self.register_buffer("grid", torch.arange(4.0).mul_(2.0).add_(1.0), persistent=False)
        self.register_buffer("table", torch.empty(3).fill_(7.0))  # persistent: in the checkpoint
        self.scales = [torch.ones(2).mul_(3.0)]


def test_building_skips_parameter_fills_only(tmp_path: Path) -> None:
    """While a network is built its parameters are not randomly initialised (the strict load
    overwrites them all); the tensors its constructor computes for itself are; the network
    then holds the checkpoint's tensors themselves."""
    from restora.models.registry import ModelSpec
    from restora.models.runtime import _construct_loaded

    spec = ModelSpec(id="m", task="upscale", arch="x", hparams={"n": 4})
    state = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4),
             "table": torch.full((3,), 5.0)}
    model = _construct_loaded(_Initialised, spec, state, "checkpoint")
    assert not model.bias_was_filled
    assert model.conv.weight.data_ptr() == state["conv.weight"].data_ptr()  # taken, not copied
    assert torch.equal(model.grid, torch.tensor([1.0, 3.0, 5.0, 7.0]))
    assert torch.equal(model.table, state["table"]) and model.scales[0].tolist() == [3.0, 3.0]
    assert _Initialised().bias_was_filled  # outside a build, torch behaves as always
    with pytest.raises(CheckpointError, match="missing key"):
        _construct_loaded(_Initialised, spec, {"conv.weight": state["conv.weight"]}, "c")


def test_shipped_architectures_derive_nothing_from_initial_parameters(tmp_path: Path) -> None:
    """Every architecture Restora ships, at its registry size, built with the parameter fills
    skipped and then loaded, holds exactly what a normal build and load holds: buffers
    outside the checkpoint and tensor attributes included."""
    from restora.models.registry import ARCHITECTURES, FILE_ARCHS, Registry
    from restora.models.runtime import _construct, _construct_loaded

    specs: dict[str, Any] = {}
    for spec in Registry.from_settings(Settings(home=tmp_path)).all():
        known = specs.get(spec.arch)
        # the smallest file of an architecture (DDColor: ConvNeXt-T rather than -L)
        if spec.arch not in FILE_ARCHS and (known is None or (spec.size or 1e12) < (
                known.size or 1e12)):
            specs[spec.arch] = spec
    assert set(specs) == set(ARCHITECTURES) - FILE_ARCHS
    for arch, spec in specs.items():
        torch.manual_seed(0)
        ref = _construct(architecture_class(arch), spec)
        state = {k: torch.rand(v.shape).to(v.dtype) for k, v in ref.state_dict().items()}
        ref.load_state_dict(state)
        got = _construct_loaded(architecture_class(arch), spec, state, "checkpoint")
        for (name, a), (_, b) in zip(_all_tensors(ref), _all_tensors(got), strict=True):
            assert torch.equal(a, b), f"{arch}: {name}"


def _all_tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    found = [*model.state_dict().items(), *model.named_buffers()]
    for mod_name, mod in model.named_modules():
        for key, value in vars(mod).items():
            values = value if isinstance(value, (list, tuple)) else [value]
            found += [(f"{mod_name}.{key}", v) for v in values if isinstance(v, torch.Tensor)]
    return found
