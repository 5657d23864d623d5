"""Models: registry of known checkpoints, verified downloads, strict loading, and the Runtime.

``Registry`` and ``ModelSpec`` are plain data (no torch); ``Runtime`` imports torch when built.
"""

from __future__ import annotations

from typing import Any

from restora.models.registry import ARCHITECTURES, TASKS, ModelSpec, Registry

__all__ = ["ARCHITECTURES", "TASKS", "ModelSpec", "Registry", "Runtime"]


def __getattr__(name: str) -> Any:
    if name == "Runtime":
        from restora.models.runtime import Runtime

        return Runtime
    raise AttributeError(f"module 'restora.models' has no attribute {name!r}")
