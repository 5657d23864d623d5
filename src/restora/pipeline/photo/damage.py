"""Damage repair: which pixels are damaged (learned, classical or the user's), then the fill.

Detection: the BOPBTL scratch U-Net when a ``damage-segmentation`` model is installed (run at
the reference resolution, its probability mapped to full resolution), the classical detector
(:mod:`.scratches`) otherwise. The user's mask replaces detection (``replace``) or is added to
it (``add``). The fill is :mod:`.fill` (LaMa for wide regions when an ``inpainting`` model is
installed). The report names the detector and the fill actually used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from restora.pipeline.photo.fill import CropFn, fill_damage
from restora.pipeline.photo.scratches import detect_in_bands

if TYPE_CHECKING:
    from restora.models.runtime import Runtime

DETECTION_TASK = "damage-segmentation"
INPAINTING_TASK = "inpainting"


@dataclass
class DamageRepair:
    pixels: np.ndarray
    mask: np.ndarray  # every pixel written (the damage, its 1 px rim and seams)
    coverage: float  # percent of the area found damaged (detected and/or the user's)
    report: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _installed(runtime: Runtime | None, task: str) -> str | None:
    if runtime is None:
        return None
    found = runtime.registry.installed(task)
    return found[0].id if found else None


def repair_networks(runtime: Runtime, *, detect: bool) -> list[str]:
    """Ids of the installed networks a repair may run: the learned detector when detecting
    (else the face detector the classical detector protects faces with), and LaMa."""
    ids = []
    if detect:
        learned = _installed(runtime, DETECTION_TASK)
        ids.append(learned if learned is not None else _installed(runtime, "face-detection"))
    ids.append(_installed(runtime, INPAINTING_TASK))
    return [i for i in ids if i is not None]


def detect_damage(pixels: np.ndarray, noise_sigma: float, runtime: Runtime | None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """(H x W bool damage mask, report) by the learned detector if installed, else classical."""
    mask, report, _ = _detect(pixels, noise_sigma, runtime)
    return mask, report


def _detect(pixels: np.ndarray, noise_sigma: float, runtime: Runtime | None,
            orientation: str = "auto"
            ) -> tuple[np.ndarray, dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """detect_damage plus the classical fold masks (bright, dark), which get their own fill."""
    model_id = _installed(runtime, DETECTION_TASK)
    if model_id is not None:
        assert runtime is not None
        from restora.pipeline.photo.learned import probability_to_mask, scratch_probability

        model = runtime.load(model_id)
        rgb8 = pixels if pixels.dtype == np.uint8 else np.round(pixels / 257.0).astype(np.uint8)
        prob = scratch_probability(model, rgb8, runtime.device, model.dtype)
        mask = probability_to_mask(prob, pixels.shape[0], pixels.shape[1])
        return mask, {"detector": "learned", "model": model_id, "engine": model.engine_label,
                      "networkSize": list(prob.shape)}, None
    from restora.pipeline.photo.regions import (detect_folds_by_polarity, detect_missing_areas,
                                                drop_frame_lines)

    found = detect_in_bands(pixels, noise_sigma)
    missing, n_missing = detect_missing_areas(pixels)
    bright, dark, n_folds = detect_folds_by_polarity(pixels, noise_sigma)
    framed = drop_frame_lines(found.mask)
    thin, faces = protect_face_features(framed, pixels, runtime, orientation)
    mask = thin | missing | bright | dark
    # coverage / scratchPixels / dustSpecks are what the detector found; these say how much of
    # it was then taken as content (a photo's frame, eyes and lips), so the report adds up
    return mask, {"detector": "classical", **found.to_dict(), "missingAreas": n_missing,
                  "folds": n_folds, "facesProtected": faces,
                  "frameLinePixels": int(found.mask.sum() - framed.sum()),
                  "protectedPixels": int(framed.sum() - thin.sum())}, (bright, dark)


#: protected zones around the 5 landmarks, in eye distances: (centre offset up, half width,
#: half height) for each eye (with its lids, brow and catchlight) and the mouth (the lips)
_EYE_ZONE = (0.12, 0.36, 0.30)
_MOUTH_ZONE = (0.0, 0.62, 0.26)
PROTECTED_SHARE = 0.5  # a defect with at least this share inside the zones is taken as content


def protect_face_features(mask: np.ndarray, pixels: np.ndarray, runtime: Runtime | None,
                          orientation: str = "auto") -> tuple[np.ndarray, int | None]:
    """Drop thin-defect components of ``mask`` that lie mostly on eyes or lips (catchlights, a
    lip line, lashes), found from the 5 landmarks of an installed face detector (searched as
    ``orientation`` says, :func:`restora.pipeline.detect.detect_faces`). A scratch that
    crosses a face has most of its length outside the zones and stays. Returns (mask, faces
    used), faces None when no face detector is installed."""
    import cv2

    if runtime is None or not mask.any():
        return mask, None
    installed = runtime.registry.installed("face-detection")
    if not installed:
        return mask, None
    from restora.pipeline import detect as det

    net = runtime.load(installed[0].id)
    faces = det.detect_faces(net, pixels, conf_threshold=det.sensitivity_to_threshold(
        0.5, net), orientation=orientation)
    if not faces:
        return mask, 0
    zone = np.zeros(mask.shape, np.uint8)
    for f in faces:
        lm = f.landmarks
        d = max(f.eye_distance, 1.0)
        # zones follow the face's own axes: a sideways scan's faces lie on their side
        roll = f.roll
        up_dir = np.array([np.sin(np.radians(roll)), -np.cos(np.radians(roll))])
        up, hw, hh = _EYE_ZONE
        for eye in lm[:2]:
            cx, cy = eye + up * d * up_dir
            cv2.ellipse(zone, (int(cx), int(cy)), (int(hw * d), int(hh * d)), roll, 0, 360, 1,
                        -1)
        mouth = (lm[3] + lm[4]) / 2
        ang = float(np.degrees(np.arctan2(lm[4][1] - lm[3][1], lm[4][0] - lm[3][0])))
        up, hw, hh = _MOUTH_ZONE
        cx, cy = mouth + up * d * up_dir
        cv2.ellipse(zone, (int(cx), int(cy)), (int(hw * d), int(hh * d)), ang, 0, 360, 1, -1)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    inside = np.bincount(labels[zone > 0], minlength=n)
    drop = inside >= PROTECTED_SHARE * stats[:, cv2.CC_STAT_AREA]
    drop[0] = False
    return (mask & ~drop[labels]) if drop.any() else mask, len(faces)


def repair_damage(pixels: np.ndarray, noise_sigma: float, runtime: Runtime | None, *,
                  detect: bool = True, user_mask: np.ndarray | None = None,
                  mask_mode: str = "replace",
                  progress: Callable[[float], None] | None = None,
                  on_crop: CropFn | None = None,
                  on_detected: Callable[[dict[str, Any]], None] | None = None,
                  orientation: str = "auto", exclude: np.ndarray | None = None
                  ) -> DamageRepair:
    """Detect (unless the user's mask replaces it), then fill; see the module docstring.
    ``on_crop``: see :func:`.fill.fill_damage`. ``on_detected`` receives the detection's
    report (the classical detector's ``facesProtected`` among it) before the fill starts.
    ``orientation``: how the faces whose features are protected are searched. ``exclude``
    (H x W bool; fully transparent pixels): nothing detected there is damage (the user's mask
    still is)."""
    report: dict[str, Any] = {}
    mask = np.zeros(pixels.shape[:2], bool)
    folds = None
    if detect and (user_mask is None or mask_mode == "add"):
        mask, report, folds = _detect(pixels, noise_sigma, runtime, orientation)
        if exclude is not None:
            mask = mask & ~exclude
            folds = None if folds is None else (folds[0] & ~exclude, folds[1] & ~exclude)
        if on_detected is not None:
            on_detected(report)
    if user_mask is not None:
        report["userMask"] = {"mode": mask_mode, "pixels": int(user_mask.sum())}
        if not report.get("detector"):
            report["detector"] = "user"
        mask = mask | user_mask
    if progress is not None:
        progress(0.3)
    if not mask.any():
        reason = "no damage found"
        if user_mask is not None:
            reason = "the given mask is empty"
        elif report.get("frameLinePixels") or report.get("protectedPixels"):
            reason = ("no damage left: the thin lines found are the photo's frame or lie on "
                      "eyes and lips")
        return DamageRepair(pixels, mask, 0.0, {**report, "skipped": True, "reason": reason})
    fill_mask = mask
    if folds is not None and (folds[0].any() or folds[1].any()):
        from restora.pipeline.photo.regions import flatten_folds

        # fold pixels get the ridge removal (scratches crossing them go with the ridge); the
        # user's mask is filled like the rest
        only_fold = folds[0] | folds[1]
        if user_mask is not None:
            only_fold &= ~user_mask
        pixels = flatten_folds(pixels, folds[0] & only_fold, folds[1] & only_fold)
        fill_mask = mask & ~only_fold
    lama_id = _installed(runtime, INPAINTING_TASK)
    inpaint = None
    model = None
    if lama_id is not None:
        assert runtime is not None
        from restora.pipeline.photo.learned import lama_inpaint

        model = runtime.load(lama_id)

        def inpaint(rgb8: np.ndarray, holes: np.ndarray) -> np.ndarray:
            return lama_inpaint(model, rgb8, holes, runtime.device, model.dtype)

    filled = fill_damage(pixels, fill_mask, inpaint=inpaint,
                         progress=None if progress is None else
                         (lambda f: progress(0.3 + 0.7 * f)), on_crop=on_crop)
    if fill_mask is not mask:
        filled.mask |= mask & ~fill_mask
    warnings: list[str] = []
    fill_report = dict(filled.report)
    if fill_mask is not mask:
        fill_report["folds"] = "ridge removed (grey opening/closing)"
    if model is not None:
        fill_report["model"] = lama_id
        fill_report["engine"] = model.engine_label
    elif filled.wide_regions:
        warnings.append(
            f"{filled.wide_regions} damaged region(s) wider than a thin line were filled with "
            "the classical method; an inpainting model does better: "
            "`restora models pull photo-restoration`")
    coverage = 100.0 * float(mask.mean())
    report.update({"method": "lama+telea" if lama_id and filled.wide_regions else "telea",
                   "coverage": round(coverage, 3),
                   "repairedCoverage": round(100.0 * float(filled.mask.mean()), 3),
                   "fill": fill_report, "native": True})
    return DamageRepair(filled.pixels, filled.mask, coverage, report, warnings)
