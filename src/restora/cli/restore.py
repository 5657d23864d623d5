"""CLI: ``restora restore-photo INPUT... [-o OUT] [options]``.

Inputs are files or folders (searched recursively). Each result is named and typed by
:func:`restora.io.output_for`, the rule the service uses too: it keeps its input's format (JPEG ->
JPEG, PNG -> PNG, WebP -> WebP, anything else -> PNG, which keeps 16-bit depth and alpha) and is
written as ``OUT/<stem>_restored.<ext>`` plus ``OUT/<stem>_restored.preview.webp``. With a single input file and ``-o name.png|.jpg|.webp`` the result
goes exactly there, in that format.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from restora.cli._batch import path_arg
from restora.pipeline.options import PhotoOptions, default, help_text

_FORMAT_OF_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
JPEG_QUALITY = 95


def _d(name: str) -> Any:
    return default(PhotoOptions, name)


def _h(name: str) -> str:
    return help_text(PhotoOptions, name)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("restore-photo")(restore_photo_command)


def output_paths(rel: Path, output: Path, single: bool, fmt: str) -> tuple[Path, Path, str]:
    """(result path, preview path, format) for one result."""
    from restora.io import output_for

    explicit = _FORMAT_OF_SUFFIX.get(output.suffix.lower())
    if single and explicit is not None:
        return output, output.with_name(output.stem + ".preview.webp"), explicit
    out = output_for("restore-photo", rel.name, fmt)
    path = output / rel.parent / out.filename
    return path, path.with_name(path.stem + ".preview.webp"), out.format


def restore_photo_command(
    # not click's Path: an unreadable input is that image's error, not a usage error for all
    inputs: list[Path] = typer.Argument(..., metavar="INPUT...",
                                        parser=path_arg("an INPUT", "input"),
                                        help="Image files or folders (searched recursively); "
                                             "- reads one image from standard input."),
    output: Path = typer.Option(Path("restored"), "-o", "--output", metavar="PATH",
                                parser=path_arg("-o", "output",
                                                "a folder (. for the current one) or file"),
                                help="Output folder, or a .png/.jpg/.webp path for one input, "
                                     "or - for standard output (the input's format rule, no "
                                     "preview)."),
    no_scratch_removal: bool = typer.Option(not _d("scratch_removal"), "--no-scratch-removal",
                                            help="Leave scratches and dust alone."),
    no_face_enhancement: bool = typer.Option(not _d("face_enhancement"), "--no-face-enhancement",
                                             help="Do not restore faces."),
    fidelity: float = typer.Option(_d("fidelity"), "--fidelity", help=_h("fidelity")),
    no_denoise: bool = typer.Option(not _d("denoise"), "--no-denoise", help="Do not denoise."),
    denoise_strength: float = typer.Option(_d("denoise_strength"), "--denoise-strength",
                                           help=_h("denoise_strength")),
    colorize: bool = typer.Option(_d("colorize"), "--colorize", help=_h("colorize")),
    colorize_strength: float = typer.Option(_d("colorize_strength"), "--colorize-strength",
                                            help=_h("colorize_strength")),
    orientation: str = typer.Option(_d("orientation"), "--orientation",
                                    help=_h("orientation") + " (auto, search, upright)"),
    mask: Path | None = typer.Option(None, "--mask", metavar="FILE",
                                     parser=path_arg("--mask", "mask", "a mask image"),
                                     help="Damage mask image for a single input (white = repair)."),
    mask_mode: str = typer.Option(_d("mask_mode"), "--mask-mode", help=_h("mask_mode")),
    save_mask: bool = typer.Option(False, "--save-mask",
                                   help="Also write <stem>.mask.png (white = repaired)."),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Leave an image whose result file already exists (a "
        "resumed batch); by default results are replaced."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
) -> None:
    """Repair old photos (scratches, dust, noise, faces; optional colour) in their own format."""
    from restora.cli._batch import STDIO, parse_flags, plan_batch, run_batch
    from restora.errors import InvalidParameter

    options = parse_flags(PhotoOptions, dict(
        scratch_removal=not no_scratch_removal, face_enhancement=not no_face_enhancement,
        fidelity=fidelity, denoise=not no_denoise, denoise_strength=denoise_strength,
        colorize=colorize, colorize_strength=colorize_strength, mask_mode=mask_mode,
        orientation=orientation), {"scratch_removal": "--no-scratch-removal",
                                   "face_enhancement": "--no-face-enhancement",
                                   "denoise": "--no-denoise"})
    jobs, single, to_stdout = plan_batch(inputs, output)
    if to_stdout and save_mask:
        raise InvalidParameter("output", "--save-mask needs an output folder or file, not -")
    if single and output.suffix and output.suffix.lower() not in _FORMAT_OF_SUFFIX:
        raise InvalidParameter("output", f"output {output} must be a folder or a .png, .jpg or "
                               ".webp file")
    if mask is not None:
        if not single:
            raise InvalidParameter("mask", "--mask needs exactly one input image (a mask "
                                   "belongs to one photo)")
        from restora.cli._batch import is_missing

        if is_missing(mask):
            raise InvalidParameter("mask", f"mask file {mask} does not exist")

    from restora.cli._batch import file_ids
    from restora.cli._checks import (check_output, face_models_missing,
                                     require_models)
    from restora.models.runtime import Runtime

    runtime = Runtime()
    if options.colorize:
        require_models(runtime, [("colorization", None)])
    keep = file_ids([path for path, _ in jobs if path != STDIO] + ([mask] if mask else []))
    if not to_stdout:
        check_output(output, file_target=single and output.suffix.lower() in _FORMAT_OF_SUFFIX,
                     keep=keep)
    if options.face_enhancement and (why := face_models_missing(runtime)):
        typer.echo(f"warning: {why}", err=True)  # said once, before the first image
    from restora.cli._batch import existing_result

    def existing(path: Path, rel: Path) -> Path | None:
        result = output_paths(rel, output, single, predicted_format(path))[0]
        return result if existing_result(result) else None

    run_batch(jobs, name="restore-photo", single=single, as_json=as_json,
              existing=existing if skip_existing and not to_stdout else None,
              process=lambda path, rel, bar: _process(path, rel, output, single, runtime,
                                                      options, bar, save_mask, mask, keep),
              summary=_summary, image_to_stdout=to_stdout)


def predicted_format(path: Path) -> str:
    """The format this input's result will have (``output_format_for`` its format, sniffed
    from its first bytes as decoding does), without decoding it; PNG for an input that cannot
    be read (processing it then reports why)."""
    from restora.io import output_format_for
    from restora.io.sniff import sniff_format

    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return "png"
    return output_format_for(sniff_format(head) or "png")


def _summary(record: dict[str, Any]) -> list[str]:
    from restora.cli._batch import one_line, shown

    steps = ", ".join(record["steps"]) or "nothing needed"
    return [f"{shown(record['input'])} -> {shown(record['output'])} ({steps}; scratches "
            f"{record['scratchCoverage']:.2f}%, {record['seconds']:.1f} s)",
            *(f"warning: {one_line(w)}" for w in record["warnings"])]


def mask_path_for(out_path: Path, rel: Path, output: Path, single: bool) -> Path:
    """``<stem>.mask.png`` beside the result: the input's stem (``photo.jpg`` ->
    ``photo.mask.png``), or the stem of an explicit ``-o name.ext``."""
    if single and output.suffix.lower() in _FORMAT_OF_SUFFIX:
        return output.with_name(output.stem + ".mask.png")
    return out_path.with_name(Path(rel.name).stem + ".mask.png")


def _process(path: Path, rel: Path, output: Path, single: bool, runtime: Any,
             options: PhotoOptions, bar: Any, save_mask: bool = False,
             mask: Path | None = None,
             keep: frozenset[tuple[int, int]] = frozenset()) -> dict[str, Any]:
    from restora.cli._batch import STDIO, read_source, write_atomic, write_stdout
    from restora.io import make_preview
    from restora.io.encode import encode_to
    from restora.pipeline.photo import restore_photo

    t0 = time.perf_counter()
    result = restore_photo(read_source(path, runtime.settings.max_bytes), options,
                           runtime=runtime, progress=bar.stage, mask=mask,
                           on_estimate=bar.estimate)
    bar.stage("encode", 100.0)
    t_enc = time.perf_counter()
    replaced = False
    mask_file = None
    if output == STDIO:
        fmt = result.output_format
        write_stdout(lambda fh: encode_to(fh, result.image, fmt, quality=JPEG_QUALITY))
        out, preview = "-", None
    else:
        out_path, preview_path, fmt = output_paths(rel, output, single, result.output_format)
        # the result last: once it exists, its preview and mask do too (--skip-existing)
        write_atomic(preview_path, make_preview(result.image), keep)
        if save_mask:
            from restora.pipeline.photo.masks import mask_png

            assert result.mask is not None
            mask_file = mask_path_for(out_path, rel, output, single)
            write_atomic(mask_file, mask_png(result.mask), keep)
        replaced = out_path.is_file()
        write_atomic(out_path, lambda fh: encode_to(fh, result.image, fmt,
                                                    quality=JPEG_QUALITY), keep)
        out, preview = str(out_path), str(preview_path)
    record = {"input": str(path), **result.to_dict(), "format": fmt, "output": out,
              "preview": preview, "replaced": replaced}
    if mask_file is not None:
        record["mask"] = str(mask_file)
    record["timings"]["encode"] = round(time.perf_counter() - t_enc, 4)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record
