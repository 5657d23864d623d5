"""What the per-image commands share: finding inputs, the progress bar, the batch loop, safe writes."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import typer

if TYPE_CHECKING:
    from restora.io.files import Payload

#: Extensions picked up when scanning folders (explicit files are content-sniffed whatever
#: their name).
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".avif", ".heic", ".heif", ".tif", ".tiff", ".bmp",
    ".gif", ".tga", ".psd", ".exr", ".hdr", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf",
    ".rw2", ".raf", ".pef", ".srw",
})


#: ``-`` as an input reads the image from standard input; as ``-o`` writes the result to
#: standard output (one image; result lines then go to stderr).
STDIO = Path("-")


#: Characters that break or reorder a line of text: C0/C1 controls, line and paragraph
#: separators, bidirectional overrides and isolates.
_UNSAFE = frozenset([*map(chr, range(0x20)), *map(chr, range(0x7f, 0xa0)), "\u2028", "\u2029",
                     *map(chr, range(0x202a, 0x202f)), *map(chr, range(0x2066, 0x206a))])
_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f",
            "\r": "\\r", "\x1b": "\\e", "\\": "\\\\", "'": "\\'"}


def _unsafe(char: str) -> bool:
    """A character that would break, reorder or garble a line (lone surrogates are the bytes
    of a file name that is not UTF-8)."""
    return char in _UNSAFE or "\ud800" <= char <= "\udfff"


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if 0xdc80 <= code <= 0xdcff:  # an undecodable byte, as os.fsdecode keeps it
        return f"\\x{code - 0xdc00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(path: Path | str) -> str:
    """``path`` for one line of text output: unchanged, or, if it holds a newline, tab, other
    control character or bytes that are not UTF-8 (or `` -> ``, or starts with ``$'``), quoted
    the way bash's ``$'...'`` reads it back (``$'a\\nb.jpg'``), so one result stays one line,
    splits at its first `` -> ``, and the name can be pasted into a shell."""
    text = str(path)
    # " -> " separates input from result, and a bare name must not look quoted
    if not any(map(_unsafe, text)) and " -> " not in text and not text.startswith("$'"):
        return text
    return "$'" + "".join(_escape(c) if _unsafe(c) or c in "\\'" else c for c in text) + "'"


def one_line(text: str) -> str:
    """``text`` (a message that may quote a file name) with every character that would break
    the line escaped (``\\n``, ``\\t``, ``\\xNN``)."""
    return "".join(_escape(c) if _unsafe(c) else c for c in text)


def path_arg(name: str, field: str, want: str = "a file or folder (. for the current folder)"
             ) -> Callable[[str], Path]:
    """The parser of a path option or argument (``name`` as the user sees it): an empty value
    (``-o "$OUT"`` with OUT unset) is one ``invalid_parameter`` line; as ``Path('')`` it meant
    the current folder, so ``-o ''`` wrote there and an empty INPUT searched every photo below
    it."""

    def parse(value: str | Path) -> Path:
        from restora.errors import InvalidParameter

        if isinstance(value, Path):  # the default
            return value
        if not value:
            raise InvalidParameter(field, f"{name} is empty; give {want}")
        path = Path(value)
        if path == STDIO and value != "-":  # ./- is the file named "-": pathlib drops the ./
            return Path(os.path.abspath(value))
        return path

    return parse


def parse_flags(model: type, values: dict[str, Any], flags: dict[str, str] | None = None
                ) -> Any:
    """:func:`restora.pipeline.options.parse` of the command's option ``values`` (by field
    name), with a bad value named by the flag the user typed (``--denoise-strength``), not the
    API's field (``denoiseStrength``). ``flags`` gives the flags not spelt ``--field-name``."""
    from restora.pipeline.options import parse

    names = {model.model_fields[f].alias or f: (flags or {}).get(f, "--" + f.replace("_", "-"))
             for f in values}
    return parse(model, values, names=names)


def collect_inputs(inputs: list[Path], output: Path | None = None) -> list[tuple[Path, Path]]:
    """(file, its path relative to the output folder, with its own name) for every input image.

    Folders are searched recursively; hidden files are skipped, and so is the ``output`` folder
    where it lies inside one (the default ``./restored`` inside ``.``): a second run must not
    take the first run's results for photos. A file given twice (``album album/a.jpg``) is
    restored once. Inputs whose results would share a name (``a.jpg`` and ``a.png``; names
    compared without their last suffix, ignoring case, as output names are made and as
    case-insensitive file systems see them) get ``a-1``, ``a-2``.
    """
    from restora.errors import InputError, InvalidParameter

    jobs: list[tuple[Path, Path]] = []
    if inputs.count(STDIO) > 1:
        raise InvalidParameter("input", "standard input (-) can be read only once")
    skip = output.resolve() if output is not None and output != STDIO else None
    for item in inputs:
        if item == STDIO:
            jobs.append((STDIO, Path("stdin")))
            continue
        try:
            mode = item.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise InputError(f"{item} does not exist", code="file_not_found",
                             path=str(item)) from None
        except OSError:  # e.g. in a folder it may not look into: reading it says why
            mode = stat.S_IFREG
        if stat.S_ISDIR(mode):
            found, unreadable = _search(item, skip)
            jobs.extend((p, p.relative_to(item)) for p in found)
            # a folder that could not be read is a job that fails (see run_batch), not silence
            jobs.extend((d, d.relative_to(item)) for d in unreadable)
        elif stat.S_ISREG(mode):
            jobs.append((item, Path(item.name)))
        else:
            raise InputError(f"{item} is not a file or folder (a device, FIFO or socket); give "
                             "- to read standard input", path=str(item))
    if not jobs:
        inside = [i for i in inputs if skip is not None and i.resolve().is_relative_to(skip)]
        why = (f": {inside[0]} is in the output folder {output}, which is never searched for "
               "photos (give another -o)" if inside else "")
        raise InputError(f"no image files found in the given input(s){why}", code="no_input")
    taken: set[str] = set()
    seen: set[Path] = set()
    unique = []
    for path, rel in jobs:  # two inputs must never write the same result
        where = path if path == STDIO else path.parent.resolve() / path.name
        if where in seen:
            continue
        seen.add(where)
        if os.path.isdir(path):  # an unreadable folder: it writes nothing
            unique.append((path, rel))
            continue
        stem = rel.with_suffix("")
        name, n = stem, 0
        while str(name).lower() in taken:
            n += 1
            name = stem.with_name(f"{stem.name}-{n}")
        taken.add(str(name).lower())
        unique.append((path, rel if n == 0 else name.with_name(name.name + rel.suffix)))
    return unique


def _search(folder: Path, skip: Path | None) -> tuple[list[Path], list[Path]]:
    """The image files under ``folder`` (recursively; hidden files and folders, symlinked
    folders and what lies in ``skip`` left out), sorted, and the folders that could not be
    read."""
    found: list[Path] = []
    unreadable: list[Path] = []
    for root, dirs, files in os.walk(folder, onerror=lambda exc: unreadable.append(
            Path(exc.filename))):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(p for name in files if not name.startswith(".")
                     and (p := Path(root, name)).suffix.lower() in IMAGE_SUFFIXES
                     and os.path.isfile(p)
                     and (skip is None or not p.resolve().is_relative_to(skip)))
    return sorted(found), sorted(unreadable)


def is_missing(path: Path) -> bool:
    """Whether ``path`` does not exist; one that cannot be looked at (in a folder without
    search permission) is not missing: reading it says why."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def _unreadable_folder(folder: Path) -> None:
    """The error of a folder :func:`collect_inputs` could not search."""
    from restora.errors import InputError

    try:
        os.scandir(folder).close()
        why = "it could not be read at the time"
    except OSError as exc:
        why = exc.strerror or str(exc)
    raise InputError(f"the folder could not be searched for images ({why}); the images in it "
                     "were not restored", path=str(folder))


def plan_batch(inputs: list[Path], output: Path) -> tuple[list[tuple[Path, Path]], bool, bool]:
    """(jobs, single, to_stdout) of a per-image command: :func:`collect_inputs`, whether it is
    one image given as a file (``-o`` may then name the result), and whether the result goes to
    standard output (``-o -``, refused for several images)."""
    from restora.errors import InvalidParameter

    jobs = collect_inputs(inputs, output)
    single = len(jobs) == 1 and not os.path.isdir(inputs[0])
    to_stdout = output == STDIO
    if to_stdout and not single:
        raise InvalidParameter("output", f"-o - writes one image; {len(jobs)} images need an "
                               "output folder")
    return jobs, single, to_stdout


def read_source(path: Path, max_bytes: int) -> Path | bytes:
    """What the pipeline reads: the path, or for ``-`` the bytes on standard input (at most one
    byte past ``max_bytes``, so an endless stream stops there and is refused by size)."""
    from restora.errors import EmptyFile

    if path != STDIO:
        return path
    if sys.stdin is None or sys.stdin.isatty():
        raise EmptyFile("no image on standard input (pipe one in, e.g. `< photo.jpg`)")
    return sys.stdin.buffer.read(max_bytes + 1)


def write_stdout(data: Payload) -> None:
    """The result on standard output; a reader that went away is one clear error."""
    out = sys.stdout.buffer
    try:
        if isinstance(data, bytes):
            out.write(data)
        else:
            data(out)
        out.flush()
    except OSError as exc:
        raise _stdout_error(exc) from None


def _stdout_error(exc: OSError) -> Exception:
    """The one error for standard output that cannot be written (a reader gone, a full
    disk); stdout then goes to /dev/null, else Python reports it again when it flushes stdout
    at exit."""
    from restora.cli._checks import OutputNotWritable

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(exc, BrokenPipeError):
        return OutputNotWritable("standard output was closed before the result was written",
                                 path="-")
    return OutputNotWritable(f"cannot write to standard output: {exc.strerror or exc}",
                             path="-")


def file_ids(paths: Iterable[Path]) -> frozenset[tuple[int, int]]:
    """(device, inode) of each existing file among ``paths``: the files of a run that no
    result may replace (a hard link or a symlink to one of them is that file too)."""
    ids = set()
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    return frozenset(ids)


def write_atomic(path: Path, data: Payload,
                 keep: frozenset[tuple[int, int]] = frozenset()) -> None:
    """:func:`restora.io.files.write_atomic` into ``path`` (creating its folder); a write that
    fails (disk full, permissions changed meanwhile) is one clear error, not a trace. A
    ``path`` that is one of the files in ``keep`` (:func:`file_ids` of the run's inputs) is
    refused: a result never replaces a source."""
    from restora.cli._checks import OutputNotWritable
    from restora.errors import InputError, InvalidParameter
    from restora.io.files import write_atomic as write

    if file_ids([path]) & keep:
        raise InvalidParameter("output", f"its result {path} would replace an input of this "
                               "run; nothing was written (give another -o)", path=str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, data)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # this input's name, not the output: the batch goes on
            raise InputError(f"cannot write {path}: the name is too long for the file system "
                             "(rename the input)", path=str(path)) from None
        raise OutputNotWritable(f"cannot write {path}: {exc.strerror or exc}",
                                path=str(path)) from None


def existing_result(path: Path) -> bool:
    """Whether ``path`` is a finished result a resumed run may keep: a non-empty file. Results
    are written through a hidden temporary file renamed into place, and the preview (and mask)
    before the result itself, so one that exists is complete."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def run_batch(jobs: list[tuple[Path, Path]], *, name: str, single: bool, as_json: bool,
              process: Callable[[Path, Path, "Progress"], dict[str, Any]],
              summary: Callable[[dict[str, Any]], list[str]],
              image_to_stdout: bool = False,
              existing: Callable[[Path, Path], Path | None] | None = None) -> None:
    """Run ``process`` per image. A bad input file is reported and the batch goes on; model and
    system errors stop it (they would fail every image). Exit code 1 if any image failed.

    Results go to stdout, one line each (``--json``: one object per line), whatever the
    terminal width; progress, warnings and the closing summary go to stderr. With
    ``image_to_stdout`` (``-o -``) stdout carries the image, so result lines go to stderr.

    ``existing`` (``--skip-existing``) gives an image's finished result from an earlier run, or
    None: such an image is not processed, its line says so, the summary counts it as skipped.
    A record with ``replaced`` true overwrote an earlier result: the summary counts those too.

    Ctrl+C, SIGTERM and SIGHUP stop it alike: the write in progress removes its temporary
    file, the summary (one image: an error line) names the signal, exit code 128 + signal.
    """
    import signal

    from restora.errors import InputError

    done = failed = skipped = replaced = 0
    stopped = None
    t0 = time.perf_counter()
    previous = _stop_on_signals()
    with Progress(len(jobs), name, results_to_stderr=image_to_stdout) as bar:
        try:
            for path, rel in jobs:
                bar.start(path)
                kept = existing(path, rel) if existing is not None and path != STDIO else None
                if kept is not None:
                    skipped += 1
                    bar.advance()
                    bar.result(json.dumps({"input": str(path), "output": str(kept),
                                           "skipped": "exists"}) if as_json else
                               f"{shown(path)} -> {shown(kept)} (exists, skipped)")
                    continue
                try:
                    if os.path.isdir(path):  # a folder collect_inputs could not search
                        _unreadable_folder(path)
                    record = process(path, rel, bar)
                except InputError as exc:
                    if single:
                        raise
                    failed += 1
                    bar.error(f"error[{exc.code}]: {shown(path)}: {one_line(exc.message)}")
                    if as_json:
                        bar.result(json.dumps({"input": str(path), "error": exc.to_dict()}))
                    bar.advance()
                    continue
                done += 1
                replaced += bool(record.get("replaced"))
                bar.advance()
                if as_json:
                    bar.result(json.dumps(record))
                else:
                    lines = summary(record)
                    bar.result(lines[0])
                    for line in lines[1:]:
                        bar.error(line)
        except KeyboardInterrupt as exc:
            stopped = signal.Signals(exc.args[0] if exc.args else signal.SIGINT)
            raise typer.Exit(128 + stopped) from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if not single:
                bar.error(batch_summary(name, total=len(jobs), done=done, failed=failed,
                                        skipped=skipped, replaced=replaced,
                                        seconds=time.perf_counter() - t0, stopped=stopped))
            elif stopped:
                bar.error(f"error[cancelled]: interrupted by {stopped.name}")
    if failed:
        raise typer.Exit(1)


def batch_summary(name: str, *, total: int, done: int, failed: int, skipped: int,
                  replaced: int, seconds: float, stopped: Any = None) -> str:
    """The closing line: ``enhance-faces: 3 done, 0 failed, 2 skipped (of 5) in 9.1 s``, with
    ``, 4 not started`` after an interruption or a stop, and ``; 1 existing result replaced``."""
    left = total - done - failed - skipped
    line = (f"{name}: {done} done, {failed} failed, {skipped} skipped"
            + (f", {left} not started" if left else "")
            + f" (of {total}) in {seconds:.1f} s"
            + (f", interrupted by {stopped.name}" if stopped else ""))
    if replaced:
        line += f"; {replaced} existing result{'s' if replaced > 1 else ''} replaced"
    return line


def _stop_on_signals() -> dict[int, Any]:
    """Make SIGTERM and SIGHUP raise ``KeyboardInterrupt(signum)`` as Ctrl+C does (their
    default kills the process mid-write, leaving a temporary file); returns the handlers to
    put back. Only the main thread can set handlers: elsewhere nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:  # not one a caller set or ignores
            previous[signum] = signal.signal(signum, stop)
    return previous


class Progress:
    """A rich progress bar on stderr, only for several images and only when stderr is a
    terminal (a pipe or log file gets plain lines)."""

    def __init__(self, total: int, name: str = "restora", *,
                 results_to_stderr: bool = False) -> None:
        self.total = total
        self.name = name
        self.results_to_stderr = results_to_stderr
        self._image = ""
        self._announced = False
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.total > 1 and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            # No stdout redirection: results must reach stdout untouched (pipes, --json).
            # markup=False: "IMG [b].jpg" is a name, not bold "IMG .jpg"
            self._bar = RichProgress(TextColumn("{task.description}", markup=False), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(),
                                     console=Console(stderr=True), redirect_stdout=False,
                                     redirect_stderr=False, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.name, total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def start(self, path: Path) -> None:
        self._image = shown(path.name)
        self._announced = False
        self.stage("start", 0.0)

    def estimate(self, info: dict[str, Any]) -> None:
        """Pipeline estimate callback: the first long estimate of an image is one stderr line
        ('photo.jpg: this will take about 7 min (380 upscale tiles, 4 face(s))')."""
        from restora.pipeline._timing import estimate_text

        if info.get("long") and not self._announced:
            self._announced = True
            self.error(f"{self._image}: {estimate_text(info)}")

    def stage(self, stage: str, percent: float) -> None:
        """Pipeline progress callback: shows the current image and stage."""
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self._image} {stage} {percent:3.0f}%")

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def result(self, line: str) -> None:
        """One result line on stdout (never wrapped, never styled)."""
        if self.results_to_stderr:
            self.error(line)
        elif self._bar is not None and sys.stdout.isatty():
            # Same terminal as the bar: pause it so the line lands above, not inside, it.
            self._bar.stop()
            typer.echo(line)
            self._bar.start()
        else:
            try:
                typer.echo(line)
            except OSError as exc:
                raise _stdout_error(exc) from None

    def error(self, line: str) -> None:
        """A diagnostic line on stderr."""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            typer.echo(line, err=True)
