"""Precision policies: for each stage of the Winograd pipeline, the format its result is stored in and the
format its arithmetic runs in.

- operands: the layer's input x and weights w as they arrive;
- input transform V = BT·d·B and filter transform U = G·g·Gᵀ;
- product: the element-wise product summed over channels (alpha² channel GEMMs), M;
- output transform Y = AT·M·A, assembled into y.

Products of two fp16/bf16/fp8 values are exact in fp32, so "fp16 storage, fp32 compute" is the usual GPU
discipline (tensor cores) and "fp16-pure" is HFMA-free half arithmetic.  int8 stages quantize
symmetrically with a scale per tensor or per Winograd tap and accumulate exactly in int32.
"""

from __future__ import annotations

from dataclasses import dataclass

from novagen.errors import InputError
from novagen.precision.formats import COMPUTE_FORMATS, FLOAT_FORMATS, STORE_FORMATS

SCALES = ("none", "tensor", "tap")


@dataclass(frozen=True)
class Stage:
    """How one stage runs: its result is stored in `store`, its arithmetic runs in `compute`.

    `scale` applies to int8 and fp8 storage: "tensor" (one symmetric scale, amax-calibrated), "tap"
    (one per Winograd-domain point; transformed tensors only) or "none" (fp8 values as they are).
    """

    store: str
    compute: str = "fp32"
    scale: str = "none"

    def __post_init__(self) -> None:
        if self.store not in STORE_FORMATS:
            raise InputError(f"storage format '{self.store}' is not known: use one of {', '.join(STORE_FORMATS)}")
        if self.compute not in COMPUTE_FORMATS:
            raise InputError(f"compute format '{self.compute}' is not known: use one of "
                             f"{', '.join(COMPUTE_FORMATS)}")
        if self.scale not in SCALES:
            raise InputError(f"scale '{self.scale}' is not known: use one of {', '.join(SCALES)}")
        if self.store == "int8" and self.scale == "none":
            raise InputError("int8 storage needs a scale: 'tensor' or 'tap'")


@dataclass(frozen=True)
class Policy:
    """A precision policy: one `Stage` per step of the Winograd pipeline."""

    name: str
    operands: Stage
    input_transform: Stage
    filter_transform: Stage
    product: Stage
    output_transform: Stage

    def __post_init__(self) -> None:
        int_gemm = self.product.compute == "int32"
        int_ops = self.input_transform.store == "int8" and self.filter_transform.store == "int8"
        if int_gemm != int_ops:
            raise InputError(f"policy '{self.name}': int32 accumulation needs int8 transformed operands and "
                             "int8 operands need int32 accumulation")
        for label, st in (("input transform", self.input_transform), ("filter transform", self.filter_transform),
                          ("output transform", self.output_transform)):
            if st.compute not in FLOAT_FORMATS:
                raise InputError(f"policy '{self.name}': the {label} computes in a float format, not {st.compute}")

    def describe(self) -> str:
        parts = []
        for label, st in (("x,w", self.operands), ("BT·d·B", self.input_transform), ("G·g·Gᵀ", self.filter_transform),
                          ("Σc U⊙V", self.product), ("AT·M·A", self.output_transform)):
            scale = f"/{st.scale}" if st.scale != "none" else ""
            parts.append(f"{label}: {st.store}{scale} ({st.compute})")
        return "; ".join(parts)


def _uniform(name: str, store: str, compute: str) -> Policy:
    st = Stage(store, compute)
    return Policy(name, st, st, st, st, st)


def _scaled(name: str, fmt: str, scale: str) -> Policy:
    """GEMM operands (V, U) in a narrow format with scales; transforms in fp32; the rest in fp16."""
    if fmt == "int8":
        ops = Stage("int8", "fp32", "tensor")
        return Policy(name, ops, Stage("int8", "fp32", scale), Stage("int8", "fp32", scale),
                      Stage("fp32", "int32"), Stage("fp32", "fp32"))
    half = Stage("fp16", "fp32")
    return Policy(name, half, Stage(fmt, "fp32", scale), Stage(fmt, "fp32", scale), half, half)


POLICIES: dict[str, Policy] = {
    "fp64": _uniform("fp64", "fp64", "fp64"),
    "fp32": _uniform("fp32", "fp32", "fp32"),
    "fp16": _uniform("fp16", "fp16", "fp32"),
    "fp16-pure": _uniform("fp16-pure", "fp16", "fp16"),
    "bf16": _uniform("bf16", "bf16", "fp32"),
    "bf16-pure": _uniform("bf16-pure", "bf16", "bf16"),
    "fp8-e4m3": _scaled("fp8-e4m3", "fp8_e4m3", "tensor"),
    "fp8-e4m3-tap": _scaled("fp8-e4m3-tap", "fp8_e4m3", "tap"),
    "fp8-e5m2": _scaled("fp8-e5m2", "fp8_e5m2", "tensor"),
    "fp8-e5m2-tap": _scaled("fp8-e5m2-tap", "fp8_e5m2", "tap"),
    "int8": _scaled("int8", "int8", "tensor"),
    "int8-tap": _scaled("int8-tap", "int8", "tap"),
}


def policy(precision: str | Policy) -> Policy:
    """A policy by name (fp32, fp16, fp16-pure, bf16, fp8-e4m3, int8, int8-tap, ...) or as given."""
    if isinstance(precision, Policy):
        return precision
    if not isinstance(precision, str) or precision.strip().lower() not in POLICIES:
        raise InputError(f"precision {precision!r} is not known: use one of {', '.join(POLICIES)}")
    return POLICIES[precision.strip().lower()]
