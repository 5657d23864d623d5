"""Restora: self-hosted face and photo restoration.

The public API is imported lazily so that ``import restora`` (and the CLI's ``--help``) stays fast
and does not load torch until a model is actually needed.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "decode": ("restora.io", "decode"),
    "encode": ("restora.io", "encode"),
    "Image": ("restora.io", "Image"),
    "Runtime": ("restora.models.runtime", "Runtime"),
    "enhance_faces": ("restora.pipeline.enhance", "enhance_faces"),
    "restore_photo": ("restora.pipeline.photo", "restore_photo"),
    "Settings": ("restora.config", "Settings"),
    "RestoraError": ("restora.errors", "RestoraError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'restora' has no attribute {name!r}")
