"""Schedules of the Winograd conv2d, kept apart from the compute as in topi: the hand-written llvm
schedule, the same schedule as a MetaSchedule design space, and dlight's GPU fallback for CUDA.  Builds
the scheduled PrimFunc and IRModule of a layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from novagen.backends.tvm.compute import conv2d_compute
from novagen.backends.tvm.spec import Conv2dSpec, TVMError, load_tvm, vector_width
from novagen.backends.tvm.targets import resolve_target


def divisor_choices(size: int, options: Sequence[int]) -> list[int]:
    """The options that divide `size` ([1] when none does)."""
    return [o for o in options if size % o == 0] or [1]


def schedule_llvm(func: Any, spec: Conv2dSpec) -> Any:
    """The default CPU schedule (x86 AVX2 and the like): a zero-padded channels-last copy of the input,
    transforms vectorized over channels with the tile in registers (rows, then columns), and a
    register-blocked GEMM per Winograd point (p_block tiles × k_block filters, streaming the packed
    weights), parallel over tiles and points.  Returns the scheduled PrimFunc."""
    tvm = load_tvm()
    sch = tvm.s_tir.Schedule(func)
    apply_llvm(sch, spec, lambda options, default: default)
    return sch.mod["main"]


def llvm_design_space(spec: Conv2dSpec) -> Any:
    """The llvm schedule as a MetaSchedule design space: the input transform's channel vector, the GEMM's
    tile block and the output transform's filter vector are sampled (categorical over the sizes that
    divide), everything else as in `schedule_llvm` (k_block is fixed by the packed weight layout)."""

    def space(sch: Any) -> Any:
        def pick(options: list[int], default: int) -> Any:
            if len(options) == 1:
                return options[0]
            return sch.sample_categorical(options, [1.0 / len(options)] * len(options),
                                          decision=options.index(default) if default in options else None)

        apply_llvm(sch, spec, pick)
        return sch

    return space


def apply_llvm(sch: Any, spec: Conv2dSpec, pick: Any) -> None:
    _, c, _, _, k = spec.layer
    cv = pick(divisor_choices(c, (4, 8, 16)), vector_width(c, 8))
    kb = spec.k_block
    pb = pick(divisor_choices(spec.tiles_padded, (2, 3, 4, 6, 8)), spec.p_block)  # 1 would change the loop nest
    kf_vec = pick(divisor_choices(k, (4, 8, 16)), vector_width(k, 8))
    m = spec.alg.m

    # zero-padded channels-last copy of the input, a row of the image per task
    xp = sch.get_sblock("xp")
    b, i, j, ci = sch.get_loops(xp)
    co, cin = sch.split(ci, [None, vector_width(c, 8)])
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
    tvm = load_tvm()
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
    tvm = load_tvm()
    func, _ = conv2d_primfunc(alg, layer, padding, dtype, layout, weights, schedule, p_block, k_block)
    return tvm.IRModule({"main": func})


def cuda_module(alg: Any, layer: Sequence[int] | str, padding: int | Sequence[int] = 1, dtype: str = "float32",
                layout: str = "NCHW", weights: str = "precomputed", target: Any = None) -> tuple[Any, Any]:
    """The conv2d scheduled for CUDA (dlight's GPU fallback schedule binds the threads) and its target
    (default sm_80, so no GPU is needed to build it)."""
    load_tvm()
    from tvm.s_tir import dlight as dl

    tgt = resolve_target(target or {"kind": "cuda", "arch": "sm_80"})
    mod = conv2d_module(alg, layer, padding, dtype, layout, weights, schedule=None)
    with tgt:
        mod = dl.ApplyDefaultSchedule(dl.gpu.Fallback())(mod)
    return mod, tgt

