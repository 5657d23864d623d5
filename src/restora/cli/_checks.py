"""Checks the per-image commands make before any work: the output is writable, the models the
job needs are installed (all missing ones named in one message)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from restora.errors import InvalidParameter, ModelNotInstalled, RestoraError

#: restorer choice -> architecture (the pipeline picks among installed models the same way)
RESTORER_ARCH = {"gfpgan": "gfpgan_v1_clean", "codeformer": "codeformer"}


class OutputNotWritable(RestoraError):
    """The output folder or file cannot be created or written."""

    code = "output_not_writable"


def check_output(output: Path, *, file_target: bool,
                 keep: frozenset[tuple[int, int]] = frozenset()) -> None:
    """Fail with one line, before any image is processed, unless results can be written.

    ``file_target``: ``output`` names the result file itself (one input, an image suffix);
    otherwise it is a folder, created if missing. ``keep``: the inputs' file ids
    (:func:`restora.cli._batch.file_ids`), which a result file must not be.
    """
    from restora.cli._batch import file_ids

    folder = output.parent if file_target else output
    if file_target and os.path.isdir(output):
        raise InvalidParameter("output", f"output {output} is a folder, not a file name")
    if file_target and file_ids([output]) & keep:
        raise InvalidParameter("output", f"output {output} is an input of this run; give "
                               "another name (a result never replaces its source)")
    if not file_target and os.path.exists(output) and not os.path.isdir(output):
        raise InvalidParameter("output", f"output {output} is an existing file, not a folder "
                               "(give a folder, or a new file name for a single input)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritable(f"cannot create output folder {folder}: "
                                f"{exc.strerror or exc}", path=str(folder)) from None
    # Permissions alone do not tell (read-only mounts, /proc, root): write and remove a file.
    try:
        fd, probe = tempfile.mkstemp(prefix=".restora-", suffix=".tmp", dir=folder)
        try:
            os.close(fd)
        finally:  # Ctrl+C here too: no probe file left behind
            os.unlink(probe)
    except OSError as exc:
        raise OutputNotWritable(f"cannot write into output folder {folder}: "
                                f"{exc.strerror or exc}", path=str(folder)) from None


def _missing(runtime: Any, task: str, arch: str | None = None) -> Any | None:
    """The default spec for (task, arch) when no such model is installed, else None."""
    registry = runtime.registry
    if registry.installed(task, arch):
        return None
    return registry.default(task, arch)


def require_models(runtime: Any, needs: Iterable[tuple[str, str | None]],
                   specific: Iterable[str] = ()) -> None:
    """Raise one :class:`ModelNotInstalled` naming every missing model the job needs.

    ``needs`` are (task, architecture or None) pairs; ``specific`` are model ids asked for by
    name (``--model``, ``--detector``).
    """
    registry = runtime.registry
    missing = [spec for task, arch in needs if (spec := _missing(runtime, task, arch))]
    for model_id in specific:
        spec = registry.get(model_id)
        if not registry.is_installed(spec):
            missing.append(spec)
    if not missing:
        return
    if len(missing) == 1:
        raise runtime.not_installed(missing[0])
    names = ", ".join(f"'{s.id}' ({s.task})" for s in missing)
    command, others = install_advice(registry, missing)
    how = (f"run `{command}`, or install files you already have with `restora models import "
           f"FILE --id ID`{others}" if command else others[2:])
    raise ModelNotInstalled(
        f"{len(missing)} models this job needs are not installed: {names}; {how}",
        models=[s.id for s in missing], command=command)


def cannot_pull(registry: Any, spec: Any) -> str:
    """Why ``spec`` cannot be downloaded, and how to install it instead (one sentence)."""
    if spec.package is not None:
        return (f"'{spec.id}' cannot be downloaded: pip installs it; run "
                f"`pip install '{spec.package}'`")
    return (f"'{spec.id}' cannot be downloaded: it has no download URL (its file "
            f"{registry.path(spec)} does not exist); fix its 'path' in the model manifest, or "
            f"install a copy with `restora models import FILE --id {spec.id}`")


def install_advice(registry: Any, specs: Iterable[Any]) -> tuple[str | None, str]:
    """(the ``restora models pull`` command for the models among ``specs`` that can be
    downloaded, or None; the sentences for those that cannot, each starting "; ")."""
    specs = list(specs)
    targets = list(dict.fromkeys(t for s in specs if (t := registry.pull_target(s))))
    others = "".join(f"; {cannot_pull(registry, s)}" for s in specs if not s.urls)
    return (f"restora models pull {' '.join(targets)}" if targets else None), others


def enhance_needs(model: str, detector: str | None) -> tuple[list[tuple[str, str | None]],
                                                             list[str]]:
    """(task needs, specific ids) of an enhance-faces job."""
    needs: list[tuple[str, str | None]] = []
    specific: list[str] = []
    if model in RESTORER_ARCH or model == "auto":
        needs.append(("face-restoration", RESTORER_ARCH.get(model)))
    else:
        specific.append(model)
    if detector and detector != "auto":
        specific.append(detector)
    else:
        needs.append(("face-detection", None))
    return needs, specific


def face_models_missing(runtime: Any) -> str | None:
    """Why restore-photo cannot enhance faces (a message), or None when it can."""
    missing = [s for task in ("face-detection", "face-restoration")
               if (s := _missing(runtime, task))]
    if not missing:
        return None
    command, others = install_advice(runtime.registry, missing)
    run = f"run `{command}` to enable it{others}, or" if command else f"{others[2:]}; or"
    return (f"no face models installed ({', '.join(s.id for s in missing)}): faces will not "
            f"be enhanced; {run} pass --no-face-enhancement")
