"""SRVGGNetCompact (Real-ESRGAN ``realesr-general-x4v3`` and the anime video models).

A plain stack of 3x3 convs and activations at input resolution, a pixel shuffle to the output
size, and the nearest-upsampled input added as a residual. ``body.<even>`` are convs and
``body.<odd>`` activations (PReLU slopes per channel), as in the checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SRVGGNetCompact"]


def _activation(act_type: str, num_feat: int) -> nn.Module:
    if act_type == "relu":
        return nn.ReLU(inplace=True)
    if act_type == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if act_type == "leakyrelu":
        return nn.LeakyReLU(0.1, inplace=True)
    raise ValueError(f"unsupported act_type {act_type!r}")


class SRVGGNetCompact(nn.Module):
    """forward(x RGB in [0, 1]) -> x upscaled by ``upscale``, unclamped."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4, act_type: str = "prelu") -> None:
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")
