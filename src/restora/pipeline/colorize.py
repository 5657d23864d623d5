"""Colorization with DDColor, using the official pre- and post-processing.

The network only ever sees the luminance: the image is resized to ``S x S`` (bilinear), its Lab
``L`` is rendered back to grey RGB and fed to the model, which predicts Lab ``a``/``b``. Those are
resized to full resolution (nearest, as the reference does with ``F.interpolate``), blended with
the original chroma by ``strength`` and recombined with the original full-resolution ``L``. The
Lab conversions are OpenCV's float ones, exactly as in ``ddcolor.pipeline.ColorizationPipeline``,
so at ``strength=1`` an 8-bit image gives the reference output.

Alpha is passed through untouched and 16-bit images stay 16-bit. The lightness is the original's
as far as OpenCV's float Lab round trip allows (it moves grey values by at most 0.002 of full
scale: invisible, and exact after 8-bit rounding in the reference's own measurements).

The full-resolution work (Lab, the resized a/b, the blend, back to RGB) is per pixel, so it runs
in bands of rows (``BAND_PIXELS``), each giving exactly the pixels the whole frame would: a 24 MP
photo holds no full-size float copy beyond the one the network input is resized from.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from restora.errors import InvalidParameter
from restora.io.image import Image

if TYPE_CHECKING:
    import torch

    from restora.models.nets import Network
    from restora.models.runtime import Runtime

TASK = "colorization"
#: pixels per band of the full-resolution colour work (~20 float32 bytes each, ~80 MB)
BAND_PIXELS = 4_000_000


def colorize(image: Image, *, runtime: Runtime, model_id: str | None = None,
             strength: float = 0.85, input_size: int | None = None,
             rotation: int = 0) -> tuple[Image, dict[str, Any]]:
    """Colorize ``image``; returns the new image and ``{"model", "strength", "inputSize",
    "engine"}`` (``engine``: "engine/precision" the network ran on; absent at strength 0;
    ``rotation`` when not 0).

    ``strength`` 0 keeps the input's colours exactly, 1 uses the model's chroma fully.
    ``input_size`` (a multiple of 32) overrides the model's inference size (512 for the official
    checkpoints). ``rotation``: degrees clockwise the photo lies turned (a multiple of 90, as
    the face step found it): the network sees it the right way up, as it was trained (sky
    above, ground below), and its colours are turned back; only the S x S input and output
    are turned. A missing model raises :class:`~restora.errors.ModelNotInstalled`, even at
    strength 0, so a job never reports colorization it could not have done. Fully
    transparent pixels are not shown to the network (a fill from the shown ones instead).
    """
    strength = _check_strength(strength)
    if rotation % 90:
        raise InvalidParameter("rotation", f"rotation must be a multiple of 90, got {rotation}")
    turn = (rotation // 90) % 4
    mid = model_id or runtime.registry.default(TASK).id
    net = runtime.load(mid)
    size = _check_size(input_size if input_size is not None else (net.input_size or 512))
    report: dict[str, Any] = {"model": mid, "strength": strength, "inputSize": size}
    if strength == 0.0:
        return image.with_pixels(image.pixels.copy(), _copy(image.alpha)), report

    from restora.pipeline.paste import fill_hidden, hidden

    # the network sees the photo at S x S: colour left under fully transparent pixels would
    # blend into the shown ones' neighbourhoods there and change the colours they are given
    x = model_input(to_unit_float(fill_hidden(image.pixels, hidden(image.alpha))), size)
    if turn:  # the square input the right way up, its answer turned back (both exact)
        x = np.ascontiguousarray(np.rot90(x, turn, axes=(2, 3)))
    ab = predict_ab(net, x)
    if turn:
        ab = np.ascontiguousarray(np.rot90(ab, -turn, axes=(2, 3)))
        report["rotation"] = turn * 90
    report["engine"] = net.engine_label
    return image.with_pixels(compose_bands(image.pixels, ab, strength, image.max_value),
                             _copy(image.alpha)), report


# --- the steps, public so the conformance tests can check each one against the reference -------

def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1]: divided in float64, then cast (as the reference)."""
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    return (pixels / top).astype(np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """OpenCV float Lab (L 0..100) of an H x W x 3 float32 RGB image."""
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)


def model_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """The 1 x 3 x S x S network input: grey RGB rendering of the resized image's L."""
    import cv2

    small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    lightness = cv2.cvtColor(small, cv2.COLOR_RGB2Lab)[:, :, :1]
    zeros = np.zeros_like(lightness)
    grey = cv2.cvtColor(np.concatenate((lightness, zeros, zeros), axis=2), cv2.COLOR_Lab2RGB)
    return np.ascontiguousarray(grey.transpose(2, 0, 1)[None])


def predict_ab(net: Network, x: np.ndarray) -> np.ndarray:
    """Run the colorizer descriptor on the host array ``x``; returns the 1 x 2 x S x S a/b,
    float32, on the host."""
    return np.asarray(net(x), np.float32)


def compose(lab: np.ndarray, ab: torch.Tensor | np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Full-resolution float RGB from the original Lab and the model's a/b.

    The a/b maps are resized with torch's default 'nearest' (source index floor(dst * in / out)),
    blended as ``strength * model + (1 - strength) * original`` (exact at 0 and 1) and joined with
    the original L. OpenCV clips linear RGB to [0, 1] during the conversion.
    """
    import torch
    import torch.nn.functional as F

    height, width = lab.shape[:2]
    ab_t = torch.as_tensor(ab, dtype=torch.float32)
    return _join(lab, F.interpolate(ab_t, size=(height, width))[0].numpy().transpose(1, 2, 0),
                 strength)


def compose_bands(pixels: np.ndarray, ab: np.ndarray, strength: float, top: int) -> np.ndarray:
    """:func:`compose` of the whole image, as integer pixels (``top`` = full scale), computed a
    band of rows at a time from the integer ``pixels``: the same values, no full-size floats."""
    height, width = pixels.shape[:2]
    rows = nearest_index(ab.shape[-2], height)
    cols = nearest_index(ab.shape[-1], width)
    maps = np.asarray(ab, np.float32)[0]
    out = np.empty_like(pixels)
    step = max(1, BAND_PIXELS // max(width, 1))
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        lab = rgb_to_lab(to_unit_float(pixels[y0:y1]))
        resized = maps[:, rows[y0:y1]][:, :, cols].transpose(1, 2, 0)
        out[y0:y1] = np.rint(_join(lab, resized, strength) * np.float32(top))
    return out


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """The source index of each of ``n_out`` positions under torch's default 'nearest' resize
    from ``n_in`` (taken from torch itself, so that it is exactly its rule)."""
    import torch
    import torch.nn.functional as F

    src = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1)
    return F.interpolate(src, size=(n_out, 1))[0, 0, :, 0].numpy().astype(np.intp)


def _join(lab: np.ndarray, ab: np.ndarray, strength: float) -> np.ndarray:
    """RGB from ``lab``'s L and the resized model ``ab`` blended with ``lab``'s own by strength."""
    import cv2

    if strength != 1.0:
        ab = (np.float32(strength) * ab + np.float32(1.0 - strength) * lab[:, :, 1:]
              ).astype(np.float32)
    return cv2.cvtColor(np.concatenate((lab[:, :, :1], ab), axis=2), cv2.COLOR_Lab2RGB)


# --- validation ---------------------------------------------------------------------------------

def _check_strength(strength: float) -> float:
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise InvalidParameter("strength", f"colorize strength must be a number, got {strength!r}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidParameter("strength", f"colorize strength must be between 0 and 1, got {value}")
    return value


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32 or size % 32:
        raise InvalidParameter("inputSize", "the colorization input size must be a multiple of 32 "
                               f"and at least 32, got {size!r}")
    return int(size)


def _copy(alpha: np.ndarray | None) -> np.ndarray | None:
    return None if alpha is None else alpha.copy()
