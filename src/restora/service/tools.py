"""The service's tools: each runs one job on the shared Runtime (models loaded once per process).

Pipelines and codecs are imported inside the functions so the app (and ``restora --help``)
starts without torch; the first job pays the import once.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from restora.errors import InvalidParameter, RestoraError, UnknownModel
from restora.pipeline.options import EnhanceOptions, PhotoOptions
from restora.service.jobs import JobContext, Tool

_EXT = {"jpeg": "jpg", "png": "png", "webp": "webp"}
_RESTORER_ARCH = {"gfpgan": "gfpgan_v1_clean", "codeformer": "codeformer"}


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
            spec = runtime.registry.get(detector)
        except UnknownModel as exc:
            raise InvalidParameter("detector", f"detector: {exc.message}") from None
        if spec.task != "face-detection":
            raise InvalidParameter("detector", f"'{detector}' is a {spec.task} model, not a "
                                   "face detector.")
        if not runtime.registry.is_installed(spec):
            raise runtime.not_installed(spec)
    elif not options.faces:
        _require(runtime, "face-detection")


def preflight_photo(runtime: Any, options: PhotoOptions) -> None:
    # A missing face model only skips that step (the pipeline warns); colour was asked for.
    if options.colorize:
        _require(runtime, "colorization")


# --- shared steps ---------------------------------------------------------------------------

def decode_input(ctx: JobContext, data: bytes | None = None) -> tuple[bytes, Any]:
    from restora.io import Limits, decode

    ctx.progress("decoding", 1)
    raw = data if data is not None else ctx.input_path.read_bytes()
    image = decode(raw, limits=Limits.from_settings(ctx.settings))
    ctx.check_cancel()
    return raw, image


def write_result(ctx: JobContext, image: Any, fmt: str, suffix: str) -> dict[str, Any]:
    """Encode the result and its WebP preview into the job folder; return the URL fields."""
    from restora.io import encode, make_preview

    ctx.progress("encoding", 95)
    data = encode(image, fmt)
    stem = Path(ctx.job.input_name).stem or "image"
    filename = f"{stem}_{suffix}.{_EXT.get(fmt, fmt)}"
    ctx.write_output(filename, data)
    ctx.write_output("preview.webp", make_preview(image))
    return {"jobId": ctx.job_id, "filename": filename, "format": fmt,
            "downloadUrl": ctx.download_url(filename),
            "previewUrl": ctx.download_url("preview.webp"), "processedSize": len(data),
            "width": image.width, "height": image.height}


#: ``enhance(ctx, image, options: EnhanceOptions, *, lo, hi) -> EnhanceResult``; tools take it
#: as a parameter so their own logic (fetch, grain, resize, credits) runs with any enhancer.
EnhanceFn = Callable[..., Any]


def pipeline_enhance(ctx: JobContext, image: Any, options: EnhanceOptions, *, lo: float = 5,
                     hi: float = 90) -> Any:
    """The real face pipeline on the shared Runtime, progress mapped onto lo..hi percent."""
    from restora.pipeline.enhance import enhance_faces

    return enhance_faces(image, options, runtime=ctx.runtime,
                         progress=ctx.sub_progress(lo, hi), cancel=ctx.cancel)


def _source_size(image: Any) -> dict[str, int]:
    """Input dimensions: face boxes are in these coordinates even when the output is resized."""
    return {"originalWidth": image.width, "originalHeight": image.height}


# --- SnapOtter ------------------------------------------------------------------------------

def run_enhance_faces(ctx: JobContext, enhance: EnhanceFn = pipeline_enhance) -> dict[str, Any]:
    from restora.io import output_format_for

    raw, image = decode_input(ctx)
    result = enhance(ctx, image, ctx.options)
    out = write_result(ctx, result.image, output_format_for(image.format), "enhanced")
    return {**result.to_dict(), **out, "originalSize": len(raw),
            **_source_size(image)}


def run_restore_photo(ctx: JobContext) -> dict[str, Any]:
    from restora.io import output_format_for
    from restora.pipeline.photo import restore_photo

    from restora.io import Limits, decode
    from restora.pipeline.photo.masks import load_user_mask, mask_png

    raw, image = decode_input(ctx)
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
                           progress=ctx.sub_progress(5, 90), cancel=ctx.cancel)
    out = write_result(ctx, result.image, output_format_for(image.format), "restored")
    # the final damage mask beside the output (white = repaired), for the page's mask editor
    stem = Path(ctx.job.input_name).stem or "image"
    mask_name = f"{stem}_mask.png"
    assert result.mask is not None
    ctx.write_output(mask_name, mask_png(result.mask))
    return {**result.to_dict(), **out, "maskUrl": ctx.download_url(mask_name),
            "maskFilename": mask_name, "originalSize": len(raw), **_source_size(image)}


# --- CodeFormer Space -----------------------------------------------------------------------

def run_codeformer(ctx: JobContext, enhance: EnhanceFn = pipeline_enhance) -> dict[str, Any]:
    raw, image = decode_input(ctx)
    result = enhance(ctx, image, ctx.options)
    out = write_result(ctx, result.image, "png", "codeformer")
    return {**result.to_dict(), **out, "originalSize": len(raw),
            **_source_size(image)}


# --- Tengrai face refiner -------------------------------------------------------------------

def run_face_refiner(ctx: JobContext, enhance: EnhanceFn = pipeline_enhance) -> dict[str, Any]:
    from restora.io import output_format_for
    from restora.service.fetch import fetch

    p = ctx.params
    s = ctx.settings
    ctx.progress("fetching", 0)
    fetched = fetch(p["imageUrl"], max_bytes=min(s.fetch_max_bytes, s.max_bytes),
                    timeout_s=s.fetch_timeout_s, max_redirects=s.fetch_max_redirects,
                    allow_loopback=s.allow_loopback_fetch)
    ctx.write_output("source.bin", fetched.content)
    raw, image = decode_input(ctx, fetched.content)
    result = enhance(ctx, image, ctx.options)
    fmt = p["outputFormat"]
    fmt = output_format_for(image.format) if fmt == "auto" else fmt
    out = write_result(ctx, result.image, fmt, "refined")
    return {**result.to_dict(), **out, "originalSize": len(raw),
            **_source_size(image), "seedUsed": p["seedUsed"]}


# --- Topaz face recovery --------------------------------------------------------------------

def run_face_recovery(ctx: JobContext, enhance: EnhanceFn = pipeline_enhance) -> dict[str, Any]:
    from restora.io import output_format_for
    from restora.service import finishing

    p = ctx.params
    raw, image = decode_input(ctx)
    result = enhance(ctx, image, ctx.options, hi=80)
    img = result.image
    width, height = finishing.target_size(img.width, img.height, p["output_width"],
                                          p["output_height"])
    if (width, height) != (img.width, img.height):
        ctx.progress("resizing", 82)
        alpha = (finishing.resize(img.alpha, width, height) if img.alpha is not None else None)
        img = img.with_pixels(finishing.resize(img.pixels, width, height), alpha)
    if p["grain"]:
        ctx.progress("grain", 88)
        img = img.with_pixels(finishing.add_grain(
            img.pixels, model=p["grain_model"], density=p["grain_density"],
            size=p["grain_size"], strength=p["grain_strength"], seed=p["seed"]), img.alpha)
    fmt = p["output_format"]
    fmt = output_format_for(image.format) if fmt == "auto" else ("jpeg" if fmt == "jpg" else fmt)
    out = write_result(ctx, img, fmt, "recovered")
    credits = finishing.credits_for(img.width, img.height)
    return {**result.to_dict(), **out, "originalSize": len(raw),
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
