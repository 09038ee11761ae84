"""Checking and timing the CUDA kernels on a GPU machine: correctness against float64 on odd and
ResNet-style shapes, and timing against cuDNN (torch.conv2d)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from novagen.backends.cuda.kernel import DEFAULT_ARCH, CudaKernel, gpu_arch, ptxas_report

SELFTEST_ALGORITHMS = ("F(2,3)/classic", "F(4,3)/classic", "F(4,3)/nova", "F(6,3)/classic", "F(6,3)/nova")
SELFTEST_SHAPES = ((1, 16, 14, 14, 32), (2, 19, 13, 17, 21), (1, 64, 28, 28, 64), (3, 5, 9, 30, 70))
BENCH_LAYERS = ((64, 56, 64), (128, 28, 128), (256, 14, 256), (512, 7, 512))


def selftest(algorithms: tuple[str, ...] = SELFTEST_ALGORITHMS, dtype: str = "fp16", seed: int = 0,
             log: Any = print) -> bool:
    """Compare the GPU kernel with the float64 direct correlation on odd and even shapes.

    The bar: the error of novagen's emulation of the fp16 policy (every stage stored in fp16, fp32
    arithmetic; `novagen.accuracy`; the kernel rounds less: M stays fp32) on the same data, times 3,
    plus 1e-4 (fp32 x and y: 1e-5).
    Returns True when every case passes.
    """
    import torch

    from novagen.accuracy import layer_data, policy, winograd_emulate
    from novagen.catalog import algorithm
    from novagen.reference import correlate_direct

    ok = True
    log(f"{'algorithm':<16} {'N,C,H,W,K':<18} {'rel err':>10} {'bound':>10}  result")
    for name in algorithms:
        alg = algorithm(name)
        kernel = CudaKernel(alg, dtype=dtype, padding=1)
        for shape in SELFTEST_SHAPES:
            x, w = layer_data(shape, seed=seed)
            rng = np.random.default_rng(seed + 1)
            bias = rng.standard_normal(shape[4]) * 0.1
            ref = correlate_direct(x, w, 1) + bias[None, :, None, None]
            xt = torch.tensor(x, dtype=kernel.torch_dtype, device="cuda")
            y = kernel(xt, torch.tensor(w, dtype=torch.float32, device="cuda"),
                       torch.tensor(bias, device="cuda")).double().cpu().numpy()
            torch.cuda.synchronize()
            emu, _ = winograd_emulate(x, w, [alg, alg], policy("fp16"), padding=1)
            emu = emu + bias[None, :, None, None]
            err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
            bound = 3 * float(np.linalg.norm(emu - ref) / np.linalg.norm(ref)) + (1e-4 if dtype == "fp16" else 1e-5)
            good = bool(np.isfinite(err)) and err <= bound
            ok &= good
            log(f"{name:<16} {','.join(map(str, shape)):<18} {err:>10.3e} {bound:>10.3e}  {'ok' if good else 'FAIL'}")
    return ok


def cuda_event_seconds(fn: Any) -> float:
    """Seconds of one call of `fn` on the GPU, between two CUDA events (the timer of GPU benchmarks)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def benchmark(algorithms: tuple[str, ...] = ("F(2,3)/classic", "F(4,3)/nova", "F(6,3)/nova"),
              batches: tuple[int, ...] = (1, 32), repeats: int = 20, log: Any = print) -> list[dict[str, Any]]:
    """Time the fp16 kernels against torch.nn.functional.conv2d (cuDNN, fp16) on ResNet-style 3x3 layers,
    through the one harness (`novagen.timing`): every output checked against the float64 conv2d first; a
    kernel beyond `FP16_BOUND` is reported as failed, never as a speed-up."""
    import torch

    from novagen.catalog import algorithm
    from novagen.layers import direct_gflop
    from novagen.timing import FP16_BOUND, Candidate, measure

    torch.backends.cudnn.benchmark = True
    kernels = {name: CudaKernel(algorithm(name), dtype="fp16") for name in algorithms}
    rows = []
    log(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    log(f"{'N,C,H,W,K':<18} {'algorithm':<16} {'ours ms':>9} {'cuDNN ms':>9} {'speedup':>8} {'TFLOP/s':>8} "
        f"{'rel err':>9}")
    for batch in batches:
        for c, hw, k in BENCH_LAYERS:
            x = torch.randn(batch, c, hw, hw, device="cuda", dtype=torch.float16)
            w = torch.randn(k, c, 3, 3, device="cuda", dtype=torch.float16) * (2.0 / (9 * c)) ** 0.5
            ref = torch.nn.functional.conv2d(x.double(), w.double(), padding=1).cpu().numpy()
            cands = [Candidate("cudnn", lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1),
                               lambda y: y.double().cpu().numpy(), FP16_BOUND)]
            for name, kern in kernels.items():
                kern.set_weights(w)
                cands.append(Candidate(name, lambda x=x, w=w, kern=kern: kern(x, w),
                                       lambda y: y.double().cpu().numpy(), FP16_BOUND))
            times = measure(cands, ref, repeats, order="blocks", timer=cuda_event_seconds)
            ref_ms = times["cudnn"].median_ms
            gflop = direct_gflop((batch, c, hw, hw, k))
            for name in kernels:
                t = times[name]
                row = {"shape": (batch, c, hw, hw, k), "algorithm": name, "ours_ms": t.median_ms,
                       "cudnn_ms": ref_ms, "speedup": ref_ms / t.median_ms if t.passed else None,
                       "tflops": gflop / t.median_ms, "rel_error": t.error, "cudnn_rel_error": times["cudnn"].error,
                       "passed": t.passed}
                rows.append(row)
                speed = f"{row['speedup']:>7.2f}x" if t.passed else "  FAILED"
                log(f"{','.join(map(str, row['shape'])):<18} {name:<16} {t.median_ms:>9.3f} {ref_ms:>9.3f} "
                    f"{speed} {row['tflops']:>8.1f} {t.error:>9.2e}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m novagen.backends.cuda --selftest --bench`: exit 1 when a result is wrong, 2 without a GPU."""
    ap = argparse.ArgumentParser(prog="python -m novagen.backends.cuda",
                                 description="Check and time the generated CUDA kernels (novagen CUDA backend).")
    ap.add_argument("--selftest", action="store_true", help="correctness against the float64 reference")
    ap.add_argument("--bench", action="store_true", help="timing against torch conv2d (cuDNN), batch 1 and 32")
    ap.add_argument("--ptxas", action="store_true", help="registers and spills of each kernel (no GPU needed)")
    ap.add_argument("--arch", default=None, help="sm_80, sm_90, ... (default: the GPU's, else sm_80)")
    args = ap.parse_args(argv)
    if not (args.selftest or args.bench or args.ptxas):
        ap.print_help()
        return 2
    if args.ptxas:
        print(f"{'algorithm':<16} {'kernel':<10} {'registers':>9} {'spill st':>9} {'spill ld':>9}")
        for name in SELFTEST_ALGORITHMS:
            from novagen.catalog import algorithm

            for kname, st in ptxas_report(algorithm(name), arch=args.arch or gpu_arch() or DEFAULT_ARCH).items():
                kind = kname.rsplit("_", 1)[-1]
                print(f"{name:<16} {kind:<10} {st.registers:>9} {st.spill_stores:>9} {st.spill_loads:>9}")
    if not (args.selftest or args.bench):
        return 0
    if gpu_arch() is None:
        print("no CUDA GPU visible to PyTorch: the self-test and benchmark need one", file=sys.stderr)
        return 2
    ok = True
    if args.selftest:
        ok = selftest() and selftest(("F(4,3)/nova",), dtype="fp32")
        print("self-test:", "passed" if ok else "FAILED")
    if args.bench:
        benchmark()
    return 0 if ok else 1

