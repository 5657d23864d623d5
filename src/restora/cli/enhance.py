"""CLI: ``restora enhance-faces INPUT... [-o OUT] [options]``.

Inputs are files or folders (searched recursively for image files). Each result is written as
``OUT/<stem>.png`` plus ``OUT/<stem>.preview.webp``; files found in a folder keep their sub-folder
under OUT. With a single input and ``-o something.png`` the result goes exactly there. Heavy
imports (torch, cv2) happen inside the command.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

#: Extensions picked up when scanning folders (explicit files are content-sniffed whatever
#: their name).
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".avif", ".heic", ".heif", ".tif", ".tiff", ".bmp",
    ".gif", ".tga", ".psd", ".exr", ".hdr", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf",
    ".rw2", ".raf", ".pef", ".srw",
})


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.command("enhance-faces")(enhance_faces_command)


def collect_inputs(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to the output folder without suffix) for every input image."""
    from restora.errors import InputError

    jobs: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file()
                           and p.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            jobs.extend((p, p.relative_to(item).with_suffix("")) for p in found)
        elif item.is_file():
            jobs.append((item, Path(item.stem)))
        else:
            raise InputError(f"{item} does not exist", code="file_not_found", path=str(item))
    seen: dict[Path, int] = {}
    unique = []
    for path, rel in jobs:  # two inputs with the same name must not overwrite each other
        n = seen.get(rel, 0)
        seen[rel] = n + 1
        unique.append((path, rel if n == 0 else rel.with_name(f"{rel.name}-{n}")))
    return unique


def output_paths(rel: Path, output: Path, single: bool) -> tuple[Path, Path]:
    """(PNG path, preview path) for one result."""
    if single and output.suffix.lower() == ".png":
        return output, output.with_name(output.stem + ".preview.webp")
    png = output / rel.with_name(rel.name + ".png")
    return png, png.with_name(rel.name + ".preview.webp")


def enhance_faces_command(
    inputs: list[Path] = typer.Argument(..., metavar="INPUT...",
                                        help="Image files or folders (searched recursively)."),
    output: Path = typer.Option(Path("restored"), "-o", "--output",
                                help="Output folder, or a .png path for a single input."),
    model: str = typer.Option("auto", "--model", help="auto, gfpgan, codeformer or a model id."),
    strength: float = typer.Option(0.8, "--strength", help="0 = original face, 1 = fully restored."),
    fidelity: float = typer.Option(0.5, "--fidelity", help="CodeFormer w: 0 quality, 1 fidelity."),
    upscale: int = typer.Option(1, "--upscale", help="Final scale: 1, 2 or 4."),
    bg_upscale: bool = typer.Option(False, "--bg-upscale",
                                    help="Real-ESRGAN on the background (also at scale 1)."),
    face_upsample: bool = typer.Option(False, "--face-upsample",
                                       help="Upsample restored faces before pasting."),
    only_center_face: bool = typer.Option(False, "--only-center-face",
                                          help="Restore only the face nearest the centre."),
    sensitivity: float = typer.Option(0.5, "--sensitivity",
                                      help="Detection sensitivity 0-1 (higher finds more faces)."),
    detector: Optional[str] = typer.Option(None, "--detector", help="Face-detection model id."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for GFPGAN's noise."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
) -> None:
    """Restore the faces in photos (GFPGAN v1.4 / CodeFormer) and write PNG + WebP preview."""
    from restora.errors import InputError
    from restora.pipeline.enhance import validate_options

    validate_options(model, strength, fidelity, upscale, sensitivity)
    jobs = collect_inputs(inputs)
    if not jobs:
        raise InputError("no image files found in the given input(s)", code="no_input")
    single = len(jobs) == 1 and not inputs[0].is_dir()
    if output.suffix.lower() == ".png" and not single:
        from restora.errors import InvalidParameter

        raise InvalidParameter("output", f"{len(jobs)} images need an output folder, not {output}")
    if single and output.suffix and output.suffix.lower() != ".png" and not output.is_dir():
        from restora.errors import InvalidParameter

        raise InvalidParameter("output", f"output {output} must be a folder or a .png file")

    from restora.models.runtime import Runtime

    runtime = Runtime()
    options: dict[str, Any] = dict(model=model, strength=strength, fidelity=fidelity,
                                   upscale=upscale, bg_upscale=bg_upscale,
                                   face_upsample=face_upsample, only_center_face=only_center_face,
                                   sensitivity=sensitivity, detector=detector, seed=seed)
    failures = 0
    with _Progress(len(jobs)) as bar:
        for path, rel in jobs:
            bar.start(path)
            try:
                record = _process(path, rel, output, single, runtime, options, bar)
            except InputError as exc:  # a bad file; model or system errors stop the batch
                if single:
                    raise
                failures += 1
                typer.echo(f"error[{exc.code}]: {path}: {exc.message}", err=True)
                if as_json:
                    typer.echo(json.dumps({"input": str(path), "error": exc.to_dict()}))
                bar.advance()
                continue
            bar.advance()
            if as_json:
                typer.echo(json.dumps(record))
            else:
                bar.print(f"{path} -> {record['output']} ({record['facesDetected']} face(s), "
                          f"{record['model'] or 'no model'}, {record['seconds']:.1f} s)")
    if failures:
        raise typer.Exit(1)


def _process(path: Path, rel: Path, output: Path, single: bool, runtime: Any,
             options: dict[str, Any], bar: _Progress) -> dict[str, Any]:
    from restora.io import encode, make_preview
    from restora.pipeline.enhance import enhance_faces

    t0 = time.perf_counter()
    result = enhance_faces(path, runtime=runtime, progress=bar.stage, **options)
    png_path, preview_path = output_paths(rel, output, single)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    bar.stage("encode", 100.0)
    t_enc = time.perf_counter()
    png = encode(result.image, "png")
    preview = make_preview(result.image)
    _write_atomic(png_path, png)
    _write_atomic(preview_path, preview)
    record = {"input": str(path), **result.to_dict(), "output": str(png_path),
              "preview": str(preview_path)}
    record["timings"]["encode"] = round(time.perf_counter() - t_enc, 4)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary sibling so a crash never leaves a half-written image."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class _Progress:
    """A rich progress bar on stderr (stdout stays clean for --json) when there are several images."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._name = ""
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.total > 1:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task("enhance-faces", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start(self, path: Path) -> None:
        self._name = path.name
        self.stage("start", 0.0)

    def stage(self, stage: str, percent: float) -> None:
        """Pipeline progress callback: shows the current image and stage."""
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self._name} {stage} {percent:3.0f}%")

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            typer.echo(line)
