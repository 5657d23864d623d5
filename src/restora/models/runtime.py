"""The Runtime: device, dtype, torch threads and the cache of loaded networks.

One Runtime is created per process (the CLI command, the service) and handed to whatever runs
models, so each network is read from disk once. Loads are thread-safe: concurrent callers asking
for the same model wait for one load instead of each building their own copy.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from restora.config import Settings
from restora.errors import (CheckpointError, InvalidParameter, ModelError, ModelNotInstalled,
                            RestoraError)
from restora.models.checkpoint import load_into, load_state_dict
from restora.models.engines import EngineFactory, trim_heap
from restora.models.nets import Network, describe
from restora.models.registry import ARCHITECTURES, FILE_ARCHS, ModelSpec, Registry

if TYPE_CHECKING:
    import torch

_DTYPES = ("float32", "float16", "bfloat16")


def choose_device(requested: str = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must be usable here."""
    import torch

    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    kind = requested.split(":", 1)[0]
    if requested == "cpu":
        return "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameter("device", f"device '{requested}' was requested but CUDA is "
                                   "not available; use RESTORA_DEVICE=auto or cpu")
        index = requested.split(":", 1)[1] if ":" in requested else "0"
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise InvalidParameter("device", f"device '{requested}' does not exist; this "
                                   f"machine has {torch.cuda.device_count()} CUDA device(s)")
        return requested
    if requested == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidParameter("device", "device 'mps' was requested but Metal is not "
                                   "available; use RESTORA_DEVICE=auto or cpu")
        return "mps"
    raise InvalidParameter("device", f"unknown device '{requested}'; use auto, cpu, cuda, "
                           "cuda:N or mps")


def _choose_dtype(dtype: Any) -> torch.dtype:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise InvalidParameter("dtype", f"dtype {dtype} is not a floating type Restora runs")
        return dtype
    name = str(dtype).removeprefix("torch.").lower()
    name = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(
        name, name)
    if name not in _DTYPES:
        raise InvalidParameter("dtype", f"unknown dtype '{dtype}'; use {', '.join(_DTYPES)}")
    return getattr(torch, name)


class Runtime:
    """Owns device choice, dtype, torch threads and one loaded copy of each network."""

    def __init__(self, settings: Settings | None = None, *, device: str | None = None,
                 dtype: Any = None, threads: int | None = None,
                 engine: str | None = None) -> None:
        import torch

        self.settings = settings if settings is not None else Settings()
        self.registry = Registry.from_settings(self.settings)
        self.device = choose_device(device or self.settings.device)
        self.dtype = _choose_dtype(dtype)
        self.threads = threads if threads is not None else self.settings.threads
        if self.threads is not None:
            if self.threads < 1:
                raise InvalidParameter("threads", "threads must be at least 1")
            torch.set_num_threads(self.threads)
        self.engines = EngineFactory(
            choice=(engine or self.settings.engine).strip().lower(),
            cache_dir=self.settings.engines_dir,
            threads=self.threads or torch.get_num_threads(),
            torch_compile=self.settings.torch_compile,
            model_path=lambda net: self.registry.path(net.spec) if net.spec.id in
            {s.id for s in self.registry.all()} else None)
        self._models: dict[str, Network] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return (f"Runtime(device={self.device!r}, dtype={self.dtype}, "
                f"engine={self.engines.choice!r}, loaded={self.loaded()})")

    def spec(self, model_id: str) -> ModelSpec:
        return self.registry.get(model_id)

    def loaded(self) -> list[str]:
        with self._guard:
            return list(self._models)

    def load(self, model_id: str) -> Network:
        """The descriptor of ``model_id`` (see :mod:`restora.models.nets`), loaded once and
        cached: its ``module`` is in eval mode on this runtime's device."""
        with self._guard:
            if model_id in self._models:
                return self._models[model_id]
            lock = self._locks.setdefault(model_id, threading.Lock())
        with lock:  # one loader per id; others wait here and then find it cached
            with self._guard:
                if model_id in self._models:
                    return self._models[model_id]
            spec = self.registry.get(model_id)
            dtype = self._dtype_for(spec)
            model = describe(spec, self._build(spec, dtype), device=self.device, dtype=dtype)
            model.engine_factory = self.engines
            model.reload = lambda: self._build(spec, dtype)
            with self._guard:
                self._models[model_id] = model
            return model

    def release_memory(self) -> None:
        """Every loaded network gives back the working buffers its engine keeps between runs,
        and the torch weights an exported graph does not need (``Network.release_memory``),
        then the heap's free pages go back to the system: called between a large job's stages,
        so that a stage's peak holds only what the networks it runs need. An engine busy with
        another job's run keeps its buffers."""
        with self._guard:
            models = list(self._models.values())
        for model in models:
            model.release_memory()
        trim_heap()

    def prepare(self, nets: Iterable[Network], *, release: bool = False,
                check: Callable[[], None] | None = None) -> None:
        """Build every engine of ``nets`` (``Network.prepare``: exported and checked on a first
        run), one network after the other, ``check`` (a job's cancel check) before each.
        ``release`` (large jobs): :meth:`release_memory` after each build, so that one export's
        torch weights are gone before the next one starts."""
        for net in nets:
            if check is not None:
                check()
            net.prepare()
            if release:
                self.release_memory()

    def close_engines(self, model_ids: Iterable[str]) -> None:
        """The loaded networks among ``model_ids`` drop their exported engines
        (``Network.close_engine``; opened again from the cache when next called), then the
        heap's free pages go back: a large job's last stage then holds none of them."""
        with self._guard:
            models = [self._models[m] for m in model_ids if m in self._models]
        for model in models:
            model.close_engine()
        trim_heap()

    def unload(self, model_id: str) -> None:
        """Drop a cached network (the next :meth:`load` reads it again)."""
        with self._guard:
            self._models.pop(model_id, None)

    def _dtype_for(self, spec: ModelSpec) -> Any:
        """This runtime's dtype, or float32 for a network that cannot run in it (LaMa's FFTs)."""
        import torch

        from restora.models.nets import facts

        name = str(self.dtype).removeprefix("torch.")
        return self.dtype if name in facts(spec).dtypes else torch.float32

    def _build(self, spec: ModelSpec, dtype: Any = None) -> Any:
        path = self.registry.path(spec)
        if not path.is_file():
            raise self.not_installed(spec)
        cls = architecture_class(spec.arch)
        if spec.arch in FILE_ARCHS:  # ONNX through OpenCV or dlib: no torch state dict
            return _construct(cls, spec, str(path))
        import torch

        managed = spec.path is None  # in the models folder, put there by pull or import
        if managed:
            _check_installed_size(spec, path)
        if spec.loader == "torchscript":
            _check_torchscript_hash(self.registry, spec, path)
        # Files in the models folder are only ever replaced atomically (pull, import), so they
        # are mapped: weights stay in the page cache until a forward or an export reads them (an
        # exported graph's network may never), and other entries of the file are never read.
        # A manifest's own paths are read: their owner may rewrite them in place.
        try:
            state = load_state_dict(path, spec.nesting, spec.strip_prefix, loader=spec.loader,
                                    mmap=managed)
        except CheckpointError as exc:
            if not (managed and spec.urls):
                raise
            # the file is not what pull installed (damaged, or replaced since): say how to mend
            raise CheckpointError(f"{exc.message}; model '{spec.id}' must be installed again: "
                                  f"delete {path} and run `restora models pull {spec.id}`",
                                  model=spec.id, path=str(path)) from exc
        model = _construct_loaded(cls, spec, state,
                                  f"checkpoint of model '{spec.id}' ({path.name})")
        model = model.to(device=torch.device(self.device),
                         dtype=dtype if dtype is not None else self.dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def not_installed(self, spec: ModelSpec) -> ModelNotInstalled:
        """The one-sentence error for a model whose file is absent."""
        return self.registry.not_installed(spec)


def _check_installed_size(spec: ModelSpec, path: Any) -> None:
    """A models-folder file whose size is not the published one was damaged or replaced after
    its SHA-256 was checked (a stat, not a hash: ``restora models verify`` re-hashes)."""
    if spec.size is None:
        return
    size = path.stat().st_size
    if size != spec.size:
        again = (f"delete {path} and run `restora models pull {spec.id}`" if spec.urls else
                 f"install it again with `restora models import FILE --id {spec.id}`")
        raise CheckpointError(f"model '{spec.id}': {path} has {size} bytes, expected "
                              f"{spec.size}; the file was damaged or replaced after it was "
                              f"installed: {again}", model=spec.id, path=str(path))


def _check_torchscript_hash(registry: Registry, spec: ModelSpec, path: Any) -> None:
    """Opening a TorchScript archive runs the TorchScript code it stores for its classes
    (``__setstate__``), before we take its tensors: only an archive whose SHA-256 is the
    published (or recorded) one is opened, checked at every load (205 MB: about 0.2 s)."""
    from restora.models.download import sha256_file

    expected = registry.expected_sha256(spec)
    if expected is None:
        raise CheckpointError(f"model '{spec.id}' is a TorchScript archive without a known "
                              "SHA-256; opening one runs code it stores, so give its 'sha256' "
                              "in the model manifest (or install it with `restora models "
                              f"import FILE --id {spec.id}`, which records it)",
                              model=spec.id, path=str(path))
    digest = sha256_file(path)
    if digest != expected:
        raise CheckpointError(f"model '{spec.id}': {path} has SHA-256 {digest}, expected "
                              f"{expected}; a TorchScript archive that is not the pinned one is "
                              "never opened (it would run code it stores)", model=spec.id,
                              path=str(path), sha256=digest, expected=expected)


def architecture_class(arch: str) -> Any:
    """The class registered for ``arch`` in :data:`ARCHITECTURES` (imported on first use)."""
    try:
        target = ARCHITECTURES[arch]
    except KeyError:
        raise ModelError(f"unknown architecture '{arch}'", code="unknown_architecture") from None
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, cls_name)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"architecture '{arch}' ({target}) is not available: {exc}",
                         code="unknown_architecture") from exc


def _construct_loaded(cls: Any, spec: ModelSpec, state: Any, name: str) -> Any:
    """``cls`` built from ``spec.hparams``, holding ``state``'s tensors themselves (mapped ones
    stay mapped; a checkpoint that does not fit is one CheckpointError).

    The parameters' random initialisation is skipped (:class:`_NoParameterInit`): the strict
    load overwrites every one of them. It cost CPU time and, for a moment, the memory of all
    the weights: DDColor-L 0.89 CPU-s and 0.85 GiB, CodeFormer 0.40 CPU-s and 0.35 GiB."""
    with _NoParameterInit():
        model = _construct(cls, spec)
    load_into(model, state, name=name, assign=True)
    return model


class _NoParameterInit:
    """While a module is built, in-place fills whose target is an ``nn.Parameter`` do nothing,
    so its parameters stay uninitialised (``torch.empty``: pages never touched, never
    resident). Everything else a constructor computes (buffers, tensor attributes) is
    computed as before. The shipped architectures derive nothing from a parameter's initial
    values (tests/models/test_runtime.py checks each)."""

    _METHODS = ("normal_", "uniform_", "erfinv_", "exponential_", "bernoulli_", "random_",
                "clamp_", "clamp_min_", "clamp_max_", "mul_", "add_", "sub_", "div_",
                "fill_", "zero_", "copy_")

    def __enter__(self) -> None:
        import torch
        from torch.overrides import TorchFunctionMode

        # nn.init's own functions reach a mode whole (their tensor as the keyword 'tensor');
        # the rest of nn.init (trunc_normal_, xavier_*) arrives as the Tensor methods it calls
        fills = {getattr(torch.Tensor, n) for n in self._METHODS} | {
            torch.nn.init.normal_, torch.nn.init.uniform_, torch.nn.init.constant_,
            torch.nn.init.kaiming_uniform_}

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: Any = (),
                                   kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                target = args[0] if args else kwargs.get("tensor")
                if func in fills and isinstance(target, torch.nn.Parameter):
                    return target
                return func(*args, **kwargs)

        self._mode = Mode()
        self._mode.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)


def _construct(cls: Any, spec: ModelSpec, *args: Any) -> Any:
    try:
        return cls(*args, **spec.hparams)
    except RestoraError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad hparams surface as TypeError/ValueError/cv2.error
        raise CheckpointError(f"cannot build model '{spec.id}' ({spec.arch}) from its hparams: "
                              f"{exc}", model=spec.id) from exc
