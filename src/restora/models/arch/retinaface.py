"""RetinaFace face detector in the facelib key layout, with prior boxes, decoding and NMS.

Two backbones, as facelib names them: ``"resnet50"`` (torchvision ResNet-50 layout, cut after
``layer4``) and ``"mobile0.25"`` (MobileNetV1 x0.25, cut after ``stage3``). The state-dict keys
(``body.*``, ``fpn.*``, ``ssh1..3.*``, ``ClassHead/BboxHead/LandmarkHead.{0,1,2}.conv1x1.*``) match
the official ``detection_*_Final.pth`` files, so they load strictly.

``detect`` reproduces facelib's ``detect_faces`` with ``use_origin_size=True``: BGR float input
minus the mean (104, 117, 123), no resize, priors per level, SSD-style decoding with variances
(0.1, 0.2), a strict score threshold, and greedy NMS with torchvision's semantics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RetinaFace", "prior_boxes", "decode_boxes", "decode_landmarks", "nms"]

DEFAULT_MIN_SIZES: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
STEPS: tuple[int, int, int] = (8, 16, 32)
VARIANCES: tuple[float, float] = (0.1, 0.2)
MEAN_BGR: tuple[float, float, float] = (104.0, 117.0, 123.0)

# backbone name -> (FPN input channels of the three returned stages, FPN/SSH width)
_CONFIGS: dict[str, tuple[tuple[int, int, int], int]] = {
    "mobile0.25": ((64, 128, 256), 64),
    "resnet50": ((512, 1024, 2048), 256),
}


def _act(slope: float) -> nn.Module:
    # facelib uses LeakyReLU(0) for "no leak"; ReLU computes the same values.
    return nn.ReLU(inplace=True) if slope == 0 else nn.LeakyReLU(slope, inplace=True)


def _conv_bn(cin: int, cout: int, stride: int = 1, slope: float | None = 0.0,
             kernel: int = 3) -> nn.Sequential:
    """Conv (no bias) + BN, plus an activation unless ``slope`` is None (indices 0, 1, 2)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                               nn.BatchNorm2d(cout)]
    if slope is not None:
        layers.append(_act(slope))
    return nn.Sequential(*layers)


def _conv_dw(cin: int, cout: int, stride: int, slope: float) -> nn.Sequential:
    """Depthwise 3x3 + BN + act, then pointwise 1x1 + BN + act (indices 0..5)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), _act(slope),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), _act(slope),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 x0.25 up to stage3; returns the outputs of stage1, stage2, stage3."""

    def __init__(self, slope: float = 0.1) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 2, slope),
            _conv_dw(8, 16, 1, slope), _conv_dw(16, 32, 2, slope), _conv_dw(32, 32, 1, slope),
            _conv_dw(32, 64, 2, slope), _conv_dw(64, 64, 1, slope),
        )
        self.stage2 = nn.Sequential(
            _conv_dw(64, 128, 2, slope), *[_conv_dw(128, 128, 1, slope) for _ in range(5)],
        )
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2, slope), _conv_dw(256, 256, 1, slope))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class Bottleneck(nn.Module):
    """torchvision ResNet v1.5 bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Body(nn.Module):
    """ResNet-50 stem and layer1..layer4; returns the outputs of layer2, layer3, layer4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(64, 64, 3, 1)
        self.layer2 = self._layer(256, 128, 4, 2)
        self.layer3 = self._layer(512, 256, 6, 2)
        self.layer4 = self._layer(1024, 512, 3, 2)

    @staticmethod
    def _layer(cin: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        width = planes * Bottleneck.expansion
        return nn.Sequential(Bottleneck(cin, planes, stride), *[Bottleneck(width, planes) for _ in range(blocks - 1)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


class FPN(nn.Module):
    """Top-down feature pyramid over three levels (nearest upsampling to the finer size)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, slope: float) -> None:
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], out_channels, 1, slope, kernel=1)
        self.output2 = _conv_bn(in_channels[1], out_channels, 1, slope, kernel=1)
        self.output3 = _conv_bn(in_channels[2], out_channels, 1, slope, kernel=1)
        self.merge1 = _conv_bn(out_channels, out_channels, 1, slope)
        self.merge2 = _conv_bn(out_channels, out_channels, 1, slope)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out1, out2, out3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        out2 = self.merge2(out2 + F.interpolate(out3, size=out2.shape[-2:], mode="nearest"))
        out1 = self.merge1(out1 + F.interpolate(out2, size=out1.shape[-2:], mode="nearest"))
        return [out1, out2, out3]


class SSH(nn.Module):
    """Single-stage context module: 3x3, 5x5 and 7x7 receptive branches, concatenated, ReLU."""

    def __init__(self, cin: int, cout: int, slope: float) -> None:
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, 1, None)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, 1, slope)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, 1, None)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, 1, slope)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, 1, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(b5), self.conv7x7_3(self.conv7X7_2(b5))], dim=1)
        return F.relu(out)


class _Head(nn.Module):
    """1x1 conv predicting ``values`` numbers per anchor; output (N, H*W*anchors, values)."""

    def __init__(self, cin: int, anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(cin, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last so the anchor index runs fastest within a cell, as the priors do
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """facelib RetinaFace (phase 'test').

    ``relu_only=True`` replaces every LeakyReLU(0.1) with ReLU and, with
    ``min_sizes=[[10, 20], [32, 64], [128, 256]]``, reproduces the Face-Detector-1MB configuration.
    """

    def __init__(self, network_name: str = "resnet50", relu_only: bool = False,
                 min_sizes: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        if network_name not in _CONFIGS:
            raise ValueError(f"unknown RetinaFace backbone {network_name!r}; expected one of {sorted(_CONFIGS)}")
        self.network_name = network_name
        self.min_sizes = [list(m) for m in (min_sizes if min_sizes is not None else DEFAULT_MIN_SIZES)]
        if len(self.min_sizes) != 3 or any(len(m) != 2 for m in self.min_sizes):
            raise ValueError("min_sizes must be three pairs, one per pyramid level")
        in_channels, width = _CONFIGS[network_name]
        # facelib leaks 0.1 only when the FPN is at most 64 wide (i.e. the MobileNet variant)
        slope = 0.0 if relu_only or width > 64 else 0.1
        self.body: nn.Module = ResNet50Body() if network_name == "resnet50" else MobileNetV1(0.0 if relu_only else 0.1)
        self.fpn = FPN(in_channels, width, slope)
        self.ssh1 = SSH(width, width, slope)
        self.ssh2 = SSH(width, width, slope)
        self.ssh3 = SSH(width, width, slope)
        self.ClassHead = nn.ModuleList([_Head(width, 2, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(width, 2, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(width, 2, 10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """BGR mean-subtracted NCHW -> (loc (N,A,4), softmaxed conf (N,A,2), landms (N,A,10))."""
        feats = self.fpn(self.body(x))
        feats = [self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landms

    def priors(self, height: int, width: int) -> torch.Tensor:
        """Prior boxes (A, 4) for an input of this size."""
        return prior_boxes(height, width, self.min_sizes)

    @torch.no_grad()
    def detect(self, image_rgb: np.ndarray, conf_threshold: float = 0.8,
               nms_threshold: float = 0.4) -> np.ndarray:
        """Faces in an RGB uint8 image as (N, 15) float32 rows, best score first.

        Row: x1, y1, x2, y2, score, then (x, y) of image-left eye, image-right eye, nose,
        image-left mouth corner, image-right mouth corner, in input pixels.
        """
        param = next(self.parameters())
        x = torch.from_numpy(self.prepare(image_rgb)).to(device=param.device, dtype=param.dtype)
        return self.decode(list(self(x)), image_rgb.shape[0], image_rgb.shape[1],
                           conf_threshold, nms_threshold)

    @staticmethod
    def prepare(image_rgb: np.ndarray) -> np.ndarray:
        """The network input for an RGB uint8 image: 1 x 3 x H x W float32 BGR minus the mean."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image_rgb.dtype} {image_rgb.shape}")
        bgr = image_rgb[:, :, ::-1].astype(np.float32)
        bgr -= np.asarray(MEAN_BGR, np.float32)
        return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])

    def decode(self, outputs: Sequence[Any], height: int, width: int, conf_threshold: float,
               nms_threshold: float = 0.4) -> np.ndarray:
        """Rows (see :meth:`detect`) from the network outputs (loc, conf, landms) of one image."""
        # decode on CPU in float32: it is cheap and matches the reference arithmetic
        loc, conf, landms = (torch.as_tensor(t)[0].float().cpu() for t in outputs)
        scores = conf[:, 1]
        # Threshold first, then decode only the kept anchors: the arithmetic is per anchor, so
        # the rows are the same, and a photo at its own resolution has ~10^5 anchors.
        keep = torch.nonzero(scores > conf_threshold).flatten()
        priors = self.priors(height, width)[keep]
        scale = torch.tensor([width, height], dtype=torch.float32)
        boxes = decode_boxes(loc[keep], priors) * scale.repeat(2)
        points = decode_landmarks(landms[keep], priors) * scale.repeat(5)
        scores = scores[keep]
        order = torch.sort(scores, descending=True, stable=True).indices
        boxes, points, scores = boxes[order], points[order], scores[order]
        kept = nms(boxes, scores, nms_threshold)
        rows = torch.cat([boxes[kept], scores[kept, None], points[kept]], dim=1)
        return rows.numpy().astype(np.float32, copy=False)


def prior_boxes(height: int, width: int, min_sizes: Sequence[Sequence[int]] = DEFAULT_MIN_SIZES,
                steps: Sequence[int] = STEPS) -> torch.Tensor:
    """(cx, cy, w, h) priors relative to the image, level by level, row, column, then anchor."""
    levels = []
    for step, sizes in zip(steps, min_sizes):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        # float64 like the reference's Python arithmetic, rounded to float32 at the end
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        grid = np.empty((rows, cols, len(sizes), 4), dtype=np.float64)
        grid[..., 0] = cx[None, :, None]
        grid[..., 1] = cy[:, None, None]
        grid[..., 2] = np.asarray(sizes, dtype=np.float64) / width
        grid[..., 3] = np.asarray(sizes, dtype=np.float64) / height
        levels.append(grid.reshape(-1, 4))
    return torch.from_numpy(np.concatenate(levels).astype(np.float32))


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor,
                 variances: tuple[float, float] = VARIANCES) -> torch.Tensor:
    """Regression offsets (A, 4) -> corner boxes (A, 4) relative to the image size."""
    centers = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])
    top_left = centers - sizes / 2
    return torch.cat([top_left, sizes + top_left], dim=1)


def decode_landmarks(pre: torch.Tensor, priors: torch.Tensor,
                     variances: tuple[float, float] = VARIANCES) -> torch.Tensor:
    """Landmark offsets (A, 10) -> five (x, y) points (A, 10) relative to the image size."""
    offsets = pre.view(-1, 5, 2) * variances[0] * priors[:, None, 2:]
    return (priors[:, None, :2] + offsets).reshape(-1, 10)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS with torchvision's semantics; returns kept indices, best score first.

    Boxes are visited in stable descending score order; areas are (x2-x1)*(y2-y1) without +1;
    a box is dropped when its float32 IoU with a kept box is strictly above the threshold
    (compared in float64, as torchvision's C++ kernel compares against a double).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].float().cpu().numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(b), dtype=bool)
    keep: list[int] = []
    for i in range(len(b)):  # loop over surviving candidates, not anchors
        if suppressed[i]:
            continue
        keep.append(i)
        rest = np.arange(i + 1, len(b))
        rest = rest[~suppressed[rest]]
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou.astype(np.float64) > iou_threshold]] = True
    return order[torch.as_tensor(keep, dtype=torch.long)]
