"""CodeFormer: a VQGAN whose codes are predicted by a transformer from the degraded face's latent.

Constructor keywords, parameter names and forward semantics match the reference
``codeformer_arch`` so official checkpoints (``params_ema``) load strictly. Two values the reference
hard-codes are parameters here: the VQGAN base width ``nf`` (64) and the GroupNorm group count
``norm_groups`` (32); the conformance model uses smaller ones. Input: RGB NCHW in [-1, 1], 512x512.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from restora.models.arch.vqgan import ResBlock, VQAutoEncoder

IMG_SIZE = 512
CH_MULT = (1, 2, 2, 4, 4, 8)
EMB_DIM = 256
# Encoder block after which each resolution's skip feature is taken (after the second residual
# block, or before the attention block at 16), and generator block after which it is fused back.
FUSE_ENCODER_BLOCK = {"512": 2, "256": 5, "128": 8, "64": 11, "32": 14, "16": 18}
FUSE_GENERATOR_BLOCK = {"16": 6, "32": 9, "64": 12, "128": 15, "256": 18, "512": 21}


def input_size(hparams: dict[str, Any]) -> int:
    """Side of the square face crop the network expects (fixed by the architecture)."""
    del hparams
    return IMG_SIZE


def calc_mean_std(feat: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-channel mean and sqrt(unbiased variance + eps) over the spatial positions."""
    b, c = feat.shape[:2]
    flat = feat.reshape(b, c, -1)
    std = (flat.var(dim=2) + eps).sqrt().view(b, c, 1, 1)
    return flat.mean(dim=2).view(b, c, 1, 1), std


def adaptive_instance_normalization(content: Tensor, style: Tensor) -> Tensor:
    """Give ``content`` the per-channel mean and std of ``style``."""
    style_mean, style_std = calc_mean_std(style)
    content_mean, content_std = calc_mean_std(content)
    return (content - content_mean) / content_std * style_std + style_mean


class SelfAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameters (packed in-projection).

    Query and key share one input (tokens plus position embedding), the value has its own.
    Sequence-first tensors: (L, B, E).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by {num_heads} heads")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query_key: Tensor, value: Tensor) -> Tensor:
        length, batch, dim = value.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        w_qk, w_v = self.in_proj_weight.split([2 * dim, dim])
        b_qk, b_v = self.in_proj_bias.split([2 * dim, dim])
        q, k = F.linear(query_key, w_qk, b_qk).chunk(2, dim=-1)
        v = F.linear(value, w_v, b_v)

        def split_heads(t: Tensor) -> Tensor:  # (L, B, E) -> (B, H, L, D)
            return t.reshape(length, batch, heads, head_dim).permute(1, 2, 0, 3)

        out = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v))
        out = out.permute(2, 0, 1, 3).reshape(length, batch, dim)
        return self.out_proj(out)


class TransformerSALayer(nn.Module):
    """Pre-norm transformer layer; the position embedding is added to query and key only."""

    def __init__(self, embed_dim: int, nhead: int = 8, dim_mlp: int = 2048) -> None:
        super().__init__()
        self.self_attn = SelfAttention(embed_dim, nhead)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, tgt: Tensor, query_pos: Tensor | None = None) -> Tensor:
        normed = self.norm1(tgt)
        qk = normed if query_pos is None else normed + query_pos
        tgt = tgt + self.self_attn(qk, normed)
        return tgt + self.linear2(F.gelu(self.linear1(self.norm2(tgt))))


class FuseSFTBlock(nn.Module):
    """Controllable feature transform: ``dec + w * (dec * scale + shift)`` from encoder features."""

    def __init__(self, in_ch: int, out_ch: int, groups: int = 32) -> None:
        super().__init__()
        self.encode_enc = ResBlock(2 * in_ch, out_ch, groups)
        self.scale = self._head(in_ch, out_ch)
        self.shift = self._head(in_ch, out_ch)

    @staticmethod
    def _head(in_ch: int, out_ch: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.LeakyReLU(0.2),
                             nn.Conv2d(out_ch, out_ch, 3, padding=1))

    def forward(self, enc_feat: Tensor, dec_feat: Tensor, w: float | Tensor = 1.0) -> Tensor:
        feat = self.encode_enc(torch.cat([enc_feat, dec_feat], dim=1))
        scale, shift = self.scale(feat), self.shift(feat)
        return dec_feat + w * (dec_feat * scale + shift)


class CodeFormer(VQAutoEncoder):
    """CodeFormer face restoration network (VQGAN + code-prediction transformer + CFT fusion)."""

    def __init__(self, dim_embd: int = 512, n_head: int = 8, n_layers: int = 9,
                 codebook_size: int = 1024, latent_size: int = 256,
                 connect_list: Sequence[str] = ("32", "64", "128", "256"),
                 fix_modules: Sequence[str] | None = ("quantize", "generator"),
                 nf: int = 64, norm_groups: int = 32) -> None:
        super().__init__(IMG_SIZE, nf, CH_MULT, "nearest", 2, (16,), codebook_size, EMB_DIM,
                         groups=norm_groups)
        for name in fix_modules or ():
            getattr(self, name).requires_grad_(False)
        self.connect_list = [str(size) for size in connect_list]
        self.n_layers = n_layers
        self.dim_embd = dim_embd
        self.dim_mlp = dim_embd * 2

        self.position_emb = nn.Parameter(torch.zeros(latent_size, dim_embd))
        self.feat_emb = nn.Linear(EMB_DIM, dim_embd)
        self.ft_layers = nn.Sequential(*(TransformerSALayer(dim_embd, n_head, self.dim_mlp)
                                         for _ in range(n_layers)))
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd),
                                            nn.Linear(dim_embd, codebook_size, bias=False))
        # Channels per resolution, as the reference's table (which is nf * ch_mult per level).
        self.channels = {str(IMG_SIZE >> level): nf * mult for level, mult in enumerate(CH_MULT)}
        self.fuse_convs_dict = nn.ModuleDict(
            {size: FuseSFTBlock(self.channels[size], self.channels[size], norm_groups)
             for size in self.connect_list})

    def forward(self, x: Tensor, w: float | Tensor = 0.0, detach_16: bool = True,
                code_only: bool = False,
                adain: bool = False) -> tuple[Tensor, Tensor, Tensor] | tuple[Tensor, Tensor]:
        """Returns (image, logits (B, H*W, codebook), lq_feat); ``code_only``: the last two.

        ``w`` in [0, 1] trades quality (0: codebook only) for fidelity (1: strong encoder fusion).
        A tensor ``w`` (the exported graphs' input) always runs the fusion: ``w = 0`` then adds
        exact zeros, so no branch depends on the data.
        """
        # resolutions by block index (not read from tensor shapes, which are traced values
        # when exporting)
        taps = {FUSE_ENCODER_BLOCK[size]: size for size in self.connect_list}
        enc_feats: dict[str, Tensor] = {}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in taps:
                enc_feats[taps[i]] = x
        lq_feat = x

        b, c, h, w_lat = lq_feat.shape
        pos_emb = self.position_emb.unsqueeze(1).expand(-1, b, -1)
        # (B, C, H, W) -> (H*W, B, C): row-major tokens, sequence first.
        query = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))
        for layer in self.ft_layers:
            query = layer(query, query_pos=pos_emb)
        logits = self.idx_pred_layer(query).permute(1, 0, 2)  # (B, H*W, codebook)
        if code_only:
            return logits, lq_feat

        # The reference takes the top-1 of the softmax; softmax is monotonic, so the argmax of
        # the logits is the same code, and it exports as one ArgMax + Gather.
        top_idx = logits.argmax(dim=2)
        quant_feat = self.quantize.get_codebook_feat(top_idx, (b, h, w_lat, c))
        if detach_16:
            quant_feat = quant_feat.detach()
        if adain:
            # float32 statistics even for half models; a no-op for float32.
            quant_feat = adaptive_instance_normalization(quant_feat.float(),
                                                         lq_feat.float()).to(lq_feat.dtype)

        fuse_after = {FUSE_GENERATOR_BLOCK[size]: size for size in self.connect_list}
        x = quant_feat
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            if i in fuse_after and (isinstance(w, Tensor) or w > 0):
                size = fuse_after[i]
                x = self.fuse_convs_dict[size](enc_feats[size].detach(), x, w)
        return x, logits, lq_feat
