"""StyleGAN2 building blocks in the "clean" layout (no custom CUDA ops), as GFPGANv1Clean uses them.

Parameter names, shapes and registration order follow the reference ``stylegan2_clean_arch`` so
official checkpoints load strictly. All resampling is bilinear with ``align_corners=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Demodulation epsilon of the reference.
DEMOD_EPS = 1e-8


def resample(x: Tensor, factor: float) -> Tensor:
    """Bilinear resize by ``factor`` (2 or 0.5), as every StyleGAN2-clean resampling step does."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class NormStyleCode(nn.Module):
    """Scale a style code to unit mean square along dim 1 (first layer of the mapping MLP)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Convolution whose weight is scaled per sample by a style vector (and optionally demodulated).

    ``sample_mode='upsample'`` doubles the input bilinearly before convolving ('downsample' halves
    it). The reference builds a per-sample weight ``W * s`` (demodulated by ``d``) and runs the
    batch as one grouped conv. Here the same result (up to float rounding) comes from the constant
    weight: ``conv(x, W * s) == conv(x * s, W)`` (the style scales input channels), and the
    demodulation factor is a per-(sample, out-channel) output scale
    ``d = rsqrt(s**2 @ sum_kk(W**2).T + eps)`` (a (b, in) x (in, out) matmul). So an exported
    graph keeps ``W`` a constant the engine can pre-pack, and a batch shares one ordinary conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, sample_mode: str | None = None,
                 eps: float = DEMOD_EPS) -> None:
        super().__init__()
        if sample_mode not in (None, "upsample", "downsample"):
            raise ValueError(f"unknown sample_mode {sample_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.sample_mode = sample_mode
        self.eps = eps
        self.padding = kernel_size // 2
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
            / math.sqrt(in_channels * kernel_size**2))

    def forward(self, x: Tensor, style: Tensor, gain: float = 1.0) -> Tensor:
        """The modulated conv of ``x``, times ``gain`` (folded into the demodulation factor)."""
        # Style arithmetic in float32 even for half-precision models: the sum of squares and the
        # 1e-8 epsilon are not representable in fp16. For float32 models this is a no-op.
        s = self.modulation(style).float()  # (b, in)
        weight = self.weight.view(self.out_channels, self.in_channels,
                                  self.kernel_size, self.kernel_size)
        demod = None
        if self.demodulate:
            # Demodulation cancels a per-sample scale c of s (exactly, with eps scaled by c**2),
            # so s is normalised to max |s| = 1 first. Then x * s, computed in x's own dtype
            # (one pass, no fp32 copy of the activations), is no larger than x, and the conv
            # output before the factor d is of the order of the final output (the weights have
            # unit-order norms): neither can overflow fp16 (CUDA half models) where the
            # reference's unit-norm demodulated weights would not. Without demodulation (ToRGB,
            # 3 output channels) s is used as is, as the reference's weight W * s uses it.
            c = s.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
            s = s / c
            w_sq = weight.float().pow(2).sum(dim=(2, 3))  # (out, in), a constant once exported
            demod = torch.rsqrt(s.pow(2) @ w_sq.t() + self.eps / c.pow(2))  # (b, out)
            if gain != 1.0:
                demod = demod * gain
        # The style scales input channels, which commutes with the (per-channel, linear)
        # bilinear resampling: scale at the lower of the two resolutions.
        if self.sample_mode == "upsample":
            x = resample(x * s.to(x.dtype)[:, :, None, None], 2)
        elif self.sample_mode == "downsample":
            x = resample(x, 0.5) * s.to(x.dtype)[:, :, None, None]
        else:
            x = x * s.to(x.dtype)[:, :, None, None]
        out = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if demod is not None:
            return out.mul_(demod.to(out.dtype)[:, :, None, None])  # a fresh tensor
        return out * gain if gain != 1.0 else out


class StyleConv(nn.Module):
    """Modulated 3x3 conv, times sqrt(2), plus scaled noise and bias, then LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, sample_mode: str | None = None) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, kernel_size,
                                              num_style_feat, demodulate=demodulate,
                                              sample_mode=sample_mode)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """``noise=None`` draws fresh N(0, 1) noise, from ``generator`` when one is given."""
        out = self.modulated_conv(x, style, gain=2**0.5)
        if noise is None:
            b, _, h, w = out.shape
            noise = torch.randn((b, 1, h, w), generator=generator, device=out.device,
                                dtype=out.dtype)
        out = out + self.weight * noise
        out = out + self.bias
        return F.leaky_relu(out, negative_slope=0.2)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (not demodulated) plus bias, added to the upsampled skip image."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, kernel_size=1,
                                              num_style_feat=num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = resample(skip, 2)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    """Learned 4x4 starting feature map, shared by the whole batch."""

    def __init__(self, num_channel: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, num_channel, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.weight.expand(batch, -1, -1, -1)


def stylegan_channels(channel_multiplier: float, narrow: float) -> dict[str, int]:
    """Channel count per resolution, evaluated in the reference's order so int() truncates alike."""
    return {
        "4": int(512 * narrow),
        "8": int(512 * narrow),
        "16": int(512 * narrow),
        "32": int(512 * narrow),
        "64": int(256 * channel_multiplier * narrow),
        "128": int(128 * channel_multiplier * narrow),
        "256": int(64 * channel_multiplier * narrow),
        "512": int(32 * channel_multiplier * narrow),
        "1024": int(16 * channel_multiplier * narrow),
    }


class StyleGAN2GeneratorClean(nn.Module):
    """StyleGAN2 synthesis network with its mapping MLP and fixed noise buffers.

    Holds the layers only; :meth:`synthesize` runs them and lets a subclass hook in per layer.
    """

    def __init__(self, out_size: int, num_style_feat: int = 512, num_mlp: int = 8,
                 channel_multiplier: float = 2, narrow: float = 1) -> None:
        super().__init__()
        self.num_style_feat = num_style_feat
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat, bias=True),
                    nn.LeakyReLU(negative_slope=0.2)]
        self.style_mlp = nn.Sequential(*mlp)

        channels = stylegan_channels(channel_multiplier, narrow)
        self.channels = channels
        self.constant_input = ConstantInput(channels["4"], size=4)
        self.style_conv1 = StyleConv(channels["4"], channels["4"], 3, num_style_feat)
        self.to_rgb1 = ToRGB(channels["4"], num_style_feat, upsample=False)

        self.log_size = int(math.log2(out_size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.num_latent = self.log_size * 2 - 2
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)  # 4, 8, 8, 16, 16, ...
            self.noises.register_buffer(f"noise{layer_idx}", torch.randn(1, 1, res, res))
        in_ch = channels["4"]
        for i in range(3, self.log_size + 1):
            out_ch = channels[f"{2**i}"]
            self.style_convs.append(StyleConv(in_ch, out_ch, 3, num_style_feat,
                                              sample_mode="upsample"))
            self.style_convs.append(StyleConv(out_ch, out_ch, 3, num_style_feat))
            self.to_rgbs.append(ToRGB(out_ch, num_style_feat, upsample=True))
            in_ch = out_ch

    def stored_noise(self) -> list[Tensor]:
        """The fixed noise maps, one per StyleConv in execution order."""
        return [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

    def latent_from(self, style: Tensor, input_is_latent: bool) -> Tensor:
        """(N, num_latent, F) latent: MLP-mapped unless already latent; 2-D codes broadcast."""
        if not input_is_latent:
            style = self.style_mlp(style)
        if style.ndim < 3:
            style = style.unsqueeze(1).expand(-1, self.num_latent, -1)
        return style

    def synthesize(self, latent: Tensor, noise: list[Tensor | None],
                   generator: torch.Generator | None = None,
                   modulate: Callable[[int, Tensor], Tensor] | None = None) -> Tensor:
        """Run the synthesis layers; ``noise[i] is None`` draws that layer's noise.

        ``modulate(step, feat)`` (if given) transforms the features right after the up-sampling
        conv of resolution step ``step`` (0 is 8x8): GFPGAN's spatial feature transform goes there.
        """
        out = self.constant_input(latent.shape[0])
        out = self.style_conv1(out, latent[:, 0], noise[0], generator)
        skip = self.to_rgb1(out, latent[:, 1])
        for step, to_rgb in enumerate(self.to_rgbs):
            i = 1 + 2 * step
            conv_up, conv = self.style_convs[2 * step], self.style_convs[2 * step + 1]
            out = conv_up(out, latent[:, i], noise[i], generator)
            if modulate is not None:
                out = modulate(step, out)
            out = conv(out, latent[:, i + 1], noise[i + 1], generator)
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip

    def forward(self, style: Tensor, input_is_latent: bool = False,
                randomize_noise: bool = True,
                generator: torch.Generator | None = None) -> Tensor:
        latent = self.latent_from(style, input_is_latent)
        noise: list[Tensor | None] = ([None] * self.num_layers if randomize_noise
                                      else list(self.stored_noise()))
        return self.synthesize(latent, noise, generator)
