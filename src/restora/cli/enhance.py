"""CLI: ``restora enhance-faces INPUT... [-o OUT] [options]``.

Inputs are files or folders (searched recursively for image files). Each result is named by
:func:`restora.io.output_for`, the rule the service uses too: ``OUT/<stem>_enhanced.png`` plus
``OUT/<stem>_enhanced.preview.webp``; files found in a folder keep their sub-folder under OUT. With a single input and ``-o something.png`` the result goes exactly there. Heavy
imports (torch, cv2) happen inside the command.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from restora.cli._batch import path_arg
from restora.pipeline.options import EnhanceOptions, default, help_text

if TYPE_CHECKING:
    from restora.cli._batch import Progress


def _d(name: str) -> Any:
    return default(EnhanceOptions, name)


def _h(name: str) -> str:
    return help_text(EnhanceOptions, name)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("enhance-faces")(enhance_faces_command)


def output_paths(rel: Path, output: Path, single: bool) -> tuple[Path, Path]:
    """(PNG path, preview path) for one result."""
    from restora.io import output_for

    if single and output.suffix.lower() == ".png":
        return output, output.with_name(output.stem + ".preview.webp")
    name = output_for("enhance-faces", rel.name, "png").filename
    png = output / rel.parent / name
    return png, png.with_name(png.stem + ".preview.webp")


def enhance_faces_command(
    # not click's Path: an unreadable input is that image's error, not a usage error for all
    inputs: list[Path] = typer.Argument(..., metavar="INPUT...",
                                        parser=path_arg("an INPUT", "input"),
                                        help="Image files or folders (searched recursively); "
                                             "- reads one image from standard input."),
    output: Path = typer.Option(Path("restored"), "-o", "--output", metavar="PATH",
                                parser=path_arg("-o", "output",
                                                "a folder (. for the current one) or file"),
                                help="Output folder, or a .png path for a single input, or - "
                                     "for standard output (PNG, no preview)."),
    model: str = typer.Option(_d("model"), "--model", help=_h("model")),
    strength: float = typer.Option(_d("strength"), "--strength", help=_h("strength")),
    fidelity: float = typer.Option(_d("fidelity"), "--fidelity", help=_h("fidelity")),
    upscale: int = typer.Option(_d("upscale"), "--upscale", help=_h("upscale")),
    bg_upscale: bool = typer.Option(_d("bg_upscale"), "--bg-upscale", help=_h("bg_upscale")),
    face_upsample: bool = typer.Option(_d("face_upsample"), "--face-upsample",
                                       help=_h("face_upsample")),
    only_center_face: bool = typer.Option(_d("only_center_face"), "--only-center-face",
                                          help=_h("only_center_face")),
    sensitivity: float = typer.Option(_d("sensitivity"), "--sensitivity",
                                      help=_h("sensitivity")),
    detector: Optional[str] = typer.Option(_d("detector"), "--detector", help=_h("detector")),
    orientation: str = typer.Option(_d("orientation"), "--orientation",
                                    help=_h("orientation") + " (auto, search, upright)"),
    seed: Optional[int] = typer.Option(_d("seed"), "--seed", help=_h("seed")),
    reference: Optional[list[Path]] = typer.Option(  # noqa: UP007 - typer needs Optional
        None, "--reference", metavar="FILE",
        parser=path_arg("--reference", "reference", "a photo"),
        help="Reference photo of a person (repeatable): matching faces are restored closest to "
             "it."),
    only_reference_faces: bool = typer.Option(_d("only_reference_faces"),
                                              "--only-reference-faces",
                                              help=_h("only_reference_faces")),
    identity: bool = typer.Option(_d("identity"), "--identity/--no-identity",
                                  help=_h("identity")),
    identity_model: Optional[str] = typer.Option(_d("identity_model"), "--identity-model",
                                                 help=_h("identity_model")),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Leave an image whose result file already exists (a "
        "resumed batch); by default results are replaced."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
) -> None:
    """Restore the faces in photos (GFPGAN v1.4 / CodeFormer) and write PNG + WebP preview."""
    from restora.cli._batch import STDIO, parse_flags, plan_batch, run_batch, shown

    options = parse_flags(EnhanceOptions, dict(
        model=model, strength=strength, fidelity=fidelity, upscale=upscale,
        bg_upscale=bg_upscale, face_upsample=face_upsample, only_center_face=only_center_face,
        sensitivity=sensitivity, detector=detector, orientation=orientation, seed=seed,
        only_reference_faces=only_reference_faces, identity=identity,
        identity_model=identity_model))
    jobs, single, to_stdout = plan_batch(inputs, output)
    if output.suffix.lower() == ".png" and not single:
        from restora.errors import InvalidParameter

        raise InvalidParameter("output", f"{len(jobs)} images need an output folder, not {output}")
    if single and output.suffix and output.suffix.lower() != ".png" and not os.path.isdir(output):
        from restora.errors import InvalidParameter

        raise InvalidParameter("output", f"output {output} must be a folder or a .png file")

    from restora.cli._batch import file_ids
    from restora.cli._checks import (check_output, enhance_needs,
                                     require_models)
    from restora.models.runtime import Runtime

    runtime = Runtime()
    refs = _read_references(reference or [], runtime)  # a bad one stops before any output
    require_models(runtime, *enhance_needs(options.model, options.detector))
    if refs:  # matching faces to references needs a face-recognition model
        require_models(runtime, [("face-recognition", None)])
    keep = file_ids([path for path, _ in jobs if path != STDIO] + refs)  # never overwritten
    if not to_stdout:
        check_output(output, file_target=single and output.suffix.lower() == ".png", keep=keep)
    from restora.cli._batch import existing_result

    def existing(path: Path, rel: Path) -> Path | None:
        result = output_paths(rel, output, single)[0]
        return result if existing_result(result) else None

    run_batch(jobs, name="enhance-faces", single=single, as_json=as_json,
              image_to_stdout=to_stdout,
              existing=existing if skip_existing and not to_stdout else None,
              process=lambda path, rel, bar: _process(path, rel, output, single, runtime,
                                                      options, bar, refs, keep),
              summary=lambda r: [f"{shown(r['input'])} -> {shown(r['output'])} "
                                 f"({r['facesDetected']} face(s), {r['model'] or 'no model'}, "
                                 f"{r['seconds']:.1f} s)"])


def _process(path: Path, rel: Path, output: Path, single: bool, runtime: Any,
             options: EnhanceOptions, bar: Progress, refs: list[Any],
             keep: frozenset[tuple[int, int]] = frozenset()) -> dict[str, Any]:
    from restora.cli._batch import STDIO, read_source, write_atomic, write_stdout
    from restora.io import make_preview
    from restora.io.encode import encode_to
    from restora.pipeline.enhance import enhance_faces

    t0 = time.perf_counter()
    result = enhance_faces(read_source(path, runtime.settings.max_bytes), options,
                           runtime=runtime, progress=bar.stage, reference=refs or None,
                           on_estimate=bar.estimate)
    bar.stage("encode", 100.0)
    t_enc = time.perf_counter()
    replaced = False
    if output == STDIO:
        write_stdout(lambda fh: encode_to(fh, result.image, "png"))
        png, preview = "-", None
    else:
        png_path, preview_path = output_paths(rel, output, single)
        # the result last: once it exists, its preview does too (--skip-existing relies on it)
        write_atomic(preview_path, make_preview(result.image), keep)
        replaced = png_path.is_file()
        write_atomic(png_path, lambda fh: encode_to(fh, result.image, "png"), keep)
        png, preview = str(png_path), str(preview_path)
    record = {"input": str(path), **result.to_dict(), "output": png, "preview": preview,
              "replaced": replaced}
    record["timings"]["encode"] = round(time.perf_counter() - t_enc, 4)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def _read_references(paths: list[Path], runtime: Any) -> list[Any]:
    """Check that every reference photo decodes before the batch starts (a bad one stops it);
    the paths go to the pipeline so results name them."""
    from restora.cli._batch import is_missing
    from restora.errors import InvalidParameter, RestoraError
    from restora.io.decode import as_image
    from restora.pipeline.identity import MAX_REFERENCES

    if len(paths) > MAX_REFERENCES:  # else every image of the batch would fail on it
        raise InvalidParameter("reference", f"at most {MAX_REFERENCES} reference photos, "
                               f"got {len(paths)}")
    refs = []
    for p in paths:
        if is_missing(p):
            raise InvalidParameter("reference", f"reference photo {p} does not exist")
        try:
            as_image(p, runtime.settings)
            refs.append(p)
        except RestoraError as exc:
            raise InvalidParameter("reference", f"reference photo {p}: {exc.message}") from None
    return refs
