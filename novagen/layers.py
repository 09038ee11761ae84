"""Convolution layers as kernels and benchmarks see them: the shape (N, C, H, W, K), padding and data
layout, read from the command line or from Python; the direct convolution's FLOPs; and the 3×3 layers
of the networks the benchmarks run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from novagen.errors import InputError
from novagen.limits import MAX_DIM, MAX_TEXT, short, whole

Shape = tuple[int, int, int, int, int]
LAYOUTS = ("NCHW", "NHWC")


def parse_layer(text: str | Sequence[int] | None) -> Shape | None:
    """(N, C, H, W, K) from "1,64,56,56,64" (or "1x64x56x56x64") or a sequence of five positive integers;
    None stays None (a kernel for any shape)."""
    if text is None:
        return None
    bad = f"layer '{short(text)}' is not N,C,H,W,K: write five positive integers such as 1,64,56,56,64"
    try:
        parts = text.replace("x", ",").split(",") if isinstance(text, str) else list(text)
        if len(parts) != 5 or (isinstance(text, str) and len(text) > MAX_TEXT):
            raise ValueError(text)
        vals = tuple(_integer(v) for v in parts)
    except (TypeError, ValueError):
        raise InputError(bad) from None
    if len(vals) != 5 or min(vals) < 1:
        raise InputError(bad)
    if max(vals) > MAX_DIM:
        raise InputError(f"layer '{short(text)}': every dimension must be at most {MAX_DIM:,}")
    return vals  # type: ignore[return-value]


def _integer(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, str) and len(v.strip()) <= 12:
        return int(v.strip())
    raise ValueError(v)


def check_layout(layout: str) -> str:
    """"NCHW" or "NHWC" (any case)."""
    name = str(layout).upper()
    if name not in LAYOUTS:
        raise InputError(f"layout '{layout}' is not supported: use NCHW or NHWC")
    return name


def check_padding(padding: Any) -> int:
    """Zero padding on each side, as a non-negative integer."""
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)):
        raise InputError(f"padding {padding!r} must be a whole number of pixels on each side, such as 1")
    if padding < 0:
        raise InputError(f"padding {padding} must not be negative")
    return int(padding)


def output_hw(layer: Sequence[int], r: int, padding: int | Sequence[int] = 1) -> tuple[int, int]:
    """(OH, OW) of a stride-1 r×r convolution of the layer; InputError when the padded input is smaller
    than the kernel."""
    _, _, h, w, _ = layer
    ph, pw = (padding, padding) if isinstance(padding, (int, np.integer)) else tuple(padding)
    oh, ow = h + 2 * int(ph) - r + 1, w + 2 * int(pw) - r + 1
    if oh < 1 or ow < 1:
        raise InputError(f"input {h}x{w} with padding {padding} is smaller than the {r}x{r} kernel")
    return oh, ow


def conv_bytes(layer: Sequence[int], r: int = 3, padding: int = 1, element: int = 8) -> float:
    """Bytes of a convolution's input, weights and output at `element` bytes each, plus the im2col copy
    (C·r² values per output pixel) that NumPy's and torch's direct references build: what checking a
    layer against float64 costs at least."""
    n, c, h, w, k = layer
    oh, ow = output_hw(layer, r, padding)
    return float(element) * (n * c * h * w + k * c * r * r + n * k * oh * ow + n * c * r * r * oh * ow)


def direct_gflop(layer: Sequence[int], r: int = 3, padding: int | Sequence[int] = 1) -> float:
    """GFLOP of the direct convolution (2·N·K·C·OH·OW·r²): the common yardstick of every benchmark."""
    n, c, _, _, k = layer
    oh, ow = output_hw(layer, r, padding)
    return 2.0 * n * k * c * oh * ow * r * r / 1e9


@dataclass(frozen=True)
class Layer:
    """A 3×3-style conv layer: names of the network layers that share the shape, and (N, C, H, W, K)."""

    names: tuple[str, ...]
    shape: Shape
    padding: int = 1


VGG16 = (
    ("conv1_1", 3, 224, 64), ("conv1_2", 64, 224, 64),
    ("conv2_1", 64, 112, 128), ("conv2_2", 128, 112, 128),
    ("conv3_1", 128, 56, 256), ("conv3_2", 256, 56, 256), ("conv3_3", 256, 56, 256),
    ("conv4_1", 256, 28, 512), ("conv4_2", 512, 28, 512), ("conv4_3", 512, 28, 512),
    ("conv5_1", 512, 14, 512), ("conv5_2", 512, 14, 512), ("conv5_3", 512, 14, 512),
)
# ResNet-18 at 224×224: the 3×3 stride-1 convs (torchvision names); the stride-2 first conv of layer2–4
# and the 7×7 stem are left out.
RESNET18 = (
    ("layer1.0.conv1", 64, 56, 64), ("layer1.0.conv2", 64, 56, 64),
    ("layer1.1.conv1", 64, 56, 64), ("layer1.1.conv2", 64, 56, 64),
    ("layer2.0.conv2", 128, 28, 128), ("layer2.1.conv1", 128, 28, 128), ("layer2.1.conv2", 128, 28, 128),
    ("layer3.0.conv2", 256, 14, 256), ("layer3.1.conv1", 256, 14, 256), ("layer3.1.conv2", 256, 14, 256),
    ("layer4.0.conv2", 512, 7, 512), ("layer4.1.conv1", 512, 7, 512), ("layer4.1.conv2", 512, 7, 512),
)
# ResNet-50 at 224×224: the 3×3 stride-1 convs of the bottlenecks (torchvision puts the stride of a stage's
# first block on its 3×3 conv, so those three are left out)
RESNET50 = (
    *((f"layer1.{i}.conv2", 64, 56, 64) for i in range(3)),
    *((f"layer2.{i}.conv2", 128, 28, 128) for i in range(1, 4)),
    *((f"layer3.{i}.conv2", 256, 14, 256) for i in range(1, 6)),
    *((f"layer4.{i}.conv2", 512, 7, 512) for i in range(1, 3)),
)
NETWORKS = {"vgg16": VGG16, "resnet18": RESNET18, "resnet50": RESNET50}


def network_layers(network: str, batch: int = 1) -> list[Layer]:
    """The distinct conv shapes of a network (layers of the same shape grouped, in order)."""
    if network not in NETWORKS:
        raise InputError(f"network '{network}' is not known: use one of {', '.join(NETWORKS)}")
    batch = whole("batch", batch, 1, 1 << 16)
    groups: dict[tuple[int, ...], list[str]] = {}
    for name, c, hw, k in NETWORKS[network]:
        groups.setdefault((batch, c, hw, hw, k), []).append(name)
    return [Layer(tuple(names), shape) for shape, names in groups.items()]  # type: ignore[arg-type]
