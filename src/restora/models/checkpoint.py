"""Strict checkpoint loading: safe unpickling, the documented nestings, exact key sets.

Official checkpoints come in a few layouts: BasicSR training files keep the tensors under
``params_ema`` and/or ``params``, facelib detectors are plain dicts whose keys may start with
``module.`` (saved from ``DataParallel``). Loading is always ``weights_only=True`` (no code runs
from a model file) and always strict: a misnamed key must fail loudly instead of leaving a layer
at its random initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restora.errors import CheckpointError

if TYPE_CHECKING:
    import torch

_SHOWN = 5  # how many key names an error message lists


def load_state_dict(path: str | Path, nesting: str | None = None,
                    strip_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Read ``path`` on the CPU and return its flat ``name -> tensor`` dict.

    ``nesting`` names the key the file is expected to use; whatever it says, the loader rule of
    the references applies: ``params_ema`` if present, else ``params``, else the dict itself
    (``nesting='params'`` prefers ``params`` when both exist). ``strip_prefix`` is removed from
    every key that starts with it.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint file {path} does not exist", path=str(path)) from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path.name} is not a loadable PyTorch checkpoint "
                              f"(weights-only load failed: {_first_line(exc)})",
                              path=str(path)) from exc
    state = _unnest(obj, nesting, path)
    if strip_prefix:
        n = len(strip_prefix)
        state = {(k[n:] if k.startswith(strip_prefix) else k): v for k, v in state.items()}
    return state


def _unnest(obj: Any, nesting: str | None, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a state dict",
                              path=str(path))
    order = ("params", "params_ema") if nesting == "params" else ("params_ema", "params")
    inner = next((obj[k] for k in order if k in obj), obj)
    if not isinstance(inner, Mapping):
        raise CheckpointError(f"{path.name}: the weights entry is a {type(inner).__name__}, "
                              "not a dict of tensors", path=str(path))
    bad = [k for k, v in inner.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path.name} is not a flat dict of tensors (e.g. entry "
                              f"{bad[0]!r}); expected nesting {nesting or 'none'}",
                              path=str(path))
    return dict(inner)


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *,
              name: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` strictly; any difference is one clear CheckpointError."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_names(unexpected)})")
        raise CheckpointError(f"{name} does not match {type(model).__name__}: "
                              + " and ".join(parts)
                              + "; check the model's arch and hparams",
                              missing=missing[:50], unexpected=unexpected[:50])
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{name} does not match {type(model).__name__}: {len(wrong)} "
                              f"tensor(s) have the wrong shape (checkpoint vs model: "
                              f"{_names(wrong)}); check the model's hparams")
    model.load_state_dict(dict(state), strict=True)


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
