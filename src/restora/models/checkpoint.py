"""Strict checkpoint loading: safe unpickling, the documented nestings, exact key sets.

Official checkpoints come in a few layouts: BasicSR training files keep the tensors under
``params_ema`` and/or ``params``, facelib detectors are plain dicts whose keys may start with
``module.`` (saved from ``DataParallel``), BOPBTL keeps them under ``model_state``. Loading is
always ``weights_only=True`` (no code runs from a model file) and always strict: a misnamed key
must fail loudly instead of leaving a layer at its random initialisation.

Two more containers (``loader``):

* ``lightning``: a PyTorch Lightning training checkpoint (LaMa's ``best.ckpt``). Besides tensors
  it pickles OmegaConf configs and a ``ModelCheckpoint`` callback. It is still read with
  ``weights_only=True``; the handful of globals such files need are allow-listed by name and
  bound to *inert placeholders* of our own (they store what the pickle hands them and run
  nothing), so neither omegaconf nor Lightning is imported and any other global is refused. The
  tensors are ``state_dict[prefix + key]``; keys without the prefix (discriminator, losses)
  belong to the training system and are dropped.
* ``torchscript``: a TorchScript archive (the re-hosted ``big-lama.pt``). ``torch.jit.load``
  restores TorchScript code and tensors, not arbitrary Python classes; we take its
  ``state_dict()`` and never call the module. Loading does run the TorchScript ``__setstate__``
  methods an archive stores (TorchScript, not Python, but code from the file all the same), so
  the Runtime opens such a file only when its SHA-256 is the pinned one
  (``restora.models.runtime``); this function does not check it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restora.errors import CheckpointError

if TYPE_CHECKING:
    import torch

_SHOWN = 5  # how many key names an error message lists
LOADERS = ("torch", "lightning", "torchscript")
#: nestings that name one required entry of the file (the others are the BasicSR rule)
DIRECT_NESTINGS = ("model_state", "state_dict")

#: Globals a Lightning checkpoint of LaMa needs (the set two public safe loaders allow). The
#: third-party classes are bound to inert placeholders; the builtins and typing.Any are
#: harmless as themselves.
LIGHTNING_PLACEHOLDERS = (
    "omegaconf.nodes.AnyNode", "omegaconf.base.Metadata", "omegaconf.base.ContainerMetadata",
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig",
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint", "collections.defaultdict",
)


class InertPlaceholder(dict):  # type: ignore[type-arg]
    """Stands in for an allow-listed class while unpickling: keeps its arguments and state,
    runs nothing. A dict so that pickled items (``SETITEMS``) land somewhere harmless."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D107 - never calls dict()
        super().__init__()
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.setdefault("__items__", []).append(item)

    def extend(self, items: Any) -> None:
        for item in items:
            self.append(item)


def _placeholders() -> list[Any]:
    import typing

    found: list[Any] = [(type(name.rsplit(".", 1)[1], (InertPlaceholder,),
                              {"__module__": "restora.models.checkpoint.inert"}), name)
                        for name in LIGHTNING_PLACEHOLDERS]
    return found + [(dict, "builtins.dict"), (list, "builtins.list"), (int, "builtins.int"),
                    (typing.Any, "typing.Any")]


def load_state_dict(path: str | Path, nesting: str | None = None,
                    strip_prefix: str | None = None,
                    loader: str = "torch", mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read ``path`` on the CPU and return its flat ``name -> tensor`` dict.

    ``nesting`` names the key the file is expected to use. ``model_state`` and ``state_dict``
    must be there; otherwise the loader rule of the references applies: ``params_ema`` if
    present, else ``params``, else the dict itself (``nesting='params'`` prefers ``params`` when
    both exist). ``strip_prefix`` is removed from every key that starts with it (with the
    ``lightning`` loader, keys without it are dropped). ``loader`` is ``torch``, ``lightning``
    or ``torchscript`` (see the module docstring). ``mmap``: map a zip-format file instead of
    reading it (``torch``/``lightning``; older formats are read), so tensors stay in the page
    cache, backed by the file, until used, and entries never used are never read. Only for files
    replaced atomically, never rewritten in place while mapped.
    """
    import pickle

    import torch

    path = Path(path)
    if loader not in LOADERS:
        raise CheckpointError(f"unknown checkpoint loader '{loader}'", path=str(path))
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist", path=str(path))
    try:
        if loader == "torchscript":
            obj = _torchscript_tensors(path)
        elif loader == "lightning":
            with torch.serialization.safe_globals(_placeholders()):
                obj = _torch_load(path, mmap)
        else:
            obj = _torch_load(path, mmap)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint file {path} does not exist", path=str(path)) from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError,
            *_safetensors_errors()) as exc:
        kind = {"torchscript": "TorchScript archive",
                "lightning": "Lightning checkpoint"}.get(loader, "PyTorch checkpoint")
        raise CheckpointError(f"{path.name} is not a loadable {kind} "
                              f"(weights-only load failed: {_reason(exc, path)})",
                              path=str(path)) from exc
    state = _unnest(obj, nesting, path)
    if loader == "lightning" and strip_prefix:
        state = {k: v for k, v in state.items() if k.startswith(strip_prefix)}
    if strip_prefix:
        n = len(strip_prefix)
        state = {(k[n:] if k.startswith(strip_prefix) else k): v for k, v in state.items()}
    return state


def _torch_load(path: Path, mmap: bool) -> Any:
    import torch

    if mmap:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap can only be used" not in str(exc):  # the legacy (non-zip) format
                raise
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive; the module itself is never called."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; the file is one
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _unnest(obj: Any, nesting: str | None, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, not a state dict",
                              path=str(path))
    if nesting in DIRECT_NESTINGS:
        if nesting not in obj:
            raise CheckpointError(f"{path.name} has no '{nesting}' entry (it has "
                                  f"{_names([str(k) for k in obj])})", path=str(path))
        inner = obj[nesting]
    else:
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
              name: str = "checkpoint", assign: bool = False) -> None:
    """Load ``state`` into ``model`` strictly; any difference is one clear CheckpointError.
    ``assign``: the module takes ``state``'s tensors themselves instead of copies (mapped
    ones stay mapped)."""
    import torch

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
    # assign=True would make the module hold an integer or complex tensor where it computes in
    # floating point (or fail inside torch with a traceback): name the entries instead
    kinds = [f"{k} {_kind(state[k])}" for k, v in expected.items()
             if v.is_floating_point() and (state[k].layout != torch.strided
                                           or not state[k].is_floating_point())]
    if kinds:
        raise CheckpointError(f"{name} does not match {type(model).__name__}: {len(kinds)} "
                              f"tensor(s) are not dense floating-point ({_names(kinds)})")
    model.load_state_dict(dict(state), strict=True, assign=assign)


def _kind(tensor: torch.Tensor) -> str:
    import torch

    dtype = str(tensor.dtype).removeprefix("torch.")
    layout = str(tensor.layout).removeprefix("torch.")
    return dtype if tensor.layout == torch.strided else f"{dtype}, {layout}"


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _safetensors_errors() -> tuple[type[BaseException], ...]:
    """torch.load hands a ``*.safetensors`` path to safetensors, whose header errors are their
    own class (the header is validated against the file: no allocation from its claims)."""
    try:
        from safetensors import SafetensorError
    except ImportError:
        return ()
    return (SafetensorError,)


def _reason(exc: BaseException, path: Path) -> str:
    """The useful line of a load failure. torch's weights-only refusal starts with advice to
    load with ``weights_only=False`` (never do that with a downloaded file); the line naming the
    refused global, or what the file is instead, is the one to show."""
    import zipfile

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line:
            return f"it needs code that is never run from a model file: {line[:200]}"
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        head = b""
    if not head:
        return "the file is empty"
    if head.lstrip()[:1] == b"<":
        return "it is an HTML or XML page, not a checkpoint"
    if head[:4] == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return "the file is truncated or corrupt (a zip archive without its directory)"
    useful = [line for line in lines if not line.startswith(_TORCH_ADVICE)]
    return useful[0][:200] if useful else _first_line(exc)


#: the boilerplate lines of torch's weights-only error (the advice to turn the safety off)
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
