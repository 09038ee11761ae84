"""A Relax pass: every eligible conv2d of a model becomes a call_tir of a scheduled Winograd PrimFunc."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from novagen.algebra import Algorithm
from novagen.backends.tvm.compute import transform_weights
from novagen.backends.tvm.schedule import conv2d_primfunc
from novagen.backends.tvm.spec import DTYPES, TVMError, load_tvm, one_axis_tvm
from novagen.backends.tvm.targets import resolve_target
from novagen.layers import LAYOUTS


@dataclass(frozen=True)
class RewriteReport:
    """What `rewrite_conv2d` did: rewritten convolutions (function, shape, weights) and the ones it left,
    each with the reason."""

    rewritten: tuple[dict[str, Any], ...]
    skipped: tuple[dict[str, Any], ...]

    def __str__(self) -> str:
        lines = [f"{len(self.rewritten)} conv2d rewritten, {len(self.skipped)} left as they are"]
        lines += [f"  rewritten {r['shape']} -> {r['function']} ({r['weights']} weights)" for r in self.rewritten]
        lines += [f"  left {s['shape']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _conv_reason(call: Any, alg: Algorithm, min_channels: int) -> str | None:
    """Why a relax.nn.conv2d call cannot be rewritten, or None when it can."""
    attrs = call.attrs
    data, weight = call.args
    dshape = getattr(data.ty, "shape", None)
    wshape = getattr(weight.ty, "shape", None)
    if dshape is None or wshape is None:
        return "shape not known at compile time"
    try:
        _ints(dshape)
        _ints(wshape)
    except (TypeError, ValueError):
        return "dynamic shape"
    if str(attrs.data_layout) not in LAYOUTS:
        return f"data layout {attrs.data_layout}"
    if str(attrs.kernel_layout) != "OIHW":
        return f"kernel layout {attrs.kernel_layout} (OIHW needed)"
    if attrs.out_layout and str(attrs.out_layout) != str(attrs.data_layout):
        return f"output layout {attrs.out_layout}"
    if _ints(attrs.strides) != (1, 1):
        return f"stride {_ints(attrs.strides)}"
    if _ints(attrs.dilation) != (1, 1):
        return f"dilation {_ints(attrs.dilation)}"
    if int(attrs.groups) != 1:
        return f"groups {int(attrs.groups)}"
    kh, kw = _ints(wshape)[2:]
    if (kh, kw) != (alg.r, alg.r):
        return f"kernel {kh}x{kw} ({alg.label} needs {alg.r}x{alg.r})"
    pt, pl, pb, pr = _ints(attrs.padding)
    if pt != pb or pl != pr:
        return f"asymmetric padding {(pt, pl, pb, pr)}"
    dtype = str(data.ty.dtype)
    if dtype not in DTYPES or str(weight.ty.dtype) != dtype:
        return f"dtype {dtype}"
    if attrs.out_dtype and str(attrs.out_dtype) not in ("", "void", dtype):
        return f"output dtype {attrs.out_dtype}"
    o, i = _ints(wshape)[:2]
    if min(o, i) < min_channels:
        return f"{i} input / {o} output channels (fewer than min_channels={min_channels})"
    return None


def rewrite_conv2d(mod: Any, algorithm: Any = "F(4,3)/nova", params: dict[str, Any] | None = None,
                   target: Any = "llvm", min_channels: int = 8, func_name: str = "main",
                   return_report: bool = False) -> Any:
    """Rewrite every eligible relax.nn.conv2d of `mod` into a call_tir of a scheduled Winograd PrimFunc.

    Eligible: kernel r×r of the algorithm, stride 1, dilation 1, groups 1, symmetric padding, NCHW or
    NHWC data with OIHW weights, float32/float16, static shapes, at least `min_channels` channels in and
    out.  Weights that are constants (or named in `params`, which are bound first) are transformed now,
    in float64 from the exact G, and enter as constants U; other weights are transformed inside the
    PrimFunc.  The PrimFuncs are marked opaque and already scheduled (for llvm), so fusion and the
    default pipeline leave them alone; each gets its own global symbol.  Everything else is left as it
    was.  Returns the new IRModule, or (module, RewriteReport) with `return_report=True`: the report lists
    the rewritten convolutions and the ones left, each with its reason.
    """
    tvm = load_tvm()
    from tvm import relax

    alg = one_axis_tvm(algorithm)
    if not isinstance(mod, tvm.IRModule):
        raise TVMError(f"rewrite_conv2d takes a Relax IRModule, got {type(mod).__name__}")
    if func_name not in [gv.name_hint for gv in mod.get_global_vars()]:
        raise TVMError(f"the module has no function '{func_name}'")
    if params:
        mod = relax.transform.BindParams(func_name, {k: np.asarray(v) for k, v in params.items()})(mod)
    schedule = "llvm" if resolve_target(target).kind.name == "llvm" else None
    rewritten: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    conv_op = tvm.ir.Op.get("relax.nn.conv2d")

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):
        def __init__(self, module: Any) -> None:
            super().__init__(module)
            self.funcs: dict[str, Any] = {}

        def visit_call_(self, call: Any) -> Any:  # noqa: N802 (TVM's visitor name)
            call = self.visit_expr_post_order(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(conv_op)):
                return call
            data, weight = call.args
            shape = (list(_ints(data.ty.shape)) if getattr(data.ty, "shape", None) is not None
                     else None)
            reason = _conv_reason(call, alg, min_channels)
            if reason is not None:
                skipped.append({"shape": shape, "reason": reason})
                return call
            layout = str(call.attrs.data_layout)
            dshape = _ints(data.ty.shape)
            n, c, h, w = dshape if layout == "NCHW" else (dshape[0], dshape[3], dshape[1], dshape[2])
            k = _ints(weight.ty.shape)[0]
            pt, pl, _, _ = _ints(call.attrs.padding)
            dtype = str(data.ty.dtype)
            wexpr = weight
            if isinstance(weight, relax.Var):
                bound = self.lookup_binding(weight)
                if isinstance(bound, tvm.ir.expr.Constant):
                    wexpr = bound
            constant = isinstance(wexpr, tvm.ir.expr.Constant)
            mode = "precomputed" if constant else "graph"
            func, spec = conv2d_primfunc(alg, (n, c, h, w, k), (pt, pl), dtype, layout, mode, schedule)
            if spec.name not in self.funcs:
                func = func.with_attrs({"op_pattern": 8, "tirx.is_scheduled": schedule is not None})
                self.funcs[spec.name] = self.builder_.add_func(func, spec.name)
            gv = self.funcs[spec.name]
            if constant:
                u = transform_weights(alg, wexpr.value.numpy(), dtype, spec.k_block)
                wexpr = relax.const(u, dtype)
            rewritten.append({"shape": [n, c, h, w, k], "function": spec.name, "weights": mode,
                              "padding": [pt, pl], "layout": layout})
            return relax.call_tir(gv, [data, wexpr], out_ty=relax.TensorType(spec.output_shape, dtype))

    rw = _Rewriter(mod)
    for gv, fn in list(mod.functions.items()):
        if isinstance(fn, relax.Function):
            rw.builder_.update_func(gv, rw.visit_expr(fn))
    new_mod = rw.builder_.get()
    new_mod = relax.transform.DeadCodeElimination()(new_mod) if rewritten else new_mod
    report = RewriteReport(tuple(rewritten), tuple(skipped))
    return (new_mod, report) if return_report else new_mod

