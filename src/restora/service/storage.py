"""Result storage: where a job's input and output files live.

One small interface so nothing assumes the worker and the API share a process or a disk: a
worker writes through it, any API node reads through it. The default is a local folder, which
may be a shared mount (NFS, a Compose volume) when API nodes and workers run on several hosts;
an object-store implementation would stage files through the same five calls.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

from restora.io.files import write_atomic


class ResultStorage(Protocol):
    def job_dir(self, job_id: str) -> Path:
        """A local folder for the job (``input/``, ``output/``), created on demand."""

    def save(self, job_id: str, area: str, name: str, data: bytes) -> Path:
        """Write ``area/name`` atomically (readers never see half a file)."""

    def path(self, job_id: str, area: str, name: str) -> Path | None:
        """The readable file, or None."""

    def delete(self, job_id: str) -> None: ...

    def ping(self) -> None:
        """Raise if the storage cannot be written (readiness)."""


class LocalFolderStorage:
    """``root/<job id>/{input,output}/<name>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def save(self, job_id: str, area: str, name: str, data: bytes) -> Path:
        path = self.job_dir(job_id) / area / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, data)

    def path(self, job_id: str, area: str, name: str) -> Path | None:
        path = self.job_dir(job_id) / area / name
        return path if path.is_file() else None

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def ping(self) -> None:
        probe = self.root / ".ready"
        probe.write_bytes(b"ok")
        probe.unlink(missing_ok=True)
