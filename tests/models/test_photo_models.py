"""The two photo-repair models as registry entries: archive-member downloads against a real
127.0.0.1 server, the safe Lightning and TorchScript loaders, strict loads through the Runtime.

Fixtures are built here from the tiny conformance weights of ``../shared/conformance/photo``:
a zip that holds ``checkpoints/detection/FT_Epoch_latest.pt`` (``{"model_state": ...}``) among
other files, a Lightning-style checkpoint (OmegaConf configs, a ModelCheckpoint callback, a
defaultdict, generator and discriminator tensors) and a traced TorchScript re-host.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import sys
import types
import typing
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from restora.config import Settings
from restora.errors import ChecksumMismatch, CheckpointError, DownloadError
from restora.models.arch.lama import LaMa
from restora.models.arch.scratch_unet import ScratchUNet
from restora.models.checkpoint import load_state_dict
from restora.models.download import archive_partial_path, import_file, partial_path, pull
from restora.models.registry import Registry
from restora.models.runtime import Runtime
from test_download import FAST, Behaviour, FixtureServer, server  # noqa: F401 - fixture

MEMBER = "checkpoints/detection/FT_Epoch_latest.pt"


def _conf(name: str) -> dict:
    return json.loads(shared_path("conformance", "photo", name).read_text())


def _tiny_sd(name: str) -> dict[str, torch.Tensor]:
    return torch.load(shared_path("conformance", "photo", f"{name}.tiny.pth"), weights_only=True)


def _member_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"model_state": _tiny_sd("scratchunet"), "epoch": 7}, buf)
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _registry(tmp_path: Path, entry: dict) -> tuple[Registry, Settings]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    manifest = tmp_path / "models.json"
    manifest.write_text(json.dumps({"models": [entry]}))
    settings = Settings(home=tmp_path / "home", models=manifest)
    return Registry.from_settings(settings), settings


def _scratch_entry(urls: list[str], member_sha: str, **extra: object) -> dict:
    return {"id": "tiny-scratch", "task": "damage-segmentation", "arch": "scratch_unet",
            "hparams": _conf("scratchunet.tiny.json")["constructor_kwargs"],
            "filename": "tiny_FT_Epoch_latest.pt", "urls": urls, "member": MEMBER,
            "sha256": member_sha, "nesting": "model_state", "license": "test fixture",
            "default": True, **extra}


def _nothing_installed(registry: Registry, spec) -> None:  # noqa: ANN001
    dest = registry.path(spec)
    assert not dest.exists() and not partial_path(dest).exists()
    assert not archive_partial_path(registry, spec).exists()
    assert not any(p.name.endswith((".partial", ".importing")) for p in
                   registry.models_dir.rglob("*"))


# --- archive member downloads ------------------------------------------------------------------

def test_member_is_extracted_verified_installed_and_runs(tmp_path: Path,
                                                         server: FixtureServer) -> None:  # noqa: F811
    member = _member_bytes()
    archive = _zip({"checkpoints/restoration/other.pth": b"x" * 5000, MEMBER: member,
                    "README.txt": b"release"})
    server.routes["/global_checkpoints.zip"] = Behaviour(archive)
    registry, settings = _registry(tmp_path, _scratch_entry(
        [server.base + "/global_checkpoints.zip"], hashlib.sha256(member).hexdigest(),
        archive_sha256=hashlib.sha256(archive).hexdigest(), archive_size=len(archive)))
    spec = registry.get("tiny-scratch")
    path = pull(registry, spec, options=FAST)
    assert path.read_bytes() == member
    assert not archive_partial_path(registry, spec).exists()  # the archive is not kept
    assert [p.name for p in registry.models_dir.iterdir() if p.is_file()] == [path.name]
    # the installed file is the network: strict load, golden logits
    net = Runtime(settings, device="cpu").load("tiny-scratch")
    z = np.load(shared_path("conformance", "photo", "scratchunet.tiny.npz"))
    n = "hepburn_200x264_scale_256"
    with torch.no_grad():
        logits = net(torch.from_numpy(z[f"{n}_input"]))
    assert float((logits - torch.from_numpy(z[f"{n}_logits"])).abs().max()) <= 2e-4


def test_wrong_member_hash_installs_nothing(tmp_path: Path, server: FixtureServer) -> None:  # noqa: F811
    archive = _zip({MEMBER: _member_bytes()})
    server.routes["/a.zip"] = Behaviour(archive)
    registry, _ = _registry(tmp_path, _scratch_entry([server.base + "/a.zip"], "0" * 64))
    spec = registry.get("tiny-scratch")
    with pytest.raises(ChecksumMismatch) as err:
        pull(registry, spec, options=FAST)
    assert MEMBER in err.value.message and "nothing was installed" in err.value.message
    _nothing_installed(registry, spec)


def test_truncated_archive_installs_nothing(tmp_path: Path, server: FixtureServer) -> None:  # noqa: F811
    member = _member_bytes()
    archive = _zip({MEMBER: member})
    # the server sends a complete response of a truncated file (as a cut-short upload would)
    server.routes["/a.zip"] = Behaviour(archive[: len(archive) * 2 // 3])
    registry, _ = _registry(tmp_path, _scratch_entry([server.base + "/a.zip"],
                                                     hashlib.sha256(member).hexdigest()))
    spec = registry.get("tiny-scratch")
    with pytest.raises(DownloadError) as err:
        pull(registry, spec, options=FAST)
    assert "unusable" in err.value.message
    _nothing_installed(registry, spec)


def test_wrong_archive_hash_and_missing_member_install_nothing(
        tmp_path: Path, server: FixtureServer) -> None:  # noqa: F811
    member = _member_bytes()
    archive = _zip({MEMBER: member})
    server.routes["/a.zip"] = Behaviour(archive)
    server.routes["/b.zip"] = Behaviour(_zip({"something/else.pt": member}))
    sha = hashlib.sha256(member).hexdigest()
    registry, _ = _registry(tmp_path / "one", _scratch_entry([server.base + "/a.zip"], sha,
                                                             archive_sha256="1" * 64))
    with pytest.raises(ChecksumMismatch) as err:
        pull(registry, registry.get("tiny-scratch"), options=FAST)
    assert "archive" in err.value.message
    _nothing_installed(registry, registry.get("tiny-scratch"))
    registry, _ = _registry(tmp_path / "two", _scratch_entry([server.base + "/b.zip"], sha))
    with pytest.raises(DownloadError) as err:
        pull(registry, registry.get("tiny-scratch"), options=FAST)
    assert f"no member '{MEMBER}'" in err.value.message
    _nothing_installed(registry, registry.get("tiny-scratch"))


def test_second_mirror_is_used_when_the_first_archive_is_bad(
        tmp_path: Path, server: FixtureServer) -> None:  # noqa: F811
    member = _member_bytes()
    archive = _zip({MEMBER: member})
    server.routes["/bad.zip"] = Behaviour(archive[:1000])
    server.routes["/good.zip"] = Behaviour(archive)
    registry, _ = _registry(tmp_path, _scratch_entry(
        [server.base + "/bad.zip", server.base + "/good.zip"], hashlib.sha256(member).hexdigest()))
    assert pull(registry, registry.get("tiny-scratch"), options=FAST).read_bytes() == member


def test_import_of_the_release_archive_takes_the_member(tmp_path: Path) -> None:
    member = _member_bytes()
    zip_path = tmp_path / "global_checkpoints.zip"
    zip_path.write_bytes(_zip({MEMBER: member}))
    registry, _ = _registry(tmp_path, _scratch_entry(["http://127.0.0.1:9/x.zip"],
                                                     hashlib.sha256(member).hexdigest()))
    spec = import_file(registry, zip_path, "tiny-scratch")
    assert registry.path(spec).read_bytes() == member
    registry2, _ = _registry(tmp_path / "b", _scratch_entry(["http://127.0.0.1:9/x.zip"], "2" * 64))
    with pytest.raises(ChecksumMismatch):
        import_file(registry2, zip_path, "tiny-scratch")
    _nothing_installed(registry2, registry2.get("tiny-scratch"))


# --- Lightning checkpoint: weights-only with inert placeholders --------------------------------

EXECUTED: list[str] = []  # what the stand-in "third-party" classes did (must stay empty on load)


@contextmanager
def _fake_third_party() -> Iterator[dict[str, type]]:
    """Importable stand-ins named like omegaconf / Lightning classes, only while saving."""
    names = {"omegaconf.nodes": ["AnyNode"], "omegaconf.base": ["Metadata", "ContainerMetadata"],
             "omegaconf.dictconfig": ["DictConfig"], "omegaconf.listconfig": ["ListConfig"],
             "pytorch_lightning.callbacks.model_checkpoint": ["ModelCheckpoint"]}
    classes: dict[str, type] = {}
    added = []
    for mod, clss in names.items():
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        for cls_name in clss:
            def setstate(self, state, _n=cls_name):  # noqa: ANN001
                EXECUTED.append(_n)
                self.__dict__.update(state)
            cls = type(cls_name, (), {"__module__": mod, "__setstate__": setstate})
            setattr(sys.modules[mod], cls_name, cls)
            classes[cls_name] = cls
    try:
        yield classes
    finally:
        for name in added:
            del sys.modules[name]


def _obj(cls: type, **state: object) -> object:
    o = cls.__new__(cls)
    o.__dict__.update(state)
    return o


def _lightning_ckpt(path: Path, generator: dict[str, torch.Tensor]) -> None:
    with _fake_third_party() as c:
        meta = _obj(c["ContainerMetadata"], ref_type=typing.Any, object_type=dict,
                    key_type=typing.Any, element_type=typing.Any, optional=True)
        gen_cfg = _obj(c["DictConfig"], _metadata=meta, _content={
            "ngf": _obj(c["AnyNode"], _val=64, _metadata=_obj(c["Metadata"], ref_type=int)),
            "kind": "ffc_resnet", "blocks": _obj(c["ListConfig"], _content=[1, 2])})
        ckpt = {
            "epoch": 40, "global_step": 123,
            "state_dict": {**{"generator." + k: v for k, v in generator.items()},
                           "discriminator.model0.0.weight": torch.zeros(4, 3, 3, 3),
                           "loss_resnet_pl.impl.conv1.weight": torch.zeros(2)},
            "callbacks": {c["ModelCheckpoint"]: {"best_model_score": torch.tensor(0.1)}},
            # (empty: torch's weights-only unpickler sets items on plain dicts only, so a
            # checkpoint the public safe loaders read cannot hold a filled one)
            "loops": collections.defaultdict(list),
            "hyper_parameters": {"generator": gen_cfg, "sizes": [dict, list, int]},
        }
        torch.save(ckpt, path)
    EXECUTED.clear()


def test_lightning_checkpoint_loads_weights_only_with_placeholders(tmp_path: Path) -> None:
    path = tmp_path / "best.ckpt"
    _lightning_ckpt(path, _tiny_sd("lama"))
    assert "omegaconf" not in sys.modules and "pytorch_lightning" not in sys.modules
    # the plain weights-only load refuses it (the globals are not allowed) ...
    with pytest.raises(CheckpointError, match="weights-only load failed"):
        load_state_dict(path, "state_dict", "generator.")
    # ... the Lightning loader binds them to inert placeholders and keeps the generator only
    state = load_state_dict(path, "state_dict", "generator.", loader="lightning")
    assert EXECUTED == []  # none of the stand-in classes' code ran
    assert "omegaconf" not in sys.modules and "pytorch_lightning" not in sys.modules
    model = LaMa(**_conf("lama.tiny.json")["constructor_kwargs"])
    model.load_state_dict(state, strict=True)  # exactly the generator's keys
    z = np.load(shared_path("conformance", "photo", "lama.tiny.npz"))
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(z["sq256_input"]))
    assert float((pred - torch.from_numpy(z["sq256_predicted_image"])).abs().max()) <= 3e-5


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.target,))


def test_lightning_loader_refuses_other_globals_and_runs_nothing(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"generator.x": torch.zeros(1)}, "hook": _Payload(target)}, path)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(path, "state_dict", "generator.", loader="lightning")
    assert "evil.ckpt" in err.value.message
    assert not target.exists()


# --- TorchScript re-host: tensors only ---------------------------------------------------------

class _Rehost(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def test_torchscript_rehost_loads_by_state_dict(tmp_path: Path) -> None:
    meta = _conf("lama.tiny.json")
    gen = LaMa(**meta["constructor_kwargs"])
    gen.load_state_dict(_tiny_sd("lama"))
    traced = torch.jit.trace(_Rehost(gen.eval()), torch.rand(1, 4, 64, 64))
    path = tmp_path / "big-lama.pt"
    torch.jit.save(traced, str(path))
    state = load_state_dict(path, None, "model.", loader="torchscript")
    keys = _conf("lama.keys.json")["keys"]
    assert keys[0]["torchscript_key"] == "model." + keys[0]["key"]
    fresh = LaMa(**meta["constructor_kwargs"])
    fresh.load_state_dict(state, strict=True)
    z = np.load(shared_path("conformance", "photo", "lama.tiny.npz"))
    with torch.no_grad():
        pred = fresh.eval()(torch.from_numpy(z["rect197x262_input"]))
    assert float((pred - torch.from_numpy(z["rect197x262_predicted_image"])).abs().max()) <= 3e-5
    # a plain pickle is not a TorchScript archive: one clear error
    bad = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_state_dict(bad, None, "model.", loader="torchscript")


# --- registry ----------------------------------------------------------------------------------

def test_builtin_entries_bundle_and_full_size_strict_layouts(tmp_path: Path) -> None:
    registry = Registry.from_settings(Settings(home=tmp_path))
    scratch, lama, ckpt = (registry.get(i) for i in ("bopbtl-scratch", "lama-big",
                                                     "lama-big-ckpt"))
    assert (scratch.task, scratch.arch, scratch.member) == (
        "damage-segmentation", "scratch_unet", MEMBER)
    assert scratch.sha256 == "b2d7ab04e9b3885c6b1991bb7a0b823129dd6e3ac078a9fd059ebd2a7ba59a95"
    assert scratch.urls[0].endswith("/v1.0/global_checkpoints.zip")
    assert (lama.task, lama.arch, lama.loader, lama.strip_prefix) == (
        "inpainting", "lama", "torchscript", "model.")
    assert (ckpt.loader, ckpt.nesting, ckpt.strip_prefix, ckpt.member) == (
        "lightning", "state_dict", "generator.", "big-lama/models/best.ckpt")
    bundle = {s.id for s in registry.bundle("photo-restoration")}
    assert {"bopbtl-scratch", "lama-big"} <= bundle
    assert "MIT" in scratch.license and "Apache-2.0" in lama.license
    assert registry.default("inpainting").id == "lama-big"
    assert registry.default("damage-segmentation").id == "bopbtl-scratch"
    # the official configurations in the registry build exactly the official key sets
    for spec, name, key in ((scratch, "scratchunet", "key"), (lama, "lama", "torchscript_key"),
                            (ckpt, "lama", "lightning_key")):
        cls = ScratchUNet if spec.arch == "scratch_unet" else LaMa
        sd = cls(**spec.hparams).state_dict()
        official = [(e[key], e["shape"]) for e in _conf(f"{name}.keys.json")["keys"]]
        prefix = spec.strip_prefix or ""
        assert [(prefix + k, list(v.shape)) for k, v in sd.items()] == official


def test_runtime_returns_typed_descriptors_and_keeps_lama_in_float32(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restora.models.nets import LaMaInpainter, ScratchUNetSegmenter, facts
    from tiny_models import tiny_photo_repair_entries, write_tiny_manifest

    manifest = write_tiny_manifest(tmp_path, include=set(), extra=tiny_photo_repair_entries())
    monkeypatch.setenv("RESTORA_MODELS", str(manifest))
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    registry = Registry.from_settings(Settings())
    seg, inp = facts(registry.get("bopbtl-scratch")), facts(registry.get("lama-big"))
    assert (seg.task, seg.multiple, seg.kind) == ("damage-segmentation", 16, "bopbtl-unet")
    assert (inp.task, inp.multiple, inp.kind, inp.dtypes) == ("inpainting", 8, "lama",
                                                               ("float32",))
    rt = Runtime(Settings(), device="cpu", dtype="float16")
    lama, unet = rt.load("tiny-lama"), rt.load("tiny-scratch-unet")
    assert isinstance(lama, LaMaInpainter) and isinstance(unet, ScratchUNetSegmenter)
    assert next(lama.module.parameters()).dtype == torch.float32  # FFTs: no half on CPU
    z = np.load(shared_path("conformance", "photo", "lama.tiny.npz"))
    pred = lama(z["sq256_input"])  # numpy in, numpy out
    assert isinstance(pred, np.ndarray)
    assert float(np.abs(pred - z["sq256_predicted_image"]).max()) <= 3e-5
