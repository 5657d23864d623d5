"""GFPGANv1Clean (GFPGAN v1.3 / v1.4): a U-Net that predicts a StyleGAN2 latent plus SFT conditions.

Constructor keywords, parameter names and forward semantics match the reference
``gfpganv1_clean_arch`` so official checkpoints (``params_ema``) load strictly and compute the same
numbers. Input: RGB NCHW in [-1, 1] at ``out_size``; output: RGB in (nominally) [-1, 1].
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from restora.errors import ModelError
from restora.models.arch.stylegan2 import StyleGAN2GeneratorClean, resample


def input_size(hparams: dict[str, Any]) -> int:
    """Side of the square face crop the network expects."""
    return int(hparams.get("out_size", 512))


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, negative_slope=0.2)


class ResBlock(nn.Module):
    """U-Net residual block that resizes bilinearly by 0.5 (``down``) or 2 (``up``)."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "down") -> None:
        super().__init__()
        if mode not in ("down", "up"):
            raise ValueError(f"unknown ResBlock mode {mode!r}")
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale_factor = 0.5 if mode == "down" else 2.0

    def forward(self, x: Tensor) -> Tensor:
        out = resample(_lrelu(self.conv1(x)), self.scale_factor)
        out = _lrelu(self.conv2(out))
        return out + self.skip(resample(x, self.scale_factor))


class StyleGAN2GeneratorCSFT(StyleGAN2GeneratorClean):
    """StyleGAN2 decoder whose features are modulated by spatial (scale, shift) conditions."""

    def __init__(self, out_size: int, num_style_feat: int = 512, num_mlp: int = 8,
                 channel_multiplier: float = 2, narrow: float = 1, sft_half: bool = False) -> None:
        super().__init__(out_size, num_style_feat, num_mlp, channel_multiplier, narrow)
        self.sft_half = sft_half

    def forward(self, style: Tensor, conditions: list[Tensor], input_is_latent: bool = False,
                randomize_noise: bool = True, generator: torch.Generator | None = None,
                noise: list[Tensor] | None = None) -> Tensor:
        latent = self.latent_from(style, input_is_latent)
        maps: list[Tensor | None]
        if noise is not None:
            maps = list(noise)
        else:
            maps = [None] * self.num_layers if randomize_noise else list(self.stored_noise())

        def sft(step: int, feat: Tensor) -> Tensor:
            i = 2 * step + 1
            if i >= len(conditions):
                return feat
            scale, shift = conditions[i - 1], conditions[i]
            if not self.sft_half:
                return feat * scale + shift
            # Only the second half of the channels is transformed; the first half passes through.
            same, rest = torch.split(feat, feat.size(1) // 2, dim=1)
            return torch.cat([same, rest * scale + shift], dim=1)

        return self.synthesize(latent, maps, generator, sft)


class GFPGANv1Clean(nn.Module):
    """GFPGAN v1 "clean" generator (no custom CUDA ops); v1.3 and v1.4 share this architecture."""

    def __init__(self, out_size: int, num_style_feat: int = 512, channel_multiplier: float = 1,
                 decoder_load_path: str | None = None, fix_decoder: bool = True, num_mlp: int = 8,
                 input_is_latent: bool = False, different_w: bool = False, narrow: float = 1,
                 sft_half: bool = False) -> None:
        super().__init__()
        if decoder_load_path:
            # Training-time option of the reference (initialise the decoder from a StyleGAN2
            # file); inference checkpoints already contain the decoder.
            raise ModelError("GFPGAN option decoder_load_path is not supported; "
                             "load a full GFPGAN checkpoint instead.")
        self.input_is_latent = input_is_latent
        self.different_w = different_w
        self.num_style_feat = num_style_feat
        unet_narrow = narrow * 0.5  # the U-Net is half as wide as the decoder
        channels = {
            "4": int(512 * unet_narrow),
            "8": int(512 * unet_narrow),
            "16": int(512 * unet_narrow),
            "32": int(512 * unet_narrow),
            "64": int(256 * channel_multiplier * unet_narrow),
            "128": int(128 * channel_multiplier * unet_narrow),
            "256": int(64 * channel_multiplier * unet_narrow),
            "512": int(32 * channel_multiplier * unet_narrow),
            "1024": int(16 * channel_multiplier * unet_narrow),
        }
        self.log_size = int(math.log2(out_size))
        first = 2**self.log_size

        self.conv_body_first = nn.Conv2d(3, channels[f"{first}"], 1)
        in_ch = channels[f"{first}"]
        self.conv_body_down = nn.ModuleList()
        for i in range(self.log_size, 2, -1):
            out_ch = channels[f"{2 ** (i - 1)}"]
            self.conv_body_down.append(ResBlock(in_ch, out_ch, mode="down"))
            in_ch = out_ch
        self.final_conv = nn.Conv2d(in_ch, channels["4"], 3, 1, 1)

        in_ch = channels["4"]
        self.conv_body_up = nn.ModuleList()
        for i in range(3, self.log_size + 1):
            out_ch = channels[f"{2**i}"]
            self.conv_body_up.append(ResBlock(in_ch, out_ch, mode="up"))
            in_ch = out_ch

        self.toRGB = nn.ModuleList(
            nn.Conv2d(channels[f"{2**i}"], 3, 1) for i in range(3, self.log_size + 1))

        num_w = (self.log_size * 2 - 2) if different_w else 1
        self.final_linear = nn.Linear(channels["4"] * 4 * 4, num_w * num_style_feat)

        self.stylegan_decoder = StyleGAN2GeneratorCSFT(
            out_size=out_size, num_style_feat=num_style_feat, num_mlp=num_mlp,
            channel_multiplier=channel_multiplier, narrow=narrow, sft_half=sft_half)
        if fix_decoder:
            self.stylegan_decoder.requires_grad_(False)

        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        for i in range(3, self.log_size + 1):
            ch = channels[f"{2**i}"]
            sft_ch = ch if sft_half else ch * 2
            self.condition_scale.append(self._condition_head(ch, sft_ch))
            self.condition_shift.append(self._condition_head(ch, sft_ch))

    @staticmethod
    def _condition_head(ch: int, out_ch: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2),
                             nn.Conv2d(ch, out_ch, 3, 1, 1))

    def forward(self, x: Tensor, return_latents: bool = False, return_rgb: bool = True,
                randomize_noise: bool = True, generator: torch.Generator | None = None,
                noise: list[Tensor] | None = None, **kwargs: Any) -> tuple[Tensor, list[Tensor]]:
        """Restore ``x``; returns (image, intermediate RGB images when ``return_rgb``).

        ``randomize_noise=True`` draws per-call noise (from ``generator`` when given; it must be on
        the input's device); ``False`` uses the stored noise buffers. ``noise`` (one N x 1 x r x r
        map per StyleGAN layer, in execution order) overrides both: the exportable form. ``return_latents`` and extra
        keywords such as the restorer's ``weight`` have no effect, as in the reference.
        """
        del return_latents, kwargs
        unet_skips: list[Tensor] = []
        feat = _lrelu(self.conv_body_first(x))
        for block in self.conv_body_down:
            feat = block(feat)
            unet_skips.insert(0, feat)
        feat = _lrelu(self.final_conv(feat))

        style_code = self.final_linear(feat.flatten(1))
        if self.different_w:
            style_code = style_code.view(style_code.size(0), -1, self.num_style_feat)

        conditions: list[Tensor] = []
        out_rgbs: list[Tensor] = []
        for i, block in enumerate(self.conv_body_up):
            feat = block(feat + unet_skips[i])
            conditions.append(self.condition_scale[i](feat))
            conditions.append(self.condition_shift[i](feat))
            if return_rgb:
                out_rgbs.append(self.toRGB[i](feat))

        image = self.stylegan_decoder(style_code, conditions, input_is_latent=self.input_is_latent,
                                      randomize_noise=randomize_noise, generator=generator,
                                      noise=noise)
        return image, out_rgbs
