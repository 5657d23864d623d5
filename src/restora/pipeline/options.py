"""Typed options of each pipeline: defaults and ranges are written here and nowhere else.

One pydantic model per pipeline (:class:`EnhanceOptions` for ``enhance_faces``,
:class:`PhotoOptions` for ``restore_photo``). Field names are snake_case; each field also accepts
its camelCase alias (``onlyCenterFace``, ``denoiseStrength``), which is the seeds' JSON name, and
validation errors name that camelCase field. Every caller builds its options through the model:

* the pipelines validate their keyword arguments with :func:`parse` (``enhance_faces(img,
  strength=2)`` is an :class:`~restora.errors.InvalidParameter` naming ``strength``);
* the CLI takes its option defaults from :func:`default` and validates with :func:`parse`;
* the API styles map their seed names and seed-specific defaults onto the model
  (``restora.service.params``), the job stores ``options.model_dump(mode="json")`` and the worker
  validates the stored dict again before running.

Adding an option: add one field here (default, range, one-line description), use it in the
pipeline, and map it in the API style(s) that expose it; the CLI flag reads its default here.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from restora.errors import InvalidParameter

M = TypeVar("M", bound=BaseModel)

_CONFIG = ConfigDict(extra="forbid", alias_generator=to_camel, validate_by_name=True,
                     validate_by_alias=True, frozen=True)


#: How the pipelines look for faces of photos lying turned (``pipeline.detect.ORIENTATIONS``);
#: one option shared by both pipelines.
Orientation = Literal["auto", "search", "upright"]
ORIENTATION_HELP = ("Which way up the photo's faces are: auto also searches it turned "
                    "(sideways, upside down) when no face is surely upright, search always "
                    "does, upright never does.")


class FaceBox(BaseModel):
    """A client-supplied face: box in input pixels and detector score."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    x: float = Field(ge=0)
    y: float = Field(ge=0)
    w: float = Field(gt=0)
    h: float = Field(gt=0)
    score: float = Field(default=1.0, ge=0, le=1)


class _Options(BaseModel):
    """Lax where callers send text (form fields: ``"0.5"``, ``"true"``), but true/false is
    never a number: pydantic would take ``seed: true`` as seed 1 and ``upscale: true`` as 1."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: Any) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and annotation is not bool:
            numeric = any(t in str(annotation) for t in ("int", "float", "Literal[1"))
            raise PydanticCustomError(
                "bool_type", "must be a number, not {value}" if numeric else
                "must not be {value}", {"value": str(value).lower()})
        return value


class EnhanceOptions(_Options):
    """Options of :func:`restora.pipeline.enhance.enhance_faces` (see docs/enhance-faces.md)."""

    model_config = _CONFIG
    model: str = Field(default="auto", min_length=1, max_length=100,
                       description="auto, gfpgan, codeformer or a face-restoration model id.")
    strength: float = Field(default=0.8, ge=0, le=1,
                            description="0 = original face, 1 = fully restored.")
    fidelity: float = Field(default=0.5, ge=0, le=1,
                            description="CodeFormer w: 0 quality, 1 fidelity.")
    upscale: Literal[1, 2, 4] = Field(default=1, description="Final scale: 1, 2 or 4.")
    bg_upscale: bool = Field(default=False,
                             description="Real-ESRGAN on the background (also at scale 1).")
    face_upsample: bool = Field(default=False,
                                description="Upsample restored faces before pasting.")
    only_center_face: bool = Field(default=False,
                                   description="Restore only the face nearest the centre.")
    sensitivity: float = Field(default=0.5, ge=0, le=1,
                               description="Detection sensitivity 0-1 (higher finds more faces).")
    detector: str | None = Field(default=None, min_length=1, max_length=100,
                                 description="Face-detection model id (None or 'auto': default).")
    orientation: Orientation = Field(default="auto", description=ORIENTATION_HELP)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1,
                             description="Seed for GFPGAN's noise (None: random).")
    faces: list[FaceBox] | None = Field(
        default=None, max_length=256, description="Client face boxes; skips detection.")
    identity: bool = Field(default=True, description="Measure each face's identity (input vs "
                           "result) with the face-recognition model; auto uses it.")
    identity_model: str | None = Field(default=None, min_length=1, max_length=100,
                                       description="Face-recognition model id (None: default).")
    only_reference_faces: bool = Field(default=False, description="Restore only the faces that "
                                       "match a reference photo.")

    @field_validator("detector")
    @classmethod
    def _auto_detector(cls, value: str | None) -> str | None:
        return None if value == "auto" else value

    def face_dicts(self) -> list[dict[str, float]] | None:
        """``faces`` as plain ``{x, y, w, h, score}`` dicts (what the detector step takes)."""
        return None if self.faces is None else [f.model_dump() for f in self.faces]


class PhotoOptions(_Options):
    """Options of :func:`restora.pipeline.photo.restore_photo` (see docs/restore-photo.md)."""

    model_config = _CONFIG
    scratch_removal: bool = Field(default=True, description="Remove scratches and dust.")
    face_enhancement: bool = Field(default=True, description="Restore faces.")
    fidelity: float = Field(default=0.7, ge=0, le=1,
                            description="Face fidelity 0-1 (CodeFormer w: 1 keeps identity).")
    denoise: bool = Field(default=True, description="Denoise.")
    denoise_strength: float = Field(default=25, ge=0, le=100,
                                    description="0-100; 25 filters at the measured noise level.")
    colorize: bool = Field(default=False,
                           description="Colourize black-and-white photos (DDColor).")
    colorize_strength: float = Field(default=85, ge=0, le=100,
                                     description="0-100: how much of the predicted colour to use.")
    orientation: Orientation = Field(default="auto", description=ORIENTATION_HELP)
    mask_mode: Literal["replace", "add"] = Field(
        default="replace", description="How a given damage mask is used: replace (repair exactly "
        "the mask) or add (the mask plus what detection finds).")


def parse(model: type[M], data: Any, *, names: dict[str, str] | None = None) -> M:
    """Validate ``data`` (a dict, or an instance re-checked) or raise :class:`InvalidParameter`
    naming the first bad field. ``names`` maps the model's (camelCase) field names back to the
    caller's own, so an API style's error names its seed field (``background_enhance``)."""
    if isinstance(data, BaseModel):
        data = data.model_dump()
    if not isinstance(data, dict):
        raise InvalidParameter("settings", "settings must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, model, names or {}) from None


def with_overrides(model: type[M], options: M | dict[str, Any] | None,
                   overrides: dict[str, Any]) -> M:
    """``options`` (or the defaults) with keyword ``overrides`` applied, validated as a whole.

    A given instance is validated again, so a pipeline never trusts a model built with
    ``model_construct`` or mutated after validation. A plain dict (snake_case or camelCase
    names, as a job stores them) is taken as the same options; anything else is an
    :class:`InvalidParameter` on ``options``."""
    if options is None:
        base: dict[str, Any] = {}
    elif isinstance(options, BaseModel):
        base = options.model_dump()
    elif isinstance(options, dict):
        # one name per field, whichever spelling: a camelCase key must not stay beside the
        # snake_case override of the same field (pydantic would keep the first it reads)
        names = {f.alias: n for n, f in model.model_fields.items() if f.alias}
        base = {names.get(k, k) if isinstance(k, str) else k: v for k, v in options.items()}
    else:
        raise InvalidParameter("options", f"options must be a {model.__name__} or a dict, "
                               f"got {type(options).__name__}")
    return parse(model, {**base, **overrides})


def default(model: type[BaseModel], name: str) -> Any:
    """The default of one option (CLI flags read their defaults here)."""
    return model.model_fields[name].default


def help_text(model: type[BaseModel], name: str) -> str:
    return model.model_fields[name].description or ""


def _field(loc: tuple[Any, ...], model: type[BaseModel], names: dict[str, str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in model.model_fields:  # given by its snake_case name
        parts[0] = model.model_fields[parts[0]].alias or parts[0]
    if parts and parts[0] in names:
        parts[0] = names[parts[0]]
    return ".".join(parts) or "settings"


def _invalid(exc: ValidationError, model: type[BaseModel], names: dict[str, str]
             ) -> InvalidParameter:
    errors = exc.errors()
    err = errors[0]
    field = _field(tuple(err.get("loc", ())), model, names)
    if err.get("type") == "extra_forbidden":
        message = f"Unknown setting '{field}'."
    else:
        message = f"Invalid value for '{field}': {err.get('msg', 'invalid')}."
    details = [{"field": _field(tuple(e.get("loc", ())), model, names), "message": e["msg"]}
               for e in errors]
    return InvalidParameter(field, message, details=details)
