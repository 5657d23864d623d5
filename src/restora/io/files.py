"""Writing output files so that a reader never sees half of one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: What an output is made of: its bytes, or a function writing them into an open binary file
#: (a streaming encoder, so a large image is never held encoded in memory).
Payload = bytes | Callable[[BinaryIO], None]


#: the longest file name (bytes) where the file system does not say (Linux, macOS, Windows)
NAME_MAX = 255
#: what stands for the middle of a name shortened to fit
_CUT = "~"


def temp_name(path: Path, token: str | None = None) -> Path:
    """The sibling a write of ``path`` goes through: hidden, so folder scans skip it, and in the
    same directory, so the final rename stays on one file system (atomic). ``token`` (random
    unless given) tells concurrent writers of one path apart, so neither writes into the
    other's temporary file.

    Where ``path``'s name fits the file system but ``.<name>.<token>.tmp`` would not (its
    limit is in bytes of the file-system encoding), the middle of the name is left out: the
    write must not fail for a name the result itself may have. A name already too long is
    kept, so the write fails at once with ``ENAMETOOLONG`` instead of after encoding."""
    token = token or secrets.token_hex(6)
    name, suffix = path.name, f".{token}.tmp"
    limit = _name_max(path.parent)
    room = limit - len(os.fsencode("." + suffix))
    if room < len(os.fsencode(name)) <= limit:
        name = _shorten(name, room)
    return path.with_name(f".{name}{suffix}")


def _name_max(folder: Path) -> int:
    """The file system's longest name in bytes for ``folder`` (:data:`NAME_MAX` where it
    cannot say: no pathconf, or a folder that does not exist)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return NAME_MAX


def _shorten(name: str, room: int) -> str:
    """``name`` with its middle replaced by :data:`_CUT`, at most ``room`` bytes encoded;
    cut between characters, so a multibyte character is never split."""
    sizes = [len(os.fsencode(ch)) for ch in name]  # UTF-8 encodes each character alone
    budget = room - len(os.fsencode(_CUT))
    head = used = 0
    while head < len(name) and used + sizes[head] <= budget - budget // 2:
        used += sizes[head]
        head += 1
    tail = len(name)
    while tail > head and used + sizes[tail - 1] <= budget:
        tail -= 1
        used += sizes[tail]
    return name[:head] + _CUT + name[tail:]


def write_atomic(path: str | os.PathLike[str], data: Payload) -> Path:
    """Write ``data`` to ``path`` through :func:`temp_name` and one ``os.replace``.

    Readers see the old file or the whole new one, never a part. If writing raises (disk full,
    an encoder error, a cancelled job), the temporary file is removed, ``path`` is left as it
    was and the exception propagates unchanged. The parent folder must exist. Several writers
    of one path at once (processes sharing a cache) each write their own temporary file: the
    last replace wins and the file is always one writer's whole output.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        # "x": exclusive create, so a clash of tokens is an error rather than a shared file
        with open(tmp, "xb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
