"""Apache TVM backend: any Winograd algorithm as a TE compute, a hand-written llvm schedule, a Relax pass
that rewrites a model's convolutions, and MetaSchedule tuning.

The compute follows TVM topi's Winograd conv2d (input transform, a batched GEMM over channels per
Winograd point, output transform), but the transforms are emitted from novagen's transform programs
(`novagen.program`): each row of BT, AT and G is straight-line code with zero terms dropped and ±1 as
plain adds, selected by the (unrolled) row index, so no zero multiplication reaches the generated code.
Transforms run in two passes (columns, then rows), which keeps the tile in registers.

Compute and schedule are kept apart as in topi: `conv2d_compute` gives TE tensors, `schedule_llvm`
schedules the PrimFunc made from them, `conv2d_module` does both.  `tvm` is imported lazily so the core
package installs without it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from novagen.algebra import Algorithm
from novagen.errors import InputError

LAYOUTS = ("NCHW", "NHWC")
WEIGHTS = ("precomputed", "graph")
DTYPES = ("float32", "float16")


class TVMError(InputError):
    """TVM is missing, or a layer, layout, dtype or target it cannot build."""


def _tvm() -> Any:
    try:
        import tvm
    except ImportError:
        raise TVMError("the TVM backend needs apache-tvm: pip install 'novagen[tvm]'") from None
    return tvm


# ---------------------------------------------------------------------------------------------
# Checking the inputs


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


def _check_alg(alg: Any) -> Algorithm:
    if isinstance(alg, str):
        from novagen.catalog import algorithm

        alg = algorithm(alg)
    if not isinstance(alg, Algorithm):
        raise TVMError(f"{getattr(alg, 'label', alg)} is not a 1D algorithm F(m,r); the 2D conv nests it on both axes")
    return alg


def make_spec(alg: Any, layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
              layout: str = "NCHW", weights: str = "precomputed", p_block: int | None = None,
              k_block: int | None = None) -> Conv2dSpec:
    """Validate the arguments of a Winograd conv2d and gather them (raises TVMError naming the bad value).

    p_block: tiles per GEMM register block (the tile count is padded to a multiple); k_block: filters per
    packed block of the transformed weights, the GEMM's vector width (a divisor of K; default 16 or less).
    """
    from novagen.codegen import parse_layer

    alg = _check_alg(alg)
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
    k_block = _vector(shape[4], 16) if k_block is None else k_block
    if k_block < 1 or shape[4] % k_block:
        raise TVMError(f"k_block {k_block} must divide the {shape[4]} filters")
    return Conv2dSpec(alg, shape, pads, dtype, str(layout).upper(), weights, int(p_block), int(k_block))


# ---------------------------------------------------------------------------------------------
# The compute


def _transform(matrix: Any, xs: list[Any], index: Any) -> Any:
    """Row `index` (a loop variable) of matrix·xs as one TIR expression emitted from the transform program
    (zero terms and ±1 factors gone), picked by a chain of Selects on `index` that folds to a single row
    once the loop is unrolled.  Temporaries the program shares appear as equal subtrees, which LLVM
    merges again (Let bindings would keep them explicit, but TVM 0.27's CommonSubexprElim mis-orders
    them)."""
    tvm = _tvm()
    from novagen.program import compile_matrix

    tirx = tvm.tirx
    outs = compile_matrix(matrix).evaluate(xs, zero=tirx.const(0.0, "float32"))
    body = outs[-1]
    for i in range(len(outs) - 2, -1, -1):
        body = tirx.Select(index == i, outs[i], body)
    return body


def conv2d_compute(alg: Any, layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
                   layout: str = "NCHW", weights: str = "precomputed", p_block: int | None = None,
                   k_block: int | None = None) -> tuple[list[Any], Conv2dSpec]:
    """TE tensors [x, w_or_U, y] of a Winograd conv2d (correlation, like torch conv2d), and the spec.

    weights "precomputed": the second argument is U (alpha, alpha, K/k_block, C, k_block), from
    `transform_weights` (packed so the GEMM streams each block of filters contiguously); "graph": it is
    w (K, C, r, r) and the filter transform is part of the function.  fp16 stores x, U, V and y in float16
    and computes every transform and the GEMM in float32.
    """
    tvm = _tvm()
    from tvm import te

    spec = make_spec(alg, layer, padding, dtype, layout, weights, p_block, k_block)
    alg = spec.alg
    n, c, h, w, k = spec.layer
    a, m, r = alg.alpha, alg.m, alg.r
    kb = spec.k_block
    pt, pl = spec.padding
    nh, nw = spec.tiles_hw
    tiles, pp = spec.tiles, spec.tiles_padded
    f32 = "float32"
    nchw = spec.layout == "NCHW"
    tirx = tvm.tirx

    x = te.placeholder(spec.input_shape, dtype, name="x")
    wt = te.placeholder(spec.weight_shape, dtype, name="U" if weights == "precomputed" else "w")

    # the input zero-padded to whole tiles, channels last: tile loads become unconditional and contiguous
    hp, wp = nh * m + a - m, nw * m + a - m

    def padded(b: Any, i: Any, j: Any, ci: Any) -> Any:
        ih, iw = i - pt, j - pl
        val = x[b, ci, ih, iw] if nchw else x[b, ih, iw, ci]
        return tirx.if_then_else(tirx.all(ih >= 0, ih < h, iw >= 0, iw < w), val.astype(f32), tirx.const(0.0, f32))

    xp = te.compute((n, hp, wp, c), padded, name="xp")

    def load(p: Any, ci: Any, hh: Any, ww: Any) -> Any:
        p = tirx.min(p, tiles - 1)  # the tiles that pad the count to p_block repeat the last one
        return xp[p // (nh * nw), (p // nw) % nh * m + hh, p % nw * m + ww, ci]

    # input transform, columns then rows: V[eps, nu, p, c] = (BT d B)[eps, nu]
    d = te.compute((a, a, pp, c), lambda hh, ww, p, ci: load(p, ci, hh, ww), name="d")
    t1 = te.compute((a, a, pp, c), lambda eps, b, p, ci: _transform(alg.BT, [d[i, b, p, ci] for i in range(a)], eps),
                    name="BTd")
    v = te.compute((a, a, pp, c),
                   lambda eps, nu, p, ci: _transform(alg.BT, [t1[eps, j, p, ci] for j in range(a)], nu).astype(dtype),
                   name="V")
    if weights == "graph":
        # filter transform: U[eps, nu, k / kb, c, k % kb] = (G g Gt)[eps, nu]
        g1 = te.compute((a, r, c, k), lambda eps, s, ci, ko: _transform(
            alg.G, [wt[ko, ci, t, s].astype(f32) for t in range(r)], eps), name="Gg")
        u = te.compute((a, a, k // kb, c, kb), lambda eps, nu, kk, ci, ki: _transform(
            alg.G, [g1[eps, s, ci, kk * kb + ki] for s in range(r)], nu).astype(dtype), name="U_graph")
    else:
        u = wt
    rc = te.reduce_axis((0, c), name="rc")
    mm = te.compute((a, a, pp, k), lambda eps, nu, p, ko: te.sum(
        v[eps, nu, p, rc].astype(f32) * u[eps, nu, ko // kb, rc, ko % kb].astype(f32), axis=rc), name="M")
    # output transform, columns then rows: Y[p, i, j, k] = (AT M A)[i, j]
    o1 = te.compute((m, a, pp, k), lambda i, nu, p, ko: _transform(alg.AT, [mm[e, nu, p, ko] for e in range(a)], i),
                    name="ATm")
    yt = te.compute((pp, m, m, k), lambda p, i, j, ko: _transform(alg.AT, [o1[i, q, p, ko] for q in range(a)], j),
                    name="Y")

    def gather(b: Any, ko: Any, yy: Any, xx: Any) -> Any:
        p = b * (nh * nw) + (yy // m) * nw + xx // m
        return yt[p, yy % m, xx % m, ko].astype(dtype)

    if nchw:
        y = te.compute(spec.output_shape, lambda b, ko, yy, xx: gather(b, ko, yy, xx), name="y")
    else:
        y = te.compute(spec.output_shape, lambda b, yy, xx, ko: gather(b, ko, yy, xx), name="y")
    return [x, wt, y], spec


def _vector(size: int, limit: int = 16) -> int:
    """The largest power of two <= limit dividing size (the vector width of a loop of that size)."""
    v = limit
    while v > 1 and size % v:
        v //= 2
    return v


def _choices(size: int, options: Sequence[int]) -> list[int]:
    return [o for o in options if size % o == 0] or [1]


def schedule_llvm(func: Any, spec: Conv2dSpec) -> Any:
    """The default CPU schedule (x86 AVX2 and the like): a zero-padded channels-last copy of the input,
    transforms vectorized over channels with the tile in registers (rows, then columns), and a
    register-blocked GEMM per Winograd point (p_block tiles × k_block filters, streaming the packed
    weights), parallel over tiles and points.  Returns the scheduled PrimFunc."""
    tvm = _tvm()
    sch = tvm.s_tir.Schedule(func)
    _apply_llvm(sch, spec, lambda options, default: default)
    return sch.mod["main"]


def _sampled_llvm(spec: Conv2dSpec) -> Any:
    """The llvm schedule as a MetaSchedule design space: the input transform's channel vector, the GEMM's
    tile block and the output transform's filter vector are sampled (categorical over the sizes that
    divide), everything else as in `schedule_llvm` (k_block is fixed by the packed weight layout)."""

    def space(sch: Any) -> Any:
        def pick(options: list[int], default: int) -> Any:
            if len(options) == 1:
                return options[0]
            return sch.sample_categorical(options, [1.0 / len(options)] * len(options),
                                          decision=options.index(default) if default in options else None)

        _apply_llvm(sch, spec, pick)
        return sch

    return space


def _apply_llvm(sch: Any, spec: Conv2dSpec, pick: Any) -> None:
    _, c, _, _, k = spec.layer
    cv = pick(_choices(c, (4, 8, 16)), _vector(c, 8))
    kb = spec.k_block
    pb = pick(_choices(spec.tiles_padded, (2, 3, 4, 6, 8)), spec.p_block)  # 1 would change the loop nest
    kf_vec = pick(_choices(k, (4, 8, 16)), _vector(k, 8))
    m = spec.alg.m

    # zero-padded channels-last copy of the input, a row of the image per task
    xp = sch.get_sblock("xp")
    b, i, j, ci = sch.get_loops(xp)
    co, cin = sch.split(ci, [None, _vector(c, 8)])
    sch.reorder(b, i, co, j, cin)
    sch.parallel(sch.fuse(b, i))
    sch.vectorize(cin)

    # input transform
    sch.compute_inline("d")
    v = sch.get_sblock("V")
    eps, nu, p, ci = sch.get_loops(v)
    co, cin = sch.split(ci, [None, cv])
    sch.reorder(p, co, eps, nu, cin)
    pco = sch.fuse(p, co)
    sch.parallel(pco)
    sch.unroll(eps)
    sch.unroll(nu)
    sch.vectorize(cin)
    t1 = sch.get_sblock("BTd")
    sch.compute_at(t1, pco)
    sch.set_scope(t1, 0, "local")
    l_eps, l_b, l_c = sch.get_loops(t1)[-3:]
    sch.unroll(l_eps)
    sch.unroll(l_b)
    sch.vectorize(l_c)

    # filter transform in the graph: a plain parallel loop nest
    if spec.weights == "graph":
        ug = sch.get_sblock("U_graph")
        e2, n2, kk2, c2, ki2 = sch.get_loops(ug)
        sch.reorder(c2, kk2, e2, n2, ki2)
        sch.parallel(c2)
        sch.unroll(e2)
        sch.unroll(n2)
        sch.vectorize(ki2)
        g1 = sch.get_sblock("Gg")
        sch.compute_at(g1, kk2)
        sch.set_scope(g1, 0, "local")
        ge, gs, gk = sch.get_loops(g1)[-3:]
        sch.unroll(ge)
        sch.unroll(gs)
        sch.vectorize(gk)

    # batched GEMM: M[eps, nu, p, k] = sum_c V[eps, nu, p, c] U[eps, nu, c, k], a (pb tiles x kb filters)
    # register block
    mb = sch.get_sblock("M")
    eps, nu, p, ko, rc = sch.get_loops(mb)
    po, pi = sch.split(p, [None, pb])
    kk, ki = sch.split(ko, [None, kb])
    sch.reorder(eps, nu, po, kk, rc, pi, ki)
    sch.parallel(sch.fuse(eps, nu, po))
    acc = sch.cache_write(mb, 0, "local")
    sch.reverse_compute_at(acc, kk)
    sch.unroll(pi)
    sch.vectorize(ki)
    sch.decompose_reduction(mb, rc)
    sch.vectorize(sch.get_loops(acc)[-1])

    # output transform, computed per (tile, vector of filters) and written through the gather
    yb = sch.get_sblock("y")
    loops = sch.get_loops(yb)
    if spec.layout == "NCHW":
        b, kf, yy, xx = loops
    else:
        b, yy, xx, kf = loops
    th, i = sch.split(yy, [None, m])
    tw, j = sch.split(xx, [None, m])
    kfo, kfi = sch.split(kf, [None, kf_vec])
    sch.reorder(b, th, tw, kfo, i, j, kfi)
    top = sch.fuse(b, th, tw)
    sch.parallel(top)
    if spec.layout == "NHWC":
        sch.vectorize(kfi)
    yt = sch.get_sblock("Y")
    sch.compute_at(yt, kfo)
    sch.set_scope(yt, 0, "local")
    o1 = sch.get_sblock("ATm")
    sch.compute_at(o1, kfo)
    sch.set_scope(o1, 0, "local")
    for blk in (yt, o1):
        ls = sch.get_loops(blk)[2:]  # below (tile, filter vector): the loops of the block itself
        for lp in ls[:-1]:
            sch.unroll(lp)
        sch.vectorize(ls[-1])


def conv2d_primfunc(alg: Any, layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
                    layout: str = "NCHW", weights: str = "precomputed", schedule: str | None = "llvm",
                    p_block: int | None = None, k_block: int | None = None) -> tuple[Any, Conv2dSpec]:
    """The PrimFunc (scheduled for `schedule` = "llvm", or None for the plain compute) and its spec."""
    tvm = _tvm()
    tensors, spec = conv2d_compute(alg, layer, padding, dtype, layout, weights, p_block, k_block)
    func = tvm.te.create_prim_func(tensors)
    if schedule == "llvm":
        func = schedule_llvm(func, spec)
    elif schedule is not None:
        raise TVMError(f"schedule '{schedule}' is not known: use llvm, or None for the unscheduled compute")
    func = func.with_attr("global_symbol", spec.name)
    return func, spec


def conv2d_module(alg: Any, layer: Sequence[int] | str = (1, 64, 56, 56, 64), padding: int | Sequence[int] = 1,
                  dtype: str = "float32", layout: str = "NCHW", weights: str = "precomputed",
                  schedule: str | None = "llvm", p_block: int | None = None, k_block: int | None = None) -> Any:
    """An IRModule with one PrimFunc "main" computing the Winograd conv2d of `alg` for one layer shape.

    Arguments of main: x (NCHW or NHWC), U (alpha, alpha, K/k_block, C, k_block) for precomputed weights
    (`transform_weights`) or w (K, C, r, r) for weights in the graph, and the output y.  `schedule`
    "llvm" applies the default CPU schedule.
    """
    tvm = _tvm()
    func, _ = conv2d_primfunc(alg, layer, padding, dtype, layout, weights, schedule, p_block, k_block)
    return tvm.IRModule({"main": func})


def transform_weights(alg: Any, w: np.ndarray, dtype: str = "float32", k_block: int | None = None) -> np.ndarray:
    """U[eps, nu, k // kb, c, k % kb] = (G g Gᵀ)[eps, nu] for w (K, C, r, r), in float64 from the exact G,
    then cast; kb = k_block (the spec's default when None)."""
    alg = _check_alg(alg)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 4 or w.shape[2:] != (alg.r, alg.r):
        raise TVMError(f"weights must be (K, C, {alg.r}, {alg.r}) for {alg.label}, got {w.shape}")
    kn, cn = w.shape[:2]
    kb = _vector(kn, 16) if k_block is None else k_block
    if kb < 1 or kn % kb:
        raise TVMError(f"k_block {kb} must divide the {kn} filters")
    g = alg.matrices("float64")[1]
    u = np.einsum("et,kcts,ns->enck", g, w, g)
    u = u.reshape(alg.alpha, alg.alpha, cn, kn // kb, kb).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(u.astype(dtype))


# ---------------------------------------------------------------------------------------------
# Relax pass


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
    tvm = _tvm()
    from tvm import relax

    alg = _check_alg(algorithm)
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


# ---------------------------------------------------------------------------------------------
# MetaSchedule tuning


def _import_tensor_intrin() -> None:
    """Import tvm.s_tir.tensor_intrin, which MetaSchedule needs in every process that tunes, builds or runs.

    Its ~500 TVMScript functions each call inspect.stack() while the import machinery is on the stack,
    and inspect.getmodule scans all of sys.modules for every "<frozen importlib...>" frame: 46 s here.
    Remembering getmodule's answer for those pseudo-files during the import takes it to 6 s."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    import inspect

    original = inspect.getmodule
    memo: dict[str, Any] = {}

    def getmodule(obj: Any, _filename: str | None = None) -> Any:
        key = _filename or getattr(getattr(obj, "f_code", obj), "co_filename", None)
        if not isinstance(key, str) or not key.startswith("<"):
            return original(obj, _filename)
        if key not in memo:
            memo[key] = original(obj, _filename)
        return memo[key]

    inspect.getmodule = getmodule
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.getmodule = original


@dataclass(frozen=True)
class TuneResult:
    """A tuning run: the database folder, trials before and after, and the best measured time."""

    db: str
    workload: str
    trials_before: int
    trials_after: int
    best_ms: float | None


def _is_direct(alg: Any) -> bool:
    return isinstance(alg, str) and alg.strip().lower() == "direct"


def _tune_mod(alg: Any, layer: Any, padding: Any, dtype: str, layout: str) -> tuple[Any, str]:
    """The unscheduled workload to tune ("main") and its name: our Winograd conv2d, or TVM's own direct
    conv2d when alg is "direct" (the baseline tuned on the same trials)."""
    tvm = _tvm()
    if _is_direct(alg):
        mod = direct_module(layer, padding, dtype, layout)
        return mod, str(mod["main"].attrs["global_symbol"])
    func, spec = conv2d_primfunc(alg, layer, padding, dtype, layout, "precomputed", schedule=None)
    # MetaSchedule looks the workload up as "main"; the global symbol keeps the function's own name
    return tvm.IRModule({"main": func}), spec.name


def direct_module(layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
                  layout: str = "NCHW") -> Any:
    """TVM's own direct 3x3 conv2d (topi.nn.conv2d_nchw / conv2d_nhwc) for one layer as an unscheduled
    IRModule: main(x, w, y) with w (K, C, 3, 3) for NCHW and (3, 3, C, K) for NHWC.  This is what Relax's
    default CPU pipeline runs for conv2d, and the workload `tune("direct", ...)` tunes."""
    tvm = _tvm()
    from tvm import te, topi

    spec = make_spec("F(2,3)", layer, padding, dtype, layout)  # validates the layer; only shapes are used
    n, c, h, w, k = spec.layer
    pads = list(spec.padding)
    x = te.placeholder(spec.input_shape, dtype, name="x")
    if spec.layout == "NCHW":
        wt = te.placeholder((k, c, 3, 3), dtype, name="w")
        y = topi.nn.conv2d_nchw(x, wt, 1, pads, 1, out_dtype=dtype)
    else:
        wt = te.placeholder((3, 3, c, k), dtype, name="w")
        y = topi.nn.conv2d_nhwc(x, wt, 1, pads, 1, out_dtype=dtype)
    shape = "x".join(map(str, spec.layer))
    name = f"tvm_direct_{shape}_p{pads[0]}x{pads[1]}_{spec.layout.lower()}_{dtype}"
    return tvm.IRModule({"main": te.create_prim_func([x, wt, y]).with_attr("global_symbol", name)})


def _records(db: Any, mod: Any) -> list[Any]:
    if not db.has_workload(mod):
        return []
    return list(db.get_top_k(db.commit_workload(mod), 1 << 30))


def _in_process_builder() -> Any:
    """A MetaSchedule builder that compiles and exports in this process (default_build/default_export)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for inp in build_inputs:
                try:
                    results.append(ms.builder.BuilderResult(default_export(default_build(inp.mod, inp.target, None)),
                                                            None))
                except Exception as exc:  # a candidate that fails to build is recorded as an error
                    results.append(ms.builder.BuilderResult(None, f"in-process build: {exc}"))
            return results

    return InProcessBuilder()


def _in_process_runner() -> Any:
    """A MetaSchedule runner that loads and times each candidate in this process (LocalRunner's own
    measurement: random arguments, time_evaluator with its default repeats)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture, _worker_func

    config = ms.runner.EvaluatorConfig._normalized(None)

    @derived_object
    class InProcessRunner(ms.runner.PyRunner):
        def run(self, runner_inputs: list[Any]) -> list[Any]:
            futures = []
            for inp in runner_inputs:
                try:
                    costs = _worker_func(None, None, None, config, 1, inp.artifact_path, inp.device_type,
                                         tuple(a.as_json() for a in inp.args_info))
                    futures.append(LocalRunnerFuture([float(c) for c in costs], None))
                except Exception as exc:  # a candidate that fails to run is recorded as an error
                    futures.append(LocalRunnerFuture(None, f"in-process run: {exc}"))
            return futures

    return InProcessRunner()


def _open_db(path: str | os.PathLike[str]) -> Any:
    from tvm.s_tir import meta_schedule as ms

    os.makedirs(path, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(path))


def _unnamed_handlers_off() -> None:
    """MetaSchedule rebuilds its loggers from the names of the handlers already on its logger and fails
    on a handler without a name (pytest's log capture leaves such handlers behind between tests)."""
    import logging

    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(ms_logger.handlers):
        if handler.get_name() is None:
            ms_logger.removeHandler(handler)


def tune(alg: Any, layer: Sequence[int] | str, db: str | os.PathLike[str], trials: int = 64,
         padding: int | Sequence[int] = 1, dtype: str = "float32", layout: str = "NCHW", target: Any = "llvm",
         trials_per_iter: int = 16, runner: Any = None, seed: int = 0, build_timeout: float = 300.0,
         builder: Any = None) -> TuneResult:
    """Tune the Winograd conv2d with MetaSchedule, recording into the JSON database folder `db`;
    alg "direct" tunes TVM's own direct conv2d (`direct_module`) instead, the baseline on equal trials.

    Resumable: trials already in `db` for this workload count toward `trials`, and the search starts from
    them; when there are enough, nothing runs.  The builder uses one worker with a long timeout and an
    initializer that imports the tensor intrinsics once.  `runner` defaults to a LocalRunner; pass an
    `rpc_runner(...)` to measure on a remote device.  `builder="in-process"` and `runner="in-process"`
    compile and time the candidates in this process (no timeouts, no isolation from a crashing
    candidate): each LocalBuilder batch and the LocalRunner's pool start workers that import TVM, which
    is most of the time of a short tuning run on a small machine.
    """
    from tvm.s_tir import meta_schedule as ms

    if trials < 1:
        raise TVMError(f"trials {trials} must be at least 1")
    if isinstance(builder, str) and builder != "in-process":
        raise TVMError(f"builder {builder!r} is not known: use None, 'in-process' or a MetaSchedule Builder")
    if isinstance(runner, str) and runner != "in-process":
        raise TVMError(f"runner {runner!r} is not known: use None, 'in-process' or a MetaSchedule Runner")
    direct = _is_direct(alg)
    mod, name = _tune_mod(alg, layer, padding, dtype, layout)
    tgt = resolve_target(target)
    _import_tensor_intrin()  # MetaSchedule's TuneContext imports it; this way it takes seconds, not a minute
    database = _open_db(db)
    before = len(_records(database, mod))
    todo = trials - before
    if todo > 0:
        if builder is None:
            builder = ms.builder.LocalBuilder(max_workers=1, timeout_sec=build_timeout,
                                              initializer=_import_tensor_intrin)
        elif builder == "in-process":
            builder = _in_process_builder()
        if runner == "in-process":
            run = _in_process_runner()
        else:
            run = runner or ms.runner.LocalRunner(timeout_sec=60, initializer=_import_tensor_intrin)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="novagen-tune-") as work:
            # our space has at most a few dozen points: a small population finds them without minutes of
            # evolution; TVM's direct conv2d space keeps MetaSchedule's defaults
            _unnamed_handlers_off()
            if direct:
                space, strategy = "post-order-apply", "evolutionary"
            else:
                space = ms.space_generator.ScheduleFn(_sampled_llvm(make_spec(alg, layer, padding, dtype, layout)))
                strategy = ms.search_strategy.EvolutionarySearch(population_size=64, max_fail_count=2)
            ms.tune_tir(mod, tgt, work, max_trials_global=todo, num_trials_per_iter=min(trials_per_iter, todo),
                        builder=builder, runner=run, database=database, seed=seed, num_tuning_cores=1,
                        space=space, strategy=strategy)
    recs = _records(database, mod)
    best = None
    for rec in recs:
        secs = [float(v) for v in (rec.run_secs or [])]
        if secs and all(v < 1e9 for v in secs):
            t = sum(secs) / len(secs) * 1e3
            best = t if best is None else min(best, t)
    return TuneResult(str(db), name, before, len(recs), best)


def load_tuned(alg: Any, layer: Sequence[int] | str, db: str | os.PathLike[str], padding: int | Sequence[int] = 1,
               dtype: str = "float32", layout: str = "NCHW", target: Any = "llvm") -> Any:
    """The tuned IRModule from the database `db` (no tuning runs); TVMError if `db` has no record of it."""
    from pathlib import Path

    if not Path(db).is_dir():
        raise TVMError(f"tuning database '{db}' is not a folder: run novagen tune first")
    mod, name = _tune_mod(alg, layer, padding, dtype, layout)
    sch = _open_db(db).query_schedule(mod, resolve_target(target), workload_name="main")
    if sch is None:
        raise TVMError(f"'{db}' holds no tuning record for {name}: run novagen tune for this layer first")
    return sch.mod


def rpc_runner(tracker_host: str, tracker_port: int, device_key: str, timeout: float = 60.0) -> Any:
    """A MetaSchedule RPCRunner that measures on devices registered with an RPC tracker under `device_key`
    (start one with `python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port 9190` and a server with
    `python -m tvm.exec.rpc_server --tracker 127.0.0.1:9190 --key local`)."""
    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.RPCConfig(tracker_host=tracker_host, tracker_port=tracker_port, tracker_key=device_key,
                                 session_timeout_sec=int(timeout))
    return ms.runner.RPCRunner(rpc_config=config, max_workers=1, initializer=_import_tensor_intrin)


# ---------------------------------------------------------------------------------------------
# Targets and building


def host_target(threads: int | None = None) -> Any:
    """The llvm target of this CPU: {"kind": "llvm", "mcpu": <host cpu>, "num-cores": <cores>}."""
    tvm = _tvm()
    try:
        mcpu = str(tvm.target.codegen.llvm_get_system_cpu())
    except Exception:
        mcpu = ""
    cfg: dict[str, Any] = {"kind": "llvm", "num-cores": int(threads or os.cpu_count() or 1)}
    if mcpu and mcpu != "generic":
        cfg["mcpu"] = mcpu
    return tvm.target.Target(cfg)


def resolve_target(target: Any) -> Any:
    """A tvm Target from "llvm" (this CPU), "cuda", a dict or a Target."""
    tvm = _tvm()
    if isinstance(target, str) and target in ("llvm", "cpu"):
        return host_target()
    try:
        return target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    except Exception as exc:
        raise TVMError(f"target {target!r} is not a TVM target: {str(exc).splitlines()[0][:200]}") from None


class Conv2d:
    """A built TVM Winograd conv2d for one layer: `conv(x, w)` → y as NumPy (x in the spec's layout,
    w (K, C, r, r)); the transformed weights are cached for the last `w` passed (by identity)."""

    def __init__(self, alg: Any, layer: Sequence[int] | str, padding: int | Sequence[int] = 1,
                 dtype: str = "float32", layout: str = "NCHW", weights: str = "precomputed",
                 target: Any = "llvm", mod: Any = None, p_block: int | None = None,
                 k_block: int | None = None) -> None:
        tvm = _tvm()
        self.spec = make_spec(alg, layer, padding, dtype, layout, weights, p_block, k_block)
        if mod is None:
            mod = conv2d_module(alg, layer, padding, dtype, layout, weights, p_block=p_block, k_block=k_block)
        shapes = [tuple(int(d) for d in p.shape) for p in mod["main"].params]
        if shapes[1:2] != [self.spec.weight_shape]:
            raise TVMError(f"the module takes weights {shapes[1:2]} but the spec packs them as "
                           f"{self.spec.weight_shape}: pass the p_block/k_block the module was built with")
        self.target = resolve_target(target)
        self.lib = tvm.compile(mod, target=self.target)
        self.dev = tvm.cpu() if self.target.kind.name == "llvm" else tvm.cuda()
        self.fn = self.lib["main"] if "main" in _function_names(self.lib) else self.lib[self.spec.name]
        self._w: np.ndarray | None = None
        self._u: Any = None
        self._y = tvm.runtime.empty(self.spec.output_shape, dtype, self.dev)

    def set_weights(self, w: np.ndarray) -> None:
        tvm = _tvm()
        s = self.spec
        if tuple(w.shape) != (s.layer[4], s.layer[1], s.alg.r, s.alg.r):
            raise TVMError(f"weights must be {(s.layer[4], s.layer[1], s.alg.r, s.alg.r)}, got {tuple(w.shape)}")
        u = transform_weights(s.alg, w, s.dtype, s.k_block) if s.weights == "precomputed" else np.asarray(w, s.dtype)
        self._u = tvm.runtime.tensor(u, self.dev)
        self._w = w

    def run(self, x: Any) -> Any:
        """Run on a tvm tensor (or NumPy array) x; returns the tvm output tensor (reused across calls)."""
        tvm = _tvm()
        if isinstance(x, np.ndarray):
            x = tvm.runtime.tensor(np.ascontiguousarray(x, dtype=self.spec.dtype), self.dev)
        self.fn(x, self._u, self._y)
        return self._y

    def __call__(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if tuple(x.shape) != self.spec.input_shape:
            raise TVMError(f"x must be {self.spec.input_shape} ({self.spec.layout}), got {tuple(x.shape)}")
        if w is not self._w:
            self.set_weights(w)
        return self.run(x).numpy()


def _function_names(lib: Any) -> set[str]:
    try:
        return {"main"} if lib.implements_function("main") else set()
    except Exception:
        return set()


def direct_gflop(spec: Conv2dSpec) -> float:
    n, c, _, _, k = spec.layer
    oh, ow = spec.out_hw
    return 2.0 * n * k * c * oh * ow * spec.alg.r ** 2 / 1e9


def cuda_module(alg: Any, layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
                layout: str = "NCHW", weights: str = "precomputed", target: Any = None) -> tuple[Any, Any]:
    """The conv2d scheduled for CUDA (dlight's GPU fallback schedule binds the threads) and its target
    (default sm_80, so no GPU is needed to build it)."""
    _tvm()
    from tvm.s_tir import dlight as dl

    tgt = resolve_target(target or {"kind": "cuda", "arch": "sm_80"})
    mod = conv2d_module(alg, layer, padding, dtype, layout, weights, schedule=None)
    with tgt:
        mod = dl.ApplyDefaultSchedule(dl.gpu.Fallback())(mod)
    return mod, tgt


def generate(alg: Any, out_dir: str | os.PathLike[str], target: str = "tvm-llvm", layer: Any = None,
             padding: int | Sequence[int] = 1, dtype: str = "float32", layout: str = "NCHW",
             tuned: str | os.PathLike[str] | None = None) -> list[Any]:
    """Write the module as TVMScript (.py), the built library (.so) and a README into `out_dir`.

    target "tvm-llvm" (this CPU, the default llvm schedule, or the tuned one from the database `tuned`) or
    "tvm-cuda" (built for sm_80 with nvcc; no GPU needed)."""
    tvm = _tvm()
    import tempfile
    from pathlib import Path

    from novagen.export import atomic_write

    if target not in ("tvm-llvm", "tvm-cuda"):
        raise TVMError(f"target '{target}' is not a TVM target: use tvm-llvm or tvm-cuda")
    if layer is None:
        raise TVMError("TVM modules are built for one layer: give --layer N,C,H,W,K")
    spec = make_spec(alg, layer, padding, dtype, layout)
    if target == "tvm-cuda":
        mod, tgt = cuda_module(spec.alg, spec.layer, padding, dtype, layout)
    else:
        tgt = host_target()
        mod = (load_tuned(spec.alg, spec.layer, tuned, padding, dtype, layout) if tuned is not None
               else conv2d_module(spec.alg, spec.layer, padding, dtype, layout))
    lib = tvm.compile(mod, target=tgt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = spec.name
    so = out / f"{name}.so"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        part = Path(tmp) / so.name
        lib.export_library(str(part))
        os.replace(part, so)
    written = [atomic_write(out / f"{name}.py", "# TVMScript generated by novagen\n" + mod.script()), so]
    if target == "tvm-cuda":
        device = [m for m in lib.mod.imports if m.kind == "cuda"]
        if device:
            written.append(atomic_write(out / f"{name}.cu", device[0].inspect_source()))
    a = spec.alg
    readme = "\n".join([
        f"# {name}", "",
        f"Winograd conv2d {a.label} (F({a.m}x{a.m},{a.r}x{a.r}), tile {a.alpha}x{a.alpha}, sha256 {a.content_hash}) "
        f"for layer N,C,H,W,K = {','.join(map(str, spec.layer))}, padding {spec.padding}, {layout}, {dtype}, "
        f"built by TVM {tvm.__version__} for {tgt}" + (f", schedule tuned in {tuned}" if tuned else "") + ".", "",
        f"- `{name}.py`: the scheduled module as TVMScript (`tvm.script.from_source`).",
        f"- `{name}.so`: the built library; function `{name}(x, U, y)`"
        + (f"; `{name}.cu` the CUDA source in it (loading it needs a CUDA-enabled TVM runtime)." if target == "tvm-cuda"
           else "."), "",
        f"Arguments: x {spec.input_shape}, U {spec.weight_shape} = G w Gt per channel pair "
        "(`novagen.tvm.transform_weights`), y " + str(spec.output_shape) + ".", "",
        "```python", "import tvm, numpy as np, novagen.tvm as nt",
        f"lib = tvm.runtime.load_module('{so.name}')",
        f"dev = tvm.{'cuda' if target == 'tvm-cuda' else 'cpu'}()",
        f"u = tvm.runtime.tensor(nt.transform_weights('{a.label}', w), dev)",
        f"lib['{name}'](x, u, y)", "```", ""])
    written.append(atomic_write(out / "README.md", readme))
    return written


class DirectConv2d:
    """TVM's own direct conv2d for one layer, built from `direct_module` (unscheduled: what Relax's
    default CPU pipeline runs) or from `mod`, e.g. its tuned schedule from `load_tuned("direct", ...)`:
    `run(x, w)` on tvm tensors."""

    def __init__(self, layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
                 layout: str = "NCHW", target: Any = "llvm", mod: Any = None) -> None:
        tvm = _tvm()
        self.spec = make_spec("F(2,3)", layer, padding, dtype, layout)
        mod = direct_module(layer, padding, dtype, layout) if mod is None else mod
        self.target = resolve_target(target)
        self.fn = tvm.compile(mod, target=self.target)["main"]
        self.dev = tvm.cpu() if self.target.kind.name == "llvm" else tvm.cuda()
        self._y = tvm.runtime.empty(self.spec.output_shape, dtype, self.dev)

    def weights(self, w: np.ndarray) -> Any:
        """w (K, C, 3, 3) as the tvm tensor the module takes (HWIO for NHWC)."""
        w = w if self.spec.layout == "NCHW" else w.transpose(2, 3, 1, 0)
        return _tvm().runtime.tensor(np.ascontiguousarray(w, dtype=self.spec.dtype), self.dev)

    def run(self, x: Any, w: Any) -> Any:
        self.fn(x, w, self._y)
        return self._y


def _tuned_or_none(alg: Any, layer: Any, db: str | os.PathLike[str] | None, padding: Any, layout: str) -> Any:
    """The tuned module of `alg` for the layer from `db`, or None when there is no database or record."""
    if db is None:
        return None
    try:
        return load_tuned(alg, layer, db, padding, layout=layout)
    except TVMError:
        return None


# per candidate group: the row's keys for the fastest candidate's label, its time and torch's time over it
_ROW_KEYS = {"ours": ("algorithm", "ours_ms", "ratio"),
             "tuned": ("tuned_algorithm", "tuned_ms", "tuned_ratio"),
             "tvm_default": ("tvm_default_kind", "tvm_default_ms", "tvm_default_ratio"),
             "tvm_tuned": ("tvm_tuned_kind", "tvm_tuned_ms", "tvm_tuned_ratio")}


def bench_layers(layers: Sequence[Any], algorithms: Sequence[Any], repeats: int = 5, threads: int | None = None,
                 layout: str = "NCHW", tuned: str | os.PathLike[str] | None = None, direct: bool = False,
                 progress: Any = None) -> dict[str, Any]:
    """Time the TVM modules of each algorithm against torch conv2d per layer (warm-up excluded, medians;
    a block of repeats per candidate, the baseline first, because alternating lets TVM's thread pool
    slow the next torch run down).

    Per layer: the fastest untuned algorithm ("ours"); with `tuned`, the fastest algorithm tuned in that
    database ("tuned"); with `direct`, TVM's own direct conv2d unscheduled ("tvm_default") and, when
    `tuned` holds a record of it (`tune("direct", ...)`), tuned ("tvm_tuned").  The ratios are torch time
    over ours; "tuned_vs_tvm_tuned" is TVM's tuned direct conv2d over our tuned Winograd."""
    import torch

    from novagen.bench import _median_ms, _time, geomean_ratio, machine_info, timing

    tvm = _tvm()
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    rows = []
    for layer in layers:
        n, c, h, w, k = layer.shape
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = (rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        xt, wtt = torch.from_numpy(x), torch.from_numpy(wt)
        xin = x
        if layout == "NHWC":
            xin = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            xt = torch.from_numpy(xin).permute(0, 3, 1, 2)
            wtt = wtt.contiguous(memory_format=torch.channels_last)
        ref = torch.nn.functional.conv2d(xt, wtt, padding=layer.padding)
        ref = (ref.permute(0, 2, 3, 1) if layout == "NHWC" else ref).contiguous().numpy()
        # every candidate as (group, label) -> a no-argument run on prepared tvm tensors
        runs: dict[tuple[str, str], Any] = {}
        for alg in algorithms:
            label = _check_alg(alg).label
            for group, mod in (("ours", None), ("tuned", _tuned_or_none(alg, layer.shape, tuned, layer.padding,
                                                                         layout))):
                if group == "tuned" and mod is None:
                    continue
                conv = Conv2d(alg, layer.shape, layer.padding, layout=layout, mod=mod)
                conv.set_weights(wt)
                xi = tvm.runtime.tensor(xin, conv.dev)
                runs[(group, label)] = lambda conv=conv, xi=xi: conv.run(xi)
        if direct:
            for group, mod in (("tvm_default", None),
                               ("tvm_tuned", _tuned_or_none("direct", layer.shape, tuned, layer.padding, layout))):
                if group == "tvm_tuned" and mod is None:
                    continue
                dc = DirectConv2d(layer.shape, layer.padding, layout=layout, mod=mod)
                xi, wi = tvm.runtime.tensor(xin, dc.dev), dc.weights(wt)
                runs[(group, "direct")] = lambda dc=dc, xi=xi, wi=wi: dc.run(xi, wi)
        errors = {f"{g}:{lab}": float(np.linalg.norm(fn().numpy() - ref) / np.linalg.norm(ref))
                  for (g, lab), fn in runs.items()}
        # one block of repeats per candidate, each after a warm-up run: a torch run right after some
        # MetaSchedule-tuned TVM modules is up to 8x slower (the two thread pools contend), which
        # alternating would charge to the baseline
        timed = {"baseline": lambda xt=xt, wtt=wtt, pad=layer.padding:
                 torch.nn.functional.conv2d(xt, wtt, padding=pad), **runs}
        samples: dict[Any, list[float]] = {}
        for key, fn in timed.items():
            fn()
            samples[key] = [_time(fn) for _ in range(repeats)]
        base = _median_ms(samples["baseline"])
        gf = direct_gflop(make_spec("F(2,3)", layer.shape, layer.padding))
        row: dict[str, Any] = {"layers": list(layer.names), "shape": list(layer.shape), "padding": layer.padding,
                               "layout": layout, "baseline_ms": base, "baseline_gflops": gf / base * 1e3,
                               "candidates_ms": {f"{g}:{lab}": _median_ms(samples[(g, lab)]) for g, lab in runs},
                               "rel_error_vs_baseline": errors, "tuned": bool(tuned)}
        for group, (label_key, ms_key, ratio_key) in _ROW_KEYS.items():
            cand = {lab: _median_ms(samples[(g, lab)]) for g, lab in runs if g == group}
            if cand:
                best = min(cand, key=cand.__getitem__)
                row.update({label_key: best, ms_key: cand[best], ratio_key: base / cand[best]})
        row["ours_gflops"] = gf / row["ours_ms"] * 1e3
        if "tuned_ms" in row and "tvm_tuned_ms" in row:
            row["tuned_vs_tvm_tuned"] = row["tvm_tuned_ms"] / row["tuned_ms"]
        rows.append(row)
        if progress:
            progress(f"{','.join(layer.names)}: {row['ratio']:.2f}x ({row['algorithm']})")
    summary: dict[str, Any] = {"geomean_ratio": geomean_ratio(rows)}
    for key in ("tuned_ratio", "tvm_default_ratio", "tvm_tuned_ratio", "tuned_vs_tvm_tuned"):
        if rows and all(key in r for r in rows):
            summary[f"geomean_{key}"] = geomean_ratio([{"layers": r["layers"], "ratio": r[key]} for r in rows])
    return {"machine": {**machine_info(), "threads": threads, "tvm": tvm.__version__, "target": str(host_target())},
            "baseline": {"name": "torch.nn.functional.conv2d", "version": torch.__version__},
            "timing": timing(repeats, "blocks"), "layers": rows, **summary}


__all__ = [
    "Conv2d", "Conv2dSpec", "DirectConv2d", "RewriteReport", "TVMError", "TuneResult", "bench_layers", "conv2d_compute",
    "conv2d_module", "conv2d_primfunc", "cuda_module", "direct_gflop", "direct_module", "generate",
    "host_target", "load_tuned", "make_spec", "resolve_target", "rewrite_conv2d", "rpc_runner",
    "schedule_llvm", "transform_weights", "tune",
]
