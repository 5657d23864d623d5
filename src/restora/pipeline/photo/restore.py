"""``restore_photo``: repair an old photo without harming a good one.

Order of the steps (each reports what it did or why it did not run):

1. ``scratch-removal``: thin bright/dark defects and dust found on the luminance
   (:mod:`.scratches`), filled at native resolution in tiles (:mod:`.inpaint`);
2. ``denoise``: noise measured first, filtered in YCrCb only when it is there (:mod:`.denoise`);
3. ``face-enhancement``: the face pipeline (CodeFormer when installed, at ``fidelity``);
4. ``colorize``: DDColor, last, on monochrome photos only.

Damage is repaired before anything learns from the pixels (a scratch across a face would
otherwise be "restored" into the face), and colour comes last so it sees the cleanest luminance.
Before the steps, a ``load`` stage builds the engines of the networks they run (exports on a
first run), so no export lands inside a step or in what the estimate measures.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from restora.errors import ModelNotInstalled, RestoraError
from restora.io.decode import as_image
from restora.io.image import Image
from restora.models.registry import RESTORER_FAMILIES
from restora.pipeline._timing import EstimateFn, Stages, estimate_text
from restora.pipeline.options import PhotoOptions, with_overrides
from restora.pipeline.paste import fill_hidden, hidden
from restora.pipeline.photo.denoise import (NoiseEstimate, estimate_noise, filter_strengths,
                                            planes_filtered)
from restora.pipeline.photo.denoise import denoise as denoise_pixels
from restora.pipeline.photo.damage import repair_damage
from restora.pipeline.photo.masks import MaskSource
from restora.pipeline.photo.mono import MonoReport, detect_monochrome

if TYPE_CHECKING:
    from restora.models.runtime import Runtime

STEP_WEIGHTS = {"decode": 3.0, "analyse": 4.0, "load": 2.0, "scratch-removal": 18.0,
                "denoise": 15.0, "face-enhancement": 45.0, "colorize": 15.0}
#: Nominal costs, for the estimate, of the steps that run after the long ones and are not timed
#: before they run (2 CPU threads; docs/restore-photo.md, "Loading and the estimate"): the
#: non-local-means denoise per megapixel and filtered YCrCb plane (24 MP: 6.6 s for the luma
#: alone, 18.8 s for all three), and colorization: DDColor-L's one forward at 512 px (2.0 s on
#: OpenVINO, 2.7 s torch) plus its full-resolution Lab work per megapixel (24 MP: 1.3 s).
DENOISE_S_PER_MP_PLANE = 0.27
COLORIZE_S = 3.0
COLORIZE_S_PER_MP = 0.06
FACE_STRENGTH = 0.8  # blend of restored faces over the repaired photo (the face pipeline's default)


@dataclass
class RestoreResult:
    """What :func:`restore_photo` returns; ``to_dict`` uses the seed's camelCase names."""

    image: Image
    #: H x W bool, True where pixels were repaired (detected and/or the user's mask; all False
    #: when nothing was); PNG with :func:`restora.pipeline.photo.masks.mask_png`
    mask: np.ndarray | None = None
    steps: list[str] = field(default_factory=list)  # steps that ran, in order
    scratch_coverage: float = 0.0  # percent of the area detected as scratches or dust
    faces_enhanced: int = 0
    is_grayscale: bool = False  # monochrome, toned prints included
    colorized: bool = False
    width: int = 0
    height: int = 0
    output_format: str = "png"  # restora.io.output_format_for(source format)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # per step: done or why not
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    warnings: list[str] = field(default_factory=list)
    #: the job's first duration estimate (Stages.estimate), None when no step had long work
    estimate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "scratchCoverage": round(self.scratch_coverage, 3),
            "facesEnhanced": self.faces_enhanced,
            "isGrayscale": self.is_grayscale,
            "colorized": self.colorized,
            "width": self.width,
            "height": self.height,
            "reports": self.reports,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "estimate": dict(self.estimate) if self.estimate is not None else None,
            "estimatedSeconds": self.estimate["seconds"] if self.estimate is not None else None,
        }


def restore_photo(
    image: Image | bytes | str | Path,
    options: PhotoOptions | None = None,
    *,
    runtime: Runtime | None = None,
    mask: MaskSource | None = None,
    progress: Callable[[str, float], None] | None = None,
    cancel: threading.Event | None = None,
    on_estimate: Callable[[dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> RestoreResult:
    """Repair scratches, noise and faces of an old photo and optionally colourize it.

    ``options`` (:class:`~restora.pipeline.options.PhotoOptions`) may be given, or overridden,
    as keyword arguments of the same names; both are validated by the model (a bad value raises
    :class:`~restora.errors.InvalidParameter` naming the camelCase field). ``fidelity`` (0-1) is
    CodeFormer's w; ``denoise_strength`` and ``colorize_strength`` are 0-100. A missing face
    model skips that step with a warning (it is on by default); a missing colorization model
    raises :class:`~restora.errors.ModelNotInstalled` before any work, since the caller asked for
    colour explicitly. Raises :class:`~restora.errors.Cancelled` on ``cancel``.

    ``mask`` (white = damaged; an array, an image or its bytes/path) is the user's damage mask:
    ``mask_mode='replace'`` repairs exactly it (no detection), ``'add'`` repairs it and whatever
    detection finds. A given mask is repaired even with ``scratch_removal=False``.
    ``on_estimate`` receives the job's duration estimates (``Stages.estimate``: ``seconds``
    from the job's start), from the steps with long work: the fill of wide damage (timed per
    crop) and the face step (``enhance_faces``' own), each plus the nominal cost of the steps
    still to come; the first is the result's ``estimate``.
    """
    opts = with_overrides(PhotoOptions, options, overrides)
    fidelity, colorize = opts.fidelity, opts.colorize
    stages = Stages(STEP_WEIGHTS, progress, cancel, on_estimate=on_estimate)
    with stages.stage("decode"):
        img = as_image(image, runtime.settings if runtime is not None else None)
        user_mask = None
        if mask is not None:
            from restora.pipeline.photo.masks import load_user_mask

            user_mask = load_user_mask(mask, img.height, img.width,
                                       runtime.settings if runtime is not None else None)
    colorizer: str | None = None
    if colorize:  # fail before spending minutes on the other steps
        runtime = runtime or _new_runtime()
        colorizer = _colorizer_id(runtime)

    from restora.io import output_format_for

    result = RestoreResult(image=img, width=img.width, height=img.height,
                           output_format=output_format_for(img.format))
    unseen = hidden(img.alpha)  # colour under transparent pixels is not the photo's
    if user_mask is not None and unseen is not None:
        # nothing shown there to repair (and it is put back at the end); a new array: the
        # caller's own bool mask may be the one loaded
        user_mask = user_mask & ~unseen
    with stages.stage("analyse"):
        mono = detect_monochrome(img.pixels, exclude=unseen)
        # the steps read a smooth fill there instead: detectors, filters and networks look at
        # neighbourhoods, and their verdicts on the shown pixels must not depend on it
        seen = fill_hidden(img.pixels, unseen)
        noise = estimate_noise(seen, exclude=unseen)
    result.is_grayscale = mono.is_monochrome
    result.reports["analysis"] = {**mono.to_dict(), "noiseSigma": round(noise.luma, 2),
                                  "chromaNoiseSigma": round(noise.chroma, 2),
                                  "flatPatchSigma": round(noise.flat, 2)}
    pixels = seen
    repair = opts.scratch_removal or user_mask is not None
    if repair or opts.face_enhancement:
        runtime = runtime or _new_runtime()
    clock = _Clock(stages)
    large = img.width * img.height >= _release_from()
    if runtime is not None:
        stages.long_s = runtime.settings.long_job_s
        colour = colorizer if mono.is_monochrome else None  # colorize skips colour photos
        clock.plan_tail(opts, noise, colorize=colour is not None,
                        megapixels=img.width * img.height / 1e6)
        with stages.stage("load"):
            _build_engines(runtime, stages, release=large, repair=repair,
                           detect=opts.scratch_removal and (
                               user_mask is None or opts.mask_mode == "add"),
                           colorizer=colour)

    result.mask = np.zeros((img.height, img.width), bool)
    if repair:
        with stages.stage("scratch-removal"):
            assert runtime is not None
            from restora.pipeline.enhance import nominal_face_seconds

            per_face = (nominal_face_seconds(runtime) if opts.face_enhancement
                        and runtime.registry.installed("face-restoration") else None)
            pixels = _remove_scratches(pixels, noise, result, stages, runtime,
                                       detect=opts.scratch_removal, user_mask=user_mask,
                                       mask_mode=opts.mask_mode, clock=clock,
                                       per_face=per_face, orientation=opts.orientation,
                                       exclude=unseen)
        if large:  # LaMa's working buffers would stay under the face step's peak
            runtime.release_memory()
    else:
        result.reports["scratch-removal"] = {"skipped": True, "reason": "turned off"}

    if result.mask.any():
        # measured again without the damage: exposed paper has its own tint
        damaged = result.mask if unseen is None else result.mask | unseen
        mono = detect_monochrome(img.pixels, exclude=damaged)
        result.is_grayscale = mono.is_monochrome
        result.reports["analysis"].update({**mono.to_dict(), "damageExcluded": True})
        if mono.is_monochrome and "scratch-removal" in result.steps:
            # an inpainting network answers in colour too: the fill takes the print's tone
            pixels = retone(pixels, img.pixels, exclude=damaged)
            result.reports["scratch-removal"]["toneKept"] = True

    clock.started("denoise")
    if opts.denoise:
        with stages.stage("denoise"):
            pixels = _denoise(pixels, noise, opts.denoise_strength, result)
    else:
        result.reports["denoise"] = {"skipped": True, "reason": "turned off",
                                     "noiseSigma": round(noise.luma, 2)}
    current = img.with_pixels(pixels, img.alpha)

    clock.started("faces")
    if opts.face_enhancement:
        with stages.stage("face-enhancement"):
            assert runtime is not None
            current = _enhance_faces(current, runtime, fidelity, mono, result, stages, cancel,
                                     clock.faces, opts.orientation)
        if large:  # the face networks' buffers and weights would stay under the colour work
            if colorize and mono.is_monochrome:  # their compiled graphs go too: the next
                # job that needs them reopens them from the export cache
                runtime.close_engines(result.reports["face-enhancement"].get("engines", {}))
            runtime.release_memory()
    else:
        result.reports["face-enhancement"] = {"skipped": True, "reason": "turned off"}

    clock.started("colorize")
    if colorize:
        with stages.stage("colorize"):
            assert runtime is not None and colorizer is not None
            current = _colorize(current, runtime, colorizer, opts.colorize_strength, mono,
                                result)
    else:
        result.reports["colorize"] = {"skipped": True, "reason": "not requested"}

    if unseen is not None:
        # the hidden pixels keep what they held (an editor may show them again); nothing
        # there was repaired
        current = current.with_pixels(np.where(unseen[..., None], img.pixels, current.pixels),
                                      current.alpha)
        result.mask &= ~unseen
    result.image = current
    result.estimate = stages.first_estimate
    if result.estimate is not None and result.estimate["long"]:
        result.warnings.append(estimate_text(result.estimate))
    result.timings = dict(stages.timings)
    stages.done()
    return result


class _Clock:
    """The job's estimate, from what is known of the work left: the wide-damage fill's crops at
    their measured cost, the face step's own estimate (tiles and faces), and the steps planned
    after them at their nominal cost (``plan_tail``). Announced from the fill and the face step,
    where the long work is; a step drops out of the tail when it starts."""

    #: the steps of the tail, in the order they run
    TAIL_ORDER = ("denoise", "faces", "colorize")

    def __init__(self, stages: Stages) -> None:
        self.stages = stages
        self.tail: dict[str, float] = {}  # step still to come -> nominal seconds
        self.tail_faces = 0

    def plan_tail(self, opts: PhotoOptions, noise: NoiseEstimate, *, colorize: bool,
                  megapixels: float) -> None:
        """The steps that will run after the long ones, at their nominal cost."""
        if opts.denoise and opts.denoise_strength > 0 and not noise.is_clean:
            self.tail["denoise"] = (DENOISE_S_PER_MP_PLANE * megapixels
                                    * planes_filtered(noise, opts.denoise_strength))
        if colorize:
            self.tail["colorize"] = COLORIZE_S + COLORIZE_S_PER_MP * megapixels

    def faces_found(self, faces: int, seconds_per_face: float) -> None:
        """Faces found before the face step (by the classical scratch detector, which protects
        their features): the face step joins the tail at the nominal cost per face."""
        if faces > 0:
            self.tail["faces"] = faces * seconds_per_face
            self.tail_faces = faces
            self.tail = {s: self.tail[s] for s in self.TAIL_ORDER if s in self.tail}

    def started(self, step: str) -> None:
        self.tail.pop(step, None)

    def announce(self, remaining: float, work: dict[str, int], basis: str) -> None:
        kinds = [basis] if basis else []
        kinds += [f"{step}:nominal" for step in self.tail]
        if "faces" in self.tail:
            work = {**work, "faces": self.tail_faces}
        self.stages.estimate(remaining + sum(self.tail.values()), work,
                             ",".join(kinds) or "measured")

    def on_crop(self, done: int, total: int, seconds: float) -> None:
        """The fill's crops so far: the wide regions left at the measured seconds per region."""
        left = total - done
        self.announce(left * seconds / max(done, 1), {"inpaintRegions": left} if left else {},
                      "inpaintRegions:measured" if left else "")

    def faces(self, info: dict[str, Any]) -> None:
        """An estimate of the face step (``enhance_faces``' ``on_estimate``)."""
        self.announce(float(info["remainingSeconds"]), dict(info.get("work", {})),
                      str(info.get("basis", "")))


def _build_engines(runtime: Runtime, stages: Stages, *, release: bool, repair: bool,
                   detect: bool, colorizer: str | None) -> None:
    """Build the engines of the networks the repair and colorize steps run (the face step
    builds its own once it knows the faces): on a first run each is exported here, one after
    the other, and a large job's networks give back what each build held (see
    ``Runtime.prepare``)."""
    from restora.pipeline.photo.damage import repair_networks

    ids = repair_networks(runtime, detect=detect) if repair else []
    if colorizer is not None:
        ids.append(colorizer)
    # loaded one at a time, as each is built: a large job's release drops each one's weights
    runtime.prepare((runtime.load(i) for i in ids), release=release, check=stages.check)


def _release_from() -> int:
    from restora.pipeline.enhance import RELEASE_FROM_PIXELS

    return RELEASE_FROM_PIXELS


# --- steps ---------------------------------------------------------------------------------------

def _remove_scratches(pixels: np.ndarray, noise: NoiseEstimate, result: RestoreResult,
                      stages: Stages, runtime: Runtime, *, detect: bool,
                      user_mask: np.ndarray | None, mask_mode: str, clock: _Clock,
                      per_face: float | None, orientation: str = "auto",
                      exclude: np.ndarray | None = None) -> np.ndarray:
    """``per_face``: the face step's nominal seconds per face where it will run (the faces
    the detection finds join the estimate's tail), else None. ``exclude``: fully transparent
    pixels, where nothing detected is damage."""
    def on_progress(fraction: float) -> None:
        stages.check()
        stages.report("scratch-removal", fraction)

    def on_detected(report: dict[str, Any]) -> None:
        if per_face is not None and report.get("facesProtected"):
            clock.faces_found(int(report["facesProtected"]), per_face)

    out = repair_damage(pixels, noise.luma, runtime, detect=detect, user_mask=user_mask,
                        mask_mode=mask_mode, progress=on_progress, on_crop=clock.on_crop,
                        on_detected=on_detected, orientation=orientation, exclude=exclude)
    result.mask = out.mask
    result.scratch_coverage = out.coverage
    result.warnings.extend(out.warnings)
    result.reports["scratch-removal"] = out.report
    if out.mask.any():
        result.steps.append("scratch-removal")
    return out.pixels


def _denoise(pixels: np.ndarray, noise: NoiseEstimate, strength: float,
             result: RestoreResult) -> np.ndarray:
    from restora.pipeline.photo.denoise import SKIP_SIGMA

    report: dict[str, Any] = {"noiseSigma": round(noise.luma, 2),
                              "chromaNoiseSigma": round(noise.chroma, 2),
                              "strength": strength}
    if strength == 0:
        result.reports["denoise"] = {**report, "skipped": True, "reason": "strength 0"}
        return pixels
    if noise.is_clean:
        result.reports["denoise"] = {
            **report, "skipped": True,
            "reason": f"already clean: estimated noise sigma {noise.luma:.2f} (luma) / "
                      f"{noise.chroma:.2f} (chroma) is under {SKIP_SIGMA:g} levels"}
        return pixels
    h_luma, h_chroma = filter_strengths(noise, strength)
    result.reports["denoise"] = {**report, "method": "nl-means YCrCb", "hLuma": round(h_luma, 2),
                                 "hChroma": round(h_chroma, 2)}
    result.steps.append("denoise")
    return denoise_pixels(pixels, noise, strength)


def _enhance_faces(img: Image, runtime: Runtime, fidelity: float, mono: MonoReport,
                   result: RestoreResult, stages: Stages,
                   cancel: threading.Event | None,
                   on_estimate: EstimateFn | None = None, orientation: str = "auto") -> Image:
    from restora.pipeline.enhance import enhance_faces

    model = ("codeformer" if runtime.registry.installed(
        "face-restoration", RESTORER_FAMILIES["codeformer"]) else "auto")
    # the damage step's face search (the same orientation) found no face, turned or not: the
    # upright search alone is left to do (at the face rule's own resolution)
    if result.reports.get("scratch-removal", {}).get("facesProtected") == 0:
        orientation = "upright"
    try:
        out = enhance_faces(img, runtime=runtime, model=model, strength=FACE_STRENGTH,
                            fidelity=fidelity, cancel=cancel, on_estimate=on_estimate,
                            orientation=orientation,
                            progress=lambda _s, pct: stages.report("face-enhancement", pct / 100))
    except ModelNotInstalled as exc:
        command = exc.details.get("command") or "restora models pull <bundle>"
        warning = f"face enhancement skipped: {exc.message}"
        result.warnings.append(warning)
        result.reports["face-enhancement"] = {"skipped": True, "reason": exc.message,
                                              "install": command}
        return img
    # the face step's own "this will take about" counts the step alone; the job adds its own
    own = estimate_text(out.estimate) if out.estimate and out.estimate["long"] else None
    out.warnings = [w for w in out.warnings if w != own]
    result.faces_enhanced = out.faces_detected if out.model else 0
    report: dict[str, Any] = {"facesDetected": out.faces_detected, "model": out.model,
                              "fidelity": fidelity, "strength": FACE_STRENGTH,
                              "engine": out.engine, "precision": out.precision,
                              "engines": dict(out.engines)}
    turns = Counter(f.rotation for f in out.faces).most_common(1)
    if turns and turns[0][0]:
        # how most faces lie is how the photo lies: colorization sees it the right way up too
        report["rotation"] = turns[0][0]
    result.warnings.extend(out.warnings)
    if not result.faces_enhanced:
        result.reports["face-enhancement"] = {**report, "skipped": True,
                                              "reason": out.reason or "no faces detected"}
        return img
    image = out.image
    if mono.is_monochrome:
        # Face networks answer in colour; keep the print's own tone (or grey) around new detail.
        image = image.with_pixels(retone(image.pixels, img.pixels, hidden(img.alpha)),
                                  image.alpha)
        report["toneKept"] = True
    result.reports["face-enhancement"] = report
    result.steps.append("face-enhancement")
    return image


def retone(new: np.ndarray, toned: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Give the pixels where ``new`` differs from the monochrome ``toned`` the print's tint
    (:class:`.mono.ToneCurve`, tabulated from ``toned`` without ``exclude``), or their luma
    where ``toned`` is exactly grey (R == G == B) outside ``exclude``, so it stays so;
    unchanged pixels are returned exactly."""
    from restora.io.image import is_grayscale
    from restora.pipeline.paste import LUMA
    from restora.pipeline.photo.mono import ToneCurve

    changed = (new != toned).any(axis=2)
    if not changed.any():
        return new
    top = 65535.0 if new.dtype == np.uint16 else 255.0
    px = new[changed].astype(np.float32) / np.float32(top)
    if is_grayscale(toned if exclude is None else toned[~exclude]):
        px = np.repeat((px @ LUMA)[:, None], 3, axis=1)
    else:
        px = ToneCurve.of(toned, exclude).apply(px)
    out = new.copy()
    out[changed] = np.rint(np.clip(px, 0.0, 1.0) * top).astype(new.dtype)
    return out


def _colorize(img: Image, runtime: Runtime, model_id: str, strength: float, mono: MonoReport,
              result: RestoreResult) -> Image:
    from restora.pipeline.colorize import colorize as run_colorize

    if not mono.is_monochrome:
        result.reports["colorize"] = {
            "skipped": True,
            "reason": f"the photo is already in colour (chroma spread {mono.spread_p99:.1f})"}
        return img
    rotation = int(result.reports.get("face-enhancement", {}).get("rotation", 0))
    out, report = run_colorize(img, runtime=runtime, model_id=model_id, strength=strength / 100.0,
                               rotation=rotation)
    result.reports["colorize"] = dict(report)
    result.colorized = True
    result.steps.append("colorize")
    return out


# --- helpers -------------------------------------------------------------------------------------

def _new_runtime() -> Runtime:
    from restora.models.runtime import Runtime

    return Runtime()


def _colorizer_id(runtime: Runtime) -> str:
    """The installed colorization model to use (the default first), else ModelNotInstalled."""
    reg = runtime.registry
    try:
        default = reg.default("colorization")
    except RestoraError as exc:
        raise ModelNotInstalled(f"colorization needs a DDColor model and none is registered: {exc}",
                                model=None) from exc
    installed = reg.installed("colorization")
    if installed:
        return installed[0].id
    raise runtime.not_installed(default)
