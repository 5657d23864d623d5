"""VQGAN autoencoder parts used by CodeFormer (encoder, nearest-code quantizer, generator).

Names and order follow the reference ``vqgan_arch`` so checkpoints load strictly. The reference
hard-codes GroupNorm(32 groups, eps 1e-6); the group count is a parameter here so that the reduced
conformance model (fewer channels) can be built too.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from restora.models.arch.upconv import upsample_conv3x3

GROUPNORM_EPS = 1e-6


def normalize(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=GROUPNORM_EPS, affine=True)


def swish(x: Tensor) -> Tensor:
    return F.silu(x)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, swish, 3x3 conv) x 2; 1x1 conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int | None = None, groups: int = 32) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = normalize(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = normalize(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        if in_channels != out_channels:
            self.conv_out = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def forward(self, x_in: Tensor) -> Tensor:
        x = self.conv1(swish(self.norm1(x_in)))
        x = self.conv2(swish(self.norm2(x)))
        if self.in_channels != self.out_channels:
            x_in = self.conv_out(x_in)
        return x + x_in


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions (scale C^-1/2), residual."""

    def __init__(self, in_channels: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = normalize(in_channels, groups)
        self.q = nn.Conv2d(in_channels, in_channels, 1)
        self.k = nn.Conv2d(in_channels, in_channels, 1)
        self.v = nn.Conv2d(in_channels, in_channels, 1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        # (B, C, H, W) -> (B, 1 head, H*W, C)
        q, k, v = (conv(h).reshape(b, 1, c, hh * ww).transpose(2, 3)
                   for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # default scale is C^-1/2
        out = out.transpose(2, 3).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Pad one zero row/column at the bottom/right, then a 3x3 stride-2 conv without padding."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 conv (zero padding 1), computed at the input's resolution (exact)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return upsample_conv3x3(x, self.conv.weight, self.conv.bias, "zeros")


class Encoder(nn.Module):
    """Image -> latent features; a flat ``blocks`` list so callers can tap intermediate outputs."""

    def __init__(self, in_channels: int, nf: int, emb_dim: int, ch_mult: Sequence[int],
                 num_res_blocks: int, resolution: int, attn_resolutions: Sequence[int],
                 groups: int = 32) -> None:
        super().__init__()
        curr_res = resolution
        in_ch_mult = (1, *ch_mult)
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, nf, 3, 1, 1)]
        block_ch = nf
        for i, mult in enumerate(ch_mult):
            block_ch = nf * in_ch_mult[i]
            out_ch = nf * mult
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(block_ch, out_ch, groups))
                block_ch = out_ch
                if curr_res in attn_resolutions:
                    blocks.append(AttnBlock(block_ch, groups))
            if i != len(ch_mult) - 1:
                blocks.append(Downsample(block_ch))
                curr_res //= 2
        blocks += [ResBlock(block_ch, block_ch, groups), AttnBlock(block_ch, groups),
                   ResBlock(block_ch, block_ch, groups),
                   # The reference ends with norm + conv and no activation between them.
                   normalize(block_ch, groups), nn.Conv2d(block_ch, emb_dim, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Generator(nn.Module):
    """Latent features -> RGB image; mirror of :class:`Encoder`, also a flat ``blocks`` list."""

    def __init__(self, nf: int, emb_dim: int, ch_mult: Sequence[int], res_blocks: int,
                 img_size: int, attn_resolutions: Sequence[int], groups: int = 32) -> None:
        super().__init__()
        block_ch = nf * ch_mult[-1]
        curr_res = img_size // 2 ** (len(ch_mult) - 1)
        blocks: list[nn.Module] = [
            nn.Conv2d(emb_dim, block_ch, 3, 1, 1),
            ResBlock(block_ch, block_ch, groups), AttnBlock(block_ch, groups),
            ResBlock(block_ch, block_ch, groups),
        ]
        for i in reversed(range(len(ch_mult))):
            out_ch = nf * ch_mult[i]
            for _ in range(res_blocks):
                blocks.append(ResBlock(block_ch, out_ch, groups))
                block_ch = out_ch
                if curr_res in attn_resolutions:
                    blocks.append(AttnBlock(block_ch, groups))
            if i != 0:
                blocks.append(Upsample(block_ch))
                curr_res *= 2
        blocks += [normalize(block_ch, groups), nn.Conv2d(block_ch, 3, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class VectorQuantizer(nn.Module):
    """Codebook of ``codebook_size`` vectors of ``emb_dim``; inference only needs the lookup."""

    def __init__(self, codebook_size: int, emb_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.emb_dim = emb_dim
        self.beta = beta
        self.embedding = nn.Embedding(codebook_size, emb_dim)
        self.embedding.weight.data.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)

    def get_codebook_feat(self, indices: Tensor, shape: Sequence[int]) -> Tensor:
        """Codes for ``indices`` arranged as ``shape`` = (B, H, W, C), returned as (B, C, H, W).

        A plain gather: equal to the reference's one-hot matmul, which adds exact zeros.
        """
        z_q = F.embedding(indices.reshape(-1), self.embedding.weight)
        return z_q.view(*shape).permute(0, 3, 1, 2).contiguous()


class VQAutoEncoder(nn.Module):
    """Encoder, nearest-neighbour quantizer and generator, in the reference registration order.

    Only the layers: CodeFormer supplies the forward (it predicts codes with a transformer).
    """

    def __init__(self, img_size: int, nf: int, ch_mult: Sequence[int], quantizer: str = "nearest",
                 res_blocks: int = 2, attn_resolutions: Sequence[int] = (16,),
                 codebook_size: int = 1024, emb_dim: int = 256, beta: float = 0.25,
                 groups: int = 32) -> None:
        super().__init__()
        if quantizer != "nearest":
            raise ValueError(f"only the 'nearest' quantizer is implemented, not {quantizer!r}")
        self.in_channels = 3
        self.nf = nf
        self.ch_mult = tuple(ch_mult)
        self.embed_dim = emb_dim
        self.codebook_size = codebook_size
        self.encoder = Encoder(3, nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions,
                               groups)
        self.quantize = VectorQuantizer(codebook_size, emb_dim, beta)
        self.generator = Generator(nf, emb_dim, ch_mult, res_blocks, img_size, attn_resolutions,
                                   groups)
