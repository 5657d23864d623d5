"""ConvNeXt image encoder in the layout DDColor checkpoints use (``encoder.arch.*``).

Only the feature pyramid is computed: after every stage a channels-first LayerNorm
(``norm0``..``norm3``) is applied to a copy of the stage output and returned, while the next stage
keeps working on the un-normalised tensor. The final ``norm`` (a LayerNorm over globally pooled
features) exists so official checkpoints load strictly; nothing downstream uses its output, so it
is never evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Named configurations of the reference encoder: (depths, dims).
PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnext-t": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext-l": ((3, 3, 27, 3), (192, 384, 768, 1536)),
}

_EPS = 1e-6  # every LayerNorm in the encoder


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an N x C x H x W tensor."""

    def __init__(self, channels: int, eps: float = _EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same arithmetic as the reference (biased variance, sqrt then divide), not F.layer_norm on
        # a permuted copy, so the float32 rounding stays close to the goldens.
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, MLP (4x, exact GELU), layer scale ``gamma``, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels last for the per-pixel MLP
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt backbone returning the four normalised stage outputs (strides 4, 8, 16, 32)."""

    def __init__(self, depths: Sequence[int], dims: Sequence[int], in_chans: int = 3) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError("ConvNeXt needs exactly four stages")
        self.dims = tuple(int(d) for d in dims)
        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                             ChannelsFirstLayerNorm(dims[0]))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                ChannelsFirstLayerNorm(dims[i]),
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dims[i]) for _ in range(depths[i]))) for i in range(4))
        for i in range(4):
            self.add_module(f"norm{i}", ChannelsFirstLayerNorm(dims[i]))
        self.norm = nn.LayerNorm(dims[-1], eps=_EPS)  # checkpoint compatibility only (see module doc)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            features.append(getattr(self, f"norm{i}")(x))
        return features
