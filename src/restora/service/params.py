"""Request settings of every API style, validated strictly (unknown or out-of-range -> 400).

Each model forbids extra keys, so a typo such as ``strenght`` is an error naming the field
instead of being silently ignored. Ranges and defaults of what the pipelines do live in
:mod:`restora.pipeline.options`; these models only add each seed's names, seed-specific
defaults and seed-only fields, and map them onto the pipeline options (``as_options``,
``.options()``, ``refiner_options``).
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from restora.errors import InvalidParameter
from restora.pipeline.options import EnhanceOptions, FaceBox, PhotoOptions, parse

__all__ = ["FaceBox", "EnhanceSettings", "RestoreSettings", "CodeFormerSettings",
           "RefinerRequest", "FaceRecoverySettings", "validate", "as_options", "refiner_options",
           "parse_settings_json", "parse_faces", "refiner_seed", "loads_json"]

M = TypeVar("M", bound=BaseModel)
O = TypeVar("O", bound=BaseModel)


#: The seeds' JSON names are the options' camelCase aliases; only these seed-side models accept
#: them strictly (no strings for numbers, no snake_case names).
_SEED = ConfigDict(strict=True, validate_by_name=False)


class EnhanceSettings(EnhanceOptions):
    """SnapOtter ``enhance-faces`` settings: :class:`EnhanceOptions` by their camelCase names,
    ``model`` narrowed to the seed's three values."""

    model_config = _SEED
    model: Literal["auto", "gfpgan", "codeformer"] = "auto"
    #: reference photo URL(s) (``referenceUrl``): request data, not a pipeline option. How
    #: many: check_references counts them with the uploads, as for every API style.
    reference_url: str | list[str] | None = None


class RestoreSettings(PhotoOptions):
    """SnapOtter ``restore-photo`` settings: :class:`PhotoOptions` plus the seed's ``mode``."""

    model_config = _SEED
    mode: Literal["auto", "light", "heavy"] = "auto"


class CodeFormerSettings(BaseModel):
    """CodeFormer Space ``/api/process`` options (seed names and defaults; ranges are
    :class:`EnhanceOptions`' own, checked by :meth:`options`)."""

    model_config = ConfigDict(extra="forbid")
    fidelity: float = 0.5
    upscale: int = 2
    background_enhance: bool = False
    face_upsample: bool = False
    return_base64: bool = False
    only_reference_faces: bool = False  # Restora extension (reference photos)
    reference_url: str | list[str] | None = None

    def options(self) -> EnhanceOptions:
        return parse(EnhanceOptions, {
            "model": "codeformer", "fidelity": self.fidelity, "upscale": self.upscale,
            "bg_upscale": self.background_enhance, "face_upsample": self.face_upsample,
            "only_reference_faces": self.only_reference_faces},
            names={"bgUpscale": "background_enhance", "faceUpsample": "face_upsample",
                   "onlyReferenceFaces": "only_reference_faces"})


class RefinerRequest(BaseModel):
    """Tengrai ``POST /v2/artworks/face-refiner`` body."""

    model_config = ConfigDict(extra="forbid", strict=True)
    imageUrl: str = Field(min_length=1, max_length=4096)
    # Tengrai's two documented values (mapped by TENGRAI_MODELS), plus Restora's own restorer
    # choices as an extension. Absent = auto.
    model: Literal["tengrai-20231128-m-d.safetensors", "tengrai-20240423-m-f.safetensors",
                   "auto", "gfpgan", "codeformer"] | None = None
    denoising: int = Field(default=3, ge=1, le=5)
    seed: int | None = Field(default=None, ge=1, le=2147483647)
    webhook: str | None = Field(default=None, max_length=4096)
    outputFormat: Literal["auto", "png", "webp"] = "auto"
    referenceUrl: str | list[str] | None = None  # Restora extension (reference photos)
    onlyReferenceFaces: bool = False


class FaceRecoverySettings(BaseModel):
    """Topaz ``face-recovery`` form fields (after form-string coercion)."""

    model_config = ConfigDict(extra="forbid")
    strength: float = 1.0  # the Topaz default; range: EnhanceOptions.strength (see options())
    creativity: float = Field(default=0.5, ge=0, le=1)
    grain: bool = False
    grain_density: float = Field(default=0.5, ge=0.1, le=1.0)
    grain_model: Literal["silver", "gaussian", "grey"] = "silver"
    grain_size: float = Field(default=1.0, ge=1.0, le=5.0)
    grain_strength: float = Field(default=0.5, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    iai_packed_metadata: str | None = Field(default=None, max_length=1_000_000)
    input_width: int | None = Field(default=None, ge=1, le=1_000_000)
    input_height: int | None = Field(default=None, ge=1, le=1_000_000)
    reference_uri: list[str] | None = Field(default=None, max_length=8)  # repeatable
    only_reference_faces: bool = False  # Restora extension
    output_width: int | None = Field(default=None, ge=1, le=32000)
    output_height: int | None = Field(default=None, ge=1, le=32000)
    output_format: Literal["auto", "jpeg", "jpg", "png", "webp"] = "auto"
    webhook_url: str | None = Field(default=None, max_length=4096)

    def options(self, faces: list[dict[str, float]] | None) -> EnhanceOptions:
        """Topaz ``creativity`` is the inverse of CodeFormer's fidelity."""
        return parse(EnhanceOptions, {"strength": self.strength, "fidelity": 1.0 - self.creativity,
                                      "faces": faces, "seed": self.seed,
                                      "only_reference_faces": self.only_reference_faces},
                     names={"onlyReferenceFaces": "only_reference_faces"})


#: Tengrai's documented model values -> Restora restorer kinds (docs/service.md).
TENGRAI_MODELS = {"tengrai-20231128-m-d.safetensors": "gfpgan",
                  "tengrai-20240423-m-f.safetensors": "codeformer"}


def refiner_options(req: RefinerRequest, seed_used: int) -> EnhanceOptions:
    """Tengrai ``denoising`` 1-5 is a restoration strength of 0.2-1.0; its documented model
    names map onto Restora's restorers."""
    model = TENGRAI_MODELS.get(req.model or "auto", req.model or "auto")
    return parse(EnhanceOptions, {"model": model, "strength": 0.2 * req.denoising,
                                  "seed": seed_used,
                                  "only_reference_faces": req.onlyReferenceFaces})


def as_options(model: type[O], settings: BaseModel) -> O:
    """The pipeline options inside an API style's settings (seed-only fields dropped)."""
    return parse(model, settings.model_dump(include=set(model.model_fields)))


def validate(model: type[M], data: Any) -> M:
    """Validate ``data`` or raise :class:`InvalidParameter` naming the first bad field."""
    return parse(model, data)


def loads_json(raw: str | bytes, field: str, message: str) -> Any:
    """``json.loads``, where anything it refuses is a 400 naming ``field``: besides syntax
    errors, bad UTF-8, an integer past Python's 4300-digit limit (a plain ValueError) and
    nesting past the recursion limit (RecursionError)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidParameter(field, message) from None


def parse_settings_json(raw: str | None) -> dict[str, Any]:
    """The multipart ``settings`` string as a dict (missing -> {})."""
    if raw is None or raw.strip() == "":
        return {}
    value = loads_json(raw, "settings", "settings must be valid JSON.")
    if not isinstance(value, dict):
        raise InvalidParameter("settings", "settings must be a JSON object.")
    return value


def _packed_box(item: list[Any], where: str) -> dict[str, Any]:
    if len(item) not in (4, 5):
        raise InvalidParameter(where, f"{where}: a packed face is [x, y, w, h, score].")
    return dict(zip(("x", "y", "w", "h", "score"), item))


def parse_faces(raw: str, field: str = "iai_packed_metadata") -> list[dict[str, float]]:
    """Client face boxes from JSON. Accepted forms:

    * packed: ``[[x, y, w, h, score], ...]`` or one flat list ``[x, y, w, h, score, x, ...]``;
    * objects: ``[{x, y, w, h, score}]``, ``{"faces": [...]}``, ``{box: [x, y, w, h], score}``;
    * any of these JSON-encoded once more as a JSON string.
    """
    value = loads_json(raw, field, f"{field} must be valid JSON.")
    if isinstance(value, str):  # a JSON-style string holding the JSON
        value = loads_json(value, field, f"{field} must be valid JSON.")
    if isinstance(value, dict):
        value = value.get("faces")
    if not isinstance(value, list):
        raise InvalidParameter(field, f"{field} must be a list of faces or {{\"faces\": [...]}}.")
    if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        if len(value) % 5 and len(value) != 4:
            raise InvalidParameter(field, f"{field}: a flat packed list holds 5 numbers per face "
                                   "(x, y, w, h, score).")
        step = 4 if len(value) == 4 else 5
        value = [value[i:i + step] for i in range(0, len(value), step)]
    if len(value) > 256:
        raise InvalidParameter(field, f"{field}: at most 256 faces.")
    faces: list[dict[str, float]] = []
    for i, item in enumerate(value):
        if isinstance(item, list):
            item = _packed_box(item, f"{field}[{i}]")
        elif isinstance(item, dict) and "box" in item:
            box = item.get("box")
            if not (isinstance(box, list) and len(box) == 4):
                raise InvalidParameter(f"{field}[{i}].box", "box must be [x, y, w, h].")
            item = {"x": box[0], "y": box[1], "w": box[2], "h": box[3],
                    **({"score": item["score"]} if "score" in item else {})}
        try:
            faces.append(FaceBox.model_validate(item).model_dump())
        except ValidationError as exc:
            err = exc.errors()[0]
            sub = ".".join(str(p) for p in err.get("loc", ()))
            raise InvalidParameter(f"{field}[{i}]" + (f".{sub}" if sub else ""),
                                   f"Invalid face {i} in {field}: {err['msg']}.") from None
    return faces


def refiner_seed(seed: int) -> int:
    """The Tengrai seed transform: floor(seed * 1.2) + 17, computed exactly in integers."""
    return (seed * 6) // 5 + 17
