"""Identity: is the restored face still the same person, and which face is the reference's person?

A face-recognition model (task ``face-recognition``: dlib's ResNet descriptor by default, SFace
when pulled) turns an FFHQ-aligned crop into a descriptor. The distance between the input face's
descriptor and the pasted face's descriptor gives a verdict; faces too small or too blurred for
the descriptor to mean anything get ``unknown`` with a reason. Thresholds come from
``benchmarks/identity_distances.py`` on the real photos (docs/enhance-faces.md, "Identity").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from restora.errors import InvalidParameter

if TYPE_CHECKING:
    from restora.models.nets import FaceRecognizer
    from restora.models.registry import ModelSpec
    from restora.models.runtime import Runtime


@dataclass(frozen=True)
class Thresholds:
    """Distance rules of one recognizer: ``same`` below ``same_below``, ``changed`` from
    ``changed_from``, ``uncertain`` between; a face matches a reference below ``match_below``."""

    same_below: float
    changed_from: float
    match_below: float
    measured: bool  # False: taken from the model's publisher, not measured on our photos


#: Per architecture. dlib: measured (docs/enhance-faces.md): blur up to sigma 4, downscaling to
#: 16 px between the eyes and JPEG down to quality 8 move a face at most 0.29 from its clean self,
#: and no two different people of the test photos are closer than 0.465; 97.7 % of
#: different-person pairs are 0.55 or more apart, and the two same-person pairs across photos are
#: 0.42 and 0.49. SFace: OpenCV's published cosine-similarity threshold 0.363 (distance 1 - cos).
THRESHOLDS = {
    "dlib_resnet": Thresholds(same_below=0.40, changed_from=0.55, match_below=0.55, measured=True),
    "sface": Thresholds(same_below=0.50, changed_from=0.637, match_below=0.637, measured=False),
}

#: Faces whose eyes are closer than this in the input are not judged: halving such a face moves
#: its descriptor by 0.2-0.35, as much as the gap between "same" and "changed".
MIN_EYE_DISTANCE = 12.0
#: Crops with less detail than this (Laplacian variance, see :func:`crop_sharpness`) are not
#: judged: a 512 crop blurred with sigma 6 has a median of 1.9 (sigma 8: 1.8) and its descriptor
#: moves by up to 0.39 (0.47); the real small faces of the test photos have 2.9 or more.
MIN_DETAIL = 2.0

VERDICTS = ("same", "uncertain", "changed", "unknown")

#: Reference photos one call may take (each is decoded, detected and described).
MAX_REFERENCES = 8


@dataclass(frozen=True)
class Identity:
    """The identity check of one face (``to_dict`` is the JSON contract)."""

    verdict: str  # same | uncertain | changed | unknown
    distance: float | None = None
    model: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "distance": None if self.distance is None else round(float(self.distance), 4),
            "model": self.model, "verdict": self.verdict}
        if self.reason:
            out["reason"] = self.reason
        return out


def crop_sharpness(crop: np.ndarray) -> float:
    """Detail of an aligned crop: variance of the Laplacian of its 8-bit luma at 512 px, over the
    central 320 px (the face without hair and background)."""
    import cv2

    if crop.shape[0] != 512:
        crop = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_LINEAR)
    gray = cv2.cvtColor(to_uint8(crop), cv2.COLOR_RGB2GRAY)[96:416, 96:416]
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def to_uint8(crop: np.ndarray) -> np.ndarray:
    """An RGB crop as uint8: float crops are in [0, 1], uint16 crops are full range."""
    if crop.dtype == np.uint8:
        return crop
    if crop.dtype == np.uint16:
        return ((crop.astype(np.float32) + 128.0) / 257.0).astype(np.uint8)
    return np.clip(np.asarray(crop, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


class IdentityChecker:
    """A loaded face-recognition model (a :class:`~restora.models.nets.FaceRecognizer`
    descriptor), its id and its thresholds."""

    def __init__(self, net: FaceRecognizer, model_id: str, arch: str) -> None:
        self.net = net
        self.model_id = model_id
        # custom entries use one of the two architectures, hence their thresholds
        self.thresholds = THRESHOLDS.get(arch, THRESHOLDS["dlib_resnet"])

    def describe(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Descriptors (N x D) of aligned crops (uint8, uint16 or float in [0, 1])."""
        return self.net.embed([to_uint8(c) for c in crops])

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(self.net.distance(a, b), np.float32)

    def verdict(self, distance: float) -> str:
        t = self.thresholds
        if distance < t.same_below:
            return "same"
        return "changed" if distance >= t.changed_from else "uncertain"

    def identity(self, distance: float, unjudgeable: str | None = None) -> Identity:
        if unjudgeable:
            return Identity("unknown", float(distance), self.model_id, unjudgeable)
        return Identity(self.verdict(float(distance)), float(distance), self.model_id)


def unjudgeable(eye_distance: float, detail: float) -> str | None:
    """Why a face is too small or too degraded for an identity verdict (None: it can be judged)."""
    if eye_distance < MIN_EYE_DISTANCE:
        return (f"face too small to judge: eyes {eye_distance:.0f} px apart (under "
                f"{MIN_EYE_DISTANCE:g})")
    if detail < MIN_DETAIL:
        return f"face too degraded to judge: detail {detail:.1f} (under {MIN_DETAIL:g})"
    return None


def recognizer_spec(runtime: Runtime, model: str | None = None) -> ModelSpec | None:
    """The face-recognition model to use: ``model`` if given (must be one), else the installed
    default; None when none is installed."""
    return runtime.registry.pick("face-recognition", model, param="identity_model")


def load_checker(runtime: Runtime, model: str | None = None) -> IdentityChecker | None:
    from restora.models.nets import FaceRecognizer

    spec = recognizer_spec(runtime, model)
    if spec is None:
        return None
    net = runtime.load(spec.id)
    if not isinstance(net, FaceRecognizer):
        raise InvalidParameter("identity_model", f"model '{spec.id}' is not a face recognizer")
    return IdentityChecker(net, spec.id, spec.arch)


NOT_INSTALLED = ("no face-recognition model is installed (pip install 'restora[identity]')")


def match_references(faces: np.ndarray, references: np.ndarray, checker: IdentityChecker
                     ) -> list[tuple[int, int, float]]:
    """One-to-one (face, reference, distance) matches under the match threshold, closest first:
    a person appears once in a photo, so each reference takes at most one face."""
    if len(faces) == 0 or len(references) == 0:
        return []
    dist = checker.distance(faces[:, None, :], references[None, :, :])
    pairs = sorted((float(dist[i, j]), i, j) for i in range(dist.shape[0])
                   for j in range(dist.shape[1]))
    used_f: set[int] = set()
    used_r: set[int] = set()
    out = []
    for d, i, j in pairs:
        if d >= checker.thresholds.match_below or i in used_f or j in used_r:
            continue
        used_f.add(i)
        used_r.add(j)
        out.append((i, j, d))
    return sorted(out)
