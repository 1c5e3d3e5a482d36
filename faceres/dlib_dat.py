"""Read dlib's `dlib_face_recognition_resnet_model_v1.dat` into a state_dict for `DlibResNet`.

dlib's files are not self-describing: the reader walks the serialised network in the order dlib
writes it (dlib/dnn/core.h, layers.h, input.h, tensor.h, serialize.h), checking every version tag,
layer name, shape and setting against the architecture, and fails unless every parameter tensor
is used and the parse ends exactly at the end of the file.

Encoding: an integer is a control byte (bit 7: negative, low 4 bits: byte count) followed by the
little-endian magnitude; a float is the integer pair (mantissa, exponent) = mantissa * 2**exponent;
a string is its length then its bytes; a bool is the character '0' or '1'; a tensor is version 2,
(n, k, rows, cols), then raw little-endian float32. Each layer wrapper writes its version, then the
layers below it, then its own layer and state, so the file holds all wrapper versions first (top
to bottom), the input layer, then the layers bottom to top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .archs.dlib_resnet import STAGES, DlibResNet
from .weights import resolve

CONV_MODE = 0  # dlib layer_mode (CONV_MODE = 0, FC_MODE = 1): affine_ after a convolution
FC_NO_BIAS = 1


class DatError(ValueError):
    """The file is not dlib's face recognition ResNet v1 (the message names the file and the cause)."""


class _Stream:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str):
        raise DatError(f"{self.path}: not dlib's face recognition ResNet: {what} (byte {self.pos})")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            self.fail(f"file ends early (needs {n} more bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        control = self.take(1)[0]
        if control & 0x70:
            self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if abs(exponent) >= 32000:  # dlib's codes for inf / nan
            self.fail("non-finite float")
        return float(mantissa) * 2.0**exponent

    def bool(self) -> bool:
        c = self.take(1)
        if c not in (b"0", b"1"):
            self.fail(f"bad bool {c!r}")
        return c == b"1"

    def string(self) -> str:
        return self.take(self.int()).decode("latin-1")

    def expect(self, value, got, what: str):
        if got != value:
            self.fail(f"{what} is {got!r}, expected {value!r}")

    def version(self, expected: int, what: str):
        self.expect(expected, self.int(), f"{what} version")

    def shape(self) -> tuple[int, int, int, int]:
        return self.int(), self.int(), self.int(), self.int()

    def tensor(self, shape: tuple[int, ...] | None = None, what: str = "tensor") -> np.ndarray:
        self.version(2, what)
        dims = self.shape()
        if shape is not None:
            self.expect(tuple(shape), dims, f"{what} shape")
        n = int(np.prod(dims))
        return np.frombuffer(self.take(4 * n), "<f4").reshape(dims).astype(np.float32)

    def alias(self, shape: tuple[int, int, int, int], what: str):
        self.version(1, what)
        self.expect(shape, self.shape(), f"{what} shape")

    def empty_tensor(self, what: str):
        self.tensor((0, 0, 0, 0), what)


# ------------------------------------------------------------------------- layers


def _conv(s: _Stream, cin: int, cout: int, k: int, stride: int, key: str, sd: dict):
    s.expect("con_4", s.string(), "conv layer")
    params = s.tensor((cout * cin * k * k + cout, 1, 1, 1), f"{key} params").ravel()
    pad = k // 2 if stride == 1 else 0
    settings = [s.int() for _ in range(7)]  # filters, rows, cols, stride y/x, padding y/x
    s.expect([cout, k, k, stride, stride, pad, pad], settings, f"{key} settings")
    s.alias((cout, cin, k, k), f"{key} filters")
    s.alias((1, cout, 1, 1), f"{key} biases")
    [s.float() for _ in range(4)]  # learning-rate and weight-decay multipliers
    sd[f"{key}.weight"] = params[:-cout].reshape(cout, cin, k, k)
    sd[f"{key}.bias"] = params[-cout:]


def _affine(s: _Stream, c: int, key: str, sd: dict):
    s.expect("affine_", s.string(), "affine layer")
    params = s.tensor((2 * c, 1, 1, 1), f"{key} params").ravel()  # [gamma, beta]
    s.alias((1, c, 1, 1), f"{key} gamma")
    s.alias((1, c, 1, 1), f"{key} beta")
    s.expect(CONV_MODE, s.int(), f"{key} mode")
    sd[f"{key}.weight"], sd[f"{key}.bias"] = params[:c], params[c:]


def _relu(s: _Stream, key: str):
    s.expect("relu_", s.string(), f"{key} relu")  # relu_ has no state (its name only)


def _pool(s: _Stream, name: str, k: int, stride: int, key: str):
    s.expect(name, s.string(), f"{key} pooling layer")
    s.expect([k, k, stride, stride, 0, 0], [s.int() for _ in range(6)], f"{key} {name} settings")


def _add_prev(s: _Stream, key: str):
    s.expect("add_prev_", s.string(), f"{key} residual sum")


def _fc(s: _Stream, cin: int, cout: int, sd: dict):
    s.expect("fc_2", s.string(), "fc layer")
    s.expect((cout, cin), (s.int(), s.int()), "fc outputs/inputs")
    weight = s.tensor((cin, cout, 1, 1), "fc params").reshape(cin, cout)  # stored (in, out)
    s.alias((cin, cout, 1, 1), "fc weights")
    s.alias((0, 0, 0, 0), "fc biases")
    s.expect(FC_NO_BIAS, s.int(), "fc bias mode")
    [s.float() for _ in range(4)]
    sd["fc.weight"] = weight.T


def _layer_state(s: _Stream, key: str, innermost: bool):
    """What add_layer writes after its layer: flags, then gradient/output caches (empty in a saved model)."""
    [s.bool() for _ in range(3)]  # setup called, gradient stale, output disabled
    s.empty_tensor(f"{key} x_grad")
    s.empty_tensor(f"{key} cached_output")
    s.empty_tensor(f"{key} {'grad_final' if innermost else 'params_grad'}")
    if innermost:
        s.expect(1, s.int(), "sample expansion factor")


# ------------------------------------------------------------------------- network


def _layers() -> list[tuple]:
    """The layer stack from the top (fc) down to the stem conv, as dlib nests it: tuples
    (kind, key, *args); 'tag'/'skip' are dlib's tag and skip wrappers (no layer of their own)."""
    blocks, channels = [], 32
    for out, n, down in STAGES:
        for i in range(n):
            blocks.append((channels, out, down and i == 0))
            channels = out
    top = [("fc", "fc", channels, 128), ("avg_pool_everything", "pool")]
    for i, (cin, cout, down) in reversed(list(enumerate(blocks))):
        key = f"blocks.{i}"
        top += [("relu", key), ("add_prev", key)]
        if down:
            top += [("avg_pool", key), ("skip", key), ("tag", key)]
        top += [
            ("affine", f"{key}.affine2", cout),
            ("conv", f"{key}.conv2", cout, cout, 3, 1),
            ("relu", key),
            ("affine", f"{key}.affine1", cout),
            ("conv", f"{key}.conv1", cin, cout, 3, 2 if down else 1),
            ("tag", key),
        ]
    return top + [("max_pool", "stem"), ("relu", "stem"), ("affine", "affine", 32), ("conv", "conv", 3, 32, 7, 2)]


def _layer(s: _Stream, kind: str, key: str, args: tuple, sd: dict):
    if kind == "conv":
        _conv(s, *args, key=key, sd=sd)
    elif kind == "affine":
        _affine(s, *args, key=key, sd=sd)
    elif kind == "fc":
        _fc(s, *args, sd=sd)
    elif kind == "relu":
        _relu(s, key)
    elif kind == "add_prev":
        _add_prev(s, key)
    elif kind == "max_pool":
        _pool(s, "max_pool_2", 3, 2, key)
    elif kind == "avg_pool":
        _pool(s, "avg_pool_2", 2, 2, key)
    elif kind == "avg_pool_everything":
        _pool(s, "avg_pool_2", 0, 1, key)


def read_dat(path: str | Path) -> dict[str, torch.Tensor]:
    """state_dict of `DlibResNet` from dlib's .dat file (strict: every tensor used, parse ends at EOF)."""
    path = Path(path)
    s = _Stream(path.read_bytes(), path)
    s.version(1, "add_loss_layer")
    s.expect("loss_metric_2", s.string(), "loss layer")
    s.float(), s.float()  # margin, distance threshold (training only)
    layers = _layers()
    for n, (kind, key, *_) in enumerate(layers):
        s.version(1 if kind in ("tag", "skip") else 3 if n == len(layers) - 1 else 2, f"{key} {kind} wrapper")
    s.expect("input_rgb_image_sized", s.string(), "input layer")
    sd = {"input_mean": np.array([s.float() for _ in range(3)], np.float32)}
    s.expect((150, 150), (s.int(), s.int()), "input size")
    for n, (kind, key, *args) in reversed(list(enumerate(layers))):
        if kind not in ("tag", "skip"):
            _layer(s, kind, key, tuple(args), sd)
            _layer_state(s, key, innermost=n == len(layers) - 1)
    if s.pos != len(s.data):
        s.fail(f"{len(s.data) - s.pos} bytes left after the network")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def load_dlib_resnet(path: str | Path = "dlib-resnet") -> DlibResNet:
    """The ResNet with dlib's weights (registry name or file path), eval mode, frozen."""
    net = DlibResNet()
    net.load_state_dict(read_dat(resolve(path)), strict=True)
    return net.eval().requires_grad_(False)
