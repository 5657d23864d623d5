"""Write a custom model manifest (``RESTORA_MODELS``) that points at the tiny conformance weights.

Every area's end-to-end tests use it: the tiny GFPGAN/CodeFormer/ParseNet checkpoints from
``../shared/conformance`` (random weights computed by the reference code), the real
RetinaFace-MobileNet0.25 (facelib configuration) and YuNet detectors. Each entry is marked
``default = true`` so the pipeline picks it for its task instead of the official (absent) files.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import shared_path


def tiny_manifest_entries() -> list[dict]:
    conf = shared_path("conformance")
    gfpgan = json.loads((conf / "gfpgan_v1.4.tiny.json").read_text())
    codeformer = json.loads((conf / "codeformer.tiny.json").read_text())
    parsenet = json.loads((conf / "parsenet.tiny.json").read_text())
    rrdb2 = json.loads((conf / "rrdbnet_s2.tiny.json").read_text())
    rrdb4 = json.loads((conf / "rrdbnet_s4.tiny.json").read_text())
    cf_kwargs = dict(codeformer["constructor_kwargs"])
    cf_kwargs["nf"] = codeformer["vq_autoencoder"]["nf"]
    cf_kwargs["norm_groups"] = codeformer["groupnorm"]["num_groups"]
    common = {"license": "test fixture", "commercial_use": True}
    return [
        {"id": "tiny-gfpgan", "task": "face-restoration", "arch": "gfpgan_v1_clean",
         "path": str(conf / "gfpgan_v1.4.tiny.pth"), "hparams": gfpgan["constructor_kwargs"],
         "default": True, **common},
        {"id": "tiny-codeformer", "task": "face-restoration", "arch": "codeformer",
         "path": str(conf / "codeformer.tiny.pth"), "hparams": cf_kwargs, **common},
        {"id": "tiny-parsenet", "task": "face-parsing", "arch": "parsenet",
         "path": str(conf / "parsenet.tiny.pth"), "hparams": parsenet["constructor_kwargs"],
         "default": True, **common},
        {"id": "tiny-realesrgan-x2", "task": "upscale", "arch": "rrdbnet",
         "path": str(conf / "rrdbnet_s2.tiny.pth"), "hparams": rrdb2["constructor_kwargs"],
         "default": True, **common},
        {"id": "tiny-realesrgan-x4", "task": "upscale", "arch": "rrdbnet",
         "path": str(conf / "rrdbnet_s4.tiny.pth"), "hparams": rrdb4["constructor_kwargs"], **common},
        {"id": "retinaface-mobilenet0.25-facelibcfg", "task": "face-detection", "arch": "retinaface",
         "path": str(conf / "retinaface_mobilenet0.25_facelibcfg.pth"),
         "hparams": {"network_name": "mobile0.25"}, "default": True, **common},
        {"id": "yunet-2026may", "task": "face-detection", "arch": "yunet",
         "path": str(shared_path("models", "face_detection_yunet_2026may.onnx")),
         "hparams": {}, **common},
    ]


def tiny_ddcolor_entry(path: Path | None = None, *, input_size: int = 512, **extra: object) -> dict:
    """Manifest entry for the reduced-width DDColor conformance model (hyper-parameters from
    ``ddcolor/goldens.json``); ``extra`` overrides or adds fields (id, nesting, ...)."""
    conf = shared_path("conformance", "ddcolor")
    hp = json.loads((conf / "goldens.json").read_text())["tiny"]["hyperparameters"]
    dec = hp["color_decoder"]
    hparams = {"encoder_name": "convnext-t", "nf": hp["nf"], "num_queries": hp["num_queries"],
               "num_scales": hp["num_scales"], "dec_layers": hp["dec_layers"],
               "num_output_channels": 2, "last_norm": "Spectral", "do_normalize": False,
               "input_size": [input_size, input_size], "encoder_depths": hp["encoder"]["depths"],
               "encoder_dims": hp["encoder"]["dims"], "hidden_dim": dec["hidden_dim"],
               "dim_feedforward": dec["dim_feedforward"]}
    return {"id": "tiny-ddcolor", "task": "colorization", "arch": "ddcolor",
            "path": str(path or conf / "tiny.pth"), "hparams": hparams, "default": True,
            "license": "test fixture", "commercial_use": True, **extra}


def write_tiny_manifest(directory: Path, *, include: set[str] | None = None,
                        extra: list[dict] | None = None) -> Path:
    """Write ``models.json`` into ``directory`` and return its path (set it as RESTORA_MODELS).

    ``include`` keeps only the listed ids (e.g. to test the no-ParseNet fallback).
    """
    entries = [e for e in tiny_manifest_entries() if include is None or e["id"] in include]
    entries += extra or []
    path = Path(directory) / "models.json"
    path.write_text(json.dumps({"models": entries}, indent=2))
    return path


def tiny_photo_repair_entries(*, scratch: bool = True, lama: bool = True) -> list[dict]:
    """Manifest entries for the tiny BOPBTL scratch U-Net and LaMa conformance weights (plain
    state dicts, so no nesting and the default loader)."""
    conf = shared_path("conformance", "photo")
    out = []
    common = {"license": "test fixture", "commercial_use": True, "default": True}
    if scratch:
        meta = json.loads((conf / "scratchunet.tiny.json").read_text())
        out.append({"id": "tiny-scratch-unet", "task": "damage-segmentation",
                    "arch": "scratch_unet", "path": str(conf / "scratchunet.tiny.pth"),
                    "hparams": meta["constructor_kwargs"], **common})
    if lama:
        meta = json.loads((conf / "lama.tiny.json").read_text())
        out.append({"id": "tiny-lama", "task": "inpainting", "arch": "lama",
                    "path": str(conf / "lama.tiny.pth"), "hparams": meta["constructor_kwargs"],
                    **common})
    return out
