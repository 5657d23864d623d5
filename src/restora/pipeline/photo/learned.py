"""The reference pre- and post-processing of the two photo-repair networks.

Scratch U-Net (BOPBTL ``Global/detection.py``): the RGB photo is resized with Pillow bicubic to
a multiple of 16 (``full_size``) or to a 256 px shorter side (``scale_256``), turned grey with
Pillow's ``convert('L')``, normalised to [-1, 1] and bilinearly resampled so its shorter side is
256; the network's sigmoid is mapped back with PyTorch's legacy nearest rule and thresholded at
0.4. In the pipeline we use ``scale_256`` (the same network resolution as ``full_size``, but the
big reduction is done by Pillow's antialiasing filter instead of a plain bilinear sample) and map
the probability to the photo's full resolution bilinearly before the threshold.

LaMa (``bin/predict.py``): RGB / 255 and mask / 255, both padded at the bottom and right to a
multiple of 8 (and to at least ``LAMA_MIN_SIDE``, where the reference fails) with numpy
``symmetric`` padding, mask binarised with ``> 0``, composite
``mask * predicted + (1 - mask) * image``, cropped back, ``clip(x * 255)`` truncated to uint8.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

ScaleMode = Literal["full_size", "scale_256"]
SCRATCH_THRESHOLD = 0.4
SCRATCH_SIDE = 256  # the reference runs the U-Net with this shorter side
#: Longest side of the U-Net's working image. The reference's rule (shorter side 256) makes a
#: 4000 x 1 photo a 256 x 1,024,000 network input (gigabytes); beyond this side (aspect ratios
#: over 16:1) both sides shrink together instead. Ordinary photos are unaffected.
MAX_SCRATCH_SIDE = 4096
#: Shortest side of the U-Net's working image when that bound shrinks it: its four anti-aliased
#: halvings must leave two rows for the reflect padding of the deepest convolutions (16 left
#: one, and torch refused strips over 128:1).
MIN_SCRATCH_SIDE = 32
LAMA_MODULO = 8
#: Smallest side LaMa is given: its three stride-2 steps must leave two rows for the reflect
#: padding of the blocks after them (an image under 16 px on a side left one: a torch error).
LAMA_MIN_SIDE = 16


def _round16(x: float) -> int:
    return int(round(x / 16) * 16)  # Python's round: half to even, as the reference


def scratch_transform_size(height: int, width: int, mode: ScaleMode) -> tuple[int, int]:
    """(h, w) after the reference ``data_transforms``."""
    if mode == "full_size":
        return _round16(height), _round16(width)
    if width < height:
        return _bounded(_round16(height / width * 256), _round16(256))
    return _bounded(_round16(256), _round16(width / height * 256))


def _bounded(h: int, w: int) -> tuple[int, int]:
    """(h, w) shrunk together so the longest side is at most MAX_SCRATCH_SIDE (multiples of 16,
    at least MIN_SCRATCH_SIDE)."""
    longest = max(h, w)
    if longest <= MAX_SCRATCH_SIDE:
        return h, w
    f = MAX_SCRATCH_SIDE / longest
    return (max(MIN_SCRATCH_SIDE, int(h * f) // 16 * 16),
            max(MIN_SCRATCH_SIDE, int(w * f) // 16 * 16))


def scratch_network_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) after the reference ``scale_tensor``: shorter side 256, longer side by ratio."""
    if height < width:
        return _bounded(256, _round16(width / height * 256))
    return _bounded(_round16(height / width * 256), 256)


def scratch_preprocess(rgb: np.ndarray, mode: ScaleMode = "scale_256"
                       ) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB uint8 H x W x 3 -> (network input 1 x 1 x h2 x w2, data_transforms size (h, w))."""
    import torch
    import torch.nn.functional as F
    from PIL import Image as PILImage

    pil = PILImage.fromarray(np.ascontiguousarray(rgb[..., :3]), mode="RGB")
    h, w = scratch_transform_size(rgb.shape[0], rgb.shape[1], mode)
    if (h, w) != (rgb.shape[0], rgb.shape[1]):
        pil = pil.resize((w, h), PILImage.BICUBIC)
    grey = np.asarray(pil.convert("L"))
    t = torch.from_numpy(grey.astype(np.float32) / np.float32(255.0))
    t = ((t - 0.5) / 0.5)[None, None]
    h2, w2 = scratch_network_size(h, w)
    t = F.interpolate(t, [h2, w2], mode="bilinear", align_corners=False)
    return t, (h, w)


def scratch_reference_mask(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """The reference's final mask at the data_transforms ``size``: sigmoid, nearest, >= 0.4."""
    import torch
    import torch.nn.functional as F

    prob = torch.sigmoid(logits.float())
    prob = F.interpolate(prob, list(size), mode="nearest")
    return (prob[0, 0] >= SCRATCH_THRESHOLD).cpu().numpy()


def scratch_probability(model: torch.nn.Module, rgb8: np.ndarray, device: str = "cpu",
                        dtype: torch.dtype | None = None) -> np.ndarray:
    """The U-Net's scratch probability at network resolution (float32, shorter side 256)."""
    import torch

    x, _ = scratch_preprocess(rgb8, "scale_256")
    with torch.no_grad():
        logits = model(x.to(device=device, dtype=dtype or torch.float32))
    return torch.sigmoid(logits.float())[0, 0].cpu().numpy()


def probability_to_mask(prob: np.ndarray, height: int, width: int,
                        threshold: float = SCRATCH_THRESHOLD,
                        band_pixels: int = 4_000_000) -> np.ndarray:
    """Bilinear up-sampling of a probability map to ``height x width``, then the threshold;
    done a band of rows at a time so a 40 MP scan needs no full-size float copy."""
    import cv2

    out = np.empty((height, width), bool)
    ph, pw = prob.shape
    band = max(1, band_pixels // max(width, 1))
    sy = ph / height
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        # source rows needed for these output rows (align_corners=False convention), + margin
        s0 = max(0, int(np.floor((y0 + 0.5) * sy - 0.5)) - 1)
        s1 = min(ph, int(np.ceil((y1 + 0.5) * sy - 0.5)) + 2)
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5) * np.float32(sy) - 0.5 - s0
        xs = (np.arange(width, dtype=np.float32) + 0.5) * np.float32(pw / width) - 0.5
        map_x = np.broadcast_to(xs[None, :], (y1 - y0, width)).astype(np.float32)
        map_y = np.broadcast_to(ys[:, None], (y1 - y0, width)).astype(np.float32)
        part = cv2.remap(np.ascontiguousarray(prob[s0:s1], dtype=np.float32), map_x, map_y,
                         interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[y0:y1] = part >= threshold
    return out


def lama_preprocess(rgb: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(image 1 x 3 x Hp x Wp in [0, 1], binary mask 1 x 1 x Hp x Wp) as ``bin/predict.py``.

    ``mask`` is uint8 (any non-zero is a hole) or bool.
    """
    import torch

    img = rgb.astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
    m = (mask.astype(np.float32) / np.float32(255.0))[None] if mask.dtype != bool else \
        mask.astype(np.float32)[None]
    h, w = rgb.shape[:2]
    ph, pw = max(-h % LAMA_MODULO, LAMA_MIN_SIDE - h), max(-w % LAMA_MODULO, LAMA_MIN_SIDE - w)
    if ph or pw:
        img = np.pad(img, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
        m = np.pad(m, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
    image = torch.from_numpy(np.ascontiguousarray(img))[None]
    holes = (torch.from_numpy(np.ascontiguousarray(m))[None] > 0).float()
    return image, holes


def lama_inpaint(model: torch.nn.Module, rgb: np.ndarray, mask: np.ndarray,
                 device: str = "cpu", dtype: torch.dtype | None = None) -> np.ndarray:
    """LaMa on one RGB uint8 crop and its mask, the reference way; returns RGB uint8."""
    import torch

    image, holes = lama_preprocess(rgb, mask)
    dt = dtype or torch.float32
    with torch.no_grad():
        x = torch.cat([image * (1 - holes), holes], 1).to(device=device, dtype=dt)
        pred = model(x).float().cpu()
    out = holes * pred + (1 - holes) * image
    h, w = rgb.shape[:2]
    arr = out[0, :, :h, :w].permute(1, 2, 0).numpy()
    return np.clip(arr * 255, 0, 255).astype(np.uint8)
