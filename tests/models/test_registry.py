"""Registry: built-in entries agree with the published figures in ../shared, manifests, defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import shared_path
from tiny_models import tiny_manifest_entries, write_tiny_manifest

from restora.config import Settings
from restora.errors import UnknownModel
from restora.models.registry import (ARCHITECTURES, FILE_ARCHS, TASKS, ManifestError, ModelSpec,
                                     Registry)

BUILTIN_IDS = {
    "gfpgan-v1.4", "gfpgan-v1.3", "codeformer", "retinaface-resnet50", "retinaface-mobilenet0.25",
    "yunet", "parsenet", "realesrgan-x2plus", "realesrgan-x4plus", "realesr-general-x4v3",
    "ddcolor-modelscope", "ddcolor-artistic", "ddcolor-paper", "ddcolor-paper-tiny",
    "bopbtl-scratch", "lama-big", "lama-big-ckpt",
    "dlib-resnet", "sface",
}


@pytest.fixture
def builtin(tmp_path: Path) -> Registry:
    return Registry.from_settings(Settings(home=tmp_path, models=None))


def test_builtin_ids_tasks_and_defaults(builtin: Registry) -> None:
    assert {s.id for s in builtin.all()} == BUILTIN_IDS
    assert builtin.default("face-restoration").id == "gfpgan-v1.4"
    assert builtin.default("face-detection").id == "retinaface-resnet50"
    assert builtin.default("face-parsing").id == "parsenet"
    assert builtin.default("upscale").id == "realesrgan-x2plus"
    assert builtin.default("colorization").id == "ddcolor-modelscope"
    assert builtin.default("face-recognition").id == "dlib-resnet"
    assert builtin.default("face-restoration", arch="codeformer").id == "codeformer"
    assert builtin.default("upscale", arch="srvgg").id == "realesr-general-x4v3"
    for task in TASKS:  # exactly one explicit default per task
        assert sum(s.default for s in builtin.all() if s.task == task) == 1
    with pytest.raises(UnknownModel):
        builtin.default("face-detection", arch="ddcolor")


def test_bundles(builtin: Registry) -> None:
    assert builtin.bundles() == {
        "upscale-enhance": ["gfpgan-v1.4", "codeformer", "retinaface-resnet50", "parsenet",
                            "realesrgan-x2plus"],
        "face-detection": ["yunet", "retinaface-mobilenet0.25"],
        "photo-restoration": ["codeformer", "retinaface-resnet50", "parsenet",
                              "ddcolor-modelscope", "bopbtl-scratch", "lama-big"],
    }
    assert [s.id for s in builtin.bundle("face-detection")] == ["yunet",
                                                                "retinaface-mobilenet0.25"]
    assert builtin.get("codeformer").bundles == ("upscale-enhance", "photo-restoration")
    with pytest.raises(UnknownModel, match="did you mean 'upscale-enhance'"):
        builtin.bundle("upscale-enhanse")
    assert [s.id for s in builtin.resolve("codeformer")] == ["codeformer"]
    assert len(builtin.resolve("upscale-enhance")) == 5


def test_licences_and_commercial_flags(builtin: Registry) -> None:
    cf = builtin.get("codeformer")
    assert not cf.commercial_use and "S-Lab" in cf.license
    parse = builtin.get("parsenet")
    assert not parse.commercial_use and "CC BY-NC-SA 4.0" in parse.license
    assert builtin.get("gfpgan-v1.4").license == "Apache-2.0"
    assert builtin.get("yunet").license == "MIT"
    assert builtin.get("yunet").filename == "face_detection_yunet_2023mar.onnx"
    assert builtin.get("realesrgan-x4plus").commercial_use


def test_urls_sizes_hashes_match_shared_readme(builtin: Registry) -> None:
    """Every row of the official-checkpoint table in ../shared/README.md is in the registry."""
    text = shared_path("README.md").read_text()
    rows = re.findall(r"^\| (\S+\.(?:pth|onnx)) \| (https://\S+) \| ([^|]+) \| ([^|]+) \|$",
                      text, re.M)
    assert len(rows) == 10
    by_file = {s.filename: s for s in builtin.all()}
    for filename, url, size, sha in rows:
        spec = by_file[filename]
        assert url in spec.urls, filename
        if size.strip().isdigit():
            assert spec.size == int(size)
        sha = sha.strip()
        if re.fullmatch(r"[0-9a-f]{64}", sha):
            assert spec.sha256 == sha, filename
        else:  # the README says no trusted hash: record on first download
            assert spec.sha256 is None, filename


def test_ddcolor_entries_match_keys_json(builtin: Registry) -> None:
    keys = json.loads(shared_path("conformance", "ddcolor", "keys.json").read_text())
    for config in keys["configs"].values():
        for ckpt in config["checkpoints"]:
            spec = builtin.get(ckpt["name"].replace("_", "-"))
            first = ckpt["files"][0]
            assert spec.urls[0] == first["url"]
            assert spec.sha256 == first["sha256"]
            assert spec.size == first.get("size_bytes")
            assert spec.nesting == "params"
            assert spec.hparams == config["constructor_args"]


@pytest.mark.parametrize(("model_id", "keys_file"), [
    ("gfpgan-v1.4", "gfpgan_v1.4.keys.json"),
    ("gfpgan-v1.3", "gfpgan_v1.4.keys.json"),
    ("parsenet", "parsenet.keys.json"),
    ("realesrgan-x2plus", "realesrgan_x2plus.keys.json"),
    ("realesrgan-x4plus", "realesrgan_x4plus.keys.json"),
    ("realesr-general-x4v3", "srvggnet_general_x4v3.keys.json"),
])
def test_hparams_match_keys_manifests(builtin: Registry, model_id: str, keys_file: str) -> None:
    keys = json.loads(shared_path("conformance", keys_file).read_text())
    assert builtin.get(model_id).hparams == keys["constructor_kwargs"]


def test_codeformer_and_retinaface_hparams(builtin: Registry) -> None:
    keys = json.loads(shared_path("conformance", "codeformer.keys.json").read_text())
    hard = keys["hard_coded_inside_constructor"]
    assert builtin.get("codeformer").hparams == {
        **keys["constructor_kwargs"], "nf": hard["nf"], "norm_groups": hard["groupnorm_groups"]}
    assert builtin.get("retinaface-resnet50").hparams == {"network_name": "resnet50"}
    assert builtin.get("retinaface-mobilenet0.25").hparams == {"network_name": "mobile0.25"}
    for mid in ("retinaface-resnet50", "retinaface-mobilenet0.25"):
        assert builtin.get(mid).strip_prefix == "module."
        assert builtin.get(mid).nesting is None
    assert builtin.get("gfpgan-v1.4").nesting == "params_ema"


def test_architectures_table() -> None:
    assert ARCHITECTURES == {
        "gfpgan_v1_clean": "restora.models.arch.gfpgan:GFPGANv1Clean",
        "codeformer": "restora.models.arch.codeformer:CodeFormer",
        "retinaface": "restora.models.arch.retinaface:RetinaFace",
        "parsenet": "restora.models.arch.parsenet:ParseNet",
        "rrdbnet": "restora.models.arch.rrdbnet:RRDBNet",
        "srvgg": "restora.models.arch.srvgg:SRVGGNetCompact",
        "yunet": "restora.models.arch.yunet:YuNet",
        "ddcolor": "restora.models.arch.ddcolor:DDColor",
        "scratch_unet": "restora.models.arch.scratch_unet:ScratchUNet",
        "lama": "restora.models.arch.lama:LaMa",
        "dlib_resnet": "restora.models.arch.dlibface:DlibFaceDescriptor",
        "sface": "restora.models.arch.sface:SFace",
    }


def test_unknown_model_has_close_match_hint(builtin: Registry) -> None:
    with pytest.raises(UnknownModel) as err:
        builtin.get("gfpgan-1.4")
    assert err.value.code == "unknown_model"
    assert "did you mean 'gfpgan-v1.4'" in err.value.message


def test_paths_and_installed(builtin: Registry, tmp_path: Path) -> None:
    spec = builtin.get("realesrgan-x2plus")
    assert builtin.path(spec) == tmp_path / "models" / "RealESRGAN_x2plus.pth"
    assert not builtin.is_installed(spec)
    builtin.path(spec).parent.mkdir(parents=True)
    builtin.path(spec).write_bytes(b"x")
    assert builtin.is_installed(spec)


def test_tiny_manifest_models_and_defaults(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path)
    reg = Registry.from_settings(Settings(home=tmp_path / "home", models=manifest))
    ids = {s.id for s in reg.all()}
    assert BUILTIN_IDS < ids and "tiny-gfpgan" in ids and "yunet-2026may" in ids
    tiny = reg.get("tiny-gfpgan")
    assert tiny.path == shared_path("conformance", "gfpgan_v1.4.tiny.pth")
    assert tiny.filename == "gfpgan_v1.4.tiny.pth" and reg.is_installed(tiny)
    assert reg.is_custom(tiny) and not reg.is_custom(reg.get("gfpgan-v1.4"))
    # Custom defaults replace the built-in defaults of their task ...
    assert reg.default("face-restoration").id == "tiny-gfpgan"
    assert not reg.get("gfpgan-v1.4").default
    assert reg.default("face-detection").id == "retinaface-mobilenet0.25-facelibcfg"
    assert reg.default("upscale").id == "tiny-realesrgan-x2"
    # ... and for one architecture a custom entry wins over the built-in one.
    assert reg.default("face-restoration", arch="codeformer").id == "tiny-codeformer"
    assert reg.default("face-detection", arch="yunet").id == "yunet-2026may"
    assert reg.default("colorization").id == "ddcolor-modelscope"  # untouched task


def test_installed_lists_the_default_first(tmp_path: Path) -> None:
    # Reversed, the manifest lists yunet-2026may and tiny-realesrgan-x4 before their task
    # defaults: the defaults must still lead.
    manifest = tmp_path / "reversed.json"
    manifest.write_text(json.dumps({"models": tiny_manifest_entries()[::-1]}))
    reg = Registry.from_settings(Settings(home=tmp_path / "home", models=manifest))
    assert [s.id for s in reg.installed("face-detection")] == [
        "retinaface-mobilenet0.25-facelibcfg", "yunet-2026may"]
    assert [s.id for s in reg.installed("upscale")] == ["tiny-realesrgan-x2", "tiny-realesrgan-x4"]
    assert [s.id for s in reg.installed("face-restoration", "codeformer")] == ["tiny-codeformer"]
    assert reg.installed("colorization") == []  # registered, none on disk


def test_toml_manifest_relative_paths_overrides_and_bundles(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "my_cf.pth").write_bytes(b"x")
    manifest = tmp_path / "conf" / "models.toml"
    manifest.parent.mkdir()
    manifest.write_text("""
[[models]]
id = "codeformer"                # overrides the built-in: only the path changes
path = "../weights/my_cf.pth"
sha256 = "%s"

[[models]]
id = "my-upscaler"
task = "upscale"
arch = "srvgg"
url = "https://example.invalid/files/my_up.pth?download=1"
licence = "CC0"
commercial = true
bundles = ["mine", "upscale-enhance"]
default = true
description = "fine-tuned"

[models.hparams]
num_feat = 16
num_conv = 4
upscale = 4

[bundles]
extra = ["codeformer", "my-upscaler"]
""" % ("ab" * 32))
    reg = Registry.from_settings(Settings(home=tmp_path / "home", models=manifest))
    cf = reg.get("codeformer")
    assert cf.path == (tmp_path / "conf" / "../weights/my_cf.pth")
    assert reg.path(cf).resolve() == (weights / "my_cf.pth").resolve() and reg.is_installed(cf)
    assert cf.hparams["nf"] == 64 and cf.license.startswith("S-Lab")  # kept from the built-in
    assert cf.sha256 == "ab" * 32
    up = reg.get("my-upscaler")
    assert up == ModelSpec(
        id="my-upscaler", task="upscale", arch="srvgg",
        hparams={"num_feat": 16, "num_conv": 4, "upscale": 4}, filename="my_up.pth",
        urls=("https://example.invalid/files/my_up.pth?download=1",), license="CC0",
        commercial_use=True, bundles=("upscale-enhance", "mine", "extra"), default=True,
        description="fine-tuned")
    assert reg.path(up) == tmp_path / "home" / "models" / "my_up.pth"
    assert reg.default("upscale").id == "my-upscaler"
    assert not reg.get("realesrgan-x2plus").default
    assert reg.bundles()["mine"] == ["my-upscaler"]
    assert reg.bundles()["upscale-enhance"][-1] == "my-upscaler"
    assert reg.bundles()["extra"] == ["codeformer", "my-upscaler"]


@pytest.mark.parametrize(("entry", "message"), [
    ({"id": "x", "task": "upscale", "arch": "esrgan9", "path": "a.pth"}, "arch 'esrgan9'"),
    ({"id": "x", "task": "denoise", "arch": "rrdbnet", "path": "a.pth"}, "task 'denoise'"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet"}, "'path' or at least one 'url'"),
    ({"id": "x", "arch": "rrdbnet", "path": "a.pth"}, "needs task"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "sha": "1"},
     "unknown field"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "sha256": "xyz"},
     "64 hexadecimal"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "nesting": "state"},
     "nesting"),
    ({"task": "upscale"}, "no string 'id'"),
    # wrong types: one sentence naming the field, never a TypeError (or a truthy "no")
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": 5}, "'urls' must be a string"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": ["https://e.org/a.pth", 5]},
     "'urls' must be a string or a list of strings"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "sha256": 5},
     "'sha256' must be a string or null"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "filename": 5},
     "'filename' must be"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "bundles": 5},
     "'bundles' must be"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "license": 5},
     "'license' must be a string"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth",
      "commercial_use": "no"}, "'commercial_use' must be true or false, not 'no'"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "default": "false"},
     "'default' must be true or false"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "size": True},
     "'size' must be a whole number"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": "https://e.org/a.zip",
      "member": "a.pth", "archive_size": "big"}, "'archive_size' must be a whole number"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": "https://e.org/a.zip",
      "member": "a.pth", "archive_size": -1}, "archive_size must be a positive"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": "a.pth", "strip_prefix": 5},
     "'strip_prefix' must be"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "path": 5}, "'path' must be a string"),
    # URLs: http(s) with a host only
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": "ftp://e.org/a.pth"},
     "'ftp://e.org/a.pth' is not an http:// or https:// address"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": "file:///etc/passwd"},
     "not an http:// or https:// address"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": "https:///a.pth"},
     "with a host"),
    # names Restora uses in the models folder
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": "https://e.org/a.pth",
      "filename": "recorded-hashes.json"}, "not a usable file name"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": "https://e.org/a.pth",
      "filename": "b.pth.partial"}, "not a usable file name"),
    ({"id": "x", "task": "upscale", "arch": "rrdbnet", "urls": "https://e.org/a.pth",
      "filename": "..\\a.pth"}, "not a usable file name"),
])
def test_invalid_manifest_entries(tmp_path: Path, entry: dict, message: str) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"models": [entry]}))
    with pytest.raises(ManifestError, match=message) as err:
        Registry.from_settings(Settings(home=tmp_path, models=manifest))
    assert err.value.code == "invalid_manifest"


def test_a_url_with_credentials_is_never_in_a_manifest_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"models": [
        {"id": "x", "task": "upscale", "arch": "rrdbnet",
         "urls": ["ftp://bob:hunter2@e.org/a.pth?token=t0k3n"]}]}))
    with pytest.raises(ManifestError, match="ftp://\\*\\*\\*@e.org/a.pth") as err:
        Registry.from_settings(Settings(home=tmp_path, models=manifest))
    assert "hunter2" not in err.value.message and "t0k3n" not in err.value.message


def test_duplicate_ids_in_a_manifest_are_refused(tmp_path: Path) -> None:
    """The second entry used to merge silently into the first (arch of one, file of other)."""
    manifest = tmp_path / "m.json"
    entry = {"id": "mine", "task": "upscale", "arch": "rrdbnet", "path": "a.pth"}
    manifest.write_text(json.dumps({"models": [entry, {**entry, "arch": "srvgg"}]}))
    with pytest.raises(ManifestError, match="'mine' appears twice .*entries 0 and 1"):
        Registry.from_settings(Settings(home=tmp_path, models=manifest))


def test_a_custom_model_cannot_take_another_models_file(tmp_path: Path) -> None:
    """A custom entry downloading to GFPGANv1.4.pth was "installed" as soon as gfpgan-v1.4 was,
    and loaded its weights."""
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"models": [
        {"id": "mine", "task": "upscale", "arch": "rrdbnet",
         "urls": "https://e.org/GFPGANv1.4.pth"}]}))
    with pytest.raises(ManifestError, match="already the file of model 'gfpgan-v1.4'"):
        Registry.from_settings(Settings(home=tmp_path, models=manifest))
    # overriding the built-in itself (same id) is fine
    manifest.write_text(json.dumps({"models": [
        {"id": "gfpgan-v1.4", "urls": "https://mirror.example.org/GFPGANv1.4.pth"}]}))
    reg = Registry.from_settings(Settings(home=tmp_path, models=manifest))
    assert reg.get("gfpgan-v1.4").urls == ("https://mirror.example.org/GFPGANv1.4.pth",)


def test_unreadable_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        Registry.from_settings(Settings(home=tmp_path, models=tmp_path / "absent.json"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[[models]\nid=")
    with pytest.raises(ManifestError, match="not valid TOML"):
        Registry.from_settings(Settings(home=tmp_path, models=bad))
    bad_bundle = tmp_path / "b.json"
    bad_bundle.write_text(json.dumps({"models": [], "bundles": {"b": ["nope"]}}))
    with pytest.raises(ManifestError, match="unknown model 'nope'"):
        Registry.from_settings(Settings(home=tmp_path, models=bad_bundle))


def test_manifest_from_environment(tmp_path: Path, restora_home: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORA_MODELS", str(write_tiny_manifest(tmp_path)))
    reg = Registry.from_settings(Settings())
    assert reg.models_dir == restora_home / "models"
    assert reg.default("face-parsing").id == "tiny-parsenet"


def test_recorded_hashes_roundtrip(builtin: Registry) -> None:
    spec = builtin.get("parsenet")
    assert spec.sha256 is None and builtin.expected_sha256(spec) is None
    builtin.record_sha256(spec, "cd" * 32)
    assert builtin.expected_sha256(spec) == "cd" * 32
    assert builtin.recorded_hashes() == {"parsing_parsenet.pth": "cd" * 32}
    # A published hash always wins over a recorded one.
    gf = builtin.get("gfpgan-v1.4")
    builtin.record_sha256(gf, "ef" * 32)
    assert builtin.expected_sha256(gf) == gf.sha256
    # written in one replace: no temporary file is left next to it
    assert not [p.name for p in builtin.models_dir.iterdir() if p.name.endswith(".tmp")]


KEYS_FILES = {
    "gfpgan-v1.4": "gfpgan_v1.4.keys.json", "gfpgan-v1.3": "gfpgan_v1.4.keys.json",
    "codeformer": "codeformer.keys.json",
    "retinaface-resnet50": "retinaface_resnet50.keys.json",
    "retinaface-mobilenet0.25": "retinaface_mobilenet0.25.keys.json",
    "parsenet": "parsenet.keys.json", "realesrgan-x2plus": "realesrgan_x2plus.keys.json",
    "realesrgan-x4plus": "realesrgan_x4plus.keys.json",
    "realesr-general-x4v3": "srvggnet_general_x4v3.keys.json",
    "ddcolor-modelscope": "large", "ddcolor-artistic": "large", "ddcolor-paper": "large",
    "ddcolor-paper-tiny": "tiny",
    "bopbtl-scratch": "photo/scratchunet.keys.json", "lama-big": "photo/lama.keys.json",
    "lama-big-ckpt": "photo/lama.keys.json",
}


def test_every_builtin_builds_the_official_layout(builtin: Registry) -> None:
    """The registry's arch + hparams give exactly the keys and shapes of the official files.

    Built on the meta device: no memory, no weights, just the structure.
    """
    import torch

    from restora.models.runtime import architecture_class

    ddcolor = json.loads(shared_path("conformance", "ddcolor", "keys.json").read_text())
    for spec in builtin.all():
        if spec.arch in FILE_ARCHS:  # ONNX or dlib files: no torch layout
            continue
        source = KEYS_FILES[spec.id]
        if spec.arch == "ddcolor":
            entries = ddcolor["configs"][source]["state_dict"]
        else:
            entries = json.loads(shared_path("conformance", *source.split("/")).read_text())[
                "keys"]
        official = {e["key"]: tuple(e["shape"]) for e in entries}
        with torch.device("meta"):
            net = architecture_class(spec.arch)(**spec.hparams)
        ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert ours == official, spec.id


def test_dlib_descriptor_comes_from_the_identity_extra(builtin: Registry) -> None:
    from restora.models.download import sha256_file

    spec = builtin.get("dlib-resnet")
    assert spec.task == "face-recognition" and spec.package == "restora[identity]"
    assert not spec.urls and spec.commercial_use and "CC0" in spec.license
    path = builtin.path(spec)  # inside the installed face-recognition-models package
    assert path.is_file(), "run `pip install -e '.[identity]'` (scripts/install.sh does)"
    assert path.stat().st_size == spec.size and sha256_file(path) == spec.sha256
    assert (path.parent / spec.hparams["shape_predictor"]).is_file()
    sface = builtin.get("sface")
    assert sface.arch == "sface" and sface.license == "Apache-2.0" and sface.urls
