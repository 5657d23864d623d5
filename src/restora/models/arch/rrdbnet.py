"""RRDBNet (ESRGAN / Real-ESRGAN x2plus and x4plus), in the basicsr checkpoint layout.

Scale 2 and 1 pixel-unshuffle the input (by 2 and 4) so the trunk always runs at 1/4 of the
output resolution; two nearest x2 upsamplings then bring it to ``scale`` times the input (each
fused with the conv after it, :mod:`restora.models.arch.upconv`, exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from restora.models.arch.upconv import upsample_conv3x3

__all__ = ["RRDBNet", "ResidualDenseBlock", "RRDB"]


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the result is scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(self.lrelu(conv(torch.cat(feats, 1))))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks with a residual connection scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """forward(x RGB in [0, 1], N x C x H x W) -> N x C_out x (H*scale) x (W*scale), unclamped.

    For scale 2 (resp. 1) H and W must be divisible by 2 (resp. 4).
    """

    def __init__(self, num_in_ch: int, num_out_ch: int, scale: int = 4, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, not {scale}")
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle ** 2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.stem(x)
        return self.finish(self.body(feat), feat)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The image at trunk resolution: pixel-unshuffled, then the first conv."""
        if self.unshuffle > 1:
            # channel order c*r*r + dy*r + dx, as basicsr's pixel_unshuffle
            x = F.pixel_unshuffle(x, self.unshuffle)
        return self.conv_first(x)

    def finish(self, h: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """The trunk's output ``h`` plus the long skip from the stem (``feat``), upsampled to
        the image."""
        feat = feat + self.conv_body(h)
        for conv in (self.conv_up1, self.conv_up2):  # nearest x2, then conv
            feat = self.lrelu(upsample_conv3x3(feat, conv.weight, conv.bias, "zeros"))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
