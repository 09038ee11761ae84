"""The Relax pass: every eligible conv2d of a model becomes a call_tir of a Winograd PrimFunc (with "auto",
a layer too thin for Winograd or a strided one may become novagen's direct kernel), tunable by TVM's own
MetaSchedule flow or scheduled by default; and the pass that schedules those left untuned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from novagen.backends.tvm.compute import pack_direct_weights, transform_weights
from novagen.backends.tvm.schedule import conv2d_primfunc, direct_primfunc, is_novagen, schedule_default
from novagen.backends.tvm.spec import DTYPES, DirectSpec, TVMError, load_tvm, make_direct_spec, one_axis_tvm
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
        lines += [f"  rewritten {r['shape']} -> {r.get('algorithm', '')} {r['function']} ({r['weights']} weights; "
                  f"{r.get('why', 'given')})" for r in self.rewritten]
        lines += [f"  left {s['shape']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _shared_reason(call: Any) -> str | None:
    """Why a relax.nn.conv2d call cannot go to any novagen kernel (shapes, layouts, dilation, groups, dtypes),
    or None."""
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
    if _ints(attrs.dilation) != (1, 1):
        return f"dilation {_ints(attrs.dilation)}"
    if int(attrs.groups) != 1:
        return f"groups {int(attrs.groups)}"
    dtype = str(data.ty.dtype)
    if dtype not in DTYPES or str(weight.ty.dtype) != dtype:
        return f"dtype {dtype}"
    if attrs.out_dtype and str(attrs.out_dtype) not in ("", "void", dtype):
        return f"output dtype {attrs.out_dtype}"
    return None


def _conv_reason(call: Any, r: int, label: str, min_channels: int) -> str | None:
    """Why a relax.nn.conv2d call cannot be rewritten to Winograd, or None when it can."""
    attrs = call.attrs
    if _ints(attrs.strides) != (1, 1):
        return f"stride {_ints(attrs.strides)}"
    if (reason := _shared_reason(call)) is not None:
        return reason
    kh, kw = _ints(call.args[1].ty.shape)[2:]
    if (kh, kw) != (r, r):
        return f"kernel {kh}x{kw} ({label} needs {r}x{r})"
    pt, pl, pb, pr = _ints(attrs.padding)
    if pt != pb or pl != pr:
        return f"asymmetric padding {(pt, pl, pb, pr)}"
    o, i = _ints(call.args[1].ty.shape)[:2]
    if min(o, i) < min_channels:
        return f"{i} input / {o} output channels (fewer than min_channels={min_channels})"
    return None


def _direct_spec(call: Any, min_channels: int) -> DirectSpec | None:
    """The DirectSpec of a conv2d Winograd does not take, for novagen's direct kernel (NCHW only): fewer than
    `min_channels` input channels (a network's stem; any kernel, stride and padding; OIHW weights), or strided
    with a kernel larger than 1×1 (a 1×1 conv is a GEMM TVM schedules well) and a multiple of 8 filters
    (weights packed by 16 or 8 filters); None for any other."""
    if _shared_reason(call) is not None or str(call.attrs.data_layout) != "NCHW":
        return None
    data, weight = call.args
    n, c, h, w = _ints(data.ty.shape)
    k, _, kh, kw = _ints(weight.ty.shape)
    stride = _ints(call.attrs.strides)
    if c < min_channels:
        k_block = 0
    elif stride != (1, 1) and kh * kw > 1 and k % 8 == 0:
        k_block = 16 if k % 16 == 0 else 8
    else:
        return None
    return make_direct_spec((n, c, h, w, k), (kh, kw), stride, _ints(call.attrs.padding), str(data.ty.dtype),
                            k_block)


SCHEDULES = ("tunable", "fusable", "default")
FUSABLE, OPAQUE = 4, 8
"""TVM's op patterns (kOutEWiseFusable, kOpaque): a "fusable" Winograd PrimFunc lets FuseOps/FuseTIR fuse the
elementwise work after it (bias, residual, ReLU; the schedule computes it in the output block); the others
are left alone."""


def bind_params(mod: Any, params: Any, func_name: str = "main") -> Any:
    """`mod` with `params` bound as constants, in every form TVM hands them: `detach_params`' dict of
    function name → list of tensors (the function's trailing parameters, after its `num_input` inputs),
    or parameter name → tvm.runtime.Tensor or NumPy array."""
    load_tvm()
    from tvm import relax

    if params is None or (isinstance(params, dict) and not params):
        return mod
    if not isinstance(params, dict):
        raise TVMError(f"params must be a dict (as relax.frontend.detach_params returns, or name -> array), "
                       f"not {type(params).__name__}")
    func = mod[func_name]
    if func_name in params and isinstance(params[func_name], (list, tuple)):
        values = list(params[func_name])
        inputs = int(func.attrs["num_input"]) if func.attrs and "num_input" in func.attrs else None
        names = list(func.params)
        if inputs is None:
            inputs = len(names) - len(values)
        if inputs < 0 or len(names) - inputs != len(values):
            raise TVMError(f"params['{func_name}'] holds {len(values)} tensors but '{func_name}' has "
                           f"{len(names) - (inputs or 0)} parameters after its inputs")
        binding = dict(zip(names[inputs:], (_tensor(v, str(n.name)) for n, v in zip(names[inputs:], values))))
    elif all(isinstance(k, str) for k in params):
        known = {str(p.name) for p in func.params}
        missing = sorted(set(params) - known)
        if missing:
            raise TVMError(f"params name {', '.join(missing[:3])}, which '{func_name}' does not take "
                           f"(its parameters: {', '.join(sorted(known))[:200]})")
        binding = {k: _tensor(v, k) for k, v in params.items()}
    else:
        raise TVMError("params must map names to tensors or function names to lists of tensors "
                       f"(relax.frontend.detach_params); got keys of type {type(next(iter(params))).__name__}")
    return relax.transform.BindParams(func_name, binding)(mod)


def _tensor(value: Any, name: str) -> Any:
    tvm = load_tvm()
    if isinstance(value, tvm.runtime.Tensor):
        return value
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TVMError(f"parameter {name} is not a numeric tensor ({type(value).__name__}, dtype {arr.dtype})")
    return tvm.runtime.tensor(arr)


def rewrite_conv2d(mod: Any, algorithm: Any = "auto", params: Any = None, target: Any = "llvm",
                   min_channels: int = 8, func_name: str = "main", schedule: str = "tunable",
                   return_report: bool = False, database: Any = None) -> Any:
    """Rewrite every eligible relax.nn.conv2d of `mod` into a call_tir of a Winograd PrimFunc.

    Eligible: a 3×3 kernel (the algorithm's r×r), stride 1, dilation 1, groups 1, symmetric padding, NCHW or
    NHWC data with OIHW weights, float32/float16, static shapes, at least `min_channels` channels in and out.
    `algorithm` names one algorithm for every conv, or "auto" (`choice.choose`): per conv, the fastest
    catalog algorithm accurate enough for the dtype, or TVM's own conv2d where that is faster, each timed with
    its record in the tuning database folder `database` when it holds one (else its default); with "auto" on
    llvm, an NCHW conv2d with fewer than `min_channels` input channels (a network's stem, any kernel, stride
    and padding), or a strided one with at least that many, a kernel larger than 1×1, a multiple of 8 filters
    and constant weights (packed now), gets novagen's direct kernel where it measures faster than TVM's
    conv2d (`choose_direct`).  `params` (bound first) may be in any form TVM uses (`detach_params`' dict of
    lists, name → tensor or array).
    Constant weights are transformed now, in float64 from the exact G; others inside the PrimFunc.

    `schedule` "tunable" (default): the PrimFuncs are unscheduled, with novagen's MetaSchedule rule on their
    GEMM block, and opaque to fusion, so `extract_tasks`, `tune_relax`, `MetaScheduleTuneIRMod` and
    `MetaScheduleApplyDatabase` tune and apply them like any task, whether the module given to tuning was
    legalized or not (`DefaultSchedule` schedules those left untuned); "fusable": the same, but FuseOps/FuseTIR
    fuse them with the elementwise work after them (bias, BatchNorm arithmetic, residual, ReLU), which the
    schedule computes in the output transform: tune the legalized module and compile the same one
    (`compile_model` and `tune_model` do); "default": each already scheduled with the rule's default
    decisions for `target`, opaque, ready for an untuned `tvm.compile`.  Returns the new IRModule, or
    (module, RewriteReport) with `return_report=True`: what was rewritten with which algorithm and why, and
    what was left, with the reason.
    """
    tvm = load_tvm()
    from tvm import relax

    from novagen.backends.tvm.auto import DIRECT, choose, choose_direct

    auto = isinstance(algorithm, str) and algorithm.strip().lower() == "auto"
    alg = None if auto else one_axis_tvm(algorithm)
    if not isinstance(mod, tvm.IRModule):
        raise TVMError(f"rewrite_conv2d takes a Relax IRModule, got {type(mod).__name__}")
    if func_name not in [gv.name_hint for gv in mod.get_global_vars()]:
        raise TVMError(f"the module has no function '{func_name}'")
    if schedule not in SCHEDULES:
        raise TVMError(f"schedule '{schedule}' is not known: use one of {', '.join(SCHEDULES)}")
    mod = bind_params(mod, params, func_name)
    tgt = resolve_target(target)
    if auto and database is not None:  # read once, not per convolution
        from novagen.backends.tvm.tuning import open_database

        database = open_database(database)
    kind = "cuda" if tgt.kind.name == "cuda" else "llvm"
    rewritten: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    conv_op = tvm.ir.Op.get("relax.nn.conv2d")
    r = 3 if auto else alg.r  # type: ignore[union-attr]

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
            if auto and kind == "llvm" and (spec := _direct_spec(call, min_channels)) is not None:
                return self.direct(call, spec, shape)
            reason = _conv_reason(call, r, alg.label if alg else "auto", 1 if auto else min_channels)
            if reason is not None:
                skipped.append({"shape": shape, "reason": reason})
                return call
            layout = str(call.attrs.data_layout)
            dshape = _ints(data.ty.shape)
            n, c, h, w = dshape if layout == "NCHW" else (dshape[0], dshape[3], dshape[1], dshape[2])
            k = _ints(weight.ty.shape)[0]
            pt, pl, _, _ = _ints(call.attrs.padding)
            dtype = str(data.ty.dtype)
            layer = (n, c, h, w, k)
            chosen, why = alg, "given"
            if auto:
                pick = choose(layer, (pt, pl), dtype, layout, tgt, min_channels=min_channels, database=database)
                if pick.algorithm == DIRECT:
                    skipped.append({"shape": shape, "reason": f"auto: {pick.reason}", "times_ms": pick.times_ms})
                    return call
                chosen, why = one_axis_tvm(pick.algorithm), f"auto: {pick.reason}"
            wexpr = self.constant(weight)
            constant = wexpr is not None
            wexpr = wexpr if constant else weight
            mode = "precomputed" if constant else "graph"
            func, spec = conv2d_primfunc(chosen, layer, (pt, pl), dtype, layout, mode, None,
                                         index_dtype="int64" if schedule == "fusable" else None)
            if spec.name not in self.funcs:
                if schedule == "default":
                    func = schedule_default(func, tgt)
                func = func.with_attr("op_pattern", FUSABLE if schedule == "fusable" else OPAQUE)
                self.funcs[spec.name] = self.builder_.add_func(func, spec.name)
            gv = self.funcs[spec.name]
            if constant:
                u = transform_weights(chosen, wexpr.value.numpy(), dtype, spec.k_block)
                wexpr = relax.const(u, dtype)
            rewritten.append({"shape": list(layer), "function": spec.name, "algorithm": chosen.label,
                              "why": why, "weights": mode, "padding": [pt, pl], "layout": layout, "target": kind})
            return relax.call_tir(gv, [data, wexpr], out_ty=relax.TensorType(spec.output_shape, dtype))

        def direct(self, call: Any, spec: DirectSpec, shape: Any) -> Any:
            """A thin or strided layer: novagen's direct kernel where `auto` measures it faster than TVM's
            conv2d (packed weights only when they are constants, packed now)."""
            wexpr = self.constant(call.args[1])
            if spec.k_block and wexpr is None:
                skipped.append({"shape": shape, "reason": f"stride {list(spec.stride)} with weights not bound "
                                                          "as constants (pass params)"})
                return call
            pick = choose_direct(spec, tgt, database)
            if pick.algorithm == DIRECT:
                skipped.append({"shape": shape, "reason": f"auto: {pick.reason}", "times_ms": pick.times_ms})
                return call
            if spec.name not in self.funcs:
                fusable = schedule == "fusable"
                func = direct_primfunc(spec, schedule=None, index_dtype="int64" if fusable else None)
                if schedule == "default":
                    func = schedule_default(func, tgt)
                func = func.with_attr("op_pattern", FUSABLE if fusable else OPAQUE)
                self.funcs[spec.name] = self.builder_.add_func(func, spec.name)
            args = list(call.args)
            if spec.k_block:
                args[1] = relax.const(pack_direct_weights(spec, wexpr.value.numpy()), spec.dtype)
            rewritten.append({"shape": list(spec.layer), "function": spec.name, "algorithm": pick.algorithm,
                              "why": f"auto: {pick.reason}", "weights": "packed" if spec.k_block else "untransformed",
                              "kernel": list(spec.kernel), "stride": list(spec.stride),
                              "padding": list(spec.padding), "layout": "NCHW", "target": kind})
            return relax.call_tir(self.funcs[spec.name], args, out_ty=relax.TensorType(spec.output_shape, spec.dtype))

        def constant(self, weight: Any) -> Any:
            """The weights as a relax Constant (bound directly or through a variable), or None."""
            if isinstance(weight, relax.Var):
                weight = self.lookup_binding(weight)
            return weight if isinstance(weight, tvm.ir.expr.Constant) else None

    rw = _Rewriter(mod)
    for gv, fn in list(mod.functions.items()):
        if isinstance(fn, relax.Function):
            rw.builder_.update_func(gv, rw.visit_expr(fn))
    new_mod = rw.builder_.get()
    new_mod = relax.transform.DeadCodeElimination()(new_mod) if rewritten else new_mod
    report = RewriteReport(tuple(rewritten), tuple(skipped))
    return (new_mod, report) if return_report else new_mod


def WinogradConv2d(algorithm: Any = "auto", params: Any = None, target: Any = "llvm",  # noqa: N802 (a pass)
                   min_channels: int = 8, func_name: str = "main", schedule: str = "tunable",
                   database: Any = None) -> Any:
    """`rewrite_conv2d` as a TVM module pass, to run among others in a `tvm.transform.Sequential`."""
    tvm = load_tvm()

    @tvm.transform.module_pass(opt_level=0, name="novagen.WinogradConv2d")
    def pass_(mod: Any, _ctx: Any) -> Any:
        return rewrite_conv2d(mod, algorithm, params, target, min_channels, func_name, schedule,
                              database=database)

    return pass_


def DefaultSchedule(target: Any = "llvm") -> Any:  # noqa: N802 (a pass)
    """A module pass giving every novagen Winograd PrimFunc not scheduled yet (untuned, or without a record in
    the database applied before) the rule's default schedule for `target`."""
    tvm = load_tvm()

    @tvm.transform.module_pass(opt_level=0, name="novagen.DefaultSchedule")
    def pass_(mod: Any, _ctx: Any) -> Any:
        mod = mod.clone()
        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, tvm.tirx.PrimFunc) and is_novagen(func) and not func.attrs.get("tirx.is_scheduled"):
                updates[gv] = schedule_default(func, target).with_attr("op_pattern", OPAQUE)
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return pass_
