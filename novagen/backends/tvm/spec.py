"""What a TVM Winograd conv2d depends on, checked once: the algorithm, the layer, padding, dtype, layout,
where the weights are transformed, and the GEMM's blocking.  Every other module of the TVM backend takes a
`Conv2dSpec` from `make_spec`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from novagen.algebra import Algorithm, from_dict
from novagen.backends.base import one_axis
from novagen.errors import InputError
from novagen.layers import LAYOUTS, parse_layer

WEIGHTS = ("precomputed", "graph")
RULE = "novagen_winograd_conv2d"
"""The MetaSchedule custom rule (block annotation "schedule_rule") under which novagen's design space is
registered, as s_tir.meta_schedule.<target key>.novagen_winograd_conv2d."""
SPEC_ANNOTATION = "novagen_conv2d"
"""Block annotation carrying the conv2d's spec as JSON, so the rule can schedule a task it is handed."""
DTYPES = ("float32", "float16")


class TVMError(InputError):
    """TVM is missing, or a layer, layout, dtype or target it cannot build."""


def load_tvm() -> Any:
    """The `tvm` module; TVMError naming the extra to install when it is missing."""
    try:
        import tvm
    except ImportError:
        raise TVMError("the TVM backend needs apache-tvm: pip install 'novagen[tvm]'") from None
    return tvm


def one_axis_tvm(alg: Any) -> Algorithm:
    """The 1D algorithm of a TVM conv2d (a catalog name, a spec or an Algorithm)."""
    return one_axis(alg, "TVM")


def vector_width(size: int, limit: int = 16) -> int:
    """The largest power of two <= limit dividing size (the vector width of a loop of that size)."""
    v = limit
    while v > 1 and size % v:
        v //= 2
    return v


@dataclass(frozen=True)
class Conv2dSpec:
    """Everything the compute depends on: the algorithm, the layer, padding, dtype, layout, weights."""

    alg: Algorithm
    layer: tuple[int, int, int, int, int]
    padding: tuple[int, int]
    dtype: str
    layout: str
    weights: str
    p_block: int
    k_block: int = 16

    @property
    def out_hw(self) -> tuple[int, int]:
        n, c, h, w, k = self.layer
        r = self.alg.r
        return h + 2 * self.padding[0] - r + 1, w + 2 * self.padding[1] - r + 1

    @property
    def tiles_hw(self) -> tuple[int, int]:
        oh, ow = self.out_hw
        m = self.alg.m
        return -(-oh // m), -(-ow // m)

    @property
    def tiles(self) -> int:
        nh, nw = self.tiles_hw
        return self.layer[0] * nh * nw

    @property
    def tiles_padded(self) -> int:
        return -(-self.tiles // self.p_block) * self.p_block

    @property
    def input_shape(self) -> tuple[int, ...]:
        n, c, h, w, _ = self.layer
        return (n, c, h, w) if self.layout == "NCHW" else (n, h, w, c)

    @property
    def output_shape(self) -> tuple[int, ...]:
        n, k = self.layer[0], self.layer[4]
        oh, ow = self.out_hw
        return (n, k, oh, ow) if self.layout == "NCHW" else (n, oh, ow, k)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        _, c, _, _, k = self.layer
        a, r = self.alg.alpha, self.alg.r
        return (a, a, k // self.k_block, c, self.k_block) if self.weights == "precomputed" else (k, c, r, r)

    @property
    def name(self) -> str:
        """A C identifier naming the function: algorithm, layer, layout and dtype."""
        label = "".join(ch if ch.isalnum() else "_" for ch in self.alg.label).strip("_")
        while "__" in label:
            label = label.replace("__", "_")
        shape = "x".join(map(str, self.layer))
        pad = f"p{self.padding[0]}" if self.padding[0] == self.padding[1] else f"p{self.padding[0]}x{self.padding[1]}"
        wg = "_wg" if self.weights == "graph" else ""
        return f"novagen_{label}_{shape}_{pad}_{self.layout.lower()}_{self.dtype}{wg}"


def make_spec(alg: Any, layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
              layout: str = "NCHW", weights: str = "precomputed", p_block: int | None = None,
              k_block: int | None = None) -> Conv2dSpec:
    """Validate the arguments of a Winograd conv2d and gather them (raises TVMError naming the bad value).

    p_block: tiles per GEMM register block (the tile count is padded to a multiple); k_block: filters per
    packed block of the transformed weights, the GEMM's vector width (a divisor of K; default 16 or less).
    """
    alg = one_axis_tvm(alg)
    shape = parse_layer(layer)
    if shape is None:
        raise TVMError("a layer (N, C, H, W, K) is required: TVM modules are built for one shape")
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        pads = (int(padding), int(padding))
    elif isinstance(padding, (tuple, list)) and len(padding) == 2:
        pads = (int(padding[0]), int(padding[1]))
    else:
        raise TVMError(f"padding {padding!r} is not understood: give an int or (pad_h, pad_w)")
    if min(pads) < 0:
        raise TVMError(f"padding {padding!r} must not be negative")
    if str(layout).upper() not in LAYOUTS:
        raise TVMError(f"layout '{layout}' is not supported: use NCHW or NHWC")
    if dtype not in DTYPES:
        raise TVMError(f"dtype '{dtype}' is not supported: use float32 or float16 (fp32 accumulation)")
    if weights not in WEIGHTS:
        raise TVMError(f"weights '{weights}' is not supported: use precomputed or graph")
    spec = Conv2dSpec(alg, shape, pads, dtype, str(layout).upper(), weights, 1)
    if min(spec.out_hw) < 1:
        raise TVMError(f"layer {shape} with padding {pads} is smaller than the {alg.r}x{alg.r} kernel")
    if p_block is None:
        p_block = min(4, spec.tiles)
    if p_block < 1:
        raise TVMError(f"p_block {p_block} must be at least 1")
    k_block = vector_width(shape[4], 16) if k_block is None else k_block
    if k_block < 1 or shape[4] % k_block:
        raise TVMError(f"k_block {k_block} must divide the {shape[4]} filters")
    return Conv2dSpec(alg, shape, pads, dtype, str(layout).upper(), weights, int(p_block), int(k_block))



def spec_json(spec: Conv2dSpec) -> str:
    """The spec as JSON (the algorithm's exact matrices included): what the schedule rule reads back."""
    return json.dumps({"algorithm": spec.alg.to_dict(), "layer": list(spec.layer), "padding": list(spec.padding),
                       "dtype": spec.dtype, "layout": spec.layout, "weights": spec.weights, "p_block": spec.p_block,
                       "k_block": spec.k_block}, separators=(",", ":"))


def spec_from_json(text: str) -> Conv2dSpec:
    """The spec `spec_json` wrote."""
    d = json.loads(text)
    return make_spec(from_dict(d["algorithm"]), d["layer"], tuple(d["padding"]), d["dtype"], d["layout"],
                     d["weights"], d["p_block"], d["k_block"])


DIRECT_RULE = "novagen_direct_conv2d"
"""The MetaSchedule custom rule of novagen's direct conv2d (`DirectSpec`), registered like `RULE`."""
DIRECT_ANNOTATION = "novagen_direct"


@dataclass(frozen=True)
class DirectSpec:
    """A conv2d for novagen's direct kernel, for the layers Winograd does not take: too thin in channels (such
    as a network's 7×7/2 stem on 3 channels), or strided.  Any kernel size, stride and padding; NCHW, groups 1,
    dilation 1.  `k_block` 0: OIHW weights, vectorized along output columns (thin layers); else weights packed
    (K / k_block, C, kh, kw, k_block) and vectorized along filters (wide layers, whose rows are short)."""

    layer: tuple[int, int, int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    """top, left, bottom, right"""
    dtype: str
    k_block: int = 0

    @property
    def out_hw(self) -> tuple[int, int]:
        _, _, h, w, _ = self.layer
        (kh, kw), (sh, sw), (pt, pl, pb, pr) = self.kernel, self.stride, self.padding
        return (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.layer[:4]

    @property
    def oihw_shape(self) -> tuple[int, ...]:
        """The conv's weights as torch and TVM hold them: (K, C, kh, kw)."""
        return (self.layer[4], self.layer[1], *self.kernel)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The weights the kernel takes: `oihw_shape`, or packed (K / kb, C, kh, kw, kb)."""
        k, c, kh, kw = self.oihw_shape
        return (k // self.k_block, c, kh, kw, self.k_block) if self.k_block else (k, c, kh, kw)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.layer[0], self.layer[4], *self.out_hw)

    @property
    def name(self) -> str:
        shape = "x".join(map(str, self.layer))
        kernel, stride, pad = ("x".join(map(str, v)) for v in (self.kernel, self.stride, self.padding))
        packed = f"_kb{self.k_block}" if self.k_block else ""
        return f"novagen_direct_{shape}_k{kernel}_s{stride}_p{pad}_nchw{packed}_{self.dtype}"

    def to_json(self) -> str:
        doc = {"layer": list(self.layer), "kernel": list(self.kernel), "stride": list(self.stride),
               "padding": list(self.padding), "dtype": self.dtype}
        if self.k_block:
            doc["k_block"] = self.k_block
        return json.dumps(doc, separators=(",", ":"))


def make_direct_spec(layer: Sequence[int], kernel: Sequence[int], stride: Sequence[int] = (1, 1),
                     padding: Sequence[int] = (0, 0, 0, 0), dtype: str = "float32", k_block: int = 0) -> DirectSpec:
    """Validate a conv2d for novagen's direct kernel (raises TVMError naming the bad value); `k_block` as in
    `DirectSpec`."""
    shape = parse_layer(list(layer))
    if shape is None:
        raise TVMError("a layer (N, C, H, W, K) is required: TVM modules are built for one shape")
    kernel, stride, padding = tuple(map(int, kernel)), tuple(map(int, stride)), tuple(map(int, padding))
    if len(kernel) != 2 or min(kernel) < 1:
        raise TVMError(f"kernel {kernel} must be two sizes of at least 1")
    if len(stride) != 2 or min(stride) < 1:
        raise TVMError(f"stride {stride} must be two steps of at least 1")
    if len(padding) != 4 or min(padding) < 0:
        raise TVMError(f"padding {padding} must be four sizes (top, left, bottom, right), none negative")
    if dtype not in DTYPES:
        raise TVMError(f"dtype '{dtype}' is not supported: use float32 or float16 (fp32 accumulation)")
    if isinstance(k_block, bool) or not isinstance(k_block, int) or k_block < 0 or (
            k_block and shape[4] % k_block):
        raise TVMError(f"k_block {k_block!r} must be 0 (unpacked weights) or divide the {shape[4]} filters")
    spec = DirectSpec(shape, kernel, stride, padding, dtype, k_block)  # type: ignore[arg-type]
    if min(spec.out_hw) < 1:
        raise TVMError(f"layer {shape} with padding {padding} is smaller than the {kernel[0]}x{kernel[1]} kernel")
    return spec


def direct_spec_from_json(text: str) -> DirectSpec:
    """The spec `DirectSpec.to_json` wrote."""
    d = json.loads(text)
    return make_direct_spec(d["layer"], d["kernel"], d["stride"], d["padding"], d["dtype"], d.get("k_block", 0))
