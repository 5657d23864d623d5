"""Typed errors with stable machine codes.

Every error a caller can see is a :class:`RestoraError`: it carries a ``code`` that never changes
between releases (clients switch on it), one human sentence, and the HTTP status the service maps
it to. The CLI prints ``error[code]: message`` and exits non-zero; the service answers with JSON.
"""

from __future__ import annotations

from typing import Any


class RestoraError(Exception):
    """Base class: ``code`` is machine-readable, ``message`` one human sentence."""

    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None,
                 **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}

    def __str__(self) -> str:
        return self.message


# --- input images -------------------------------------------------------------------------------

class InputError(RestoraError):
    code = "invalid_input"
    http_status = 400


class EmptyFile(InputError):
    code = "empty_file"


class FileNotReadable(InputError):
    """A path that could not be read as an image file: not permitted, or not a regular file (a
    folder, FIFO, device or socket). ``reason`` is the cause in a word or two, ``path`` the
    path. Not a format problem: the file's content was never looked at."""

    code = "file_not_readable"


class FileNotFound(FileNotReadable):
    """A path that does not exist (or whose folder does not)."""

    code = "file_not_found"


class UnsupportedFormat(InputError):
    code = "unsupported_format"
    http_status = 415


class CorruptImage(InputError):
    code = "corrupt_image"
    http_status = 422


class FileTooLarge(InputError):
    code = "file_too_large"
    http_status = 413


class ImageTooLarge(InputError):
    code = "image_too_large"
    http_status = 413


class TooManyFrames(InputError):
    code = "too_many_frames"
    http_status = 413


class OutputTooLarge(InputError):
    """The requested output (upscale factor or output size) exceeds the output-pixel limit."""

    code = "output_too_large"
    http_status = 413


class InvalidParameter(InputError):
    """A setting is unknown or out of range; ``field`` names it."""

    code = "invalid_parameter"

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


# --- models -------------------------------------------------------------------------------------

class ModelError(RestoraError):
    code = "model_error"
    http_status = 500


class UnknownModel(ModelError):
    code = "unknown_model"
    http_status = 404


class ModelNotInstalled(ModelError):
    """A model the job needs is not on disk; the message names bundle and install command."""

    code = "model_not_installed"
    http_status = 503


class ChecksumMismatch(ModelError):
    code = "checksum_mismatch"
    http_status = 502


class DownloadError(ModelError):
    code = "download_failed"
    http_status = 502


class OfflineError(ModelError):
    code = "offline"
    http_status = 503


class ModelStorageError(ModelError):
    """The models folder cannot take a file: ``disk_full`` (no space or quota left, or the file
    size limit) or ``models_not_writable`` (read-only, not a folder, no permission). A partial
    download stays where it is (``partial`` names it) so that the next pull resumes."""

    code = "models_not_writable"
    http_status = 507


class CheckpointError(ModelError):
    """A checkpoint file does not match the architecture it is declared for."""

    code = "bad_checkpoint"


# --- jobs ---------------------------------------------------------------------------------------

class Cancelled(RestoraError):
    code = "cancelled"
    http_status = 409
