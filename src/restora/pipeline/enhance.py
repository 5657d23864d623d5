"""``enhance_faces``: detect, align, restore (batched), paste back, optionally upscale.

The data path is ``decode -> detect -> align -> restore -> upscale (background) -> paste``; every
network comes from the :class:`~restora.models.runtime.Runtime` handed in (loaded once per
process). See ``docs/enhance-faces.md`` for the rules (sensitivity, ``auto``, masks, upscaling).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from restora.errors import InvalidParameter, ModelNotInstalled
from restora.io.decode import as_image
from restora.io.image import Image
from restora.pipeline import detect as det
from restora.pipeline._timing import Stages
from restora.pipeline.options import EnhanceOptions, with_overrides
from restora.pipeline.align import AlignedFace, align_face, compose, invert, scale_map
from restora.models.nets import FaceParser, FaceRestorer, Network, Upscaler
from restora.models.registry import RESTORER_FAMILIES
from restora.pipeline.paste import PasteFace, is_grayscale, parse_to_mask, paste_faces, to_luminance
from restora.pipeline.restore import load_restorer, parse_faces, restore_faces
from restora.pipeline.results import EnhanceResult, Face
from restora.pipeline.upscale import (find_upscaler, load_upscaler, resize, upscale_pixels,
                                      upscale_rgb)

if TYPE_CHECKING:
    from restora.models.registry import ModelSpec
    from restora.models.runtime import Runtime

#: Share of the progress bar per stage (in execution order).
STAGE_WEIGHTS = {"decode": 3.0, "detect": 6.0, "align": 2.0, "restore": 55.0, "upscale": 12.0,
                 "paste": 22.0}  # paste includes the ParseNet masks

MODEL_ARCH = RESTORER_FAMILIES
#: A stage estimated to take at least this long is announced (log + warning).
LONG_STAGE_SECONDS = 60.0

# ``auto``: a face is "severely degraded" when it is small in the input (the 512 crop enlarges it
# more than 4x: FFHQ eyes are 126 px apart at 512) or its aligned crop carries little detail.
AUTO_MIN_EYE_DISTANCE = 32.0
AUTO_MIN_SHARPNESS = 6.0  # variance of the Laplacian of the 8-bit luma, central 320 px of the crop


@dataclass(frozen=True)
class FaceStats:
    eye_distance: float
    sharpness: float

    @property
    def degraded(self) -> bool:
        return self.eye_distance < AUTO_MIN_EYE_DISTANCE or self.sharpness < AUTO_MIN_SHARPNESS


def enhance_faces(
    image: Image | bytes | str | Path,
    options: EnhanceOptions | None = None,
    *,
    runtime: Runtime | None = None,
    progress: Callable[[str, float], None] | None = None,
    cancel: threading.Event | None = None,
    restorer: FaceRestorer | None = None,
    **overrides: Any,
) -> EnhanceResult:
    """Restore every face of ``image`` and return the new image with a report.

    ``options`` (:class:`~restora.pipeline.options.EnhanceOptions`, defaults when omitted) may
    be given, or overridden, as keyword arguments of the same names (``strength=0.6``); both are
    validated by the model, so a bad or unknown option raises
    :class:`~restora.errors.InvalidParameter` before any work. ``model``: ``auto``, ``gfpgan``,
    ``codeformer`` or a face-restoration model id. ``strength`` blends restored and original
    faces (0 leaves the pixels untouched). ``fidelity`` is CodeFormer's w. ``upscale`` 1/2/4
    enlarges the whole image (Real-ESRGAN when installed, else Lanczos); ``bg_upscale`` also runs
    Real-ESRGAN on the background at scale 1; ``face_upsample`` upsamples restored faces before
    pasting. ``faces`` skips detection and uses the given boxes. ``restorer`` injects an already
    loaded network (tests, custom pipelines). Raises :class:`~restora.errors.Cancelled` when
    ``cancel`` is set.
    """
    opts = with_overrides(EnhanceOptions, options, overrides)
    model, strength, fidelity, upscale = opts.model, opts.strength, opts.fidelity, opts.upscale
    bg_upscale, face_upsample = opts.bg_upscale, opts.face_upsample
    stages = Stages(STAGE_WEIGHTS, progress, cancel)
    warnings: list[str] = []
    used: list[Network] = []  # the networks that ran, for the engine report

    with stages.stage("decode"):
        img = as_image(image, runtime.settings if runtime is not None else None)
    if runtime is None:
        from restora.models.runtime import Runtime

        runtime = Runtime()
    if model != "auto" and model not in MODEL_ARCH and restorer is None:
        runtime.registry.get(model)  # unknown ids fail now, even on an image without faces
    pixels = img.pixels
    with stages.stage("detect"):
        rule = _detection_rule(runtime, model, restorer)
        dets, source = _find_faces(runtime, pixels, faces=opts.face_dicts(),
                                   detector=opts.detector, rule=rule,
                                   sensitivity=opts.sensitivity,
                                   only_center_face=opts.only_center_face, warnings=warnings,
                                   used=used)
    found = [_to_face(d, img.width, img.height) for d in dets]
    result = EnhanceResult(image=img, faces=found, faces_detected=len(found), scale=upscale,
                           landmark_source=source, warnings=warnings)

    up = _upscaler(runtime, upscale, bg_upscale, warnings)
    if face_upsample and upscale == 1:
        warnings.append("face_upsample has no effect at upscale 1")

    restored: list[np.ndarray] = []
    aligned: list[AlignedFace] = []
    if not dets:
        result.reason = "no faces detected"
    elif strength == 0.0:
        result.reason = "strength 0: faces left unchanged"
    else:
        with stages.stage("align"):
            if restorer is None:
                restorer, result.reason = _choose_restorer(runtime, model, pixels, dets)
            else:
                result.reason = "restorer supplied by the caller"
            aligned = [align_face(pixels, d.landmarks, restorer.input_size or 512) for d in dets]
            crops = [_as_float(a.crop) for a in aligned]
        result.model, result.model_kind = restorer.model_id, (
            restorer.kind if restorer.kind in MODEL_ARCH else None)
        used.append(restorer)
        with stages.stage("restore"):
            restored = restore_faces(
                crops, restorer, fidelity=fidelity, seed=opts.seed, cancel=cancel,
                on_batch=lambda done, total: stages.report("restore", done / total))
            if is_grayscale(pixels):
                restored = [to_luminance(f) for f in restored]

    with stages.stage("upscale"):
        canvas, alpha, result.upscaler = _background(img, upscale, bg_upscale, up, cancel,
                                                     _tile_clock(stages, result))
        if up is not None:
            used.append(up)

    with stages.stage("paste"):
        if restored:
            masks, result.mask = _masks(runtime, restored, cancel, used)
            square = masks[0] is None or restorer.kind != "gfpgan"
            items = _paste_items(aligned, restored, masks, square, upscale, up, face_upsample,
                                 cancel)
            canvas = paste_faces(canvas, items, strength, upscale=upscale)
        elif canvas is pixels:
            canvas = pixels.copy()
    result.image = img.with_pixels(canvas, alpha)
    result.timings = dict(stages.timings)
    result.engines = {n.model_id: f"{n.engine_name}/{n.precision}" for n in used}
    if restored and restorer is not None:
        result.engine, result.precision = restorer.engine_name, restorer.precision
    stages.done()
    return result


# --- steps ------------------------------------------------------------------------------------

def _upscaler(runtime: Runtime, upscale: int, bg_upscale: bool, warnings: list[str]
              ) -> Upscaler | None:
    """The Real-ESRGAN model to use, if upscaling is asked for and one is installed."""
    if upscale == 1 and not bg_upscale:
        return None
    spec = find_upscaler(runtime, upscale if upscale > 1 else 2)
    if spec is not None:
        return load_upscaler(runtime, spec)
    if bg_upscale:
        warnings.append("no Real-ESRGAN model is installed: the background was "
                        + ("resized with Lanczos" if upscale > 1 else "left as it is"))
    return None


def _tile_clock(stages: Stages, result: EnhanceResult) -> Callable[[int, int], None]:
    """Progress per upscale tile, and an estimate of the whole stage from the second tile (the
    first may include building the engine): kept in ``result.estimates`` and, when long,
    logged and added to the warnings."""
    import logging
    import time

    marks: list[float] = []

    def on_tile(done: int, total: int) -> None:
        stages.report("upscale", done / total)
        marks.append(time.perf_counter())
        if done == 2 and total > 2:
            eta = (marks[1] - marks[0]) * total
            result.estimates["upscale"] = round(eta, 1)
            if eta >= LONG_STAGE_SECONDS:
                note = (f"background upscaling runs {total} tiles: about {eta / 60:.0f} min "
                        "on this machine")
                logging.getLogger("restora.pipeline").warning(note)
                result.warnings.append(note)
    return on_tile


def _background(img: Image, upscale: int, bg_upscale: bool, up: Upscaler | None,
                cancel: threading.Event | None,
                on_tile: Callable[[int, int], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(pixels, alpha, upscaler name) of the canvas the faces are pasted into."""
    pixels, alpha = img.pixels, img.alpha
    if upscale > 1:
        canvas = upscale_pixels(pixels, upscale, up, cancel=cancel, on_tile=on_tile)
        if alpha is not None:
            alpha = resize(alpha, img.width * upscale, img.height * upscale)
        return canvas, alpha, (up.model_id if up is not None else "lanczos")
    if bg_upscale and up is not None:
        # background enhancement at scale 1: super-resolve, area-averaged back down per tile
        return upscale_pixels(pixels, 1, up, cancel=cancel, on_tile=on_tile), alpha, up.model_id
    return pixels, alpha, None


def _as_float(crop: np.ndarray) -> np.ndarray:
    top = 65535.0 if crop.dtype == np.uint16 else 255.0
    return crop.astype(np.float32) * np.float32(1.0 / top)


def _detector_spec(runtime: Runtime, detector: str | None) -> ModelSpec:
    reg = runtime.registry
    if detector:
        spec = reg.get(detector)
        if spec.task != "face-detection":
            raise InvalidParameter("detector", f"model '{detector}' is a {spec.task} model, "
                                   "not a face detector")
        return spec
    installed = reg.installed("face-detection")
    if installed:
        return installed[0]
    raise runtime.not_installed(reg.default("face-detection"))


def _detection_rule(runtime: Runtime, model: str, restorer: FaceRestorer | None
                    ) -> det.DetectionRule:
    """The reference detection rule of the restorer asked for: GFPGAN's for GFPGAN models,
    CodeFormer's otherwise (and for ``auto``, which chooses the restorer from the detections)."""
    kind = model
    if restorer is not None:
        kind = restorer.kind
    elif model not in MODEL_ARCH and model != "auto":
        arch = runtime.registry.get(model).arch
        kind = next((k for k, a in MODEL_ARCH.items() if a == arch), "custom")
    return det.RULES.get(kind, det.CODEFORMER_RULE)


def _find_faces(runtime: Runtime, pixels: np.ndarray, *, faces: Sequence[dict] | None,
                detector: str | None, rule: det.DetectionRule, sensitivity: float,
                only_center_face: bool, warnings: list[str], used: list[Network] | None = None
                ) -> tuple[list[det.Detection], str]:
    height, width = pixels.shape[:2]
    max_faces = runtime.settings.max_faces
    if faces is not None:
        boxes = det.parse_boxes(faces, width, height)
        try:
            spec = _detector_spec(runtime, detector)
            net = runtime.load(spec.id)
            thr = det.sensitivity_to_threshold(sensitivity, net.kind, rule)
        except ModelNotInstalled:
            if detector:
                raise
            net, thr = None, det.LOOSE_THRESHOLD
        if net is not None and used is not None:
            used.append(net)
        dets, sources = det.detections_for_boxes(net, pixels, boxes,
                                                 conf_threshold=min(thr, det.LOOSE_THRESHOLD))
        source = sources[0] if sources and len(set(sources)) == 1 else ("mixed" if sources else "box")
        if "box" in sources:
            warnings.append(f"{sources.count('box')} supplied face box(es) had no detectable "
                            "landmarks: landmarks were estimated from the box proportions")
    else:
        spec = _detector_spec(runtime, detector)
        net = runtime.load(spec.id)
        if used is not None:
            used.append(net)
        thr = det.sensitivity_to_threshold(sensitivity, net.kind, rule)
        dets = det.detect_faces(net, pixels, conf_threshold=thr, working_size=rule.working_size,
                                enlarge_only=rule.enlarge_only)
        dets, small = det.drop_small(dets)
        if small:
            warnings.append(f"{small} face(s) skipped: eyes closer than {det.MIN_EYE_DISTANCE:g} px")
        source = "detector"
    if only_center_face:
        dets = det.center_face(dets, width, height)
    dets, dropped = det.largest_first(dets, max_faces)
    if dropped:
        warnings.append(f"{dropped} smaller face(s) not restored: at most {max_faces} per image "
                        "(RESTORA_MAX_FACES)")
    return dets, source


def _to_face(d: det.Detection, width: int, height: int) -> Face:
    x1, y1, x2, y2 = d.box
    x = int(min(max(np.floor(x1), 0), width - 1))
    y = int(min(max(np.floor(y1), 0), height - 1))
    w = int(max(1, min(np.ceil(x2), width) - x))
    h = int(max(1, min(np.ceil(y2), height) - y))
    lm = tuple((float(px), float(py)) for px, py in d.landmarks)
    return Face(x=x, y=y, w=w, h=h, score=float(d.score), landmarks=lm)


def face_stats(pixels: np.ndarray, dets: Sequence[det.Detection]) -> list[FaceStats]:
    """Inter-eye distance and detail (Laplacian variance of the 512 aligned crop) per face."""
    import cv2

    out = []
    for d in dets:
        crop = align_face(det.to_uint8(pixels), d.landmarks, 512).crop
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[96:416, 96:416]
        out.append(FaceStats(d.eye_distance, float(cv2.Laplacian(gray, cv2.CV_32F).var())))
    return out


def _choose_restorer(runtime: Runtime, model: str, pixels: np.ndarray,
                     dets: Sequence[det.Detection]) -> tuple[FaceRestorer, str]:
    """The restorer for ``model`` and a sentence saying why (for ``auto``)."""
    reg = runtime.registry
    if model in MODEL_ARCH:
        installed = reg.installed("face-restoration", MODEL_ARCH[model])
        spec = installed[0] if installed else reg.default("face-restoration", arch=MODEL_ARCH[model])
        return load_restorer(runtime, spec), f"{model} requested"
    if model != "auto":
        spec = reg.get(model)
        if spec.task != "face-restoration":
            raise InvalidParameter("model", f"model '{model}' is a {spec.task} model, not a face "
                                   "restorer")
        return load_restorer(runtime, spec), f"model '{model}' requested"

    kinds = {k: reg.installed("face-restoration", arch) for k, arch in MODEL_ARCH.items()}
    available = [k for k, specs in kinds.items() if specs]
    if not available:
        raise runtime.not_installed(reg.default("face-restoration", arch=MODEL_ARCH["gfpgan"]))
    if len(available) == 1:
        only = available[0]
        return load_restorer(runtime, kinds[only][0]), f"auto: {only} (the only face restorer installed)"
    stats = face_stats(pixels, dets)
    bad = sum(s.degraded for s in stats)
    if 2 * bad >= len(stats):
        kind = "codeformer"
        why = (f"{bad} of {len(stats)} face(s) severely degraded (inter-eye distance under "
               f"{AUTO_MIN_EYE_DISTANCE:g} px or Laplacian variance under {AUTO_MIN_SHARPNESS:g})")
    else:
        kind = "gfpgan"
        why = (f"{len(stats) - bad} of {len(stats)} face(s) large and detailed enough for "
               "identity-preserving restoration")
    return load_restorer(runtime, kinds[kind][0]), f"auto: {kind}, {why}"


def _masks(runtime: Runtime, restored: Sequence[np.ndarray], cancel: threading.Event | None,
           used: list[Network] | None = None) -> tuple[list[np.ndarray | None], str]:
    """ParseNet face masks in crop space, or None per face (square mask only) without a parser.

    How they combine with the feathered square is the restorer's reference rule (see
    ``enhance_faces``): GFPGAN pastes with the ParseNet mask alone, CodeFormer with the minimum.
    """
    size = restored[0].shape[0]
    parsers = runtime.registry.installed("face-parsing")
    if not parsers:
        return [None] * len(restored), "square"
    parser = runtime.load(parsers[0].id)
    if not isinstance(parser, FaceParser):
        raise InvalidParameter("model", f"model '{parser.model_id}' is not a face parser")
    maps = parse_faces(parser, restored, cancel=cancel)
    if used is not None:
        used.append(parser)
    return [parse_to_mask(m, size) for m in maps], "parsenet"


def _paste_items(aligned: Sequence[AlignedFace], restored: Sequence[np.ndarray],
                 masks: Sequence[np.ndarray | None], square: bool, upscale: int,
                 up: Upscaler | None, face_upsample: bool, cancel: threading.Event | None
                 ) -> list[PasteFace]:
    """Crop -> canvas matrices (through the upscale), optionally with upsampled faces."""
    items = []
    to_canvas = scale_map(float(upscale))
    for a, face, mask in zip(aligned, restored, masks):
        matrix = compose(to_canvas, invert(a.matrix))
        if face_upsample and upscale > 1:
            n = face.shape[0] * upscale
            face = upscale_rgb(face, upscale, up, out_size=(n, n), cancel=cancel)
            mask = None if mask is None else resize(mask, n, n)
            # upsampled crop index -> crop index is the inverse of scale_map(upscale)
            matrix = compose(matrix, invert(scale_map(float(upscale))))
        items.append(PasteFace(face=face, mask=mask, matrix=matrix, square=square))
    return items
