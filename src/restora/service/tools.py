"""The service's tools: each runs one job on the shared Runtime (models loaded once per process).

Pipelines and codecs are imported inside the functions so the app (and ``restora --help``)
starts without torch; the first job pays the import once.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping

from restora.errors import InvalidParameter, RestoraError, UnknownModel
from restora.models.registry import RESTORER_FAMILIES
from restora.pipeline.options import EnhanceOptions, PhotoOptions
from restora.service.jobs import JobContext, Tool
from restora.service.references import reference_kwargs

_RESTORER_ARCH = RESTORER_FAMILIES


# --- preflight: a missing model is a 503 at submission, not a failed job later ----------------

def _require(runtime: Any, task: str, arch: str | None = None) -> None:
    """Raise the Runtime's ModelNotInstalled (bundle + command) unless a model for the task (and
    architecture) is installed; the pipeline picks among installed models the same way."""
    if runtime.registry.installed(task, arch):
        return
    raise runtime.not_installed(runtime.registry.default(task, arch))


def preflight_faces(runtime: Any, options: EnhanceOptions) -> None:
    _require(runtime, "face-restoration", _RESTORER_ARCH.get(options.model))
    detector = options.detector
    if detector:
        try:
            runtime.registry.pick("face-detection", detector, param="detector")
        except UnknownModel as exc:
            raise InvalidParameter("detector", f"detector: {exc.message}") from None
    elif not options.faces:
        _require(runtime, "face-detection")
    if options.identity_model:  # else the job would fail on it only once faces are found
        try:
            runtime.registry.pick("face-recognition", options.identity_model,
                                  param="identityModel")
        except UnknownModel as exc:
            raise InvalidParameter("identityModel", f"identityModel: {exc.message}") from None


def preflight_photo(runtime: Any, options: PhotoOptions) -> None:
    # A missing face model only skips that step (the pipeline warns); colour was asked for.
    if options.colorize:
        _require(runtime, "colorization")


def check_output_pixels(settings: Any, width: int, height: int) -> None:
    """Refuse a result larger than ``max_output_pixels`` (413) before any work is spent on it."""
    from restora.io import Limits

    Limits.from_settings(settings).check_output(width, height)


def check_result(settings: Any, tool: str, input_name: str | None, source_format: str,
                 width: int, height: int, fmt: str | None = None) -> None:
    """The result fits the output-pixel limit and the format it will be written in
    (:func:`write_result` picks the same format), else 413 ``output_too_large``. Run at
    submission when the input's header gives its size (``views.check_image``) and again when
    the job starts (a job submitted past the API, or a size only decoding reveals)."""
    from restora.io import check_encodable, output_for

    check_output_pixels(settings, width, height)
    check_encodable(output_for(tool, input_name, source_format, fmt).format, width, height)


def requested_format(tool: str, params: Mapping[str, Any]) -> str | None:
    """The output format a job's request ``params`` fix for ``tool`` (None: the tool's rule,
    :func:`restora.io.output_for`). The job writes its result in it and the submission checks
    the result against it, so both read it here."""
    if tool == "codeformer":
        return "png"  # the CodeFormer Space always answers PNG
    if tool == "face-refiner":
        # Tengrai: "auto (the default) uses the server default (webp ...)".
        fmt = params.get("outputFormat", "auto")
        return "webp" if fmt == "auto" else fmt
    if tool == "face-recovery":
        return params.get("output_format", "auto")
    return None


def check_result_size(ctx: JobContext, source_format: str, width: int, height: int,
                      fmt: str | None = None) -> None:
    """:func:`check_result` for the job's tool and input, before any work."""
    check_result(ctx.settings, ctx.job.tool, ctx.job.input_name, source_format, width, height,
                 fmt)


# --- shared steps ---------------------------------------------------------------------------

#: inputs up to this many pixels (few JPEG scans) decode in-process: milliseconds of work, less
#: than starting the decode child would cost
INLINE_DECODE_PIXELS = 2_000_000
_MAX_INLINE_SCANS = 16


def _quick_to_decode(raw: bytes, limits: Any) -> bool:
    """Small images in a format whose size is in the header, and not a JPEG with many
    progressive scans (decode work grows with pixels x scans)."""
    from restora.errors import RestoraError
    from restora.io import probe_size

    try:
        size = probe_size(raw, limits=limits)
    except RestoraError:
        return True  # refused from the header: decode() raises the same error at once
    if size is None or size[0] * size[1] > INLINE_DECODE_PIXELS:
        return False
    return raw[:3] != b"\xff\xd8\xff" or raw.count(b"\xff\xda") <= _MAX_INLINE_SCANS


def decode_input(ctx: JobContext, data: bytes | None = None) -> tuple[bytes, Any]:
    """Decode the job's input (or ``data``) within the input limits. With
    ``decode_in_subprocess`` (the default) the decoder runs in a child process that cancel and
    timeout kill at once (:mod:`restora.service.isolate`)."""
    from restora.io import Limits, decode

    ctx.progress("decoding", 1)
    raw = data if data is not None else ctx.input_path.read_bytes()
    limits = Limits.from_settings(ctx.settings)
    if ctx.settings.decode_in_subprocess and not _quick_to_decode(raw, limits):
        from restora.service.isolate import decode_killable

        image = decode_killable(raw, limits, ctx.cancel)
    else:
        image = decode(raw, limits=limits)
    ctx.check_cancel()
    return raw, image


def write_result(ctx: JobContext, image: Any, source_format: str,
                 fmt: str | None = None) -> dict[str, Any]:
    """Encode the result (format and name by :func:`restora.io.output_for`) and its WebP
    preview into the job folder; return the URL fields."""
    from restora.io import encode_to, make_preview, output_for

    ctx.progress("encoding", 95)
    fmt, filename = output_for(ctx.job.tool, ctx.job.input_name, source_format, fmt)
    # streamed into the file: a large result is never held encoded in memory
    path = ctx.write_output(filename, lambda fh: encode_to(fh, image, fmt))
    ctx.write_output("preview.webp", make_preview(image))
    return {"jobId": ctx.job_id, "filename": filename, "format": fmt,
            "downloadUrl": ctx.download_url(filename),
            "previewUrl": ctx.download_url("preview.webp"), "processedSize": path.stat().st_size,
            "width": image.width, "height": image.height}


#: ``enhance(ctx, image, options: EnhanceOptions, *, lo, hi, reference=None) -> EnhanceResult``
#: (``reference`` only when the job has reference photos); tools take it
#: as a parameter so their own logic (fetch, grain, resize, credits) runs with any enhancer.
EnhanceFn = Callable[..., Any]


def pipeline_enhance(ctx: JobContext, image: Any, options: EnhanceOptions, *, lo: float = 5,
                     hi: float = 90, reference: list[Any] | None = None) -> Any:
    """The real face pipeline on the shared Runtime, progress mapped onto lo..hi percent;
    ``reference``: the job's decoded reference photos (see :mod:`restora.service.references`)."""
    from restora.pipeline.enhance import enhance_faces

    return enhance_faces(image, options, runtime=ctx.runtime,
                         progress=ctx.sub_progress(lo, hi), cancel=ctx.cancel,
                         reference=reference, on_estimate=ctx.estimate)


def _source_size(image: Any) -> dict[str, int]:
    """Input dimensions: face boxes are in these coordinates even when the output is resized."""
    return {"originalWidth": image.width, "originalHeight": image.height}


#: the SnapOtter document's values of ``model`` in an enhance-faces result
SEED_MODELS = ("codeformer", "gfpgan")


# --- SnapOtter ------------------------------------------------------------------------------

def _face_fields(result: Any) -> dict[str, Any]:
    """The pipeline report with the seeds' ``model`` (``codeformer`` / ``gfpgan``); the registry
    id of the restorer that ran is ``modelId``."""
    d = result.to_dict()
    d["modelId"] = d.get("model")
    d["model"] = d.get("modelKind")
    if d["model"] not in SEED_MODELS:
        # Faces restored by different restorers (auto, references): the seed's enum has no
        # "mixed", so ``model`` is the restorer of most faces; ``modelKind`` keeps "mixed".
        kinds = Counter(f["restoration"]["kind"] for f in d.get("faces", [])
                        if f.get("restoration") and f["restoration"].get("kind") in SEED_MODELS)
        if kinds:
            d["model"] = kinds.most_common(1)[0][0]
    return d


def run_enhance_faces(ctx: JobContext, enhance: EnhanceFn = pipeline_enhance) -> dict[str, Any]:
    raw, image = decode_input(ctx)
    up = int(ctx.options.upscale)
    check_result_size(ctx, image.format, image.width * up, image.height * up)
    result = enhance(ctx, image, ctx.options, **reference_kwargs(ctx))
    out = write_result(ctx, result.image, image.format)
    return {**_face_fields(result), **out, "originalSize": len(raw), **_source_size(image)}


def run_restore_photo(ctx: JobContext) -> dict[str, Any]:
    from restora.pipeline.photo import restore_photo

    from restora.io import Limits, decode
    from restora.pipeline.photo.masks import load_user_mask, mask_png

    raw, image = decode_input(ctx)
    check_result_size(ctx, image.format, image.width, image.height)
    mask = None
    mask_path = ctx.extra_input("mask")
    if mask_path is not None:
        try:
            mask_image = decode(mask_path.read_bytes(), limits=Limits.from_settings(ctx.settings))
        except RestoraError as exc:
            raise InvalidParameter("mask", f"the mask could not be read: {exc.message}",
                                   reason=exc.code) from None
        mask = load_user_mask(mask_image, image.height, image.width)
    result = restore_photo(image, ctx.options, runtime=ctx.runtime, mask=mask,
                           progress=ctx.sub_progress(5, 90), cancel=ctx.cancel,
                           on_estimate=ctx.estimate)
    out = write_result(ctx, result.image, image.format)
    # the final damage mask beside the output (white = repaired), for the page's mask editor
    stem = Path(ctx.job.input_name).stem or "image"
    mask_name = f"{stem}_mask.png"
    assert result.mask is not None
    ctx.write_output(mask_name, mask_png(result.mask))
    report = result.to_dict()
    # The seed's step ids use underscores (scratch_removal, face_enhancement, ...).
    report["steps"] = [str(step).replace("-", "_") for step in report.get("steps", [])]
    return {**report, **out, "maskUrl": ctx.download_url(mask_name), "maskFilename": mask_name,
            "originalSize": len(raw), **_source_size(image)}


# --- CodeFormer Space -----------------------------------------------------------------------

def run_codeformer(ctx: JobContext, enhance: EnhanceFn = pipeline_enhance) -> dict[str, Any]:
    raw, image = decode_input(ctx)
    up = int(ctx.options.upscale)
    fmt = requested_format("codeformer", ctx.params)
    check_result_size(ctx, image.format, image.width * up, image.height * up, fmt)
    result = enhance(ctx, image, ctx.options, **reference_kwargs(ctx))
    out = write_result(ctx, result.image, image.format, fmt)
    return {**_face_fields(result), **out, "originalSize": len(raw), **_source_size(image)}


# --- Tengrai face refiner -------------------------------------------------------------------

def _fetch(ctx: JobContext, url: str) -> bytes:
    from restora.service.fetch import fetch

    s = ctx.settings
    fetched = fetch(url, max_bytes=min(s.fetch_max_bytes, s.max_bytes),
                    timeout_s=s.fetch_timeout_s, max_redirects=s.fetch_max_redirects,
                    allow_loopback=s.allow_loopback_fetch)
    return fetched.content


def run_face_refiner(ctx: JobContext, enhance: EnhanceFn = pipeline_enhance) -> dict[str, Any]:
    p = ctx.params
    ctx.progress("fetching", 0)
    content = _fetch(ctx, p["imageUrl"])
    # Kept with the job's input (never downloadable), for as long as the job is retained.
    ctx.input_path.parent.mkdir(parents=True, exist_ok=True)
    ctx.input_path.write_bytes(content)
    raw, image = decode_input(ctx, content)
    fmt = requested_format("face-refiner", p)
    up = int(ctx.options.upscale)
    check_result_size(ctx, image.format, image.width * up, image.height * up, fmt)
    result = enhance(ctx, image, ctx.options, **reference_kwargs(ctx))
    out = write_result(ctx, result.image, image.format, fmt)
    return {**_face_fields(result), **out, "originalSize": len(raw),
            **_source_size(image), "seedUsed": p["seedUsed"]}


# --- Topaz face recovery --------------------------------------------------------------------

def run_face_recovery(ctx: JobContext, enhance: EnhanceFn = pipeline_enhance) -> dict[str, Any]:
    from restora.service import finishing

    p = ctx.params
    raw, image = decode_input(ctx)
    warnings: list[str] = []
    declared = (p.get("input_width"), p.get("input_height"))
    if any(declared) and declared != (image.width, image.height):
        warnings.append(f"input_width/input_height ({declared[0]}x{declared[1]}) differ from the "
                        f"decoded image ({image.width}x{image.height}); the image's size is used")
    width, height = finishing.target_size(image.width, image.height, p.get("output_width"),
                                          p.get("output_height"))
    fmt = requested_format("face-recovery", p)
    check_result_size(ctx, image.format, width, height, fmt)
    result = enhance(ctx, image, ctx.options, hi=80, **reference_kwargs(ctx))
    img = result.image
    if (width, height) != (img.width, img.height):
        ctx.progress("resizing", 82)
        alpha = (finishing.resize(img.alpha, width, height) if img.alpha is not None else None)
        img = img.with_pixels(finishing.resize(img.pixels, width, height), alpha)
    if p["grain"]:
        ctx.progress("grain", 88)
        img = img.with_pixels(finishing.add_grain(
            img.pixels, model=p["grain_model"], density=p["grain_density"],
            size=p["grain_size"], strength=p["grain_strength"], seed=p["seed"]), img.alpha)
    out = write_result(ctx, img, image.format, fmt)
    credits = finishing.credits_for(img.width, img.height)
    fields = _face_fields(result)
    fields["warnings"] = list(fields.get("warnings", [])) + warnings
    return {**fields, **out, "originalSize": len(raw),
            **_source_size(image), "credits": credits,
            "outputMegapixels": round(img.width * img.height / 1e6, 4)}


def default_tools(enhance: EnhanceFn = pipeline_enhance) -> dict[str, Tool]:
    """Every tool by name; ``enhance`` replaces the face pipeline (embedding, tests)."""
    def bind(fn: Callable[..., dict[str, Any]]) -> Callable[[JobContext], dict[str, Any]]:
        return functools.partial(fn, enhance=enhance)

    return {
        "enhance-faces": Tool("enhance-faces", bind(run_enhance_faces), EnhanceOptions,
                              preflight_faces),
        "restore-photo": Tool("restore-photo", run_restore_photo, PhotoOptions, preflight_photo),
        "codeformer": Tool("codeformer", bind(run_codeformer), EnhanceOptions, preflight_faces),
        "face-refiner": Tool("face-refiner", bind(run_face_refiner), EnhanceOptions,
                             preflight_faces),
        "face-recovery": Tool("face-recovery", bind(run_face_recovery), EnhanceOptions,
                              preflight_faces),
    }
