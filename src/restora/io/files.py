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


def temp_name(path: Path, token: str | None = None) -> Path:
    """The sibling a write of ``path`` goes through: hidden, so folder scans skip it, and in the
    same directory, so the final rename stays on one file system (atomic). ``token`` (random
    unless given) tells concurrent writers of one path apart, so neither writes into the
    other's temporary file."""
    return path.with_name(f".{path.name}.{token or secrets.token_hex(6)}.tmp")


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
