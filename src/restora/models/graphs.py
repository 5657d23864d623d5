"""Graphs: descriptor networks as modules whose inputs and outputs are plain tensors.

These are what every engine runs (torch directly; ONNX Runtime and OpenVINO after export), so
options that change the computation (GFPGAN's noise, CodeFormer's ``w``) are inputs, never
Python values baked in at export time.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn


class FirstOutput(nn.Module):
    """``module(x)``, keeping only the first output when it returns several (unused outputs
    are pruned from exported graphs)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.net = module

    def forward(self, x: Tensor) -> Any:
        out = self.net(x)
        return out[0] if isinstance(out, (tuple, list)) else out


class ExactInput(nn.Module):
    """``layer`` (its ``conv2d`` applied to the padded input, then pointwise layers) fed its
    input as bf16 parts ``[hi, lo, hi]`` on the channels (``engines.split_bf16``), with the conv
    weights as ``[w_hi, w_hi, w_lo]`` to match: bf16 holds each part and each weight part
    exactly, so under bf16 compute the conv still sums ``x * w`` to float32 accuracy (the
    dropped ``lo * w_lo`` is ~2^-16 of it). The image and the first taps are what bf16 rounds
    worst."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = copy.deepcopy(layer)
        conv = self.layer.conv2d
        if conv.groups != 1:
            raise ValueError("ExactInput needs an ungrouped conv")
        weight = conv.weight.detach().float()
        hi = weight.to(torch.bfloat16).float()
        wide = nn.Conv2d(3 * conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         conv.padding, conv.dilation, bias=conv.bias is not None)
        wide.weight.data = torch.cat([hi, hi, weight - hi], dim=1)
        if conv.bias is not None:
            wide.bias.data = conv.bias.detach().float().clone()
        self.layer.conv2d = wide

    def forward(self, parts: Tensor) -> Tensor:
        return self.layer(parts)


class FloatTail(nn.Module):
    """``layer`` (its stride-1 ``conv2d``, then pointwise layers) with that conv written as the
    equal transposed conv. OpenVINO's CPU plugin keeps a graph's tail in float32 under bf16
    compute: every node after the last one it runs in bf16 for speed (convolutions, matmuls,
    but not transposed convs). So an output layer written this way computes and stores its
    logits in float32 inside the one bf16 graph, without a second graph and a copy of the
    features between the two (``engines.MIXED``; its probe still checks the result)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = copy.deepcopy(layer)
        conv = self.layer.conv2d
        pads = [k - 1 - p for k, p in zip(conv.kernel_size, conv.padding)]
        if conv.groups != 1 or conv.stride != (1, 1) or conv.dilation != (1, 1) \
                or min(pads) < 0 or conv.padding_mode != "zeros":
            raise ValueError("FloatTail needs an ungrouped, undilated stride-1 conv")
        tail = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, conv.kernel_size, 1,
                                  tuple(pads), bias=conv.bias is not None)
        tail.weight.data = conv.weight.detach().float().flip(2, 3).transpose(0, 1).contiguous()
        if conv.bias is not None:
            tail.bias.data = conv.bias.detach().float().clone()
        self.layer.conv2d = tail

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class Method(nn.Module):
    """``module.<name>(*xs)``: one stage of a network (a part of a split graph)."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.net = module
        self.name = name

    def forward(self, *xs: Tensor) -> Tensor:
        return getattr(self.net, self.name)(*xs)


class GFPGANGraph(nn.Module):
    """``(x, noise0, ..., noiseK) -> image``: GFPGAN with its StyleGAN noise maps as inputs."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.net = module

    def forward(self, x: Tensor, *noise: Tensor) -> Tensor:
        return self.net(x, return_rgb=False, randomize_noise=False, noise=list(noise))[0]


class CodeFormerGraph(nn.Module):
    """``(x, w) -> image``: CodeFormer with the fidelity weight as a 1-element input."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.net = module

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.net(x, w=w.to(x.dtype), adain=True)[0]


class Outputs(nn.Module):
    """``module(x)`` with its outputs as a tuple of tensors (detectors: loc, conf, landms)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.net = module

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.net(x))
