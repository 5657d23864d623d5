"""Request settings of every API style, validated strictly (unknown or out-of-range -> 400).

Each model forbids extra keys, so a typo such as ``strenght`` is an error naming the field
instead of being silently ignored.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from restora.errors import InvalidParameter

M = TypeVar("M", bound=BaseModel)


class FaceBox(BaseModel):
    """A client-supplied face: box in input pixels and detector score."""

    model_config = ConfigDict(extra="forbid", strict=True)
    x: float = Field(ge=0)
    y: float = Field(ge=0)
    w: float = Field(gt=0)
    h: float = Field(gt=0)
    score: float = Field(default=1.0, ge=0, le=1)


class EnhanceSettings(BaseModel):
    """SnapOtter ``enhance-faces`` settings (seed fields first, Restora extras after)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: Literal["auto", "gfpgan", "codeformer"] = "auto"
    strength: float = Field(default=0.8, ge=0, le=1)
    onlyCenterFace: bool = False
    sensitivity: float = Field(default=0.5, ge=0, le=1)
    fidelity: float = Field(default=0.5, ge=0, le=1)
    upscale: Literal[1, 2, 4] = 1
    bgUpscale: bool = False
    faceUpsample: bool = False
    detector: str = Field(default="auto", min_length=1, max_length=100)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    faces: list[FaceBox] | None = Field(default=None, max_length=256)


class RestoreSettings(BaseModel):
    """SnapOtter ``restore-photo`` settings."""

    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Literal["auto", "light", "heavy"] = "auto"
    scratchRemoval: bool = True
    faceEnhancement: bool = True
    fidelity: float = Field(default=0.7, ge=0, le=1)
    denoise: bool = True
    denoiseStrength: float = Field(default=25, ge=0, le=100)
    colorize: bool = False
    colorizeStrength: float = Field(default=85, ge=0, le=100)


class CodeFormerSettings(BaseModel):
    """CodeFormer Space ``/api/process`` options."""

    model_config = ConfigDict(extra="forbid")
    fidelity: float = Field(default=0.5, ge=0, le=1)
    upscale: Literal[1, 2, 4] = 2
    background_enhance: bool = False
    face_upsample: bool = False
    return_base64: bool = False


class RefinerRequest(BaseModel):
    """Tengrai ``POST /v2/artworks/face-refiner`` body."""

    model_config = ConfigDict(extra="forbid", strict=True)
    imageUrl: str = Field(min_length=1, max_length=4096)
    model: Literal["auto", "gfpgan", "codeformer"] = "auto"
    denoising: int = Field(default=3, ge=1, le=5)
    seed: int | None = Field(default=None, ge=1, le=2147483647)
    webhook: str | None = Field(default=None, max_length=4096)
    outputFormat: Literal["auto", "png", "webp"] = "auto"


class FaceRecoverySettings(BaseModel):
    """Topaz ``face-recovery`` form fields (after form-string coercion)."""

    model_config = ConfigDict(extra="forbid")
    strength: float = Field(default=0.8, ge=0, le=1)
    creativity: float = Field(default=0.5, ge=0, le=1)
    grain: bool = False
    grain_density: float = Field(default=0.5, ge=0.1, le=1.0)
    grain_model: Literal["silver", "gaussian", "grey"] = "silver"
    grain_size: float = Field(default=1.0, ge=1.0, le=5.0)
    grain_strength: float = Field(default=0.5, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    iai_packed_metadata: str | None = Field(default=None, max_length=1_000_000)
    output_width: int | None = Field(default=None, ge=1, le=32000)
    output_height: int | None = Field(default=None, ge=1, le=32000)
    output_format: Literal["auto", "jpeg", "jpg", "png", "webp"] = "auto"
    webhook_url: str | None = Field(default=None, max_length=4096)


def validate(model: type[M], data: Any) -> M:
    """Validate ``data`` or raise :class:`InvalidParameter` naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidParameter("settings", "settings must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        if err.get("type") == "extra_forbidden":
            message = f"Unknown setting '{field}'."
        else:
            message = f"Invalid value for '{field}': {err.get('msg', 'invalid')}."
        details = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e["msg"]}
                   for e in exc.errors()]
        raise InvalidParameter(field, message, details=details) from None


def parse_settings_json(raw: str | None) -> dict[str, Any]:
    """The multipart ``settings`` string as a dict (missing -> {})."""
    if raw is None or raw.strip() == "":
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidParameter("settings", "settings must be valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidParameter("settings", "settings must be a JSON object.")
    return value


def parse_faces(raw: str, field: str = "iai_packed_metadata") -> list[dict[str, float]]:
    """Client face boxes from JSON: a list, or an object with ``faces``; boxes as
    ``{x,y,w,h,score}`` or ``{box: [x, y, w, h], score}``."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidParameter(field, f"{field} must be valid JSON.") from None
    if isinstance(value, dict):
        value = value.get("faces")
    if not isinstance(value, list):
        raise InvalidParameter(field, f"{field} must be a list of faces or {{\"faces\": [...]}}.")
    faces: list[dict[str, float]] = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and "box" in item:
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
