"""The Apache TVM targets (tvm-llvm, tvm-cuda): any Winograd algorithm as a TE compute, a hand-written
llvm schedule and its MetaSchedule design space, a Relax pass that rewrites a model's convolutions,
tuning, built modules to run, and generated files.

One module per stage, as in TVM's topi (a compute and its schedules kept apart):

- `spec`: the checked description of one conv2d (`make_spec`), `TVMError`;
- `compute`: the TE computes (Winograd, the weight transform, novagen's direct conv2d for thin layers, TVM's
  direct conv2d);
- `schedule`: the llvm schedules and their design spaces (MetaSchedule rules), CUDA; PrimFunc and IRModule
  builders;
- `targets`: this CPU as an llvm target;
- `relax`: the Relax rewrite pass (and its pass objects);
- `auto`: `algorithm="auto"`, the measured per-convolution choice;
- `tuning`: MetaSchedule tuning into a JSON database, loading tuned modules, RPC measurement;
- `compat`: every workaround for a private TVM API;
- `runtime`: built modules to run from Python;
- `generated`: TVMScript, the built library and a README;
- `model`: whole models through TVM's flow (import, rewrite, MetaSchedule tuning, compile as compile_relax does);
- `bench`: per-layer and whole-model timing against torch and TVM.

`tvm` is imported only when one of these runs, so the core package installs without it.
`import novagen.tvm` gives the same names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from novagen.backends.base import Backend, Option, choice
from novagen.backends.cuda.kernel import check_arch
from novagen.backends.tvm.auto import Choice, choose, choose_direct
from novagen.backends.tvm.bench import bench_layers, bench_model, gpu_target
from novagen.backends.tvm.compute import conv2d_compute, direct_compute, direct_module, transform_weights
from novagen.backends.tvm.generated import generate
from novagen.backends.tvm.model import (
    TunedModel,
    compile_model,
    import_model,
    legalized,
    prepare,
    run_model,
    scheduled,
)
from novagen.backends.tvm.model import tune as tune_model
from novagen.backends.tvm.relax import DefaultSchedule, RewriteReport, WinogradConv2d, rewrite_conv2d
from novagen.backends.tvm.runtime import Conv2d, DirectConv2d
from novagen.backends.tvm.schedule import (
    conv2d_module,
    conv2d_primfunc,
    cuda_module,
    direct_primfunc,
    schedule_llvm,
)
from novagen.backends.tvm.spec import DTYPES, WEIGHTS, Conv2dSpec, DirectSpec, TVMError, make_direct_spec, make_spec
from novagen.backends.tvm.targets import host_target, resolve_target
from novagen.backends.tvm.tuning import TuneResult, is_direct, load_tuned, rpc_runner, tune
from novagen.layers import LAYOUTS


def _generate_llvm(alg: Any, out_dir: str | Path, layer: Any, padding: int, overwrite: bool = False,
                   **options: Any) -> list[Path]:
    return generate(alg, out_dir, "tvm-llvm", layer, padding, overwrite=overwrite, **options)


def _generate_cuda(alg: Any, out_dir: str | Path, layer: Any, padding: int, overwrite: bool = False,
                   **options: Any) -> list[Path]:
    return generate(alg, out_dir, "tvm-cuda", layer, padding, overwrite=overwrite, **options)


def _compile(alg: Any, layer: Any, padding: int, **options: Any) -> Conv2d:
    return Conv2d(alg, layer, padding=padding, **options)


def _has_tvm() -> str | None:
    try:
        import tvm  # noqa: F401
    except ImportError:
        return "apache-tvm is not installed: pip install 'novagen[tvm]'"
    return None


_DTYPE = Option("dtype", "float32 or float16 storage (fp32 arithmetic)", "float32", choice("dtype", DTYPES))
_LAYOUT = Option("layout", "NCHW or NHWC", "NCHW", choice("layout", LAYOUTS, str.upper))

BACKENDS = (
    Backend(name="tvm-llvm", summary="TVM module for this CPU (TVMScript, built .so), default or tuned schedule",
            generate=_generate_llvm,
            generate_options=(_DTYPE, _LAYOUT, Option("tuned", "the schedule from this tuning database", None)),
            compile=_compile,
            compile_options=(_DTYPE, _LAYOUT,
                             Option("weights", "precomputed or graph", "precomputed", choice("weights", WEIGHTS)),
                             Option("p_block", "tiles per GEMM register block", None),
                             Option("k_block", "filters per packed weight block", None)),
            runs_here=_has_tvm, layer_required=True),
    Backend(name="tvm-cuda", summary="TVM module for NVIDIA GPUs (sm_80/sm_90, novagen rule), built without a GPU",
            generate=_generate_cuda,
            generate_options=(_DTYPE, _LAYOUT, Option("arch", "GPU architecture such as sm_80 or sm_90", "sm_80",
                                                      check_arch)),
            layer_required=True),
)

__all__ = [
    "BACKENDS", "Choice", "Conv2d", "Conv2dSpec", "DefaultSchedule", "DirectConv2d", "DirectSpec", "RewriteReport",
    "TVMError", "TuneResult", "TunedModel", "WinogradConv2d", "bench_layers", "bench_model", "choose", "gpu_target",
    "choose_direct", "compile_model", "direct_compute", "direct_primfunc", "make_direct_spec",
    "import_model", "legalized", "prepare", "run_model", "scheduled", "tune_model",
    "conv2d_compute", "conv2d_module", "conv2d_primfunc", "cuda_module", "direct_module", "generate", "host_target",
    "is_direct", "load_tuned", "make_spec", "resolve_target", "rewrite_conv2d", "rpc_runner", "schedule_llvm",
    "transform_weights", "tune",
]
