"""Schedules of the Winograd conv2d, kept apart from the compute as in topi: the hand-written llvm
schedule and a simple CUDA schedule, each with sampled parameters, registered with MetaSchedule as the
custom rule the compute's GEMM block names (`spec.RULE`), the way TVM registers its own Winograd rules:
`extract_tasks`, `tune_relax`, `MetaScheduleTuneIRMod` and `MetaScheduleApplyDatabase` handle novagen's
functions like any other task.  Untuned, `schedule_default` applies the rule with its default decisions.
Builds the PrimFunc and IRModule of a layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from novagen.backends.tvm.compat import fast_tensor_intrinsics
from novagen.backends.tvm.compute import conv2d_compute, direct_compute
from novagen.backends.tvm.spec import (
    DIRECT_ANNOTATION,
    DIRECT_RULE,
    RULE,
    SPEC_ANNOTATION,
    Conv2dSpec,
    DirectSpec,
    TVMError,
    direct_spec_from_json,
    load_tvm,
    spec_from_json,
    vector_width,
)
from novagen.backends.tvm.targets import resolve_target


def divisor_choices(size: int, options: Sequence[int]) -> list[int]:
    """The options that divide `size` ([1] when none does)."""
    return [o for o in options if size % o == 0] or [1]


def default_choice(options: list[int], default: int) -> int:
    """The picker of the untuned schedule: the default decision."""
    return default


def sampler(sch: Any) -> Any:
    """The picker of the design space: a categorical sample over the options (the default decided first)."""
    def pick(options: list[int], default: int) -> Any:
        if len(options) == 1:
            return options[0]
        return sch.sample_categorical(options, [1.0 / len(options)] * len(options),
                                      decision=options.index(default) if default in options else None)
    return pick


def schedule_llvm(func: Any, spec: Conv2dSpec) -> Any:
    """The default CPU schedule (x86 AVX2 and the like): a zero-padded channels-last copy of the input,
    transforms vectorized over channels with the tile in registers (rows, then columns), and a
    register-blocked GEMM per Winograd point (p_block tiles × k_block filters, streaming the packed
    weights), parallel over tiles and points.  Returns the scheduled PrimFunc."""
    tvm = load_tvm()
    sch = tvm.s_tir.Schedule(func)
    apply_llvm(sch, spec, default_choice)
    return sch.mod["main"]


def llvm_design_space(spec: Conv2dSpec) -> Any:
    """The llvm schedule as a ScheduleFn design space: the input transform's channel vector, the GEMM's tile
    block and the output transform's filter vector are sampled (categorical over the sizes that divide),
    everything else as in `schedule_llvm` (k_block is fixed by the packed weight layout)."""

    def space(sch: Any) -> Any:
        apply_llvm(sch, spec, sampler(sch))
        return sch

    return space


def apply_cuda(sch: Any, spec: Conv2dSpec, pick: Any) -> None:
    """A simple GPU schedule: every block inlined where it can be, the rest with their spatial loops fused
    and split over (blockIdx.x, threadIdx.x), the thread count of each picked from 64 to 512 (reductions
    run in each thread)."""
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base import try_inline

    infos = normalize_prim_func(sch)
    if infos is None:
        raise TVMError(f"the CUDA schedule cannot normalize {spec.name}")
    for info in try_inline(sch, infos):
        block = info.block_rv
        loops: dict[str, list[Any]] = {"S": [], "R": [], "O": []}
        for loop, kind in zip(sch.get_loops(block), info.dom_kind()):
            loops[kind].append(loop)
        if not loops["S"]:
            loops["S"].append(sch.add_unit_loop(block))
        sch.reorder(*loops["S"], *loops["R"], *loops["O"])
        bx, tx = sch.split(sch.fuse(*loops["S"]), [None, pick([64, 128, 256, 512], 256)])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")


def _spec_of(sch: Any, block: Any) -> Conv2dSpec:
    return spec_from_json(str(sch.get(block).annotations[SPEC_ANNOTATION]))


def _cpu_rule(sch: Any, block: Any) -> list[Any]:
    apply_llvm(sch, _spec_of(sch, block), sampler(sch))
    return [_finished(sch)]


def _cuda_rule(sch: Any, block: Any) -> list[Any]:
    apply_cuda(sch, _spec_of(sch, block), sampler(sch))
    return [_finished(sch)]


def _direct_cpu_rule(sch: Any, block: Any) -> list[Any]:
    spec = direct_spec_from_json(str(sch.get(block).annotations[DIRECT_ANNOTATION]))
    apply_direct_llvm(sch, spec, sampler(sch), *vector_shape())
    return [_finished(sch)]


def _direct_cuda_rule(sch: Any, block: Any) -> list[Any]:
    spec = direct_spec_from_json(str(sch.get(block).annotations[DIRECT_ANNOTATION]))
    apply_cuda(sch, spec, sampler(sch))  # type: ignore[arg-type]
    return [_finished(sch)]


def _finished(sch: Any) -> Any:
    """The function's root block marked for no further rule: the schedule is complete (MetaSchedule's
    generic rules would otherwise add parallel/vectorize/unroll annotations over it)."""
    sch.annotate(sch.get_sblock("root"), "schedule_rule", "None")
    return sch


def register_rules() -> None:
    """Register novagen's schedule rule with MetaSchedule for CPUs (target key cpu: llvm) and NVIDIA GPUs
    (cuda), and let TVM's default LocalBuilder build within its timeout (`compat.fast_tensor_intrinsics`);
    importing novagen.tvm does it, and so does building any Winograd function."""
    tvm = load_tvm()
    fast_tensor_intrinsics()
    for key, rule, direct_rule in (("cpu", _cpu_rule, _direct_cpu_rule), ("cuda", _cuda_rule, _direct_cuda_rule)):
        tvm.register_global_func(f"s_tir.meta_schedule.{key}.{RULE}", rule, override=True)
        tvm.register_global_func(f"s_tir.meta_schedule.{key}.{DIRECT_RULE}", direct_rule, override=True)


_ANCHORS = (("M", RULE, SPEC_ANNOTATION), ("acc", DIRECT_RULE, DIRECT_ANNOTATION))
"""Each novagen function's rule-carrying block: (name, rule, spec annotation), Winograd's and the direct's."""


def novagen_kind(func: Any) -> str | None:
    """"winograd" or "direct" for a novagen conv2d PrimFunc (its anchor block carries novagen's rule), else
    None."""
    tvm = load_tvm()
    sch = tvm.s_tir.Schedule(func)
    for (name, rule, annotation), kind in zip(_ANCHORS, ("winograd", "direct")):
        try:
            block = sch.get_sblock(name)
        except Exception:  # no block of that name: not this kind
            continue
        ann = sch.get(block).annotations
        if str(ann.get("schedule_rule", "")) == rule and annotation in ann:
            return kind
    return None


def is_novagen(func: Any) -> bool:
    """Whether a PrimFunc is a novagen conv2d (Winograd or direct)."""
    return novagen_kind(func) is not None


def schedule_default(func: Any, target: Any = "llvm") -> Any:
    """A novagen PrimFunc (Winograd or direct) scheduled with its rule's default decisions for `target` (llvm
    or cuda), marked scheduled: what an untuned build runs."""
    tvm = load_tvm()
    sch = tvm.s_tir.Schedule(func)
    cuda = resolve_target(target).kind.name == "cuda"
    if novagen_kind(func) == "direct":
        spec = direct_spec_from_json(str(sch.get(sch.get_sblock("acc")).annotations[DIRECT_ANNOTATION]))
        if cuda:
            apply_cuda(sch, spec, default_choice)  # type: ignore[arg-type]
        else:
            apply_direct_llvm(sch, spec, default_choice, *vector_shape(target))
    else:
        spec = _spec_of(sch, sch.get_sblock("M"))
        if cuda:
            apply_cuda(sch, spec, default_choice)
        else:
            apply_llvm(sch, spec, default_choice)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def vector_shape(target: Any = None) -> tuple[int, int]:
    """(float32 lanes, vector registers) of an llvm target (the current one, else this CPU): 16 and 32 with
    AVX-512, else 8 and 16."""
    tvm = load_tvm()
    tgt = resolve_target(target) if target is not None else (tvm.target.Target.current(allow_none=True)
                                                              or resolve_target("llvm"))
    try:
        wide = bool(tvm.target.codegen.target_has_features("avx512f", tgt))
    except Exception:  # a target LLVM cannot query (not x86): the narrower shape
        wide = False
    return (16, 32) if wide else (8, 16)


def apply_direct_llvm(sch: Any, spec: DirectSpec, pick: Any, lanes: int = 8, registers: int = 16) -> None:
    """The CPU schedule of the direct conv2d: the phase-split input copied a row per task; then per (image,
    filter block, output row, column block) a register block of k_block filters × n_vec vectors of output
    columns, accumulated over channels and taps (each tap one vector load per column vector and one
    broadcast weight per filter), parallel over the first three.  The design space samples the filter block
    and the vectors per block; the default keeps the accumulators to half the registers.  Packed weights
    (`spec.k_block`): `apply_packed_direct_llvm`."""
    if spec.k_block:
        apply_packed_direct_llvm(sch, spec, pick, lanes, registers)
        return
    k = spec.layer[4]
    ow = spec.out_hw[1]
    xq = sch.get_sblock("xq")
    sch.parallel(sch.fuse(*sch.get_loops(xq)[:4]))
    vw = vector_width(ow, lanes)
    kb_options = divisor_choices(k, (1, 2, 4, 8, 16))
    kb_default = max(o for o in kb_options if o <= 8)
    nv_options = [o for o in (1, 2, 3, 4, 7) if o <= -(-ow // vw)]
    nv_default = max(o for o in nv_options if kb_default * o <= registers // 2) if kb_default <= registers // 2 else 1
    kb = pick(kb_options, kb_default)
    nv = pick(nv_options, nv_default)

    block = sch.get_sblock("acc")
    b, ko, i, j, rc, rh, rw = sch.get_loops(block)
    koo, koi = sch.split(ko, [None, kb])
    jo, jv, jl = sch.split(j, [None, nv, vw])
    sch.reorder(b, koo, i, jo, rc, rh, rw, koi, jv, jl)
    sch.parallel(sch.fuse(*sch.get_loops(block)[:3]))
    out = sch.cache_write(block, 0, "local")
    inline_epilogue(sch, out)  # fp16's cast, then any epilogue fused after (bias, ReLU)
    # unit loops kept, so the loop nest is the same whatever was sampled (MetaSchedule replays this trace
    # with other decisions, and an instruction's outputs must not change in number)
    sch.reverse_compute_at(out, jo, preserve_unit_loops=True)
    sch.unroll(koi)
    sch.unroll(jv)
    sch.vectorize(jl)
    wk, wj = sch.get_loops(out)[-3], sch.get_loops(out)[-1]  # below jo: (image, filter, row, column) extents
    wjv, wjl = sch.split(wj, [None, vw])  # (1, kb, 1, nv·vw)
    sch.unroll(wk)
    sch.unroll(wjv)
    sch.vectorize(wjl)
    sch.decompose_reduction(block, rc)


def apply_packed_direct_llvm(sch: Any, spec: DirectSpec, pick: Any, lanes: int = 8, registers: int = 16) -> None:
    """The CPU schedule of the direct conv2d with packed weights (wide, strided layers): per (image, filter
    block, row block, column block) a register block of rows × columns × filter vectors, accumulated over
    channels and taps, each tap one broadcast input per output pixel and one weight load per filter vector
    (the packed block's consecutive filters), parallel over the first three.  Sampled: the filter vectors, the
    columns and the rows of the block; the default fills most of the registers."""
    k = spec.layer[4]
    oh, ow = spec.out_hw
    vl = max(v for v in (lanes, 8, 4, 2, 1) if v <= lanes and spec.k_block % v == 0)  # within a packed block
    kv_options = [v for v in (1, 2, 3, 4) if k % (v * vl) == 0]
    nj_options = divisor_choices(ow, (1, 2, 3, 4, 5, 6, 7, 8, 14))
    ni_options = divisor_choices(oh, (1, 2))
    kv_default = max(v for v in kv_options if v <= 2)
    nj_default = max(o for o in nj_options if o * kv_default <= registers - 4)
    ni_default = max(o for o in ni_options if o * nj_default * kv_default <= registers - 4)
    kv = pick(kv_options, kv_default)
    nj = pick(nj_options, nj_default)
    ni = pick(ni_options, ni_default)

    xq = sch.get_sblock("xq")
    sch.parallel(sch.fuse(*sch.get_loops(xq)[:4]))
    block = sch.get_sblock("acc")
    b, ko, i, j, rc, rh, rw = sch.get_loops(block)
    koo, kvo, kvl = sch.split(ko, [None, kv, vl])
    io, ii = sch.split(i, [None, ni])
    jo, ji = sch.split(j, [None, nj])
    sch.reorder(b, koo, io, jo, rc, rh, rw, ii, ji, kvo, kvl)
    sch.parallel(sch.fuse(b, koo, io))
    out = sch.cache_write(block, 0, "local")
    # filters innermost in the accumulators, so each filter vector is one register
    sch.transform_layout(block, ("write", 0), lambda b, k, i, j: (b, i, j, k))
    inline_epilogue(sch, out)
    sch.reverse_compute_at(out, jo, preserve_unit_loops=True)  # see apply_direct_llvm
    for loop in (ii, ji, kvo):
        sch.unroll(loop)
    sch.vectorize(kvl)
    for loop in sch.get_loops(out)[-3:]:  # (filters, rows, columns) of the block, below jo and the image's 1
        sch.unroll(loop)
    sch.decompose_reduction(block, rc)


def direct_primfunc(spec: DirectSpec, schedule: str | None = "llvm", index_dtype: str | None = None) -> Any:
    """The PrimFunc of novagen's direct conv2d for `spec`: scheduled for "llvm" (this CPU) or "cuda", or None
    for the plain compute MetaSchedule tunes through the rule; `index_dtype` as in `conv2d_primfunc`."""
    tvm = load_tvm()
    register_rules()
    func = tvm.te.create_prim_func(direct_compute(spec), index_dtype_override=index_dtype)
    func = func.with_attr("global_symbol", spec.name)
    if schedule in ("llvm", "cuda"):
        func = schedule_default(func, {"kind": "cuda", "arch": "sm_80"} if schedule == "cuda" else "llvm")
    elif schedule is not None:
        raise TVMError(f"schedule '{schedule}' is not known: use llvm, cuda, or None for the unscheduled compute")
    return func


def inline_epilogue(sch: Any, block: Any = None) -> None:
    """Elementwise work TVM fused after the conv (bias, residual add, ReLU: FuseOps/FuseTIR, the PrimFunc being
    OutEWiseFusable) computed in the output block ("y", or `block`) itself, where the schedule vectorizes and
    parallelizes it, instead of as extra passes over the output."""
    y = sch.get_sblock("y") if block is None else block
    while consumers := sch.get_consumers(y):
        sch.reverse_compute_inline(consumers[0])


def apply_llvm(sch: Any, spec: Conv2dSpec, pick: Any) -> None:
    inline_epilogue(sch)
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
                    p_block: int | None = None, k_block: int | None = None,
                    index_dtype: str | None = None) -> tuple[Any, Conv2dSpec]:
    """The PrimFunc (scheduled for `schedule` = "llvm" or "cuda", or None for the plain compute that
    MetaSchedule tunes through novagen's rule) and its spec.  `index_dtype` "int64" is what FuseTIR needs to
    join the function's buffers with those of Relax's legalized operators (a fusable function)."""
    tvm = load_tvm()
    register_rules()
    tensors, spec = conv2d_compute(alg, layer, padding, dtype, layout, weights, p_block, k_block)
    func = tvm.te.create_prim_func(tensors, index_dtype_override=index_dtype).with_attr("global_symbol", spec.name)
    if schedule in ("llvm", "cuda"):
        func = schedule_default(func, {"kind": "cuda", "arch": "sm_80"} if schedule == "cuda" else "llvm")
    elif schedule is not None:
        raise TVMError(f"schedule '{schedule}' is not known: use llvm, cuda, or None for the unscheduled compute")
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
    """The conv2d scheduled for CUDA (novagen's rule with its default decisions) and its target (default
    sm_80, so no GPU is needed to build it)."""
    tgt = resolve_target(target or {"kind": "cuda", "arch": "sm_80"})
    mod = conv2d_module(alg, layer, padding, dtype, layout, weights, schedule="cuda")
    return mod, tgt

