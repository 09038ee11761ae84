"""The TE computes: the Winograd conv2d of any algorithm (its transforms emitted from novagen's transform
programs), the weight transform done ahead of time, and TVM's own direct conv2d as the baseline.

The compute follows TVM topi's Winograd conv2d (input transform, a batched GEMM over channels per
Winograd point, output transform), but each row of BT, AT and G is straight-line code with zero terms
dropped and ±1 as plain adds, selected by the (unrolled) row index, so no zero multiplication reaches the
generated code.  Transforms run in two passes (columns, then rows), which keeps the tile in registers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from novagen.backends.tvm.spec import (
    DIRECT_ANNOTATION,
    DIRECT_RULE,
    RULE,
    SPEC_ANNOTATION,
    Conv2dSpec,
    DirectSpec,
    TVMError,
    load_tvm,
    make_spec,
    one_axis_tvm,
    spec_json,
    vector_width,
)
from novagen.program import compile_matrix

NONE = {"schedule_rule": "None"}
"""Every block but the GEMM: no MetaSchedule rule touches it; novagen's rule schedules the whole function."""


def _transform(matrix: Any, xs: list[Any], index: Any) -> Any:
    """Row `index` (a loop variable) of matrix·xs as one TIR expression emitted from the transform program
    (zero terms and ±1 factors gone), picked by a chain of Selects on `index` that folds to a single row
    once the loop is unrolled.  Temporaries the program shares appear as equal subtrees, which LLVM
    merges again (Let bindings would keep them explicit, but TVM 0.27's CommonSubexprElim mis-orders
    them)."""
    tvm = load_tvm()
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
    tvm = load_tvm()
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

    xp = te.compute((n, hp, wp, c), padded, name="xp", attrs=NONE)

    def load(p: Any, ci: Any, hh: Any, ww: Any) -> Any:
        p = tirx.min(p, tiles - 1)  # the tiles that pad the count to p_block repeat the last one
        return xp[p // (nh * nw), (p // nw) % nh * m + hh, p % nw * m + ww, ci]

    # input transform, columns then rows: V[eps, nu, p, c] = (BT d B)[eps, nu]
    d = te.compute((a, a, pp, c), lambda hh, ww, p, ci: load(p, ci, hh, ww), name="d", attrs=NONE)
    t1 = te.compute((a, a, pp, c), lambda eps, b, p, ci: _transform(alg.BT, [d[i, b, p, ci] for i in range(a)], eps),
                    name="BTd", attrs=NONE)
    v = te.compute((a, a, pp, c),
                   lambda eps, nu, p, ci: _transform(alg.BT, [t1[eps, j, p, ci] for j in range(a)], nu).astype(dtype),
                   name="V", attrs=NONE)
    if weights == "graph":
        # filter transform: U[eps, nu, k / kb, c, k % kb] = (G g Gt)[eps, nu]
        g1 = te.compute((a, r, c, k), lambda eps, s, ci, ko: _transform(
            alg.G, [wt[ko, ci, t, s].astype(f32) for t in range(r)], eps), name="Gg", attrs=NONE)
        u = te.compute((a, a, k // kb, c, kb), lambda eps, nu, kk, ci, ki: _transform(
            alg.G, [g1[eps, s, ci, kk * kb + ki] for s in range(r)], nu).astype(dtype), name="U_graph", attrs=NONE)
    else:
        u = wt
    rc = te.reduce_axis((0, c), name="rc")
    mm = te.compute((a, a, pp, k), lambda eps, nu, p, ko: te.sum(
        v[eps, nu, p, rc].astype(f32) * u[eps, nu, ko // kb, rc, ko % kb].astype(f32), axis=rc), name="M",
        attrs={"schedule_rule": RULE, SPEC_ANNOTATION: spec_json(spec)})
    # output transform, columns then rows: Y[p, i, j, k] = (AT M A)[i, j]
    o1 = te.compute((m, a, pp, k), lambda i, nu, p, ko: _transform(alg.AT, [mm[e, nu, p, ko] for e in range(a)], i),
                    name="ATm", attrs=NONE)
    yt = te.compute((pp, m, m, k), lambda p, i, j, ko: _transform(alg.AT, [o1[i, q, p, ko] for q in range(a)], j),
                    name="Y", attrs=NONE)

    def gather(b: Any, ko: Any, yy: Any, xx: Any) -> Any:
        p = b * (nh * nw) + (yy // m) * nw + xx // m
        return yt[p, yy % m, xx % m, ko].astype(dtype)

    if nchw:
        y = te.compute(spec.output_shape, lambda b, ko, yy, xx: gather(b, ko, yy, xx), name="y", attrs=NONE)
    else:
        y = te.compute(spec.output_shape, lambda b, yy, xx, ko: gather(b, ko, yy, xx), name="y", attrs=NONE)
    return [x, wt, y], spec


def direct_compute(spec: DirectSpec) -> list[Any]:
    """TE tensors [x, w, y] of novagen's direct conv2d (correlation, like torch conv2d; NCHW, OIHW weights).

    The input is first copied zero-padded and split by column phase (xq[n, c, phase, row, col] = the padded
    x[n, c, row, stride·col + phase]), so for every filter tap the inputs of consecutive output columns are
    consecutive in memory: the schedule vectorizes along output rows whatever the stride, where a strided
    read would be a gather; with packed weights (`spec.k_block`) it vectorizes along filters instead, each
    input a broadcast.  fp16 stores x, w and y in float16 and accumulates in float32."""
    tvm = load_tvm()
    from tvm import te

    n, c, h, w, k = spec.layer
    (kh, kw), (sh, sw), (pt, pl, _, _) = spec.kernel, spec.stride, spec.padding
    oh, ow = spec.out_hw
    tirx = tvm.tirx
    f32 = "float32"
    x = te.placeholder(spec.input_shape, spec.dtype, name="x")
    wt = te.placeholder(spec.weight_shape, spec.dtype, name="w")

    def phase(b: Any, ci: Any, ph: Any, i: Any, j: Any) -> Any:
        ih, iw = i - pt, sw * j + ph - pl
        return tirx.if_then_else(tirx.all(ih >= 0, ih < h, iw >= 0, iw < w), x[b, ci, ih, iw].astype(f32),
                                 tirx.const(0.0, f32))

    xq = te.compute((n, c, sw, (oh - 1) * sh + kh, ow + (kw - 1) // sw), phase, name="xq", attrs=NONE)
    rc, rh, rw = te.reduce_axis((0, c), "rc"), te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    kb = spec.k_block

    def weight(ko: Any, ci: Any, i: Any, j: Any) -> Any:
        return (wt[ko // kb, ci, i, j, ko % kb] if kb else wt[ko, ci, i, j]).astype(f32)

    acc = te.compute((n, k, oh, ow), lambda b, ko, i, j: te.sum(
        xq[b, rc, rw % sw, i * sh + rh, j + rw // sw] * weight(ko, rc, rh, rw), axis=[rc, rh, rw]),
        name="acc", attrs={"schedule_rule": DIRECT_RULE, DIRECT_ANNOTATION: spec.to_json()})
    if spec.dtype == f32:
        return [x, wt, acc]
    y = te.compute(spec.output_shape, lambda b, ko, i, j: acc[b, ko, i, j].astype(spec.dtype), name="y", attrs=NONE)
    return [x, wt, y]


def tvm_direct_module(spec: DirectSpec) -> Any:
    """TVM's own conv2d (topi.nn.conv2d_nchw) of a `DirectSpec` as an unscheduled IRModule main(x, w, y): the
    baseline novagen's direct kernel is measured against."""
    tvm = load_tvm()
    from tvm import te, topi

    x = te.placeholder(spec.input_shape, spec.dtype, name="x")
    wt = te.placeholder(spec.oihw_shape, spec.dtype, name="w")
    y = topi.nn.conv2d_nchw(x, wt, list(spec.stride), list(spec.padding), 1, out_dtype=spec.dtype)
    name = "tvm_" + spec.name.removeprefix("novagen_")
    return tvm.IRModule({"main": te.create_prim_func([x, wt, y]).with_attr("global_symbol", name)})


def pack_direct_weights(spec: DirectSpec, w: np.ndarray) -> np.ndarray:
    """OIHW weights in the layout of `spec` (packed (K / kb, C, kh, kw, kb) when it has a k_block)."""
    w = np.asarray(w)
    if w.shape != spec.oihw_shape:
        raise TVMError(f"weights must be {spec.oihw_shape} for {spec.name}, got {w.shape}")
    kb = spec.k_block
    if kb:
        w = w.reshape(w.shape[0] // kb, kb, *w.shape[1:]).transpose(0, 2, 3, 4, 1)
    return np.ascontiguousarray(w.astype(spec.dtype))


def transform_weights(alg: Any, w: np.ndarray, dtype: str = "float32", k_block: int | None = None) -> np.ndarray:
    """U[eps, nu, k // kb, c, k % kb] = (G g Gᵀ)[eps, nu] for w (K, C, r, r), in float64 from the exact G,
    then cast; kb = k_block (the spec's default when None)."""
    alg = one_axis_tvm(alg)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 4 or w.shape[2:] != (alg.r, alg.r):
        raise TVMError(f"weights must be (K, C, {alg.r}, {alg.r}) for {alg.label}, got {w.shape}")
    kn, cn = w.shape[:2]
    kb = vector_width(kn, 16) if k_block is None else k_block
    if kb < 1 or kn % kb:
        raise TVMError(f"k_block {kb} must divide the {kn} filters")
    g = alg.matrices("float64")[1]
    u = np.einsum("et,kcts,ns->enck", g, w, g)
    u = u.reshape(alg.alpha, alg.alpha, cn, kn // kb, kb).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(u.astype(dtype))


def direct_module(layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
                  layout: str = "NCHW") -> Any:
    """TVM's own direct 3x3 conv2d (topi.nn.conv2d_nchw / conv2d_nhwc) for one layer as an unscheduled
    IRModule: main(x, w, y) with w (K, C, 3, 3) for NCHW and (3, 3, C, K) for NHWC.  This is what Relax's
    default CPU pipeline runs for conv2d, and the workload `tune("direct", ...)` tunes."""
    tvm = load_tvm()
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

