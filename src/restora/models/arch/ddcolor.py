"""DDColor (piddnad/DDColor) image colorization network, in plain PyTorch.

The module tree mirrors the official checkpoints key for key, so ``ddcolor_paper_tiny``,
``ddcolor_paper``, ``ddcolor_artistic`` and ``ddcolor_modelscope`` load strictly:

* ``encoder.arch``: a ConvNeXt backbone (:mod:`restora.models.arch.convnext`) giving four
  normalised feature maps at strides 4..32;
* ``decoder.layers``: three UNet blocks (pixel-shuffle upsampling plus blur) back to stride 4,
  then ``decoder.last_shuf`` to full resolution;
* ``decoder.color_decoder``: a 9-layer transformer whose learned colour queries attend to the
  three UNet outputs in turn; each query becomes a full-resolution map via a dot product with the
  ``last_shuf`` features;
* ``refine_net``: a 1x1 convolution from [query maps, normalised input] to Lab ``a``/``b``.

Forward: ``x`` is N x 3 x H x W RGB in [0, 1] (the pipeline feeds the grey L channel rendered as
RGB), H and W multiples of 32; the output is N x 2 x H x W raw Lab a/b (no tanh, no clamp).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from restora.errors import ModelError
from restora.models.arch.convnext import PRESETS, ConvNeXt

DEFAULT_INPUT_SIZE = 512  # the official inference scripts run the network at 512 x 512
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def input_size(hparams: Mapping[str, Any]) -> int:
    """Square side the network runs at for these constructor hyper-parameters (default 512)."""
    value = hparams.get("input_size", DEFAULT_INPUT_SIZE)
    if isinstance(value, Sequence) and not isinstance(value, str):
        sides = {int(v) for v in value}
        if len(sides) != 1:
            raise ModelError(f"DDColor input_size must be square, got {list(value)}")
        value = sides.pop()
    return int(value)


def _side(value: int | Sequence[int]) -> int:
    # The constructor argument shadows :func:`input_size` inside ``DDColor.__init__``.
    return input_size({"input_size": value})


class SpectralConv2d(nn.Module):
    """Conv2d with the spectral-norm parametrisation of ``torch.nn.utils.spectral_norm``.

    Stores ``weight_orig`` and the power-iteration vectors ``weight_u``/``weight_v`` under the same
    names. In inference the stored vectors are used as they are (no power iteration): the
    effective weight is ``weight_orig / (u . (W v))``, exactly what the reference evaluates.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 padding: int = 0, bias: bool = False) -> None:
        super().__init__()
        self.padding = padding
        self.weight_orig = nn.Parameter(
            torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight_orig)
        self.register_buffer("weight_u", F.normalize(torch.randn(out_channels), dim=0))
        self.register_buffer(
            "weight_v", F.normalize(torch.randn(in_channels * kernel_size * kernel_size), dim=0))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def effective_weight(self) -> torch.Tensor:
        matrix = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        sigma = torch.dot(self.weight_u, torch.mv(matrix, self.weight_v))
        return self.weight_orig / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, padding=self.padding)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Anti-checkerboard blur after pixel shuffle: replicate-pad left/top, 2x2 mean, stride 1."""
    return F.avg_pool2d(F.pad(x, (1, 0, 1, 0), mode="replicate"), 2, stride=1)


class PixelShuffleUp(nn.Module):
    """1x1 spectral conv (+ BatchNorm) -> ReLU -> PixelShuffle(scale) -> blur."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, *, batch_norm: bool) -> None:
        super().__init__()
        wide = out_channels * scale * scale
        layers: list[nn.Module] = [SpectralConv2d(in_channels, wide, 1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(wide))
        self.conv = nn.Sequential(*layers)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _blur(F.pixel_shuffle(F.relu(self.conv(x)), self.scale))


class UnetBlock(nn.Module):
    """Upsample the coarse map x2, concatenate the BatchNorm'ed skip, 3x3 spectral conv."""

    def __init__(self, up_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.shuf = PixelShuffleUp(up_channels, out_channels, 2, batch_norm=True)
        self.bn = nn.BatchNorm2d(skip_channels)
        self.conv = nn.Sequential(
            SpectralConv2d(out_channels + skip_channels, out_channels, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.shuf(up), self.bn(skip)], dim=1)
        return self.conv(F.relu(x))


def sine_position_embedding(height: int, width: int, feats_per_axis: int, *,
                            device: torch.device) -> torch.Tensor:
    """DETR sine embedding of an unmasked H x W grid, as (H*W, 1, 2*feats_per_axis): y half first.

    Coordinates 1..H (1..W) are normalised by (last + 1e-6) and scaled to 2*pi; channel pairs
    interleave sin and cos of the same frequency, temperature 10000.
    """
    eps, scale = 1e-6, 2 * math.pi
    ys = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    xs = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    ys = ys / (ys[-1:] + eps) * scale
    xs = xs / (xs[-1:] + eps) * scale
    idx = torch.arange(feats_per_axis, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * torch.div(idx, 2, rounding_mode="floor") / feats_per_axis)

    def encode(coords: torch.Tensor) -> torch.Tensor:
        angles = coords[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(ys)[:, None, :].expand(height, width, feats_per_axis)
    pos_x = encode(xs)[None, :, :].expand(height, width, feats_per_axis)
    return torch.cat((pos_y, pos_x), dim=2).reshape(height * width, 1, 2 * feats_per_axis)


class CrossAttentionLayer(nn.Module):
    """Post-norm cross-attention: queries (+ query pos) attend to memory (+ its pos)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                query_pos: torch.Tensor) -> torch.Tensor:
        attended = self.multihead_attn(tgt + query_pos, memory + pos, memory,
                                       need_weights=False)[0]
        return self.norm(tgt + attended)


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention among the queries (q = k = tgt + query pos, v = tgt)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, tgt, need_weights=False)[0])


class FFNLayer(nn.Module):
    """Post-norm feed-forward block with ReLU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    """Linear layers with ReLU between them (not after the last)."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MultiScaleColorDecoder(nn.Module):
    """Colour queries refined by cross-attention over three feature scales, round-robin."""

    def __init__(self, in_channels: Sequence[int], *, hidden_dim: int, num_queries: int,
                 nheads: int, dim_feedforward: int, dec_layers: int, color_embed_dim: int) -> None:
        super().__init__()
        self.num_layers = dec_layers
        self.num_levels = len(in_channels)
        self.pos_feats = hidden_dim // 2
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_levels, hidden_dim)
        self.input_proj = nn.ModuleList(nn.Conv2d(c, hidden_dim, 1) for c in in_channels)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.color_embed = MLP([hidden_dim, hidden_dim, hidden_dim, color_embed_dim])

    def forward(self, features: Sequence[torch.Tensor], pixel_features: torch.Tensor,
                record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        # Sequence-first (L, N, C) layout, as nn.MultiheadAttention expects by default.
        memories, positions = [], []
        for i, feat in enumerate(features):
            src = self.input_proj[i](feat).flatten(2) + self.level_embed.weight[i][None, :, None]
            memories.append(src.permute(2, 0, 1))
            positions.append(sine_position_embedding(feat.shape[2], feat.shape[3], self.pos_feats,
                                                     device=feat.device).to(feat.dtype))
        batch = features[0].shape[0]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        out = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)
        for i in range(self.num_layers):
            level = i % self.num_levels
            out = self.transformer_cross_attention_layers[i](out, memories[level], positions[level],
                                                             query_pos)
            out = self.transformer_self_attention_layers[i](out, query_pos)
            out = self.transformer_ffn_layers[i](out)
        color_embed = self.color_embed(self.decoder_norm(out).transpose(0, 1))
        maps = torch.einsum("bqc,bchw->bqhw", color_embed, pixel_features)
        if record is not None:
            record["color_embed"] = color_embed
            record["color_decoder_out"] = maps
        return maps


class DualDecoder(nn.Module):
    """Pixel decoder (UNet blocks + ``last_shuf``) feeding the colour decoder."""

    def __init__(self, encoder_dims: Sequence[int], *, nf: int, num_queries: int, dec_layers: int,
                 hidden_dim: int, nheads: int, dim_feedforward: int) -> None:
        super().__init__()
        skips = list(encoder_dims[-2::-1])  # stride 16, 8, 4
        outs = [nf] * (len(skips) - 1) + [nf // 2]  # the stride-4 block is half as wide
        blocks, up = [], encoder_dims[-1]
        for skip, out in zip(skips, outs):
            blocks.append(UnetBlock(up, skip, out))
            up = out
        self.layers = nn.ModuleList(blocks)
        self.last_shuf = PixelShuffleUp(nf // 2, nf // 2, 4, batch_norm=False)
        self.color_decoder = MultiScaleColorDecoder(
            outs, hidden_dim=hidden_dim, num_queries=num_queries, nheads=nheads,
            dim_feedforward=dim_feedforward, dec_layers=dec_layers, color_embed_dim=nf // 2)

    def forward(self, features: Sequence[torch.Tensor],
                record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        x, outs = features[-1], []
        for block, skip in zip(self.layers, features[-2::-1]):
            x = block(x, skip)
            outs.append(x)
        full = self.last_shuf(x)
        if record is not None:
            record.update({f"dec_out{i}": t for i, t in enumerate(outs)})
            record["dec_out3"] = full
        return self.color_decoder(outs, full, record)


class ImageEncoder(nn.Module):
    """Holds the backbone under ``arch`` (the checkpoint prefix is ``encoder.arch``)."""

    def __init__(self, depths: Sequence[int], dims: Sequence[int]) -> None:
        super().__init__()
        self.arch = ConvNeXt(depths, dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.arch(x)


class DDColor(nn.Module):
    """DDColor with the reference constructor arguments.

    Defaults are the official inference configuration (ConvNeXt-L, 100 queries, 9 decoder layers,
    2 output channels, spectral norm), not the reference class defaults. ``input_size`` only
    records the side the pipeline should run at (the reference uses it for a dummy pass);
    ``num_input_channels`` must be 3. The keyword-only arguments after them exist for the
    reduced-width conformance model: they override the encoder preset and the colour decoder
    widths that the reference hard-codes (the colour decoder's inputs are [nf, nf, nf/2] and its
    embedding width nf/2, which equal the reference's constants for nf = 512).
    """

    def __init__(self, encoder_name: str = "convnext-l",
                 decoder_name: str = "MultiScaleColorDecoder", num_input_channels: int = 3,
                 input_size: int | Sequence[int] = DEFAULT_INPUT_SIZE, nf: int = 512,
                 num_output_channels: int = 2, last_norm: str = "Spectral",
                 do_normalize: bool = False, num_queries: int = 100, num_scales: int = 3,
                 dec_layers: int = 9, *, encoder_depths: Sequence[int] | None = None,
                 encoder_dims: Sequence[int] | None = None, hidden_dim: int = 256, nheads: int = 8,
                 dim_feedforward: int = 2048) -> None:
        super().__init__()
        if encoder_name not in PRESETS:
            raise ModelError(f"unknown DDColor encoder {encoder_name!r} (convnext-t or convnext-l)")
        if decoder_name != "MultiScaleColorDecoder" or last_norm != "Spectral":
            raise ModelError("only the MultiScaleColorDecoder with Spectral norm is implemented")
        if num_input_channels != 3 or num_scales != 3:
            raise ModelError("DDColor takes 3 input channels and decodes 3 feature scales")
        if do_normalize and num_output_channels != 3:
            raise ModelError("do_normalize needs 3 output channels")
        depths, dims = PRESETS[encoder_name]
        depths = tuple(encoder_depths or depths)
        dims = tuple(encoder_dims or dims)
        self.inference_size = _side(input_size)  # the pipeline's default resize target
        self.do_normalize = do_normalize
        self.encoder = ImageEncoder(depths, dims)
        self.decoder = DualDecoder(dims, nf=nf, num_queries=num_queries, dec_layers=dec_layers,
                                   hidden_dim=hidden_dim, nheads=nheads,
                                   dim_feedforward=dim_feedforward)
        self.refine_net = nn.Sequential(nn.Sequential(
            SpectralConv2d(num_queries + 3, num_output_channels, 1, bias=True)))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, None)

    def trace(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward that also returns the intermediates the conformance goldens store."""
        record: dict[str, torch.Tensor] = {}
        record["output"] = self._run(x, record)
        return record

    def _run(self, x: torch.Tensor, record: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"DDColor needs height and width multiples of 32, got {tuple(x.shape)}")
        x = (x - self.mean) / self.std
        features = self.encoder(x)
        if record is not None:
            record.update({f"enc_norm{i}": t for i, t in enumerate(features)})
        maps = self.decoder(features, record)
        # The refinement sees the normalised input, as in the reference.
        out = self.refine_net(torch.cat([maps, x], dim=1))
        if self.do_normalize:
            out = out * self.std + self.mean
        return out
