"""CLI: ``restora models list|pull|import|verify|path|engines``.

Only the registry (plain data) is imported at module level; httpx, rich and torch load inside the
commands that need them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from restora.cli._batch import path_arg

if TYPE_CHECKING:
    from restora.config import Settings
    from restora.models.registry import Registry

models_app = typer.Typer(name="models", no_args_is_help=True, rich_markup_mode=None,
                         help="List, download, import and verify model files.")


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root app."""
    app.add_typer(models_app, name="models")


def _registry() -> tuple[Settings, Registry]:
    from restora.config import Settings
    from restora.models.registry import Registry

    settings = Settings()
    return settings, Registry.from_settings(settings)


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(size)


@models_app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List known models: task, size, licence, installed, default (--json adds SHA-256, URLs)."""
    from restora.models.registry import redact_url

    _, registry = _registry()
    rows = []
    for spec in registry.all():
        path = registry.path(spec)
        rows.append({
            "id": spec.id, "task": spec.task, "arch": spec.arch, "filename": spec.filename,
            "size": spec.size, "sha256": registry.expected_sha256(spec),
            "sha256Published": spec.sha256 is not None, "license": spec.license,
            "commercialUse": spec.commercial_use, "installed": path.is_file(),
            "default": spec.default, "bundles": list(spec.bundles), "path": str(path),
            # credentials a manifest URL carries (user:token@, signed query) stay out of output
            "urls": [redact_url(u) for u in spec.urls], "custom": registry.is_custom(spec),
            "description": spec.description,
        })
    if as_json:
        typer.echo(json.dumps({"models": rows, "bundles": registry.bundles(),
                               "modelsDir": str(registry.models_dir)}, indent=2))
        return
    header = ("id", "task", "size", "licence", "commercial", "installed", "default")
    table = [header] + [(r["id"], r["task"], _human(r["size"]), r["license"].split(" (")[0],
                         "yes" if r["commercialUse"] else "no",
                         "yes" if r["installed"] else "-", "*" if r["default"] else "")
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    # Plain aligned text: never truncated, whatever the terminal width, and easy to grep.
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    typer.echo("bundles: " + "; ".join(f"{k} ({', '.join(v)})"
                                       for k, v in registry.bundles().items()))


@models_app.command("pull")
def pull(
    names: list[str] = typer.Argument(..., metavar="ID|BUNDLE...",
                                      help="Model ids or bundle names."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1,
                                  help="Seconds without data before a download is retried."),
    retries: int = typer.Option(4, "--retries", min=0, help="Retries per URL."),
) -> None:
    """Download models (verified by SHA-256) into $RESTORA_HOME/models."""
    from restora.models.download import DownloadOptions
    from restora.models.download import pull as pull_file

    settings, registry = _registry()
    specs = {s.id: s for name in names for s in registry.resolve(name)}
    options = DownloadOptions(read_timeout=timeout, retries=retries,
                              progress=False if quiet else None)
    from restora.errors import DownloadError, OfflineError

    from restora.cli._checks import cannot_pull

    todo = [s for s in specs.values() if not registry.is_installed(s)]
    for spec in specs.values():
        if registry.is_installed(spec):
            typer.echo(f"{spec.id}: already installed at {registry.path(spec)}")
    # A model without a download URL is said first, in one line each; the others still come.
    unpullable = [s for s in todo if not s.urls]
    for spec in unpullable:
        typer.echo(f"error[model_not_installed]: {cannot_pull(registry, spec)}", err=True)
    todo = [s for s in todo if s.urls]
    for i, spec in enumerate(todo):
        try:
            path = pull_file(registry, spec, offline=settings.offline, options=options,
                             on_wait=lambda msg: typer.echo(msg, err=True))
        except (DownloadError, OfflineError) as exc:
            # Without network every other download would fail the same way, slowly: stop
            # here and say how to install the rest by hand.
            typer.echo(f"error[{exc.code}]: {exc.message}", err=True)
            typer.echo(manual_install_help(registry, todo[i:], offline=settings.offline),
                       err=True)
            raise typer.Exit(1) from None
        typer.echo(f"{spec.id}: installed at {path}")
    if unpullable:
        raise typer.Exit(1)


def manual_install_help(registry: Registry, specs: list, *, offline: bool) -> str:
    """What to do when models cannot be downloaded here: the files to fetch by hand (URL and
    SHA-256), the import command, and RESTORA_OFFLINE."""
    from restora.models.registry import redact_url

    lines = ["To install without network access here, download these files on a machine that "
             "has it:"]
    for spec in specs:
        sha = registry.expected_sha256(spec)
        url = spec.urls[0] if spec.urls else None
        shown = redact_url(url) if url else "(no URL known)"
        hidden = "  (credentials hidden: see RESTORA_MODELS)" if url and shown != url else ""
        lines.append(f"  {spec.id}: {shown}" + (f"  (SHA-256 {sha})" if sha else "") + hidden)
    lines.append("then copy them here and run `restora models import FILE` for each (the "
                 "SHA-256 identifies the model; add `--id ID` for files without one).")
    lines.append("RESTORA_OFFLINE=1 is set: Restora will not try the network." if offline else
                 "Set RESTORA_OFFLINE=1 to make Restora never try the network.")
    return "\n".join(lines)


@models_app.command("import")
def import_model(
    file: Path = typer.Argument(..., metavar="FILE", parser=path_arg("FILE", "file",
                                                                      "a checkpoint file"),
                                help="A checkpoint file you already have."),
    model_id: Optional[str] = typer.Option(  # noqa: UP007 - typer needs Optional here
        None, "--id", help="The model this file is; without it the SHA-256 identifies it."),
) -> None:
    """Install a local file after checking its SHA-256."""
    import filecmp
    import stat

    from restora.errors import DownloadError
    from restora.models.download import import_file

    try:  # an unreadable file is one line here, not a PermissionError from the hashing
        if stat.S_ISREG(file.stat().st_mode):
            file.open("rb").close()
    except (FileNotFoundError, NotADirectoryError):
        pass  # import_file says it is not a file
    except OSError as exc:
        raise DownloadError(f"cannot read {file}: {exc.strerror or exc}", code="import_failed",
                            path=str(file)) from None
    _, registry = _registry()
    if model_id is not None and file.is_file():
        spec = registry.get(model_id)
        dest = registry.path(spec)
        # Nothing to check the file against (a manifest's own model, no published hash): the
        # installed file, perhaps the user's only copy, must not be replaced by any other.
        if (registry.expected_sha256(spec) is None and dest.is_file()
                and not filecmp.cmp(file, dest, shallow=False)):
            raise DownloadError(f"'{spec.id}' is already installed at {dest}, and with no known "
                                f"SHA-256 {file} cannot be checked against it; nothing was "
                                f"installed (to replace it, move {dest} away first)",
                                code="import_failed", path=str(file))
    spec = import_file(registry, file, model_id)
    typer.echo(f"{spec.id}: installed at {registry.path(spec)}")


@models_app.command("verify")
def verify(
    names: Optional[list[str]] = typer.Argument(  # noqa: UP007
        None, metavar="[ID|BUNDLE...]", help="Default: every installed model."),
) -> None:
    """Re-hash installed files; exits 1 if any does not match its SHA-256."""
    from restora.models.download import verify as verify_file

    _, registry = _registry()
    specs = ([s for n in names for s in registry.resolve(n)] if names else
             [s for s in registry.all() if registry.is_installed(s)])
    bad = 0
    for spec in specs:
        result = verify_file(registry, spec)
        if result.status == "ok":
            typer.echo(f"ok          {spec.id}")
        elif result.status == "unverified":
            typer.echo(f"unverified  {spec.id} (no known SHA-256; file has {result.sha256})")
        elif result.status == "missing":
            typer.echo(f"missing     {spec.id}")
        else:
            bad += 1
            typer.echo(f"MISMATCH    {spec.id}: {registry.path(spec)} has SHA-256 "
                       f"{result.sha256}, expected {result.expected}; delete it and run "
                       f"`restora models pull {spec.id}`", err=True)
    if not specs:
        typer.echo("no models installed")
    if bad:
        raise typer.Exit(1)


@models_app.command("path")
def path(
    model_id: Optional[str] = typer.Argument(None, help="A model id; default: the models folder."),  # noqa: UP007
) -> None:
    """Print the models folder, or where a model's file is (or will be)."""
    _, registry = _registry()
    # '' (an unset shell variable) is an unknown id, not a request for the folder
    typer.echo(str(registry.path(registry.get(model_id)) if model_id is not None
                   else registry.models_dir))


def _verdict(meta: dict) -> str:
    """What the accuracy check decided for a cache entry (see ``EngineFactory._verify``);
    :func:`_mark_coarse` then names the entries ``auto`` runs as coarse graphs."""
    if "measure" in meta:
        return "kept" if meta.get("ok") else "refused"
    return "not checked" if meta.get("ok") else "export failed"


def engine_entries(root: Path, amx: bool | None = None
                   ) -> tuple[list[dict], list[str]]:
    """The export cache's entries under ``root`` (one row each, sorted by model id, engine,
    precision) and the folders whose ``meta.json`` could not be read. Reads only: an
    unreadable entry is rebuilt by the engine factory when a network next needs it.

    A row says what ``auto`` does with a coarse candidate (see :func:`_mark_coarse`); ``amx``:
    whether this CPU has AMX (read here when None)."""
    from restora.models.engines import cpu_has_amx

    rows, unreadable, metas = [], [], []
    for meta_path in sorted(root.glob("*/*/meta.json")) if root.is_dir() else []:
        if meta_path.parent.name.startswith("."):  # an export still being built
            continue
        try:
            meta = json.loads(meta_path.read_text())
            key = meta["key"]
            row = {"modelId": str(key["model_id"]), "engine": str(key["engine"]),
                   "engineVersion": key.get("engine_version"),
                   "precision": str(key["precision"]), "verdict": _verdict(meta),
                   "measure": meta.get("measure"), "reason": meta.get("reason"),
                   "bound": meta.get("bound"), "scale": meta.get("scale"),
                   "scaleMeasure": meta.get("scale_measure"), "cpuSeconds": meta.get("cpu_s"),
                   "coarseFrom": None, "coarseNote": None,
                   "shape": key.get("shape"), "torch": key.get("torch"),
                   "modelSha256": key.get("model"), "path": str(meta_path.parent)}
        except (OSError, ValueError, KeyError, TypeError):
            unreadable.append(str(meta_path.parent))
            continue
        rows.append(row)
        metas.append(meta)
    _mark_coarse(list(zip(rows, metas)), cpu_has_amx() if amx is None else amx)
    rows.sort(key=lambda r: (r["modelId"], r["engine"], r["precision"]))
    return rows, unreadable


def _mark_coarse(entries: list[tuple[dict, dict]], amx: bool) -> None:
    """Say in each coarse candidate's row (a parser's bf16 graphs) what ``auto`` does with it.

    Per model file (and shapes, torch, export format), the exact graph is the first ``kept``
    entry in ``auto``'s order; the candidates beside it get ``engines.coarse_tiers``, the rule
    ``EngineFactory.coarse`` applies. A tier's verdict becomes ``coarse (k >= K)``
    (``coarseFrom``: K) whatever its exact verdict; every candidate's ``coarseNote`` says where
    it serves, or why it serves no scale."""
    from restora.models.engines import coarse_refusal, coarse_tiers, cpu_candidates, policy_for

    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for row, meta in entries:
        key = meta["key"]
        groups.setdefault((key.get("model"), row["modelId"], key.get("shape"), key.get("torch"),
                           key.get("format")), []).append((row, meta))
    for group in groups.values():
        task = _task_of(group)
        policy = policy_for(task) if task is not None else None
        if policy is None or not policy.coarse:
            continue
        kept = {(r["engine"], r["precision"]): r for r, _ in group if r["verdict"] == "kept"}
        exact = next((kept[c] for c in cpu_candidates(policy.cpu, amx) if c in kept), None)
        found = [(r, m) for r, m in group if r is not exact and "measure" in m
                 and (r["engine"], r["precision"]) in policy.coarse]
        if not found:
            continue
        exact_s = exact["cpuSeconds"] if exact is not None else None
        if exact is None or exact_s is None:
            why = ("no exact graph is kept" if exact is None else
                   f"the exact graph's ({exact['engine']}/{exact['precision']}) probe was not "
                   "timed")
            for row, _ in found:
                row["coarseNote"] = f"not used for small faces: {why}"
            continue
        name = f"{exact['engine']}/{exact['precision']}"
        tiers = coarse_tiers(found, exact_s)
        for row, at in tiers:
            row["verdict"], row["coarseFrom"] = f"coarse (k >= {at})", at
            row["coarseNote"] = (f"used for faces pasted at {at} or more parse px per output "
                                 f"px (probe {row['cpuSeconds']:g} CPU-s, {name}'s {exact_s:g})")
        for row, meta in found:
            if row["coarseFrom"] is not None:
                continue
            why = coarse_refusal(meta, exact_s)
            if why is None:  # usable, but a tier from a finer (or the same) scale is as quick
                finer = [(r, k) for r, k in tiers if k <= int(meta["scale"])][-1][0]
                why = (f"{finer['engine']}/{finer['precision']} serves from k >= "
                       f"{finer['coarseFrom']} and is at least as quick "
                       f"({finer['cpuSeconds']:g} CPU-s)")
            row["coarseNote"] = f"not used for small faces: {why}"


def _task_of(group: list[tuple[dict, dict]]) -> str | None:
    """The task a model's verdicts were checked for: recorded in each verdict, or for entries
    verified before it was (export format 2) the task whose bound they record."""
    from restora.models.engines import POLICIES

    found = {meta["task"] for _, meta in group if meta.get("task")}
    if not found:
        bounds = {meta.get("bound") for _, meta in group} - {None}
        found = {task for task, policy in POLICIES.items() if policy.bound in bounds}
    return found.pop() if len(found) == 1 else None


def _prepare(settings: Settings
             ) -> tuple[dict[str, str], dict[str, str], list[dict[str, Any]]]:
    """Build the engine (and a parser's coarse graphs) of every installed model with a torch
    module, printing ``id: engine/precision`` and one line per failure, then settle OpenVINO's
    compiled blobs (:func:`restora.models.engines.settle_compiled`) so the next process imports
    them; returns {id: "engine/precision"}, {id: error} and the graphs settled."""
    import warnings

    from restora.errors import RestoraError
    from restora.models.engines import settle_compiled
    from restora.models.registry import FILE_ARCHS
    from restora.models.runtime import Runtime

    runtime = Runtime(settings)
    typer.echo(f"preparing engines (RESTORA_ENGINE={runtime.engines.choice}, device "
               f"{runtime.device}, cache {settings.engines_dir})")
    specs = [s for s in runtime.registry.all() if runtime.registry.is_installed(s)]
    prepared: dict[str, str] = {}
    failed: dict[str, str] = {}
    for spec in specs:
        if spec.arch in FILE_ARCHS:  # run by OpenCV or dlib from the file: nothing to export
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                net = runtime.load(spec.id)
                if not net.exportable:
                    runtime.unload(spec.id)
                    continue
                net.prepare()  # a parser's coarse graphs too
            for warning in caught:
                typer.echo(f"  note: {warning.message}", err=True)
            prepared[spec.id] = net.engine_label
            typer.echo(f"{spec.id}: {prepared[spec.id]}")
        except RestoraError as exc:
            failed[spec.id] = f"error[{exc.code}]: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - one line per model, then the next one
            failed[spec.id] = f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        finally:
            runtime.unload(spec.id)  # one network in memory at a time
        if spec.id in failed:
            typer.echo(f"{spec.id}: {failed[spec.id]}", err=True)
    if not specs:
        typer.echo("no models installed")
    settled = settle_compiled(settings.engines_dir)
    left = sum(not s["imported"] for s in settled)
    typer.echo(f"settled {len(settled) - left} compiled graph(s)"
               + (f"; {left} not (the next process compiles them)" if left else ""))
    return prepared, failed, settled


def _prune(settings: Settings) -> list[dict]:
    """:func:`restora.models.engines.prune_cache` with the SHA-256 of every model file
    installed under these settings (memoized per file in the cache's hashes.json)."""
    from restora.models.engines import ExportCache, prune_cache
    from restora.models.registry import Registry

    registry = Registry.from_settings(settings)
    cache = ExportCache(settings.engines_dir)
    hashes = {cache.model_hash(registry.path(spec)) for spec in registry.all()
              if registry.is_installed(spec)}
    return prune_cache(settings.engines_dir, hashes)


@models_app.command("engines")
def engines(
    prepare: bool = typer.Option(False, "--prepare", help="First export and check the engine "
                                 "of every installed model and settle OpenVINO's compiled "
                                 "graphs (the deploy step: the first request then pays no "
                                 "export, the next process no compile)."),
    prune: bool = typer.Option(False, "--prune", help="First delete the entries this install "
                               "can no longer use (another OpenVINO, ONNX Runtime, torch or "
                               "NNCF version, an older export format or precision, a model "
                               "file no longer installed) and unfinished exports."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the export cache: each model's engine, precision and verdict (what ``auto`` does
    with it)."""
    from pydantic import ValidationError

    from restora.config import Settings, settings_error_line

    try:
        settings = Settings()
    except ValidationError as exc:  # e.g. RESTORA_ENGINE=bogus: one line, not a traceback
        typer.echo(f"error[invalid_settings]: {settings_error_line(exc)}", err=True)
        raise typer.Exit(1) from None
    prepared: dict[str, str] = {}
    failed: dict[str, str] = {}
    settled: list[dict[str, Any]] = []
    if prepare:
        import contextlib
        import sys

        # --json: stdout carries only the JSON (exporters print progress bars to stdout)
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            prepared, failed, settled = _prepare(settings)
    pruned = _prune(settings) if prune else []
    if prune and not as_json:
        for p in pruned:
            key = p["key"] or {}
            what = (f"{key.get('model_id')} {key.get('engine')}/{key.get('precision')}"
                    if key else p["path"])
            typer.echo(f"pruned {what}: {p['why']} ({p['bytes'] / 2**20:.1f} MiB)")
        typer.echo(f"pruned {len(pruned)} cache entries, "
                   f"{sum(p['bytes'] for p in pruned) / 2**20:.1f} MiB freed")
    rows, unreadable = engine_entries(settings.engines_dir)
    for folder in unreadable:
        typer.echo(f"unreadable cache entry (rebuilt when next needed): {folder}", err=True)
    if as_json:
        out: dict = {"engines": rows, "engineCache": str(settings.engines_dir)}
        if prepare:
            out.update(prepared=prepared, failed=failed)
            out["settled"] = [{"path": s["path"], "modelId": s["key"].get("model_id"),
                               "precision": s["key"].get("precision"), "graph": s["graph"],
                               "compiles": s["compiles"], "imported": s["imported"]}
                              for s in settled]
        if prune:
            out["pruned"] = [{"path": p["path"], "why": p["why"], "bytes": p["bytes"],
                              **{name: key.get(field) for name, field in (
                                  ("modelId", "model_id"), ("engine", "engine"),
                                  ("precision", "precision"))}}
                             for p in pruned for key in [p["key"] or {}]]
        typer.echo(json.dumps(out, indent=2))
    elif not rows:
        if not prepare:
            why = ("; run `restora models engines --prepare` to build them now (otherwise each "
                   "model exports on its first use)")
        elif settings.engine == "torch":
            why = " (RESTORA_ENGINE=torch runs the modules themselves: nothing is exported)"
        elif not prepared and not failed:
            why = (" (no installed model has a network to export; `restora models list` shows "
                   "what is installed, `restora models pull` fetches it)")
        else:
            why = ""
        typer.echo(f"no exported engines in {settings.engines_dir}{why}")
    else:
        header = ("model", "engine", "precision", "verdict", "scale", "cpu_s", "measure")
        table = [header] + [
            (r["modelId"], r["engine"], r["precision"], r["verdict"],
             "-" if r["scale"] is None else str(r["scale"]),
             "-" if r["cpuSeconds"] is None else f"{r['cpuSeconds']:g}",
             "; ".join(filter(None, (r["measure"] or r["reason"], r["coarseNote"]))))
            for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
        for row in table:
            typer.echo(("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  "
                        + row[-1]).rstrip())
    if failed:
        raise typer.Exit(1)
