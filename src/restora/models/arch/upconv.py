"""Nearest x2 upsampling followed by a 3x3 stride-1 conv, computed at the input's resolution.

Why it is exact: after a nearest x2 upsample, output row ``2i + py`` of a 3x3 conv (padding 1)
reads only input rows ``i - 1 + py`` and ``i + py``. For ``py = 0`` tap 0 reads row ``i - 1`` and
taps 1 and 2 both read row ``i``; for ``py = 1`` taps 0 and 1 read row ``i`` and tap 2 reads row
``i + 1``; columns alike. So each output phase ``(py, px)`` is a 2x2 conv of the input whose taps
are sums of the 3x3 taps: the same sum by distributivity (it differs by float rounding only),
about 4/9 of the multiplies, and no upsampled tensor.

Borders: zero-padding the upsampled image by 1 equals zero-padding the input by 1; reflecting
it by 1 reads upsampled row 1 (= input row 0) for row -1, so it equals replicate-padding the input
by 1 (bottom and right alike).

One conv of the padded input computes all four phases (4 x C_out channels, one more row and
column than needed). Phase ``(py, px)`` at input position ``(i, j)`` is that conv's value at
``(i + py, j + px)``; storing phase ``(py, px)`` as pixel-shuffle sub-position ``(1 - py, 1 - px)``
turns that per-phase offset into one crop of 1 pixel on every side of the shuffled result.
Measured faster than four separate 2x2 convs on torch and OpenVINO (docs/engines.md).

The phase kernels are derived from the conv's own 3x3 ``weight`` on every call, so checkpoints
and state-dict keys stay those of the plain conv; the ONNX exporter constant-folds them (the ops
used, unit-step slices, adds and concatenations, are ones its folding supports).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Padding", "upsample_conv3x3"]

#: How the reference pads the upsampled image (by 1 pixel) before its 3x3 conv.
Padding = Literal["zeros", "reflect"]

#: padding of the upsampled image -> the equal padding of the input
_INPUT_PAD: dict[str, str] = {"zeros": "constant", "reflect": "replicate"}


def _phases(w: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Along a size-3 kernel dimension: phase 1's taps (0+1, 2), then phase 0's (0, 1+2)."""
    t0, t1, t2 = (w.narrow(dim, i, 1) for i in range(3))
    return torch.cat((t0 + t1, t2), dim), torch.cat((t0, t1 + t2), dim)


def _shuffle_kernels(weight: Tensor) -> Tensor:
    """(C_out, C_in, 3, 3) -> (C_out * 4, C_in, 2, 2); channel ``c*4 + (1-py)*2 + (1-px)``."""
    w = weight.unsqueeze(1)  # (C_out, phase, C_in, kh, kw)
    return torch.cat([k for rows in _phases(w, -2) for k in _phases(rows, -1)], 1).flatten(0, 1)


def upsample_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None,
                     padding: Padding = "zeros") -> Tensor:
    """``conv2d(pad(interpolate(x, scale_factor=2, mode="nearest"), 1, padding), weight, bias)``.

    ``weight`` is a (C_out, C_in, 3, 3) stride-1 kernel; any batch, size and float dtype.
    """
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=_INPUT_PAD[padding]), _shuffle_kernels(weight),
                 None if bias is None else torch.cat([bias.unsqueeze(1)] * 4, 1).reshape(-1))
    return F.pixel_shuffle(y, 2)[:, :, 1:-1, 1:-1]
