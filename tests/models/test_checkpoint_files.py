"""Checkpoint files that are hostile, damaged or of the wrong kind: each is one CheckpointError
(``bad_checkpoint``) that says what is wrong, never a traceback, and never runs code."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import shared_path
from test_photo_models import _Rehost

from restora.config import Settings
from restora.errors import CheckpointError
from restora.models.checkpoint import load_state_dict
from restora.models.runtime import Runtime

TINY = shared_path("conformance", "rrdbnet_s2.tiny.pth")


def _runtime(tmp_path: Path, path: Path, **entry: object) -> Runtime:
    hparams = json.loads(shared_path("conformance", "rrdbnet_s2.tiny.json").read_text())
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"models": [
        {"id": "m", "task": "upscale", "arch": "rrdbnet", "license": "test", "path": str(path),
         "hparams": hparams["constructor_kwargs"], **entry}]}))
    return Runtime(Settings(home=tmp_path / "home", models=manifest), device="cpu",
                   engine="torch")


class _Writes:
    """Unpickled without the weights-only guard, this would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("mmap", [False, True])
def test_a_pickle_with_a_forbidden_global_is_refused_by_name(tmp_path: Path, mmap: bool) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({"params_ema": {"w": _Writes(marker)}}, evil)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(evil, mmap=mmap)
    assert err.value.code == "bad_checkpoint"
    assert "never run from a model file" in err.value.message
    assert "builtins.open" in err.value.message or "io.open" in err.value.message
    # torch's advice to load with weights_only=False must not reach the user
    assert "weights_only" not in err.value.message
    assert not marker.exists()


@pytest.mark.parametrize(("content", "reason"), [
    (lambda data: data[: len(data) // 2], "truncated or corrupt"),
    (lambda data: b"", "the file is empty"),
    (lambda data: b"<!DOCTYPE html><html>Sign in</html>", "HTML or XML page"),
])
def test_damaged_or_foreign_files_say_what_they_are(tmp_path: Path, content, reason: str) -> None:  # noqa: ANN001
    bad = tmp_path / "m.pth"
    bad.write_bytes(content(TINY.read_bytes()))
    for mmap in (False, True):
        with pytest.raises(CheckpointError, match=reason):
            load_state_dict(bad, mmap=mmap)


@pytest.mark.parametrize("convert", [
    lambda t: t.long(), lambda t: t.bool(), lambda t: t.to(torch.complex64),
    lambda t: t.to_sparse(),
])
def test_a_tensor_of_the_wrong_kind_is_named(tmp_path: Path, convert) -> None:  # noqa: ANN001
    """Right keys and shapes, but an integer, boolean, complex or sparse tensor where the
    network has a float parameter: used to be a RuntimeError traceback from inside torch (or,
    for complex and sparse, a network that loaded and computed nonsense)."""
    state = load_state_dict(TINY, "params_ema")
    state["conv_first.weight"] = convert(state["conv_first.weight"])
    path = tmp_path / "kind.pth"
    torch.save({"params_ema": state}, path)
    rt = _runtime(tmp_path, path)
    with pytest.raises(CheckpointError, match=r"not dense floating-point \(conv_first.weight"):
        rt.load("m")
    assert rt.loaded() == []


def test_other_float_types_are_converted(tmp_path: Path) -> None:
    state = load_state_dict(TINY, "params_ema")
    path = tmp_path / "f64.pth"
    torch.save({"params_ema": {k: v.double() for k, v in state.items()}}, path)
    net = _runtime(tmp_path, path).load("m")
    assert {p.dtype for p in net.module.parameters()} == {torch.float32}


def test_a_storage_smaller_than_its_tensor_claims_is_refused(tmp_path: Path) -> None:
    """A pickle claiming a 2e9-element tensor over a 3-element storage: refused, no allocation."""
    small = tmp_path / "small.pth"
    torch.save({"w": torch.zeros(3)}, small)
    lying = tmp_path / "lying.pth"
    with zipfile.ZipFile(small) as zin, zipfile.ZipFile(lying, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                assert data.count(b"K\x03\x85") == 1  # BININT1 3, TUPLE1: the size (3,)
                data = data.replace(b"K\x03\x85", b"J" + struct.pack("<i", 2_000_000_000) + b"\x85")
            zout.writestr(info, data)
    for mmap in (False, True):
        with pytest.raises(CheckpointError, match="not a loadable PyTorch checkpoint"):
            load_state_dict(lying, mmap=mmap)


def test_safetensors_files_load_and_a_lying_header_is_refused(tmp_path: Path) -> None:
    """torch.load hands ``*.safetensors`` paths to safetensors: a valid file is a flat state
    dict like any other; a header whose offsets lie about the file was a SafetensorError
    traceback."""
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    good = tmp_path / "m.safetensors"
    save_file(load_state_dict(TINY, "params_ema"), str(good))
    assert _runtime(tmp_path, good).load("m").module is not None
    header = json.dumps({"w": {"dtype": "F32", "shape": [100000, 100000],
                               "data_offsets": [0, 40_000_000_000]}}).encode()
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match="lying.safetensors is not a loadable"):
        load_state_dict(lying)


def _installed(tmp_path: Path, data: bytes) -> Runtime:
    """A Runtime whose model 'm' lives in the models folder (as pulled) with ``data``."""
    hparams = json.loads(shared_path("conformance", "rrdbnet_s2.tiny.json").read_text())
    tmp_path.mkdir(exist_ok=True)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"models": [
        {"id": "m", "task": "upscale", "arch": "rrdbnet", "license": "test",
         "urls": ["https://models.invalid/m.pth"], "filename": "m.pth",
         "size": TINY.stat().st_size, "hparams": hparams["constructor_kwargs"]}]}))
    settings = Settings(home=tmp_path / "home", models=manifest)
    settings.models_dir.mkdir(parents=True)
    (settings.models_dir / "m.pth").write_bytes(data)
    return Runtime(settings, device="cpu", engine="torch")


def test_an_installed_file_of_the_wrong_size_says_how_to_mend_it(tmp_path: Path) -> None:
    """Truncated after it was verified (a copy cut short, a disk error): the load names the
    sizes and the commands, instead of an unreadable-zip message (pull says 'installed')."""
    data = TINY.read_bytes()
    rt = _installed(tmp_path, data[:-1000])
    with pytest.raises(CheckpointError, match=f"has {len(data) - 1000} bytes, expected "
                       f"{len(data)}.*damaged or replaced.*restora models pull m"):
        rt.load("m")
    # same size, other bytes: the load fails on the content and says the same
    rt = _installed(tmp_path / "b", b"\0" * len(data))
    with pytest.raises(CheckpointError, match="must be installed again: delete .*m.pth and run "
                       "`restora models pull m`"):
        rt.load("m")
    assert _installed(tmp_path / "c", data).load("m").module is not None


class _Announces(torch.nn.Module):
    """A scripted module whose stored __setstate__ prints: torch.jit.load runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("stored code ran")
        self.w = state[0]
        self.training = state[1]


def test_a_torchscript_archive_is_opened_only_with_its_pinned_hash(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Opening a TorchScript archive runs the TorchScript code it stores (its __setstate__):
    the runtime used to open any such file a manifest named. Now the file's SHA-256 must be the
    pinned one, checked before the archive is opened."""
    import hashlib

    from restora.models.runtime import architecture_class

    hidden = tmp_path / "announces.pt"
    torch.jit.save(torch.jit.script(_Announces()), str(hidden))
    torch.jit.load(str(hidden))
    assert "stored code ran" in capfd.readouterr().out  # the hazard is real

    for sha256 in (None, "0" * 64):
        entry = {"loader": "torchscript", "strip_prefix": "model."}
        if sha256:
            entry["sha256"] = sha256
        with pytest.raises(CheckpointError, match="TorchScript archive") as err:
            _runtime(tmp_path, hidden, **entry).load("m")
        assert ("without a known SHA-256" if sha256 is None else "never opened") in \
            err.value.message
        assert "stored code ran" not in capfd.readouterr().out

    hparams = json.loads(shared_path("conformance", "rrdbnet_s2.tiny.json").read_text())
    net = architecture_class("rrdbnet")(**hparams["constructor_kwargs"])
    net.load_state_dict(load_state_dict(TINY, "params_ema"))
    rehost = tmp_path / "rehost.pt"
    torch.jit.save(torch.jit.trace(_Rehost(net.eval()), torch.rand(1, 3, 8, 8)), str(rehost))
    digest = hashlib.sha256(rehost.read_bytes()).hexdigest()
    loaded = _runtime(tmp_path, rehost, loader="torchscript", strip_prefix="model.",
                      sha256=digest).load("m")
    assert torch.equal(loaded.module.state_dict()["conv_first.weight"],
                       net.state_dict()["conv_first.weight"])
