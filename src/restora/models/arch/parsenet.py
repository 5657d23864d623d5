"""ParseNet face parser (facelib ``parsenet``, PSFRGAN), in the ``parsing_parsenet.pth`` layout.

An encoder of strided residual blocks, a residual body with an outer skip, and a decoder of
nearest-upsampling residual blocks, with two heads: 19 parsing logits and an RGB image. Every
3x3 conv is preceded by reflection padding; convs followed by BatchNorm have no bias. The
upsampling convs run at the input's resolution (:mod:`restora.models.arch.upconv`, exact).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from restora.models.arch.upconv import upsample_conv3x3

__all__ = ["ParseNet"]


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class NormLayer(nn.Module):
    """Normalisation wrapper; its module is named ``norm`` so BN keys read ``*.norm.norm.*``."""

    def __init__(self, channels: int, norm_type: str = "bn") -> None:
        super().__init__()
        norm_type = norm_type.lower()
        if norm_type == "bn":
            self.norm: nn.Module = nn.BatchNorm2d(channels, affine=True)
        elif norm_type == "in":
            self.norm = nn.InstanceNorm2d(channels, affine=False)
        elif norm_type == "gn":
            self.norm = nn.GroupNorm(32, channels, affine=True)
        elif norm_type == "none":
            self.norm = _Identity()
        else:
            raise ValueError(f"unsupported norm_type {norm_type!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ReluLayer(nn.Module):
    """Activation wrapper (``func``); LeakyReLU uses slope 0.2 as the reference."""

    def __init__(self, channels: int, relu_type: str = "relu") -> None:
        super().__init__()
        relu_type = relu_type.lower()
        if relu_type == "relu":
            self.func: nn.Module = nn.ReLU(inplace=True)
        elif relu_type == "leakyrelu":
            self.func = nn.LeakyReLU(0.2, inplace=True)
        elif relu_type == "prelu":
            self.func = nn.PReLU(channels)
        elif relu_type == "selu":
            self.func = nn.SELU(inplace=True)
        elif relu_type == "none":
            self.func = _Identity()
        else:
            raise ValueError(f"unsupported relu_type {relu_type!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)


class ConvLayer(nn.Module):
    """[nearest x2 if 'up'] -> reflection pad -> conv (stride 2 if 'down') -> norm -> activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, scale: str = "none",
                 norm_type: str = "none", relu_type: str = "none", bias: bool = True) -> None:
        super().__init__()
        self.upsample = scale == "up"
        if self.upsample and kernel_size != 3:
            raise ValueError("an upsampling ConvLayer needs kernel_size 3")
        if norm_type == "bn":
            bias = False  # BN's beta makes a conv bias redundant; the checkpoint has none
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)  # = ceil((k - 1) / 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, 2 if scale == "down" else 1, bias=bias)
        self.relu = ReluLayer(out_channels, relu_type)
        self.norm = NormLayer(out_channels, norm_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = upsample_conv3x3(x, self.conv2d.weight, self.conv2d.bias, "reflect")
        else:
            x = self.conv2d(self.reflection_pad(x))
        return self.relu(self.norm(x))


class ResidualBlock(nn.Module):
    """conv1 (norm + act) -> conv2 (norm only), plus an identity or plain-conv shortcut."""

    def __init__(self, c_in: int, c_out: int, relu_type: str = "prelu", norm_type: str = "bn",
                 scale: str = "none") -> None:
        super().__init__()
        self.shortcut_func: nn.Module
        if scale == "none" and c_in == c_out:
            self.shortcut_func = _Identity()
        else:
            self.shortcut_func = ConvLayer(c_in, c_out, 3, scale)
        first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
        self.conv1 = ConvLayer(c_in, c_out, 3, first, norm_type=norm_type, relu_type=relu_type)
        self.conv2 = ConvLayer(c_out, c_out, 3, second, norm_type=norm_type, relu_type="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_func(x) + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """forward(x RGB in [-1, 1]) -> (out_mask: ``parsing_ch`` logits, out_img: 3 channels)."""

    def __init__(self, in_size: int = 128, out_size: int = 128, min_feat_size: int = 32, base_ch: int = 64,
                 parsing_ch: int = 19, res_depth: int = 10, relu_type: str = "LeakyReLU", norm_type: str = "bn",
                 ch_range: Sequence[int] = (32, 256)) -> None:
        super().__init__()
        min_ch, max_ch = ch_range

        def clip(ch: int) -> int:
            return max(min_ch, min(ch, max_ch))

        min_feat_size = min(in_size, min_feat_size)
        down_steps = (in_size // min_feat_size).bit_length() - 1  # floor(log2)
        up_steps = (out_size // min_feat_size).bit_length() - 1
        act = {"norm_type": norm_type, "relu_type": relu_type}

        encoder: list[nn.Module] = [ConvLayer(3, base_ch, 3)]
        head = base_ch
        for _ in range(down_steps):
            encoder.append(ResidualBlock(clip(head), clip(head * 2), scale="down", **act))
            head *= 2
        body = [ResidualBlock(clip(head), clip(head), **act) for _ in range(res_depth)]
        decoder: list[nn.Module] = []
        for _ in range(up_steps):
            decoder.append(ResidualBlock(clip(head), clip(head // 2), scale="up", **act))
            head //= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*body)
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvLayer(clip(head), 3)
        self.out_mask_conv = ConvLayer(clip(head), parsing_ch)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's output: what both heads read."""
        return self.trunk(self.encoder[0](x))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`features` after the input layer (``encoder[0]``)."""
        for block in self.encoder[1:]:
            x = block(x)
        return self.decoder(x + self.body(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x)
        return self.out_mask_conv(x), self.out_img_conv(x)
