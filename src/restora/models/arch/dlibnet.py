"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in plain torch.

The network takes a 150 x 150 RGB chip and returns dlib's 128-D descriptor; the weights come from
dlib's own ``.dat`` file, read here by a strict parser of exactly this network (no pickle, no
code from the file is run). Running it in torch instead of dlib's single-threaded C++ forward
is the point: a batch of chips runs in one multi-threaded forward (see docs/enhance-faces.md).

Format facts from dlib's source (dlib/serialize.h, dlib/float_details.h, dlib/dnn/core.h,
layers.h, input.h, loss.h, dlib/cuda/tensor.h); dlib itself stays a dependency for the shape
predictor and the chip (``dlib.get_face_chip``), which are cheap:

* integers: a control byte (low nibble = byte count 1..8, bit 7 = negative), then the magnitude
  as little-endian bytes; bools: ASCII ``'0'``/``'1'``; strings: an unsigned length, then bytes;
* scalar floats: two integers, mantissa then exponent, value = mantissa * 2**exponent;
* tensors: version 2, four dims (n, k, nr, nc), then n*k*nr*nc little-endian float32;
  alias tensors (parameter views): version 1 and four dims, no data;
* a network nests: the loss layer, then each layer's wrapper version from the output layer down
  to the input, then the input layer, then each layer's details and wrapper fields from the
  input up. Tag and skip wrappers carry only their version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from restora.errors import CheckpointError

__all__ = ["CHIP_PADDING", "CHIP_SIZE", "DlibResNet", "DlibResNetWeights", "read_dlib_resnet"]

#: dlib's chip: ``get_face_chip(image, shape, size=150, padding=0.25)``.
CHIP_SIZE = 150
CHIP_PADDING = 0.25

_MAX_FILE_BYTES = 64 << 20  # the real file is 22.5 MB
_MAX_STRING = 64
_MAX_TENSOR = 1 << 22  # elements; the largest layer holds 256*256*9 + 256


# --- the architecture, bottom-up, as dlib's example declares it -------------------------------

@dataclass(frozen=True)
class _Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, tag, skip, fc
    args: tuple[int, ...] = ()


def _residual(n: int, down: bool) -> list[_Layer]:
    """``relu<residual<block,...>>`` (or its ``residual_down`` variant), input side first."""
    block = [_Layer("con", (n, 3, 2 if down else 1)), _Layer("affine"), _Layer("relu"),
             _Layer("con", (n, 3, 1)), _Layer("affine")]
    if down:
        tail = [_Layer("tag", (2,)), _Layer("skip", (1,)), _Layer("avg_pool", (2, 2)),
                _Layer("add_prev", (2,))]
    else:
        tail = [_Layer("add_prev", (1,))]
    return [_Layer("tag", (1,)), *block, *tail, _Layer("relu")]


def _architecture() -> list[_Layer]:
    layers = [_Layer("con", (32, 7, 2)), _Layer("affine"), _Layer("relu"),
              _Layer("max_pool", (3, 2))]
    for n, down, repeats in ((32, False, 3), (64, True, 1), (64, False, 3), (128, True, 1),
                             (128, False, 2), (256, True, 1), (256, False, 2), (256, True, 1)):
        for _ in range(repeats):
            layers += _residual(n, down)
    return layers + [_Layer("avg_pool", (0, 1)), _Layer("fc", (128,))]


_ARCH = _architecture()


# --- the reader --------------------------------------------------------------------------------

class _Reader:
    """Bounded cursor over the file's bytes; every failure is a CheckpointError."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{Path(self.path).name} is not dlib's face-recognition ResNet: "
                               f"{what} (at byte {self.pos})", path=self.path)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("the file ends early")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def integer(self, signed: bool = True) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if control & 0x70 or (control & 0x80 and not signed) or not 1 <= size <= 8:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def expect_int(self, allowed: tuple[int, ...], what: str, signed: bool = True) -> int:
        value = self.integer(signed)
        if value not in allowed:
            raise self.fail(f"{what} is {value}, expected {' or '.join(map(str, allowed))}")
        return value

    def boolean(self) -> bool:
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            raise self.fail("bad bool")
        return ch == b"1"

    def string(self) -> str:
        n = self.integer(signed=False)
        if n > _MAX_STRING:
            raise self.fail(f"a {n}-byte string")
        try:
            return self.take(n).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a non-ASCII string") from None

    def expect_str(self, allowed: tuple[str, ...], what: str) -> str:
        value = self.string()
        if value not in allowed:
            raise self.fail(f"{what} version {value!r}, expected {' or '.join(allowed)}")
        return value

    def scalar(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if not -32768 <= exponent < 32000 or abs(mantissa) >= 1 << 63:
            raise self.fail("a float that is inf, nan or out of range")
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.fail("a float out of range") from None

    def dims(self) -> tuple[int, int, int, int]:
        dims = tuple(self.integer() for _ in range(4))
        if any(d < 0 for d in dims) or math.prod(dims) > _MAX_TENSOR:
            raise self.fail(f"tensor dims {dims}")
        return dims  # type: ignore[return-value]

    def tensor(self, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """A data tensor; ``shape`` is its expected element count layout (None: must be empty)."""
        self.expect_int((2,), "tensor version")
        dims = self.dims()
        size = math.prod(dims)
        if (shape is None and size) or (shape is not None and size != math.prod(shape)):
            raise self.fail(f"tensor dims {dims}, expected {shape or 'an empty tensor'}")
        values = np.frombuffer(self.take(4 * size), "<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise self.fail("a tensor with inf or nan")
        return values.reshape(shape) if shape is not None else values

    def alias(self, dims: tuple[int, int, int, int]) -> None:
        self.expect_int((1,), "alias tensor version")
        got = self.dims()
        if got != dims:
            raise self.fail(f"parameter view {got}, expected {dims}")


@dataclass
class DlibResNetWeights:
    """What the file holds, in layer order (input side first)."""

    mean_rgb: tuple[float, float, float]
    convs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # OIHW, bias
    affines: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # scale, shift
    fc: np.ndarray | None = None  # (in, out), as dlib multiplies


def _read_con(r: _Reader, spec: _Layer, k_in: int) -> tuple[np.ndarray, np.ndarray]:
    n, size, stride = spec.args
    version = r.expect_str(("con_4", "con_5", "con_6"), "con")
    params = r.tensor((n * k_in * size * size + n,))
    r.expect_int((n,), "con filters")
    r.expect_int((size,), "con rows")
    r.expect_int((size,), "con columns")
    r.expect_int((stride,), "con row stride")
    r.expect_int((stride,), "con column stride")
    pad = size // 2 if stride == 1 else 0  # dlib's default padding
    r.expect_int((pad,), "con row padding")
    r.expect_int((pad,), "con column padding")
    r.alias((n, k_in, size, size))
    r.alias((1, n, 1, 1))
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.scalar()
    if version in ("con_5", "con_6") and not r.boolean():
        raise r.fail("a con without bias")
    if version == "con_6" and r.boolean():
        raise r.fail("a con with a fused relu")
    split = n * k_in * size * size
    return params[:split].reshape(n, k_in, size, size), params[split:]


def _read_affine(r: _Reader, k: int) -> tuple[np.ndarray, np.ndarray]:
    # dlib also loads a training-time bn_con2 here, folding its statistics; the released file
    # holds the folded affine_ layers, so only those are accepted
    version = r.expect_str(("affine_", "affine_2"), "affine")
    params = r.tensor((2 * k,))
    r.alias((1, k, 1, 1))
    r.alias((1, k, 1, 1))
    r.expect_int((0,), "affine mode (0 = per channel)")
    if version == "affine_2" and r.boolean():
        raise r.fail("a disabled affine layer")
    return params[:k].copy(), params[k:].copy()


def _read_pool(r: _Reader, spec: _Layer, kind: str) -> None:
    size, stride = spec.args
    r.expect_str((f"{kind}_2",), kind)
    for what, value in (("rows", size), ("columns", size), ("row stride", stride),
                        ("column stride", stride), ("row padding", 0), ("column padding", 0)):
        r.expect_int((value,), f"{kind} {what}")


def _read_fc(r: _Reader, n: int, k_in: int) -> np.ndarray:
    version = r.expect_str(("fc_2", "fc_3"), "fc")
    r.expect_int((n,), "fc outputs", signed=False)
    r.expect_int((k_in,), "fc inputs", signed=False)
    weights = r.tensor((k_in, n))
    r.alias((k_in, n, 1, 1))
    r.alias((0, 0, 0, 0))  # a no-bias fc has an empty bias view
    r.expect_int((1,), "fc bias mode (1 = no bias)")
    for _ in range(4):
        r.scalar()
    if version == "fc_3" and r.boolean():
        raise r.fail("an fc with a bias")
    return weights


def _read_wrapper_tail(r: _Reader, version: int, bottom: bool) -> None:
    """The training state dlib's add_layer saves after each layer's details: must be empty."""
    for _ in range(3):  # setup called, gradient stale, output disabled
        r.boolean()
    r.tensor()  # x_grad
    r.tensor()  # cached output
    if bottom or version == 2:
        r.tensor()  # grad_final / params_grad
    if bottom and version == 3:
        r.expect_int((1,), "sample expansion factor", signed=False)


def read_dlib_resnet(path: str | Path) -> DlibResNetWeights:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat``; CheckpointError if it is not that."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > _MAX_FILE_BYTES:
            raise CheckpointError(f"{path.name} is {size} bytes, too large for dlib's "
                                  "face-recognition ResNet", path=str(path))
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}", path=str(path)) from exc
    r = _Reader(data, str(path))
    r.expect_int((1,), "loss layer version")
    r.expect_str(("loss_metric_2",), "loss")
    for _ in range(2):  # margin and distance threshold: training only
        r.scalar()
    wrapped = list(_ARCH)
    versions = []
    for i, spec in enumerate(reversed(wrapped)):
        if spec.kind in ("tag", "skip"):
            versions.append(r.expect_int((1,), f"{spec.kind} layer version"))
        elif i == len(wrapped) - 1:
            versions.append(r.expect_int((2, 3), "input-side layer version"))
        else:
            versions.append(r.expect_int((1, 2), "layer version"))
    versions.reverse()
    r.expect_str(("input_rgb_image_sized",), "input layer")
    mean = (r.scalar(), r.scalar(), r.scalar())
    r.expect_int((CHIP_SIZE,), "input rows", signed=False)
    r.expect_int((CHIP_SIZE,), "input columns", signed=False)
    weights = DlibResNetWeights(mean_rgb=mean)
    k = 3
    for i, (spec, version) in enumerate(zip(wrapped, versions)):
        if spec.kind in ("tag", "skip"):
            continue
        if spec.kind == "con":
            weights.convs.append(_read_con(r, spec, k))
            k = spec.args[0]
        elif spec.kind == "affine":
            weights.affines.append(_read_affine(r, k))
        elif spec.kind == "relu":
            if r.expect_str(("relu_", "relu_2"), "relu") == "relu_2" and r.boolean():
                raise r.fail("a disabled relu")
        elif spec.kind in ("max_pool", "avg_pool"):
            _read_pool(r, spec, spec.kind)
        elif spec.kind == "add_prev":
            r.expect_str(("add_prev_",), "add_prev")
        elif spec.kind == "fc":
            weights.fc = _read_fc(r, spec.args[0], k)
        _read_wrapper_tail(r, version, bottom=i == 0)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} bytes after the network")
    return weights


# --- the torch network -------------------------------------------------------------------------

def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger shape, the smaller one zero-extended at the end."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class _Affine(nn.Module):
    """dlib's affine_ layer: frozen batch norm, a per-channel scale and shift."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(1, k, 1, 1))
        self.register_buffer("shift", torch.zeros(1, k, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class DlibResNet(nn.Module):
    """N x 3 x 150 x 150 float RGB chips (0..255) -> N x 128 float32, as dlib computes them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        convs, affines, k = [], [], 3
        for spec in _ARCH:
            if spec.kind == "con":
                n, size, stride = spec.args
                convs.append(nn.Conv2d(k, n, size, stride, size // 2 if stride == 1 else 0))
                k = n
            elif spec.kind == "affine":
                affines.append(_Affine(k))
        self.convs = nn.ModuleList(convs)
        self.affines = nn.ModuleList(affines)
        self.fc = nn.Linear(k, 128, bias=False)

    @classmethod
    def from_dat(cls, path: str | Path) -> DlibResNet:
        weights = read_dlib_resnet(path)
        net = cls()
        with torch.no_grad():
            net.mean.copy_(torch.tensor(weights.mean_rgb).view(1, 3, 1, 1))
            for conv, (w, b) in zip(net.convs, weights.convs):
                conv.weight.copy_(torch.from_numpy(w))
                conv.bias.copy_(torch.from_numpy(b))
            for affine, (scale, shift) in zip(net.affines, weights.affines):
                affine.scale.copy_(torch.from_numpy(scale).view_as(affine.scale))
                affine.shift.copy_(torch.from_numpy(shift).view_as(affine.shift))
            assert weights.fc is not None  # the reader always ends with the fc layer
            net.fc.weight.copy_(torch.from_numpy(weights.fc).t())
        return net.eval().requires_grad_(False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        # dlib's input layer: subtract the training mean, divide by 256
        x = (chips - self.mean) / 256.0
        convs, affines = iter(self.convs), iter(self.affines)
        tags: dict[int, torch.Tensor] = {}
        for spec in _ARCH:
            if spec.kind == "con":
                x = next(convs)(x)
            elif spec.kind == "affine":
                x = next(affines)(x)
            elif spec.kind == "relu":
                x = F.relu(x)
            elif spec.kind == "max_pool":
                x = F.max_pool2d(x, spec.args[0], spec.args[1])
            elif spec.kind == "avg_pool":
                x = (x.mean(dim=(2, 3)) if spec.args[0] == 0
                     else F.avg_pool2d(x, spec.args[0], spec.args[1]))
            elif spec.kind == "tag":
                tags[spec.args[0]] = x
            elif spec.kind == "skip":
                x = tags[spec.args[0]]
            elif spec.kind == "add_prev":
                x = _add_padded(x, tags[spec.args[0]])
            elif spec.kind == "fc":
                x = self.fc(x.flatten(1))
        return x

