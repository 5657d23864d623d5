"""The ``restora`` command line.

Each area registers its own sub-commands (``models``, ``enhance-faces``, ``restore-photo``,
``serve``, ``worker``); heavy imports (torch, cv2) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Any, Callable, NoReturn

#: What Ctrl+C prints wherever it lands (a batch's summary says it its own way).
INTERRUPTED = "error[cancelled]: interrupted by SIGINT"


def _interrupted_while_starting() -> NoReturn:
    """Ctrl+C while the command's modules load (a few tenths of a second, longer on a cold
    disk): the one line, exit 130, not an import traceback."""
    sys.stderr.write(INTERRUPTED + "\n")
    raise SystemExit(130) from None


try:
    import typer

    from restora import __version__
    from restora.errors import RestoraError
except KeyboardInterrupt:
    _interrupted_while_starting()

app = typer.Typer(
    name="restora",
    help="Restore faces (GFPGAN v1.4, CodeFormer) and repair old photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help: flags without "<bool>", no boxes, readable when piped or grepped.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"restora {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Restore faces and repair old photos."""


def _cancellable(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` printing :data:`INTERRUPTED` and exiting 130 on Ctrl+C: typer turns a
    KeyboardInterrupt into a silent exit 130, so Ctrl+C while models load said nothing."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo(INTERRUPTED, err=True)
            raise typer.Exit(130) from None

    return run


def _register() -> None:
    from restora.cli import enhance, models, restore, serve, worker

    for module in (models, enhance, restore, serve, worker):
        module.register(app)
    groups = [app, *(group.typer_instance for group in app.registered_groups)]
    for info in (info for group in groups if group is not None
                 for info in group.registered_commands):
        if info.callback is not None:
            info.callback = _cancellable(info.callback)


try:
    _register()
except KeyboardInterrupt:
    _interrupted_while_starting()


def main(argv: list[str] | None = None) -> int:
    """Entry point: turns every :class:`RestoraError` and every bad ``RESTORA_*`` setting into
    one readable line and exit code 1, and a usage error (unknown option, bad value, missing
    argument) into one ``error[usage]`` line and exit code 2."""
    try:
        from pydantic import ValidationError

        from restora.config import Settings, settings_error_line
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        return 130
    # the engines log each of their warnings (one plain line on stderr) and also raise it as a
    # RuntimeWarning for library callers: here that would print it twice, with a source line
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"restora\.models\.")
    # click's UsageError, from whichever click typer uses (its own copy in recent versions)
    usage_error = typer.BadParameter.__base__
    try:
        code = app(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else 0
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as before
            exc.show()
        else:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            typer.echo(f"error[usage]: {' '.join(exc.format_message().split())}{where}",
                       err=True)
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    except RestoraError as exc:
        from restora.cli._batch import one_line  # a file name in it may hold a newline

        typer.echo(f"error[{exc.code}]: {one_line(exc.message)}", err=True)
        return 1
    except ValidationError as exc:
        if not any(cls.__name__ == exc.title for cls in _settings_classes(Settings)):
            raise  # not the environment's fault: a bug, keep its traceback
        typer.echo(f"error[invalid_settings]: {settings_error_line(exc)}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        return 130
    return 0


def _settings_classes(base: type) -> list[type]:
    """``Settings`` and its subclasses (the service's): whose errors come from the environment."""
    return [base, *(c for sub in base.__subclasses__() for c in _settings_classes(sub))]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
