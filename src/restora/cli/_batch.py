"""What the per-image commands share: finding inputs, the progress bar, the batch loop, safe writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import typer

#: Extensions picked up when scanning folders (explicit files are content-sniffed whatever
#: their name).
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".avif", ".heic", ".heif", ".tif", ".tiff", ".bmp",
    ".gif", ".tga", ".psd", ".exr", ".hdr", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf",
    ".rw2", ".raf", ".pef", ".srw",
})


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
    if not jobs:
        raise InputError("no image files found in the given input(s)", code="no_input")
    seen: dict[Path, int] = {}
    unique = []
    for path, rel in jobs:  # two inputs with the same name must not overwrite each other
        n = seen.get(rel, 0)
        seen[rel] = n + 1
        unique.append((path, rel if n == 0 else rel.with_name(f"{rel.name}-{n}")))
    return unique


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary sibling so a crash never leaves a half-written image."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def run_batch(jobs: list[tuple[Path, Path]], *, name: str, single: bool, as_json: bool,
              process: Callable[[Path, Path, "Progress"], dict[str, Any]],
              summary: Callable[[dict[str, Any]], list[str]]) -> None:
    """Run ``process`` per image. A bad input file is reported and the batch goes on; model and
    system errors stop it (they would fail every image). Exit code 1 if any image failed."""
    from restora.errors import InputError

    failures = 0
    with Progress(len(jobs), name) as bar:
        for path, rel in jobs:
            bar.start(path)
            try:
                record = process(path, rel, bar)
            except InputError as exc:
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
                for line in summary(record):
                    bar.print(line)
    if failures:
        raise typer.Exit(1)


class Progress:
    """A rich progress bar on stderr (stdout stays clean for --json) when there are several images."""

    def __init__(self, total: int, name: str = "restora") -> None:
        self.total = total
        self.name = name
        self._image = ""
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.total > 1:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(self.name, total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start(self, path: Path) -> None:
        self._image = path.name
        self.stage("start", 0.0)

    def stage(self, stage: str, percent: float) -> None:
        """Pipeline progress callback: shows the current image and stage."""
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self._image} {stage} {percent:3.0f}%")

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            typer.echo(line)
