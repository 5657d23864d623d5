"""Engines: what runs a descriptor's graph.

An engine takes the graph inputs (numpy arrays or torch tensors) and returns all graph
outputs. :class:`TorchEngine` runs the module eagerly on the runtime's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Engine(Protocol):
    """Runs one graph. ``name`` and ``precision`` are reported in results."""

    name: str
    precision: str

    def run(self, inputs: Sequence[Any]) -> list[Any]: ...


class TorchEngine:
    """The module itself, eager, under ``inference_mode`` on the runtime's device and dtype."""

    name = "torch"

    def __init__(self, graph: Any, device: str = "cpu", dtype: Any = None) -> None:
        import torch

        self.graph = graph
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else torch.float32
        self.precision = {torch.float32: "fp32", torch.float16: "fp16",
                          torch.bfloat16: "bf16"}[self.dtype]

    def run(self, inputs: Sequence[Any]) -> list[Any]:
        import torch

        tensors = []
        for value in inputs:
            t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) \
                else value
            if t.is_floating_point():
                t = t.to(device=self.device, dtype=self.dtype)
            else:
                t = t.to(device=self.device)
            tensors.append(t)
        with torch.inference_mode():
            out = self.graph(*tensors)
        return list(out) if isinstance(out, (tuple, list)) else [out]
