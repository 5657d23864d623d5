"""LaMa's ``FFCResNetGenerator`` (big-lama), plain torch.

Fast Fourier convolutions split the channels into a *local* part (ordinary 3 x 3 convolutions)
and a *global* part whose spectral transform mixes every position of the feature map through an
FFT, which is what lets LaMa continue large periodic structures across big holes. Module names
follow the official generator (``model.N...``), so ``best.ckpt``'s ``generator.*`` tensors and the
TorchScript re-host's ``model.*`` tensors load strictly after their prefix is removed.

Input: ``cat([image * (1 - mask), mask])``, image RGB in [0, 1], mask 1 = hole; output RGB in
[0, 1] (sigmoid). Sides should be multiples of 8.
"""

from __future__ import annotations

from typing import Any, Union

import torch
from torch import nn

Pair = tuple[torch.Tensor, Union[torch.Tensor, int]]


class FourierUnit(nn.Module):
    """Real FFT, 1 x 1 conv + BN + ReLU on interleaved (real, imaginary) channels, inverse FFT."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(c_in * 2, c_out * 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out * 2)
        self.relu = nn.ReLU(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        spec = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        # channel 2k is Re(k) and 2k+1 is Im(k): interleaved, as the checkpoint was trained
        y = torch.stack((spec.real, spec.imag), dim=-1).permute(0, 1, 4, 2, 3)
        y = y.reshape(n, 2 * c, h, -1)
        y = self.relu(self.bn(self.conv_layer(y)))
        y = y.view(n, -1, 2, h, y.shape[-1]).permute(0, 1, 3, 4, 2).contiguous()
        # s=(h, w): an odd width cannot be recovered from the half spectrum otherwise
        return torch.fft.irfftn(torch.complex(y[..., 0], y[..., 1]), s=(h, w), dim=(-2, -1),
                                norm="ortho")


class SpectralTransform(nn.Module):
    """1 x 1 conv to half the channels, plus its Fourier unit, 1 x 1 conv back (no LFU)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        half = c_out // 2
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, half, 1, bias=False), nn.BatchNorm2d(half),
                                   nn.ReLU(True))
        self.fu = FourierUnit(half, half)
        self.conv2 = nn.Conv2d(half, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(x + self.fu(x))


class _Zero(nn.Module):
    """A branch that does not exist: contributes nothing (the reference's Identity on 0)."""

    def forward(self, x: Any) -> int:
        return 0


class FFC(nn.Module):
    """Local/global split convolution: l = l2l(l) + g2l(g), g = l2g(l) + g2g(g)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, enable_lfu: bool = False) -> None:
        super().__init__()
        if enable_lfu:
            raise ValueError("LaMa local Fourier units (enable_lfu) are not supported")
        in_g = int(c_in * ratio_gin)
        in_l = c_in - in_g
        out_g = int(c_out * ratio_gout)
        out_l = c_out - out_g
        self.ratio_gout = ratio_gout

        def conv(a: int, b: int) -> nn.Module:
            if a == 0 or b == 0:
                return _Zero()
            return nn.Conv2d(a, b, kernel, stride, padding, bias=False, padding_mode="reflect")

        self.convl2l = conv(in_l, out_l)
        self.convl2g = conv(in_l, out_g)
        self.convg2l = conv(in_g, out_l)
        self.convg2g = (SpectralTransform(in_g, out_g) if in_g and out_g and stride == 1
                        else conv(in_g, out_g))

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = x
        out_l: torch.Tensor | int = 0
        out_g: torch.Tensor | int = 0
        if self.ratio_gout != 1:
            out_l = self.convl2l(x_l) + self.convg2l(x_g)
        if self.ratio_gout != 0:
            out_g = self.convl2g(x_l) + self.convg2g(x_g)
        return out_l, out_g  # type: ignore[return-value]


class FFCBNAct(nn.Module):
    """FFC, then BatchNorm + ReLU on each side that has channels (named ``ffc``, ``bn_l/g``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, ratio_gin: float, ratio_gout: float,
                 stride: int = 1, padding: int = 0, enable_lfu: bool = False) -> None:
        super().__init__()
        self.ffc = FFC(c_in, c_out, kernel, ratio_gin, ratio_gout, stride, padding, enable_lfu)
        out_g = int(c_out * ratio_gout)
        out_l = c_out - out_g
        self.bn_l = nn.BatchNorm2d(out_l) if out_l else nn.Identity()
        self.bn_g = nn.BatchNorm2d(out_g) if out_g else nn.Identity()
        self.act_l = nn.ReLU(True) if out_l else nn.Identity()
        self.act_g = nn.ReLU(True) if out_g else nn.Identity()

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = self.ffc(x)
        if isinstance(x_l, torch.Tensor):
            x_l = self.act_l(self.bn_l(x_l))
        if isinstance(x_g, torch.Tensor):
            x_g = self.act_g(self.bn_g(x_g))
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    """Two FFC + BN + ReLU layers with residuals on both the local and the global side."""

    def __init__(self, channels: int, ratio_gin: float, ratio_gout: float,
                 enable_lfu: bool = False) -> None:
        super().__init__()
        self.conv1 = FFCBNAct(channels, channels, 3, ratio_gin, ratio_gout, 1, 1, enable_lfu)
        self.conv2 = FFCBNAct(channels, channels, 3, ratio_gin, ratio_gout, 1, 1, enable_lfu)

    def forward(self, x: Pair) -> Pair:
        x_l, x_g = x
        y_l, y_g = self.conv2(self.conv1((x_l, x_g)))
        return x_l + y_l, x_g + y_g  # type: ignore[operator]


class ConcatTuple(nn.Module):
    """cat([local, global], channel) - local first; just local when there is no global part."""

    def forward(self, x: Pair) -> torch.Tensor:
        x_l, x_g = x
        return torch.cat([x_l, x_g], 1) if isinstance(x_g, torch.Tensor) else x_l


def _kw(d: dict[str, Any] | None) -> dict[str, Any]:
    d = dict(d or {})
    return {"ratio_gin": float(d.get("ratio_gin", 0)), "ratio_gout": float(d.get("ratio_gout", 0)),
            "enable_lfu": bool(d.get("enable_lfu", False))}


class LaMa(nn.Module):
    """``FFCResNetGenerator`` as configured for big-lama (BatchNorm, reflect padding, ReLU)."""

    def __init__(self, input_nc: int = 4, output_nc: int = 3, ngf: int = 64,
                 n_downsampling: int = 3, n_blocks: int = 18, max_features: int = 1024,
                 add_out_act: str | bool = "sigmoid",
                 init_conv_kwargs: dict[str, Any] | None = None,
                 downsample_conv_kwargs: dict[str, Any] | None = None,
                 resnet_conv_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if add_out_act not in ("sigmoid", True, "tanh", False, None):
            raise ValueError(f"unsupported add_out_act {add_out_act!r}")
        init_kw = _kw(init_conv_kwargs)
        down_kw = _kw(downsample_conv_kwargs)
        res_kw = _kw(resnet_conv_kwargs if resnet_conv_kwargs is not None
                     else {"ratio_gin": 0.75, "ratio_gout": 0.75})
        layers: list[nn.Module] = [nn.ReflectionPad2d(3),
                                   FFCBNAct(input_nc, ngf, 7, padding=0, **init_kw)]
        for i in range(n_downsampling):
            kw = dict(down_kw)
            if i == n_downsampling - 1:  # the last one opens the global branch for the blocks
                kw["ratio_gout"] = res_kw["ratio_gin"]
            c_in = min(max_features, ngf * 2 ** i)
            c_out = min(max_features, ngf * 2 ** (i + 1))
            layers.append(FFCBNAct(c_in, c_out, 3, stride=2, padding=1, **kw))
        feats = min(max_features, ngf * 2 ** n_downsampling)
        layers += [FFCResnetBlock(feats, **res_kw) for _ in range(n_blocks)]
        layers.append(ConcatTuple())
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            c_in = min(max_features, ngf * mult)
            c_out = min(max_features, int(ngf * mult / 2))
            layers += [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                       nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7)]
        if add_out_act in ("sigmoid", True):
            layers.append(nn.Sigmoid())
        elif add_out_act == "tanh":
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # After the padding every FFC layer takes a (local, global) pair; the input has no
        # global part yet.
        y: Any = (self.model[0](x), 0)
        for layer in list(self.model)[1:]:
            y = layer(y)
        return y

    @torch.no_grad()
    def inpaint(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reference composite: masked pixels from the network, the rest kept.

        ``image`` N x 3 x H x W in [0, 1], ``mask`` N x 1 x H x W in {0, 1}; H, W multiples of 8.
        """
        pred = self(torch.cat([image * (1 - mask), mask], 1))
        return mask * pred + (1 - mask) * image
