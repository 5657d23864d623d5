"""The scratch-detection U-Net of "Bringing Old Photos Back to Life" (BOPBTL), plain torch.

One grey channel in, one logit per pixel out (sigmoid >= 0.4 is a scratch in the reference).
Module names follow the official checkpoint (``first``, ``down_sample.i``, ``down_path.i``,
``up_path.j``, ``last``) so ``FT_Epoch_latest.pt``'s ``model_state`` loads strictly. Every
convolution pads by reflection; down-sampling is an anti-aliasing blur whose per-channel kernel
is a stored buffer (``filt``), used as loaded. Input sides must be multiples of 16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BlurDownsample(nn.Module):
    """Reflect-pad by 1, then a depthwise 3 x 3 blur with the ``filt`` buffer at stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())
        self.pad = nn.ReflectionPad2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


def _conv_bn_act(c_in: int, c_out: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2, True))
    return layers


class ConvBlock(nn.Module):
    """``conv_num`` x (reflect pad, 3 x 3 conv, BatchNorm, LeakyReLU 0.2) as ``block``."""

    def __init__(self, c_in: int, c_out: int, conv_num: int, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(conv_num):
            layers += _conv_bn_act(c_in if i == 0 else c_out, c_out, batch_norm)
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UpBlock(nn.Module):
    """Bilinear x2, reflect-padded 3 x 3 conv halving the channels, concat the skip, ConvBlock."""

    def __init__(self, c_in: int, c_out: int, conv_num: int, batch_norm: bool) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3))
        self.conv_block = ConvBlock(c_in, c_out, conv_num, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        return self.conv_block(torch.cat([up, _center_crop(skip, up.shape[-2:])], 1))


def _center_crop(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    dy, dx = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., dy:dy + size[0], dx:dx + size[1]]


class ScratchUNet(nn.Module):
    """BOPBTL ``UNet`` in its detection configuration.

    Only what the official configuration uses is supported: padding, ``up_mode='upsample'`` and
    anti-aliased down-sampling; ``sync_bn`` changes nothing in eval (plain BatchNorm2d).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 4,
                 conv_num: int = 2, wf: int = 6, padding: bool = True, batch_norm: bool = True,
                 up_mode: str = "upsample", with_tanh: bool = False, sync_bn: bool = True,
                 antialiasing: bool = True) -> None:
        super().__init__()
        if not padding or up_mode != "upsample" or not antialiasing:
            raise ValueError("ScratchUNet supports the detection configuration only "
                             "(padding=True, up_mode='upsample', antialiasing=True)")
        self.depth = depth
        self.with_tanh = with_tanh
        c = 2 ** wf
        self.first = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c, 7),
                                   nn.LeakyReLU(0.2, True))
        self.down_path = nn.ModuleList()  # registered first: the checkpoint's key order
        self.down_sample = nn.ModuleList()
        for i in range(depth):
            ch = 2 ** (wf + i)
            self.down_sample.append(nn.Sequential(*_conv_bn_act(ch, ch, batch_norm),
                                                  BlurDownsample(ch)))
            self.down_path.append(ConvBlock(ch, 2 * ch, conv_num, batch_norm))
        self.up_path = nn.ModuleList(
            UpBlock(2 ** (wf + i + 1), 2 ** (wf + i), conv_num, batch_norm)
            for i in reversed(range(depth)))
        self.last = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, out_channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        skips = []
        for down, path in zip(self.down_sample, self.down_path):
            skips.append(x)  # taken before down-sampling, as in the reference
            x = path(down(x))
        for i, up in enumerate(self.up_path):
            x = up(x, skips[-i - 1])
        x = self.last(x)
        return torch.tanh(x) if self.with_tanh else x
