"""The TVM flow as TVM users run it: import a model (torch.export or ONNX), detach its parameters, rewrite its
convolutions (one algorithm or "auto"), tune the whole module with MetaSchedule's own tune_relax, compile
with compile_relax; and the untuned path through novagen's DefaultSchedule pass."""

from typing import Any

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import novagen.tvm as nt  # noqa: E402
from novagen.errors import InputError  # noqa: E402

pytestmark = pytest.mark.tvm


class Net(torch.nn.Module):
    """conv-bn-relu blocks: a 3-channel stem, padding 1 and 0, odd sizes, a stride-2 conv (not Winograd's:
    novagen's direct kernel or TVM's), a residual add and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
        self.c2, self.b2 = torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16)
        self.c3, self.b3 = torch.nn.Conv2d(16, 24, 3, padding=0), torch.nn.BatchNorm2d(24)
        self.c4 = torch.nn.Conv2d(24, 24, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(24, 10)

    def forward(self, x: Any) -> Any:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x))) + x
        x = torch.relu(self.b3(self.c3(x)))
        return self.fc(self.c4(x).mean((2, 3)))


def _model() -> tuple[Any, Any]:
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # trained-looking statistics, not the identity
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return model, torch.randn(1, 3, 15, 13)


def _imported(model: Any, x: Any) -> tuple[Any, dict]:
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.torch import from_exported_program

    return detach_params(from_exported_program(torch.export.export(model, (x,)), keep_params_as_input=True))


def _run(ex: Any, x: Any) -> np.ndarray:
    from tvm import relax

    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    return (out[0] if not hasattr(out, "numpy") else out).numpy()


def _close(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def test_detach_params_flow_with_auto_and_the_default_schedule_pass():
    model, x = _model()
    ref = model(x).detach().numpy()
    mod, params = _imported(model, x)
    assert isinstance(params["main"], list)  # the form TVM hands over
    new, report = nt.rewrite_conv2d(mod, "auto", params=params, return_report=True)
    winograd = [r for r in report.rewritten if r["algorithm"] != "novagen direct"]
    assert [r["shape"] for r in winograd] == [[1, 16, 15, 13, 16], [1, 16, 15, 13, 24]]
    assert all(r["algorithm"].endswith("/best") and r["why"].startswith("auto: fastest (cold weights, interleaved)")
               for r in winograd)
    # the 3-channel stem and the stride-2 conv: novagen's direct kernel (the strided one with packed weights)
    # or TVM's conv2d, whichever measured faster, with both times
    others = [r for r in report.rewritten if r not in winograd] + list(report.skipped)
    assert sorted(o["shape"][1] for o in others) == [3, 24]
    for o in others:
        assert "novagen's direct kernel" in o.get("why", o.get("reason", ""))
        if o in report.rewritten:
            assert o["weights"] == ("untransformed" if o["shape"][1] == 3 else "packed")
    assert len(new["main"].params) == 1  # every weight bound and transformed at compile time
    target = nt.host_target()
    ex = tvm.compile(nt.DefaultSchedule()(new), target=target)
    assert _close(_run(ex, x), ref) < 1e-4
    # the same as a pass among others, and pre-scheduled for an untuned compile
    seq = tvm.transform.Sequential([nt.WinogradConv2d("F(4,3)/nova", params=params, schedule="default"),
                                    tvm.relax.transform.FoldConstant()])
    assert _close(_run(tvm.compile(seq(mod), target=target), x), ref) < 1e-4
    # one algorithm named: Winograd only, the stem and the stride-2 conv left to TVM
    _, named = nt.rewrite_conv2d(mod, "F(4,3)/nova", params=params, return_report=True)
    assert [s["reason"] for s in named.skipped if s["shape"][1] != 3] == ["stride (2, 2)"]
    # weights not bound: nothing to pack, the stride-2 conv stays TVM's and the report says why
    _, unbound = nt.rewrite_conv2d(mod, "auto", return_report=True)
    assert any("not bound as constants" in s["reason"] for s in unbound.skipped if s["shape"][1] == 24)


def test_params_in_every_form_and_bad_forms():
    model, x = _model()
    mod, params = _imported(model, x)
    names = [str(v.name) for v in mod["main"].params[1:]]
    as_tensors = dict(zip(names, params["main"]))
    as_arrays = {k: v.numpy() for k, v in as_tensors.items()}
    for form in (params, as_tensors, as_arrays):
        new = nt.rewrite_conv2d(mod, "F(2,3)/classic", params=form)
        assert len(new["main"].params) == 1
    with pytest.raises(InputError, match="params must be a dict"):
        nt.rewrite_conv2d(mod, "F(2,3)/classic", params=list(params["main"]))
    with pytest.raises(InputError, match="holds 2 tensors"):
        nt.rewrite_conv2d(mod, "F(2,3)/classic", params={"main": params["main"][:2]})
    with pytest.raises(InputError, match="does not take"):
        nt.rewrite_conv2d(mod, "F(2,3)/classic", params={"nonsense": np.ones(3)})
    with pytest.raises(InputError, match="not a numeric tensor"):
        nt.rewrite_conv2d(mod, "F(2,3)/classic", params={names[0]: "weights"})


def test_onnx_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    model, x = _model()
    path = tmp_path / "net.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False)
    mod, params = detach_params(from_onnx(onnx.load(str(path)), keep_params_in_input=True))
    new, report = nt.rewrite_conv2d(mod, "F(4,3)/best", params=params, schedule="default", return_report=True)
    assert len(report.rewritten) == 2
    ex = tvm.compile(new, target=nt.host_target())
    assert _close(_run(ex, x), model(x).detach().numpy()) < 1e-4


def _legalized(mod: Any) -> Any:
    """What TVM's tuning flow tunes: operators legalized to TIR and fused (the "zero" pipeline's passes)."""
    from tvm import relax

    return tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                     relax.transform.FoldConstant(), relax.transform.FuseOps(),
                                     relax.transform.FuseTIR()])(mod)


@pytest.mark.parametrize("schedule", ["tunable", "fusable"])
def test_extract_tasks_sees_unscheduled_winograd_tasks_with_novagens_rule(schedule):
    from tvm.s_tir import meta_schedule as ms

    model, x = _model()
    mod, params = _imported(model, x)
    new = _legalized(nt.rewrite_conv2d(mod, "F(4,3)/nova", params=params, schedule=schedule))
    tasks = ms.relax_integration.extract_tasks(new, nt.host_target())
    ours = [t for t in tasks if "novagen_" in t.task_name]
    assert len(ours) == 2 and len(tasks) > len(ours)
    if schedule == "fusable":  # each fused with its bias add, as TVM fuses its own (batch_norm stays apart)
        assert all(t.task_name.startswith("fused_novagen_") and "_add" in t.task_name for t in ours)
    else:
        assert all(t.task_name.startswith("novagen_") for t in ours)
    for t in ours:
        func = t.dispatched[0]["main"]
        assert not func.attrs.get("tirx.is_scheduled", False)
        sch = tvm.s_tir.Schedule(func)
        ann = sch.get(sch.get_sblock("M")).annotations
        assert str(ann["schedule_rule"]) == "novagen_winograd_conv2d"
    # the rule is what MetaSchedule's default rules apply: the design space is novagen's schedule
    ctx = ms.TuneContext(mod=ours[0].dispatched[0], target=nt.host_target(), space_generator="post-order-apply",
                         search_strategy="evolutionary")
    trace = str(ctx.space_generator.generate_design_space(ctx.mod)[0].trace)
    assert 'get_sblock(name="xp"' in trace and "sample_categorical" in trace and "decompose_reduction" in trace
    assert ("reverse_compute_inline" in trace) == (schedule == "fusable")  # the epilogue, in the output transform


def test_compile_model_fuses_epilogues_and_matches_torch():
    """The untuned whole-model path: fused like the tuning flow, default schedule with the epilogue inlined."""
    model, x = _model()
    mod, params = _imported(model, x)
    prepared = nt.prepare(mod, params, "F(4,3)/nova", schedule="fusable")
    ex = nt.compile_model(prepared, "llvm")
    assert _close(_run(ex, x), model(x).detach().numpy()) < 1e-4
    legal = nt.legalized(prepared.mod)
    names = [gv.name_hint for gv in legal.get_global_vars()]
    fused = [n for n in names if n.startswith("fused_novagen_")]  # with the bias and BatchNorm arithmetic after
    assert len(fused) == 2 and all("_add" in n and "_multiply" in n for n in fused)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["tunable", "fusable"])
def test_tune_relax_then_compile_relax(tmp_path, schedule):
    from tvm.s_tir import meta_schedule as ms

    from novagen.backends.tvm.compat import (
        drop_unnamed_handlers,
        import_tensor_intrin,
        in_process_builder,
        in_process_runner,
    )
    from novagen.backends.tvm.schedule import is_novagen

    model, x = _model()
    mod, params = _imported(model, x)
    rewritten = nt.rewrite_conv2d(mod, "F(4,3)/nova", params=params, schedule=schedule)
    new = _legalized(rewritten)
    target = nt.host_target()
    import_tensor_intrin()
    drop_unnamed_handlers()  # pytest's log capture leaves unnamed handlers that MetaSchedule's set-up rejects
    db = ms.relax_integration.tune_relax(new, params={}, target=target, work_dir=str(tmp_path / "db"),
                                         max_trials_global=24, num_trials_per_iter=4,
                                         builder=in_process_builder(), runner=in_process_runner())
    ours = [r for r in db.get_all_tuning_records() if is_novagen(r.workload.mod["main"])]
    assert ours, "the database holds records of the Winograd tasks"
    ex = ms.relax_integration.compile_relax(db, rewritten, target, params=None)
    assert _close(_run(ex, x), model(x).detach().numpy()) < 1e-4
    # the records apply: each tuned function of compile_model's module is the database's schedule
    built = nt.scheduled(rewritten, target, db)
    normalize = tvm.get_global_func("tvm.s_tir.meta_schedule.normalize_mod")
    names = {g.name_hint for g in built.get_global_vars()}
    tuned = {gv.name_hint: db.query_schedule(normalize(f), target, "main") for gv, f in new.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc) and gv.name_hint in names}
    tuned = {name: s.mod["main"] for name, s in tuned.items() if s is not None}
    assert any(is_novagen(new[name]) for name in tuned) and len(tuned) >= 4
    for name, func in tuned.items():
        assert _same_body(built[name], func), name
    assert _close(_run(nt.compile_model(rewritten, target, tmp_path / "db"), x), model(x).detach().numpy()) < 1e-4


@pytest.mark.slow
def test_tune_relax_as_the_user_calls_it(tmp_path):
    """The issue's call, TVM's defaults throughout: the unlegalized rewritten module, params={}, TVM's own
    LocalBuilder and LocalRunner.  Their fresh workers used to import TVM's tensor intrinsics inside the timed
    build (42 s here against a 30 s timeout), so every build timed out; importing novagen.tvm initializes them."""
    from tvm.s_tir import meta_schedule as ms

    from novagen.backends.tvm.compat import drop_unnamed_handlers
    from novagen.backends.tvm.schedule import novagen_kind

    model, x = _model()
    mod, params = _imported(model, x)
    mod = nt.rewrite_conv2d(mod, algorithm="auto", params=params)
    target = nt.host_target()
    drop_unnamed_handlers()  # pytest's log capture, not the user's flow, leaves unnamed handlers behind
    db = ms.relax_integration.tune_relax(mod, params={}, target=target, work_dir=str(tmp_path / "db"),
                                         max_trials_global=12)
    recs = db.get_all_tuning_records()
    assert recs and all(r.run_secs and all(float(s) < 1e9 for s in r.run_secs) for r in recs)
    assert "winograd" in [novagen_kind(r.workload.mod["main"]) for r in recs]
    ex = ms.relax_integration.compile_relax(db, mod, target, params=None)
    assert _close(_run(ex, x), model(x).detach().numpy()) < 1e-4


@pytest.mark.slow
def test_local_builder_workers_run_the_users_initializer_too(tmp_path):
    """novagen's worker initializer (the fast tensor-intrinsics import) comes first; the user's still runs."""
    from tvm.s_tir import meta_schedule as ms

    marker = tmp_path / "ran"
    builder = ms.builder.LocalBuilder(max_workers=1, initializer=lambda: marker.write_text("yes"))
    assert marker.read_text() == "yes"  # LocalBuilder's constructor starts one worker to check itself
    assert builder.initializer.func.__name__ == "_initialize_worker"


def _same_body(a: Any, b: Any) -> bool:
    try:
        tvm.ir.assert_structural_equal(a.body, b.body, map_free_vars=True)
    except ValueError:
        return False
    return True


def test_compile_model_builds_fused_model_for_cuda_without_gpu():
    """The whole-model build for a GPU: novagen's fused functions get the CUDA default schedule and TVM's own
    functions DLight's, as compile_relax gives them; building needs no GPU."""
    model, x = _model()
    mod, params = _imported(model, x)
    ex = nt.compile_model(nt.prepare(mod, params, "F(4,3)/nova", schedule="fusable"), {"kind": "cuda", "arch": "sm_80"})

    def cuda_module(m: Any) -> Any:
        return m if m.kind == "cuda" else next((c for i in m.imports if (c := cuda_module(i))), None)

    cuda = cuda_module(ex.mod)
    assert cuda is not None and "fused_novagen_F_4_3_nova" in cuda.inspect_source()
    # what `bench --target tvm-cuda --model` builds: "auto" for the GPU (tile sizes ranked on this CPU; the
    # stem and the strided conv stay TVM's there)
    target = {"kind": "cuda", "arch": "sm_90"}
    prepared = nt.prepare(mod, params, "auto", target=target)
    assert all(r["algorithm"] != "novagen direct" and r["target"] == "cuda" for r in prepared.report.rewritten)
    assert len(prepared.report.rewritten) == 2
    assert "fused_novagen_" in cuda_module(nt.compile_model(prepared, target).mod).inspect_source()


DIRECT_CASES = [  # (layer, kernel, stride, padding (top, left, bottom, right), dtype, k_block)
    ((1, 3, 40, 36, 16), (7, 7), (2, 2), (3, 3, 3, 3), "float32", 0),  # a ResNet stem
    ((2, 3, 15, 13, 24), (3, 3), (1, 1), (1, 1, 1, 1), "float32", 0),  # a VGG first layer, odd sizes, batch 2
    ((1, 5, 17, 11, 12), (5, 3), (2, 3), (2, 1, 0, 2), "float32", 0),  # uneven kernel, strides and padding
    ((1, 3, 20, 20, 8), (3, 3), (2, 2), (1, 1, 1, 1), "float16", 0),
    # packed weights, vectorized along filters: a ResNet downsampling 3x3/2, odd sizes
    ((1, 16, 15, 13, 32), (3, 3), (2, 2), (1, 1, 1, 1), "float32", 16),
    ((2, 8, 17, 11, 24), (3, 3), (2, 3), (1, 0, 2, 1), "float32", 8),  # batch 2, uneven strides and padding
    ((1, 8, 12, 12, 16), (3, 3), (2, 2), (1, 1, 1, 1), "float16", 16),
]


@pytest.mark.parametrize("layer,kernel,stride,padding,dtype,k_block", DIRECT_CASES)
def test_direct_kernel_matches_torch(layer, kernel, stride, padding, dtype, k_block):
    """novagen's direct kernel, default schedule and a schedule sampled from its design space, against a
    float64 convolution (weights packed as the rewrite packs them)."""
    from tvm.s_tir import meta_schedule as ms

    from novagen.backends.tvm.compute import pack_direct_weights
    from novagen.backends.tvm.schedule import direct_primfunc
    from novagen.backends.tvm.spec import make_direct_spec

    spec = make_direct_spec(layer, kernel, stride, padding, dtype, k_block)
    rng = np.random.default_rng(1)
    n, c, h, w, k = layer
    x, wt = rng.standard_normal((n, c, h, w)).astype(dtype), rng.standard_normal((k, c, *kernel)).astype(dtype)
    padded = torch.nn.functional.pad(torch.from_numpy(x.astype(np.float64)), (padding[1], padding[3], padding[0],
                                                                            padding[2]))
    ref = torch.nn.functional.conv2d(padded, torch.from_numpy(wt.astype(np.float64)), stride=stride).numpy()
    target = nt.host_target()
    ctx = ms.TuneContext(mod=tvm.IRModule({"main": direct_primfunc(spec, schedule=None)}), target=target,
                         space_generator="post-order-apply", search_strategy="evolutionary")
    sampled = ctx.space_generator.generate_design_space(ctx.mod)[0]
    assert "sample_categorical" in str(sampled.trace)
    for mod in (tvm.IRModule({"main": direct_primfunc(spec)}), sampled.mod):
        lib = tvm.compile(mod, target=target).mod
        y = tvm.runtime.tensor(np.zeros(spec.output_shape, dtype))
        lib[spec.name](tvm.runtime.tensor(x), tvm.runtime.tensor(pack_direct_weights(spec, wt)), y)
        assert y.numpy().shape == ref.shape
        assert _close(y.numpy().astype(np.float64), ref) < (1e-3 if dtype == "float16" else 1e-5)


def _every_decision(mod: Any) -> list[Any]:
    """The schedules of a function's design space with its trace replayed under every combination of its
    sampled decisions, as MetaSchedule's search replays it (an instruction whose outputs change in number
    with a decision stops the search)."""
    import itertools

    from tvm.s_tir import meta_schedule as ms

    ctx = ms.TuneContext(mod=mod, target=nt.host_target(), space_generator="post-order-apply",
                         search_strategy="evolutionary")
    trace = ctx.space_generator.generate_design_space(ctx.mod)[0].trace
    samples = [inst for inst in trace.insts if inst.kind.name == "SampleCategorical"]
    schedules = []
    for combo in itertools.product(*(range(len(inst.attrs[0])) for inst in samples)):
        replay = trace
        for inst, decision in zip(samples, combo):
            replay = replay.with_decision(inst, decision, remove_postproc=True)
        sch = tvm.s_tir.Schedule(mod)
        replay.apply_to_schedule(sch, remove_postproc=True)
        schedules.append(sch)
    return schedules


def test_direct_rule_replays_under_every_decision():
    """Every filter block (1 to 16) and column-vector count of the design space replays and computes the
    conv (a kernel of 1 filter once changed the loop nest and stopped tune_relax)."""
    from novagen.backends.tvm.schedule import direct_primfunc
    from novagen.backends.tvm.spec import make_direct_spec

    spec = make_direct_spec((1, 3, 21, 36, 16), (7, 7), (2, 2), (3, 3, 3, 3))
    schedules = _every_decision(tvm.IRModule({"main": direct_primfunc(spec, schedule=None)}))
    assert len(schedules) == 5 * 5  # filter blocks 1, 2, 4, 8, 16; 1, 2, 3, 4 or 7 vectors (of 2 of 18 columns)
    rng = np.random.default_rng(2)
    x, wt = rng.standard_normal((1, 3, 21, 36)).astype("float32"), rng.standard_normal((16, 3, 7, 7)).astype("float32")
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(wt), stride=2, padding=3).numpy()
    for sch in schedules[::4]:  # built: every filter block, every vector count (a build takes a second or two)
        lib = tvm.compile(sch.mod, target=nt.host_target()).mod
        y = tvm.runtime.tensor(np.zeros(spec.output_shape, "float32"))
        lib[spec.name](tvm.runtime.tensor(x), tvm.runtime.tensor(wt), y)
        assert _close(y.numpy(), ref) < 1e-5


def test_packed_direct_rule_replays_under_every_decision():
    """The packed kernel's design space (filter vectors, columns, rows of the register block) replays under
    every decision and computes the conv."""
    from novagen.backends.tvm.compute import pack_direct_weights
    from novagen.backends.tvm.schedule import direct_primfunc
    from novagen.backends.tvm.spec import make_direct_spec

    spec = make_direct_spec((1, 16, 28, 28, 64), (3, 3), (2, 2), (1, 1, 1, 1), "float32", 16)
    schedules = _every_decision(tvm.IRModule({"main": direct_primfunc(spec, schedule=None)}))
    assert len(schedules) == 3 * 4 * 2  # 1, 2 or 4 filter vectors; 1, 2, 7 or 14 of the 14 columns; 1 or 2 rows
    rng = np.random.default_rng(3)
    x, wt = rng.standard_normal((1, 16, 28, 28)).astype("float32"), rng.standard_normal((64, 16, 3, 3))
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(wt.astype("float32")), stride=2,
                                     padding=1).numpy()
    packed = tvm.runtime.tensor(pack_direct_weights(spec, wt))
    for sch in schedules[::5]:
        lib = tvm.compile(sch.mod, target=nt.host_target()).mod
        y = tvm.runtime.tensor(np.zeros(spec.output_shape, "float32"))
        lib[spec.name](tvm.runtime.tensor(x), packed, y)
        assert _close(y.numpy(), ref) < 1e-5


def test_winograd_rule_replays_under_every_decision():
    func, _ = nt.conv2d_primfunc("F(4,3)/best", (1, 16, 15, 13, 24), 1, schedule=None)
    assert len(_every_decision(tvm.IRModule({"main": func}))) == 18


class StemNet(torch.nn.Module):
    """A ResNet-shaped head: a 7×7/2 stem on 3 channels with BatchNorm and ReLU, then a 3×3 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = torch.nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False), torch.nn.BatchNorm2d(16)
        self.conv = torch.nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: Any) -> Any:
        return self.conv(torch.relu(self.bn(self.stem(x))))


def test_auto_gives_a_stem_novagens_direct_kernel_tunable_by_its_rule():
    from tvm.s_tir import meta_schedule as ms

    torch.manual_seed(0)
    model = StemNet().eval()
    x = torch.randn(1, 3, 96, 96)
    ref = model(x).detach().numpy()
    mod, params = _imported(model, x)
    new, report = nt.rewrite_conv2d(mod, "auto", params=params, return_report=True)
    stem = [r for r in report.rewritten if r.get("kernel") == [7, 7]]
    assert len(stem) == 1 and stem[0]["algorithm"] == "novagen direct" and stem[0]["stride"] == [2, 2]
    assert "too few for Winograd" in stem[0]["why"] and stem[0]["function"].startswith("novagen_direct_")
    assert _close(_run(tvm.compile(nt.DefaultSchedule()(new), target=nt.host_target()), x), ref) < 1e-4
    tasks = ms.relax_integration.extract_tasks(_legalized(new), nt.host_target())
    direct = [t for t in tasks if t.task_name.startswith("novagen_direct_")]
    assert len(direct) == 1
    func = direct[0].dispatched[0]["main"]
    sch = tvm.s_tir.Schedule(func)
    assert not func.attrs.get("tirx.is_scheduled", False)
    assert str(sch.get(sch.get_sblock("acc")).annotations["schedule_rule"]) == "novagen_direct_conv2d"


def test_fusable_direct_kernel_computes_its_epilogue():
    """schedule="fusable": the stem's bias and ReLU fuse into novagen's direct function, computed in its
    output block, as compile_model builds it."""
    torch.manual_seed(0)
    model = StemNet().eval()
    x = torch.randn(1, 3, 96, 96)
    mod, params = _imported(model, x)
    prepared = nt.prepare(mod, params, "auto", schedule="fusable")
    assert any(r["algorithm"] == "novagen direct" for r in prepared.report.rewritten)
    names = [gv.name_hint for gv in nt.legalized(prepared.mod).get_global_vars()]
    fused = [n for n in names if n.startswith("fused_novagen_direct_")]
    assert len(fused) == 1 and "_add" in fused[0] and "relu" in fused[0]
    assert _close(_run(nt.compile_model(prepared, "llvm"), x), model(x).detach().numpy()) < 1e-4


@pytest.mark.slow
def test_tune_relax_tunes_the_direct_kernel(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from novagen.backends.tvm.compat import (
        drop_unnamed_handlers,
        import_tensor_intrin,
        in_process_builder,
        in_process_runner,
    )
    from novagen.backends.tvm.schedule import novagen_kind

    torch.manual_seed(0)
    model = StemNet().eval()
    x = torch.randn(1, 3, 96, 96)
    mod, params = _imported(model, x)
    rewritten = nt.rewrite_conv2d(mod, "auto", params=params)
    target = nt.host_target()
    import_tensor_intrin()
    drop_unnamed_handlers()
    db = ms.relax_integration.tune_relax(_legalized(rewritten), params={}, target=target,
                                         work_dir=str(tmp_path / "db"), max_trials_global=16, num_trials_per_iter=4,
                                         builder=in_process_builder(), runner=in_process_runner())
    kinds = [novagen_kind(r.workload.mod["main"]) for r in db.get_all_tuning_records()]
    assert "direct" in kinds and "winograd" in kinds
    ex = ms.relax_integration.compile_relax(db, rewritten, target, params=None)
    assert _close(_run(ex, x), model(x).detach().numpy()) < 1e-4


def test_direct_kernel_builds_for_cuda_without_gpu():
    from novagen.backends.tvm.schedule import direct_primfunc
    from novagen.backends.tvm.spec import make_direct_spec

    spec = make_direct_spec((1, 3, 32, 32, 16), (7, 7), (2, 2), (3, 3, 3, 3))
    lib = tvm.compile(tvm.IRModule({"main": direct_primfunc(spec, schedule="cuda")}),
                      target=tvm.target.Target({"kind": "cuda", "arch": "sm_80"}))
    assert "novagen_direct_" in lib.mod.imports[0].inspect_source()


@pytest.mark.parametrize("args,match", [
    (((1, 3, 4, 4, 8), (7, 7), (2, 2), (0, 0, 0, 0)), "smaller than the 7x7 kernel"),
    (((1, 3, 8, 8, 8), (3, 3), (0, 1), (1, 1, 1, 1)), "stride"),
    (((1, 3, 8, 8, 8), (3, 3), (1, 1), (1, 1, -1, 1)), "padding"),
    (((1, 3, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1)), "N,C,H,W,K"),
    (((1, 8, 8, 8, 24), (3, 3), (2, 2), (1, 1, 1, 1), "float32", 16), "k_block 16 must be 0"),
])
def test_direct_spec_bad_input(args, match):
    from novagen.backends.tvm.spec import make_direct_spec

    with pytest.raises(InputError, match=match):
        make_direct_spec(*args)


class HeadNet(torch.nn.Module):
    """One 3×3 conv (novagen's task) and a pooled linear head (TVM's tasks)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x: Any) -> Any:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.slow
def test_tune_model_measures_each_novagen_space_once_then_tvms_tasks(tmp_path):
    """A budget beyond what novagen's small design spaces hold: each novagen task gets exactly its space (no
    rounds that find nothing), TVM's tasks the rest, and a second call with the same budget measures nothing."""
    torch.manual_seed(0)
    model = HeadNet().eval()
    x = torch.randn(1, 8, 12, 12)
    mod, params = _imported(model, x)
    prepared = nt.prepare(mod, params, "F(2,3)/classic")
    from tvm.s_tir import meta_schedule as ms

    from novagen.backends.tvm.model import space_size

    target = nt.host_target()
    tasks = ms.relax_integration.extract_tasks(nt.legalized(prepared.mod), target)
    sizes = {t.task_name: space_size(t, target) for t in tasks}
    ours = {name: n for name, n in sizes.items() if n is not None}
    assert len(ours) == 1 and all(2 <= n <= 64 for n in ours.values()) and len(sizes) > len(ours)
    (name, size), = ours.items()
    trials = -(-4 * size // 3) + 8  # three quarters of it hold novagen's space; TVM's tasks get the rest
    tuned = nt.tune_model(prepared, "llvm", tmp_path / "db", trials=trials)
    assert trials <= tuned.new_trials <= trials + 16  # TVM's scheduler may finish a round of 8 per task
    assert tuned.records == tuned.new_trials  # what the database holds, not the budget
    from novagen.backends.tvm.tuning import open_database

    db = open_database(tmp_path / "db")
    task = next(t for t in tasks if t.task_name == name)
    assert len(db.get_top_k(db.commit_workload(task.dispatched[0]), 10 * size)) == size
    again = nt.tune_model(prepared, "llvm", tmp_path / "db", trials=trials)
    assert again.new_trials == 0 and again.records == tuned.records
    assert _close(nt.run_model(nt.compile_model(tuned, "llvm", tmp_path / "db"), x.numpy()),
                  model(x).detach().numpy()) < 1e-4


@pytest.mark.slow
def test_tune_model_command_reports_what_the_database_holds(tmp_path, capsys, monkeypatch):
    """`novagen tune-model model.pt2 --input ... --trials N --db db/` as the README gives it: the JSON names
    the rewrite and the records; run again, it resumes (no new trial) and says so in one line."""
    import json

    from novagen.cli import run

    torch.manual_seed(0)
    x = torch.randn(1, 8, 12, 12)
    torch.export.save(torch.export.export(HeadNet().eval(), (x,)), str(tmp_path / "model.pt2"))
    monkeypatch.chdir(tmp_path)
    assert run(["tune-model", "model.pt2", "--input", "1,8,12,12", "--trials", "40", "--db", "db/", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trials"] == 40 and doc["records"] == doc["new_trials"] >= 40 and len(doc["tasks"]) >= 2
    assert [r["shape"] for r in doc["rewritten"]] == [[1, 8, 12, 12, 16]]
    assert (tmp_path / "db" / "logs").is_dir() and not (tmp_path / "db" / "logs" / "logs").exists()
    assert run(["tune-model", "model.pt2", "--input", "1,8,12,12", "--trials", "40", "--db", "db/"]) == 0
    out = capsys.readouterr().out
    assert f"0 new trials ({doc['records']} in the database, --trials 40)" in " ".join(out.split())
