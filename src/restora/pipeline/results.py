"""Result objects of the face pipeline, with the seeds' camelCase JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from restora.io.image import Image
from restora.pipeline.identity import Identity


@dataclass(frozen=True)
class Face:
    """One face, in INPUT pixel coordinates (before any upscale).

    ``x, y, w, h`` is the detector box rounded outwards and clipped to the image; ``landmarks`` are
    the five points (image-left eye, image-right eye, nose, image-left mouth corner, image-right
    mouth corner) as floats.
    """

    x: int
    y: int
    w: int
    h: int
    score: float
    landmarks: tuple[tuple[float, float], ...]
    identity: Identity | None = None  # input face vs pasted face (docs/enhance-faces.md)
    restoration: dict[str, Any] | None = None  # model, fidelity, reason, candidates tried
    reference: dict[str, Any] | None = None  # matched reference photo: index, distances
    restored: bool = True
    rotation: int = 0  # degrees the face is turned clockwise (found by a turned search)

    def to_dict(self) -> dict[str, Any]:
        ident = self.identity or Identity("unknown", reason="no identity check ran")
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h,
                "score": round(float(self.score), 4),
                "landmarks": [[round(float(px), 2), round(float(py), 2)] for px, py in self.landmarks],
                "identity": ident.to_dict(), "restored": self.restored,
                "restoration": self.restoration, "reference": self.reference,
                "rotation": self.rotation}


@dataclass
class EnhanceResult:
    """What :func:`restora.pipeline.enhance.enhance_faces` returns."""

    image: Image
    faces: list[Face] = field(default_factory=list)
    faces_detected: int = 0
    model: str | None = None  # registry id of the restorer that ran
    model_kind: str | None = None  # "gfpgan" | "codeformer"
    reason: str | None = None  # why this model (always set for model="auto")
    upscaler: str | None = None  # upscale model id, "lanczos", or None at scale 1
    scale: int = 1
    landmark_source: str = "detector"  # "detector", "box" (client boxes) or "mixed"
    mask: str | None = None  # "parsenet" or "square" when faces were pasted
    identity_model: str | None = None  # face-recognition model id behind faces[].identity
    references: list[dict[str, Any]] = field(default_factory=list)  # reference photos, matches
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    warnings: list[str] = field(default_factory=list)
    engine: str | None = None  # engine of the restorer ("openvino", "onnxruntime", "torch")
    precision: str | None = None  # its precision ("fp32", "bf16", "fp16"; on CUDA also "tf32")
    engines: dict[str, str] = field(default_factory=dict)  # model id -> "engine/precision"
    #: the up-front estimate of the job's duration (Stages.estimate: seconds, long, work, ...)
    estimate: dict[str, Any] | None = None
    #: faces recoloured for a black-and-white photo: "gray" (luma), "toned" (the photo's tint)
    tone: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the seeds' field names (``facesDetected``, ``faces``, ...);
        ``engine``, ``precision`` and ``engines`` are extensions (docs/engines.md), as are
        ``estimate`` and ``estimatedSeconds`` (the up-front duration estimate), and ``tone`` (how
        restored faces were recoloured for a black-and-white photo)."""
        return {
            "facesDetected": self.faces_detected,
            "faces": [f.to_dict() for f in self.faces],
            "model": self.model,
            "modelKind": self.model_kind,
            "reason": self.reason,
            "upscaler": self.upscaler,
            "scale": self.scale,
            "landmarkSource": self.landmark_source,
            "mask": self.mask,
            "identityModel": self.identity_model,
            "references": [dict(r) for r in self.references],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "engine": self.engine,
            "precision": self.precision,
            "engines": dict(self.engines),
            "estimate": dict(self.estimate) if self.estimate is not None else None,
            "estimatedSeconds": self.estimate["seconds"] if self.estimate is not None else None,
            "tone": self.tone,
            "width": self.image.width,
            "height": self.image.height,
        }
