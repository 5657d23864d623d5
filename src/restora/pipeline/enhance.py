"""``enhance_faces``: detect, align, restore (batched), paste back, optionally upscale.

The data path is ``decode -> detect -> align -> restore -> upscale (background) -> paste``; every
network comes from the :class:`~restora.models.runtime.Runtime` handed in (loaded once per
process). See ``docs/enhance-faces.md`` for the rules (sensitivity, ``auto``, masks, upscaling).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from restora.errors import InvalidParameter, ModelNotInstalled
from restora.io.decode import as_image
from restora.io.image import Image
from restora.pipeline import detect as det
from restora.pipeline._timing import EstimateFn, Stages, estimate_text
from restora.pipeline.options import EnhanceOptions, with_overrides
from restora.pipeline.align import (AlignedFace, align_face, compose, invert, scale_map,
                                    scale_of)
from restora.models.nets import FaceParser, FaceRestorer, Network, Upscaler
from restora.models.registry import RESTORER_FAMILIES
from restora.pipeline.paste import (PasteFace, fill_hidden, hidden, parse_to_mask, paste_faces,
                                    photo_tone)
from restora.pipeline import choose
from restora.pipeline.identity import (MAX_REFERENCES, Identity, IdentityChecker, load_checker,
                                       match_references)
from restora.pipeline.restore import load_restorer, parse_faces
from restora.pipeline.results import EnhanceResult, Face
from restora.pipeline.upscale import (TileRun, find_upscaler, load_upscaler, resize,
                                      start_upscale, upscale_rgb)

if TYPE_CHECKING:
    from restora.models.registry import ModelSpec
    from restora.models.runtime import Runtime

ImageInput = Image | bytes | str | Path

#: Share of the progress bar per stage (in execution order).
STAGE_WEIGHTS = {"decode": 3.0, "detect": 6.0, "align": 2.0, "load": 2.0, "restore": 53.0,
                 "upscale": 12.0, "paste": 22.0}  # paste includes the ParseNet masks

MODEL_ARCH = RESTORER_FAMILIES
#: Nominal seconds per face (restorer forward plus its ParseNet mask, at ``MASK_RATIO``) for the
#: up-front estimate, until the first faces are measured: CPU (2 threads, full-size
#: GFPGAN/CodeFormer + ParseNet) and GPU. Upscale tiles are always measured (the first tiles run
#: before the faces).
NOMINAL_FACE_SECONDS = {"cpu": 3.0, "gpu": 0.15}
#: A face's ParseNet mask over its restore where the engines' probe costs are not known: about
#: even (measured 0.44-0.9 on the CPU, depending on the face's size and the graph; see
#: ``_mask_ratio``).
MASK_RATIO = 1.0
#: Upscale tiles run before the faces to time them for the estimate (the first may include
#: building the engine, so its cost is not used when a second one ran).
CALIBRATION_TILES = 2
#: From this output size on, the networks give back their engines' working buffers between the
#: job's stages (``Runtime.release_memory``), so the canvas stages' peak does not stack on them
#: (24 MP at upscale 2 on the fast CPU engines: 5.5 GiB before, docs/enhance-faces.md). Below
#: it they keep them: allocating them again costs up to ~0.1 CPU-s per network and job.
RELEASE_FROM_PIXELS = 8_000_000

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
    restorer: FaceRestorer | Sequence[FaceRestorer] | None = None,
    reference: ImageInput | Sequence[ImageInput] | None = None,
    on_estimate: EstimateFn | None = None,
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
    loaded network (tests, custom pipelines); a sequence of them is a ladder that ``auto``'s
    identity rule climbs.

    Identity (docs/enhance-faces.md, "Identity"): with a ``face-recognition`` model installed
    (or ``identity_model``) every face reports the descriptor distance between input and result
    and a verdict; ``identity=False`` skips the check. ``reference``: photos of people (input
    data like ``image``, so not an option: Images, bytes or paths); the main face of each (widest
    eyes) is one identity, matching faces are restored with the candidate closest to their
    reference, and ``only_reference_faces`` leaves the other faces untouched.

    Large photos: a result over ``max_output_pixels`` is refused (:class:`OutputTooLarge`)
    right after decoding. Upscaling streams tiles into the integer output and faces are pasted
    into it in place (no full-size float or second copy). Before the faces are restored, the
    first upscale tiles are run and timed, and ``on_estimate`` receives the job's estimated
    duration (see :meth:`restora.pipeline._timing.Stages.estimate`); it is updated as faces and
    tiles complete, and the first one is the result's ``estimate``.
    Raises :class:`~restora.errors.Cancelled` when ``cancel`` is set.
    """
    opts = with_overrides(EnhanceOptions, options, overrides)
    if isinstance(restorer, Sequence) and not restorer:
        raise InvalidParameter("restorer", "an empty list of restorers: give at least one")
    model, strength, fidelity, upscale = opts.model, opts.strength, opts.fidelity, opts.upscale
    bg_upscale, face_upsample = opts.bg_upscale, opts.face_upsample
    identity, only_reference_faces = opts.identity, opts.only_reference_faces
    stages = Stages(STAGE_WEIGHTS, progress, cancel, on_estimate=on_estimate)
    warnings: list[str] = []
    used: list[Network] = []  # the networks that ran, for the engine report
    labels: dict[str, str] = {}  # engine/precision as this job used it, where that differs

    with stages.stage("decode"):
        img = as_image(image, runtime.settings if runtime is not None else None)
    if runtime is None:
        from restora.models.runtime import Runtime

        runtime = Runtime()
    from restora.io.limits import Limits

    Limits.from_settings(runtime.settings).check_output(img.width * upscale,
                                                        img.height * upscale)
    stages.long_s = runtime.settings.long_job_s
    if model != "auto" and model not in MODEL_ARCH and restorer is None:
        runtime.registry.get(model)  # unknown ids fail now, even on an image without faces
    unseen = hidden(img.alpha)
    # colour under fully transparent pixels is an editor's leftover, not the photo: faces are
    # found, restored and upscaled from a fill there (docs/enhance-faces.md, "Fully
    # transparent pixels"), and at scale 1 what it held is put back
    pixels = fill_hidden(img.pixels, unseen)
    with stages.stage("detect"):
        rule = _detection_rule(runtime, model, restorer)
        dets, source, small = _find_faces(
            runtime, pixels, faces=opts.face_dicts(), detector=opts.detector, rule=rule,
            sensitivity=opts.sensitivity, orientation=opts.orientation,
            only_center_face=opts.only_center_face, warnings=warnings, used=used)
    found = [_to_face(d, img.width, img.height) for d in dets]
    result = EnhanceResult(image=img, faces=found, faces_detected=len(found), scale=upscale,
                           landmark_source=source, warnings=warnings)

    up = _upscaler(runtime, upscale, bg_upscale, warnings)
    if face_upsample and upscale == 1:
        warnings.append("face_upsample has no effect at upscale 1")

    outcomes: list[choose.FaceOutcome] = []
    with stages.stage("align"):
        refs = _as_list(reference)
        if len(refs) > MAX_REFERENCES:
            raise InvalidParameter("reference", f"at most {MAX_REFERENCES} reference photos, "
                                   f"got {len(refs)}")
        checker = None
        if (identity and dets) or refs:
            checker = load_checker(runtime, opts.identity_model)
            if checker is None and refs:
                raise runtime.not_installed(runtime.registry.default("face-recognition"))
        result.identity_model = checker.model_id if checker is not None else None
        if checker is not None:
            used.append(checker.net)
        ref_desc, result.references = (_describe_references(runtime, checker, refs, opts.detector)
                                       if refs and checker is not None else (None, []))
        matches: dict[int, tuple[int, float]] = {}
        usable = [i for i in range(len(dets)) if i not in small]
        if ref_desc is not None and usable and checker is not None:
            in_desc = checker.describe(choose.input_crops(pixels, [dets[i] for i in usable]))
            for k, j, d in match_references(in_desc, ref_desc, checker):
                matches[usable[k]] = (j, d)
                result.references[j].update(face=usable[k], distance=round(d, 4))
        if not dets:
            result.reason = "no faces detected"
        elif not usable:
            result.reason = ("no face restored: every supplied face box is too small "
                             f"(eyes {det.MIN_EYE_DISTANCE:g} px apart, mouth "
                             f"{det.MIN_MOUTH_DISTANCE:g} px from them, at least)")
        elif strength == 0.0:
            result.reason = "strength 0: faces left unchanged"
        elif only_reference_faces and not matches:
            result.reason = ("no face matches a reference photo: faces left unchanged"
                             if refs else "onlyReferenceFaces without a reference photo")
        else:
            plan = _plan(runtime, model, pixels, dets, fidelity, restorer, matches,
                         only_reference_faces, skip=set(small))
    n_faces = sum(plan.restore) if result.reason is None else 0
    large = pixels.shape[0] * pixels.shape[1] * upscale * upscale >= RELEASE_FROM_PIXELS
    with stages.stage("load"):
        _build_engines(runtime, plan if n_faces else None, up, stages, release=large)
    tone = photo_tone(pixels, img.alpha) if n_faces or up is not None else None
    result.tone = tone.kind if tone is not None else None
    # a network can move a gray photo's channels apart by a level; a toned print keeps its
    # colours through it, so only exact gray is enforced on the background
    tiles = (start_upscale(pixels, upscale, up,
                           tone=tone.apply if tone is not None and tone.kind == "gray" else None)
             if up is not None else None)
    if tiles is not None:
        with stages.stage("upscale", report=False):  # timed now, for the estimate
            for _ in range(min(CALIBRATION_TILES, tiles.total)):
                stages.check()
                tiles.step()
    clock = _Clock(stages, tiles, n_faces, nominal_face_seconds(runtime),
                   _mask_ratio(runtime, plan) if n_faces else MASK_RATIO)
    clock.announce()
    if result.reason is None:
        with stages.stage("restore"):
            clock.start_restore()
            outcomes = choose.run_plan(
                pixels, dets, plan, checker=checker if identity or refs else None,
                references=ref_desc, matches=matches, strength=strength, seed=opts.seed,
                cancel=cancel, on_progress=clock.on_restore,
                tone=tone.apply if tone is not None else None)
        ran = list({id(o.candidate.restorer): o.candidate.restorer
                    for o in outcomes if o.candidate is not None}.values())
        used.extend(ran)
        result.model = "+".join(str(r.model_id) for r in ran) or None
        kinds = {r.kind for r in ran}
        result.model_kind = (next(iter(kinds)) if len(kinds) == 1 and kinds <= set(MODEL_ARCH)
                             else ("mixed" if len(kinds) > 1 else None))
        result.reason = _summary(plan, outcomes)
    if large:
        runtime.release_memory()
    result.faces = [_report(f, outcomes[i] if outcomes else None, checker, identity,
                            strength, i in matches, only_reference_faces, small.get(i))
                    for i, f in enumerate(found)]
    done = [o for o in outcomes if o.restored and o.face is not None]
    aligned = [o.aligned for o in done if o.aligned is not None]
    restored = [o.face for o in done if o.face is not None]

    with stages.stage("upscale"):
        canvas, alpha, result.upscaler = _background(img, pixels, upscale, bg_upscale, up,
                                                     tiles, cancel, clock.on_tile)
        if up is not None:
            used.append(up)
        if canvas is img.pixels and restored:
            canvas = pixels.copy()  # faces are pasted in place: never into the input's pixels
    if large:
        runtime.release_memory()

    with stages.stage("paste"):
        if restored:
            masks, result.mask = _masks(runtime, restored, cancel, used,
                                        [a.matrix for a in aligned], upscale, labels)
            if large:
                runtime.release_memory()
            # GFPGAN's reference pastes with the ParseNet mask alone, CodeFormer with min(mask,
            # square): per face, as faces may come from different restorers
            square = [m is None or o.candidate is None or o.candidate.restorer.kind != "gfpgan"
                      for m, o in zip(masks, done)]
            items = _paste_items(aligned, restored, masks, square, upscale, up, face_upsample,
                                 cancel, tone.apply if tone is not None else None)
            canvas = paste_faces(canvas, items, strength, upscale=upscale, out=canvas)
            clock.masks_done()
        elif canvas is img.pixels:
            canvas = pixels.copy()
    if unseen is not None and upscale == 1:
        canvas[unseen] = img.pixels[unseen]  # canvas is never the input's array here
    result.image = img.with_pixels(canvas, alpha)
    result.estimate = stages.first_estimate
    if result.estimate is not None and result.estimate["long"]:
        warnings.append(estimate_text(result.estimate))
    result.timings = dict(stages.timings)
    result.engines = {n.model_id: labels.get(n.model_id, n.engine_label)
                      for n in used}
    first = next((o.candidate.restorer for o in done if o.candidate is not None), None)
    if first is not None:  # the (first) restorer's engine; every network's is in ``engines``
        result.engine, result.precision = first.engine_name, first.precision
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


class _Clock:
    """The job's estimate: upscale tiles left x measured seconds per tile, plus faces left x
    seconds per restore and masks left x ``mask_ratio`` times that (see :func:`_mask_ratio`).
    The seconds per restore are nominal (``nominal_face_s``, which counts a restore and its mask
    at :data:`MASK_RATIO`, over 1 + that ratio) until the first faces are restored, then
    measured; masks run after every restore, so theirs stays the ratio's share of it."""

    def __init__(self, stages: Stages, tiles: TileRun | None, faces: int,
                 nominal_face_s: float, mask_ratio: float = MASK_RATIO) -> None:
        import time

        self.stages, self.tiles = stages, tiles
        self.faces_left = self.masks_left = faces
        self.faces = faces
        self.restore_s = nominal_face_s / (1.0 + MASK_RATIO)
        self.mask_ratio = mask_ratio
        self.face_basis = "nominal"
        self._now = time.perf_counter
        self._restore_start = self._last = self._now()

    def announce(self, force: bool = False) -> None:
        work: dict[str, int] = {}
        basis: dict[str, str] = {}
        remaining = 0.0
        if self.tiles is not None and not self.tiles.finished:
            left = self.tiles.total - self.tiles.done
            work["upscaleTiles"] = left
            basis["upscaleTiles"] = "measured"
            remaining += left * (self.tiles.tile_seconds() or 0.0)
        if self.faces_left or self.masks_left:
            work["faces"] = max(self.faces_left, self.masks_left)
            basis["faces"] = self.face_basis
            remaining += (self.faces_left + self.masks_left * self.mask_ratio) * self.restore_s
        self.stages.estimate(remaining, work, ",".join(f"{k}:{v}" for k, v in basis.items())
                             or "measured", force=force)
        self._last = self._now()

    def start_restore(self) -> None:
        self._restore_start = self._now()

    def on_restore(self, fraction: float) -> None:
        """Restore progress (after each group of faces): the measured cost per restore replaces
        the nominal one."""
        self.stages.report("restore", fraction)
        done = max(1, round(fraction * self.faces))
        self.restore_s = (self._now() - self._restore_start) / done
        self.face_basis = "measured"
        self.faces_left = max(0, self.faces - done)
        self.announce()

    def on_tile(self, done: int, total: int) -> None:
        """Upscale progress per tile; the estimate is refreshed every 10 s."""
        self.stages.report("upscale", done / total)
        if self._now() - self._last >= 10.0:
            self.announce()

    def masks_done(self) -> None:
        self.masks_left = 0


def _build_engines(runtime: Runtime, plan: choose.Plan | None, up: Upscaler | None,
                   stages: Stages, *, release: bool = False) -> None:
    """Build the engines the job will run for certain: each restored face's first restorer,
    the face parser (its coarse graphs too) and the upscaler. On a first run that exports them
    (minutes, and an export's peak memory): done here, before the output canvas exists and
    before the estimate, so neither the peak nor the estimate's measured cost per face carries
    an export. Restorers further up a face's ladder are built only if a face climbs to them.
    ``release`` (large jobs): the networks give back what they hold after each build (the torch
    weights an export read), so exports do not stack on each other either."""
    nets: list[Network] = []
    if plan is not None:
        for ladder, todo in zip(plan.ladders, plan.restore):
            if todo and ladder and all(ladder[0].restorer is not n for n in nets):
                nets.append(ladder[0].restorer)
        parser = _parser(runtime)
        if parser is not None:
            nets.append(parser)
    if up is not None:
        nets.append(up)
    runtime.prepare(nets, release=release, check=stages.check)


def nominal_face_seconds(runtime: Runtime) -> float:
    """:data:`NOMINAL_FACE_SECONDS` for ``runtime``'s device (a restore and its mask)."""
    return NOMINAL_FACE_SECONDS["cpu" if runtime.device == "cpu" else "gpu"]


def _mask_ratio(runtime: Runtime, plan: choose.Plan) -> float:
    """What a face's mask costs over its restore, for the estimate, from what is known before
    any face runs: 0 without an installed face parser (square masks only); where the parser and
    the faces' first restorers are already loaded with engines whose cache verdicts timed their
    probe (``probe_cpu_s``: a runtime that ran them before), the parser's probe CPU seconds per
    face over the restorers' (averaged over the faces); otherwise :data:`MASK_RATIO`. Nothing is
    loaded or built here.

    Face scales are known only once the faces are aligned, so the exact parsing graph stands
    for every face: an upper bound where small faces will parse on a coarse graph."""
    parsers = runtime.registry.installed("face-parsing")
    if not parsers:
        return 0.0
    if parsers[0].id not in runtime.loaded():
        return MASK_RATIO
    parser_s = _probe_face_s(runtime.load(parsers[0].id))
    first = [ladder[0].restorer for ladder, todo in zip(plan.ladders, plan.restore)
             if todo and ladder]
    costs = [_probe_face_s(r) for r in first]
    if parser_s is None or not costs or not all(costs):  # a restorer not built or not timed
        return MASK_RATIO
    return parser_s * len(costs) / sum(costs)


def _probe_face_s(net: Network) -> float | None:
    """CPU seconds per face of ``net``'s accuracy probe (its engine's cache verdict), or None
    where its engine is not built yet or was not timed. Probes run at the networks' own input
    size, in batches of the probe's size (one for GFPGAN's graph, two for the parser's)."""
    from restora.models.engines import probe_batch

    engine = net.engine
    cpu_s = engine.probe_cpu_s if engine is not None else None
    if cpu_s is None:
        return None
    return cpu_s / probe_batch(net.inputs())


def _background(img: Image, pixels: np.ndarray, upscale: int, bg_upscale: bool,
                up: Upscaler | None,
                tiles: TileRun | None, cancel: threading.Event | None,
                on_tile: Callable[[int, int], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(pixels, alpha, upscaler name) of the canvas the faces are pasted into, from
    ``pixels`` (the image's, fully transparent ones filled); ``tiles`` is the network's run
    over the image (already started for the estimate)."""
    alpha = img.alpha
    if upscale > 1:
        canvas = (tiles.run(cancel=cancel, on_tile=on_tile) if tiles is not None
                  else resize(pixels, img.width * upscale, img.height * upscale))
        if alpha is not None:
            alpha = resize(alpha, img.width * upscale, img.height * upscale)
        return canvas, alpha, (up.model_id if up is not None else "lanczos")
    if bg_upscale and tiles is not None and up is not None:
        # background enhancement at scale 1: super-resolved, area-averaged back down per tile
        return tiles.run(cancel=cancel, on_tile=on_tile), alpha, up.model_id
    return pixels, alpha, None


def _detector_spec(runtime: Runtime, detector: str | None) -> ModelSpec:
    spec = runtime.registry.pick("face-detection", detector, param="detector")
    if spec is None:
        raise runtime.not_installed(runtime.registry.default("face-detection"))
    return spec


def _detection_rule(runtime: Runtime, model: str,
                    restorer: FaceRestorer | Sequence[FaceRestorer] | None
                    ) -> det.DetectionRule:
    """The reference detection rule of the restorer asked for: GFPGAN's for GFPGAN models,
    CodeFormer's otherwise (and for ``auto``, which chooses the restorer from the detections)."""
    kind = model
    if isinstance(restorer, Sequence):  # a ladder for auto: the first rung's rule
        restorer = restorer[0] if restorer else None
    if restorer is not None:
        kind = restorer.kind
    elif model not in MODEL_ARCH and model != "auto":
        arch = runtime.registry.get(model).arch
        kind = next((k for k, a in MODEL_ARCH.items() if a == arch), "custom")
    return det.RULES.get(kind, det.CODEFORMER_RULE)


def _find_faces(runtime: Runtime, pixels: np.ndarray, *, faces: Sequence[dict] | None,
                detector: str | None, rule: det.DetectionRule, sensitivity: float,
                only_center_face: bool, warnings: list[str], used: list[Network] | None = None,
                orientation: str = "auto"
                ) -> tuple[list[det.Detection], str, dict[int, str]]:
    """The faces to restore and where their landmarks came from, plus, for client boxes too
    small to restore (``det.too_small``), their index (after the others) and reason: they
    stay in the result, not restored, as the client asked for each of them."""
    height, width = pixels.shape[:2]
    max_faces = runtime.settings.max_faces
    tiny: list[tuple[det.Detection, str]] = []
    if faces is not None:
        boxes, repeated = det.distinct_boxes(det.parse_boxes(faces, width, height))
        if repeated:
            warnings.append(f"{repeated} supplied face box(es) repeat an earlier one (overlap "
                            f"{det.SAME_BOX_IOU:g} or more): each face is restored once")
        try:
            spec = _detector_spec(runtime, detector)
            net = runtime.load(spec.id)
            thr = det.sensitivity_to_threshold(sensitivity, net, rule)
        except ModelNotInstalled:
            if detector:
                raise
            net, thr = None, det.LOOSE_THRESHOLD
        if net is not None and used is not None:
            used.append(net)
        dets, sources = det.detections_for_boxes(net, pixels, boxes,
                                                 conf_threshold=min(thr, det.LOOSE_THRESHOLD),
                                                 orientation=orientation)
        source = sources[0] if sources and len(set(sources)) == 1 else ("mixed" if sources else "box")
        if "box" in sources:
            warnings.append(f"{sources.count('box')} supplied face box(es) had no detectable "
                            "landmarks: landmarks were estimated from the box proportions")
        why = [det.too_small(d) for d in dets]
        tiny = [(d, r) for d, r in zip(dets, why) if r is not None]
        dets = [d for d, r in zip(dets, why) if r is None]
        if tiny:
            warnings.append(f"{len(tiny)} supplied face box(es) not restored: too small (eyes "
                            f"{det.MIN_EYE_DISTANCE:g} px apart, mouth "
                            f"{det.MIN_MOUTH_DISTANCE:g} px from them, at least)")
    else:
        spec = _detector_spec(runtime, detector)
        net = runtime.load(spec.id)
        if used is not None:
            used.append(net)
        thr = det.sensitivity_to_threshold(sensitivity, net, rule)
        dets = det.detect_faces(net, pixels, conf_threshold=thr, working_size=rule.working_size,
                                enlarge_only=rule.enlarge_only,
                                orientation=orientation)
        dets, small = det.drop_small(dets)
        if small:
            warnings.append(f"{small} face(s) skipped: eyes closer than {det.MIN_EYE_DISTANCE:g} px")
        source = "detector"
    if only_center_face:
        dets = det.center_face(dets, width, height)
        tiny = []  # only the centre face is kept, and it is one that can be restored
    dets, dropped = det.largest_first(dets, max_faces)
    if dropped:
        warnings.append(f"{dropped} smaller face(s) not restored: at most {max_faces} per image "
                        "(RESTORA_MAX_FACES)")
    small = {len(dets) + k: why for k, (_, why) in enumerate(tiny)}
    return dets + [d for d, _ in tiny], source, small


def _to_face(d: det.Detection, width: int, height: int) -> Face:
    x1, y1, x2, y2 = d.box
    x = int(min(max(np.floor(x1), 0), width - 1))
    y = int(min(max(np.floor(y1), 0), height - 1))
    w = int(max(1, min(np.ceil(x2), width) - x))
    h = int(max(1, min(np.ceil(y2), height) - y))
    lm = tuple((float(px), float(py)) for px, py in d.landmarks)
    return Face(x=x, y=y, w=w, h=h, score=float(d.score), landmarks=lm, rotation=d.rotation)


def face_stats(pixels: np.ndarray, dets: Sequence[det.Detection]) -> list[FaceStats]:
    """Inter-eye distance and detail (Laplacian variance of the 512 aligned crop) per face."""
    import cv2

    out = []
    for d in dets:
        crop = align_face(det.to_uint8(pixels), d.landmarks, 512).crop
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[96:416, 96:416]
        out.append(FaceStats(d.eye_distance, float(cv2.Laplacian(gray, cv2.CV_32F).var())))
    return out


def _kinds(runtime: Runtime) -> dict[str, FaceRestorer]:
    """The installed GFPGAN and CodeFormer restorers (task default first), loaded."""
    reg = runtime.registry
    out = {}
    for kind, arch in MODEL_ARCH.items():
        specs = reg.installed("face-restoration", arch)
        if specs:
            out[kind] = load_restorer(runtime, specs[0])
    if not out:
        raise runtime.not_installed(reg.default("face-restoration", arch=MODEL_ARCH["gfpgan"]))
    return out


def _plan(runtime: Runtime, model: str, pixels: np.ndarray, dets: Sequence[det.Detection],
          fidelity: float, restorer: FaceRestorer | Sequence[FaceRestorer] | None,
          matches: dict[int, tuple[int, float]], only_reference: bool,
          skip: set[int] | None = None) -> choose.Plan:
    """Each face's candidates and the reason for the first one (docs: ``auto``); faces in
    ``skip`` (client boxes too small) are planned but not restored."""
    n = len(dets)
    skip = skip or set()
    restore = [(not only_reference or i in matches) and i not in skip for i in range(n)]
    if restorer is not None:
        ladder = [choose.Candidate(r, fidelity) for r in
                  (restorer if isinstance(restorer, Sequence) else [restorer])]
        why = "restorer supplied by the caller" if len(ladder) == 1 else \
            f"auto over {len(ladder)} restorers supplied by the caller"
        return choose.Plan([list(ladder)] * n, [why] * n, len(ladder) > 1, restore)
    reg = runtime.registry
    if model != "auto":
        if model in MODEL_ARCH:
            installed = reg.installed("face-restoration", MODEL_ARCH[model])
            spec = installed[0] if installed else reg.default("face-restoration",
                                                              arch=MODEL_ARCH[model])
            why = f"{model} requested"
        else:
            spec = reg.pick("face-restoration", model, param="model")
            why = f"model '{model}' requested"
        first = choose.Candidate(load_restorer(runtime, spec), fidelity)
        ladders = [choose.reference_ladder(first) if i in matches else [first] for i in range(n)]
        return choose.Plan(ladders, [why] * n, False, restore)

    kinds = _kinds(runtime)
    if len(kinds) == 1:
        only = next(iter(kinds))
        ladder = choose.auto_ladder(only, kinds, fidelity)
        return choose.Plan([ladder] * n, [f"auto: {only} (the only face restorer installed)"] * n,
                           True, restore)
    ladders, reasons = [], []
    for s in face_stats(pixels, dets):
        if s.degraded:
            first = "codeformer"
            why = (f"auto: codeformer, face severely degraded (eyes {s.eye_distance:.0f} px apart,"
                   f" detail {s.sharpness:.1f}; limits {AUTO_MIN_EYE_DISTANCE:g} px, "
                   f"{AUTO_MIN_SHARPNESS:g})")
        else:
            first = "gfpgan"
            why = (f"auto: gfpgan, face large and detailed enough for identity-preserving "
                   f"restoration (eyes {s.eye_distance:.0f} px apart, detail {s.sharpness:.1f})")
        ladders.append(choose.auto_ladder(first, kinds, fidelity))
        reasons.append(why)
    return choose.Plan(ladders, reasons, True, restore)


def _summary(plan: choose.Plan, outcomes: Sequence[choose.FaceOutcome]) -> str:
    """One sentence for the whole image (the per-face reasons are in each face's report)."""
    reasons = [o.reason for o in outcomes if o.reason]
    if not reasons:
        return "no face restored"
    if len(set(reasons)) == 1:
        return reasons[0]
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.candidate is not None:
            label = choose._label(o.candidate)
            counts[label] = counts.get(label, 0) + 1
    return ("per face (see faces[].restoration): "
            + ", ".join(f"{k} for {v} face(s)" for k, v in counts.items()))


def _report(face: Face, outcome: choose.FaceOutcome | None, checker: IdentityChecker | None,
            identity: bool, strength: float, matched: bool, only_reference: bool,
            too_small: str | None = None) -> Face:
    """The face with its identity, restoration choice and reference match filled in;
    ``too_small``: why a client box was not restored (``det.too_small``)."""
    if outcome is not None and outcome.restored and outcome.identity is not None:
        ident = outcome.identity
        if not identity and not matched:
            ident = Identity("unknown", None, None, "identity check turned off")
        return replace(face, identity=ident, restoration=outcome.restoration(),
                       reference=outcome.reference, restored=True)
    if too_small is not None:
        why = f"not restored: {too_small}"
    elif strength == 0.0:
        why = "not restored (strength 0)"
    elif only_reference and not matched:
        why = "not restored: no reference photo matches this face"
    else:
        why = "not restored"
    model = checker.model_id if checker is not None else None
    ident = Identity("same", 0.0, model, why)
    return replace(face, identity=ident, restored=False)


def _as_list(reference: ImageInput | Sequence[ImageInput] | None) -> list[ImageInput]:
    if reference is None:
        return []
    if isinstance(reference, (Image, bytes, str, Path)):
        return [reference]
    try:
        return list(reference)
    except TypeError:
        raise InvalidParameter("reference", "a reference must be an Image, bytes, a path or a "
                               f"list of them, got {type(reference).__name__}") from None


def _describe_references(runtime: Runtime, checker: IdentityChecker, refs: Sequence[ImageInput],
                         detector: str | None) -> tuple[np.ndarray, list[dict]]:
    """One descriptor per reference photo (its face with the widest eyes) and the report."""
    from restora.errors import RestoraError

    spec = _detector_spec(runtime, detector)
    net = runtime.load(spec.id)
    thr = det.sensitivity_to_threshold(0.5, net)
    crops, report = [], []
    for j, ref in enumerate(refs):
        name = ref.name if isinstance(ref, Path) else (ref if isinstance(ref, str) else None)
        try:
            ref_img = as_image(ref, runtime.settings)
        except RestoraError as exc:
            raise InvalidParameter("reference", f"reference {j + 1}: {exc.message}") from None
        # as for the image: nothing under fully transparent pixels is a face to match
        ref_px = fill_hidden(ref_img.pixels, hidden(ref_img.alpha))
        # the face with the widest eyes: box areas let a loose false positive win
        found = sorted(det.detect_faces(net, ref_px, conf_threshold=thr, orientation="auto"),
                       key=lambda d: -d.eye_distance)[:1]
        if not found:
            raise InvalidParameter("reference", f"reference {j + 1}"
                                   + (f" ({Path(name).name})" if name else "")
                                   + ": no face found in the reference photo")
        crops.append(choose.input_crops(ref_px, found)[0])
        report.append({"index": j, "name": Path(name).name if name else None,
                       "eyeDistance": round(found[0].eye_distance, 1), "face": None,
                       "distance": None})
    return checker.describe(crops), report


def _parser(runtime: Runtime) -> FaceParser | None:
    """The installed face parser (the task default first), loaded; None without one."""
    parsers = runtime.registry.installed("face-parsing")
    if not parsers:
        return None
    parser = runtime.load(parsers[0].id)
    if not isinstance(parser, FaceParser):
        raise InvalidParameter("model", f"model '{parser.model_id}' is not a face parser")
    return parser


def _masks(runtime: Runtime, restored: Sequence[np.ndarray], cancel: threading.Event | None,
           used: list[Network] | None = None, to_crop: Sequence[np.ndarray] | None = None,
           upscale: int = 1, labels: dict[str, str] | None = None
           ) -> tuple[list[np.ndarray | None], str]:
    """ParseNet face masks in crop space, or None per face (square mask only) without a parser.

    How they combine with the feathered square is the restorer's reference rule (see
    ``enhance_faces``): GFPGAN pastes with the ParseNet mask alone, CodeFormer with the minimum.
    ``to_crop`` (input -> crop matrices) and ``upscale`` say how small each face is pasted, which
    lets the parser use its coarse graph for small faces; ``labels`` receives the parser's
    engine/precision as this job used it.
    """
    parser = _parser(runtime)
    if parser is None:
        return [None] * len(restored), "square"
    scales = None
    if to_crop is not None:
        size = parser.input_size or 512
        # crop px per input px x parse px per crop px / output px per input px
        scales = [scale_of(m) * size / f.shape[0] / upscale for m, f in zip(to_crop, restored)]
    maps = parse_faces(parser, restored, px_per_output=scales, cancel=cancel)
    if used is not None:
        used.append(parser)
    if labels is not None:
        labels[parser.model_id] = f"{parser.engine_name}/{parser.precision_for(scales)}"
    # each face at its own crop size: faces may come from restorers of different input sizes
    return [parse_to_mask(m, f.shape[0]) for m, f in zip(maps, restored)], "parsenet"


def _paste_items(aligned: Sequence[AlignedFace], restored: Sequence[np.ndarray],
                 masks: Sequence[np.ndarray | None], square: Sequence[bool], upscale: int,
                 up: Upscaler | None, face_upsample: bool, cancel: threading.Event | None,
                 tone: Callable[[np.ndarray], np.ndarray] | None = None) -> list[PasteFace]:
    """Crop -> canvas matrices (through the upscale), optionally with upsampled faces (toned
    again by ``tone`` after the network)."""
    items = []
    to_canvas = scale_map(float(upscale))
    for a, face, mask, sq in zip(aligned, restored, masks, square):
        matrix = compose(to_canvas, invert(a.matrix))
        if face_upsample and upscale > 1:
            n = face.shape[0] * upscale
            face = upscale_rgb(face, upscale, up, out_size=(n, n), cancel=cancel)
            if tone is not None and up is not None:
                face = tone(face)
            mask = None if mask is None else resize(mask, n, n)
            # upsampled crop index -> crop index is the inverse of scale_map(upscale)
            matrix = compose(matrix, invert(scale_map(float(upscale))))
        items.append(PasteFace(face=face, mask=mask, matrix=matrix, square=sq))
    return items
