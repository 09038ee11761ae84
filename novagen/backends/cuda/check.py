"""Checking and timing the CUDA kernels on a GPU machine: correctness against float64 on odd and
ResNet-style shapes, and timing against cuDNN (torch.conv2d)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from novagen.backends.cuda.kernel import DEFAULT_ARCH, CudaKernel, gpu_arch, ptxas_report

SELFTEST_ALGORITHMS = ("F(2,3)/classic", "F(2,3)/best", "F(4,3)/classic", "F(4,3)/nova", "F(4,3)/best",
                       "F(6,3)/classic", "F(6,3)/nova", "F(6,3)/best", "F(8,3)/classic", "F(8,3)/nova", "F(8,3)/best")
SELFTEST_SHAPES = ((2, 19, 13, 17, 21), (3, 5, 9, 30, 70), (1, 64, 56, 56, 64), (1, 128, 28, 28, 128),
                   (1, 256, 14, 14, 256), (1, 512, 7, 7, 512))
"""Odd shapes, then the ResNet-50 3x3 layers at batch 1 (the last ones run split-K)."""
BENCH_ALGORITHMS = ("F(2,3)/classic", "F(4,3)/best", "F(6,3)/best")


def bound(name: str, shape: tuple[int, ...], seed: int = 0) -> float:
    """The self-test's bar for one case: 3 × the relative error of novagen's emulation of the fp16 policy
    (every stage stored in fp16, fp32 arithmetic; the kernel rounds less: M stays fp32) on the same data, plus
    1e-4.  TF32 operands keep fp16's 10-bit mantissa, so the same bar holds for dtype fp32."""
    from novagen.accuracy import layer_data, policy, winograd_emulate
    from novagen.catalog import algorithm
    from novagen.reference import correlate_direct

    alg = algorithm(name)
    x, w = layer_data(shape, seed=seed)
    bias = np.random.default_rng(seed + 1).standard_normal(shape[4]) * 0.1
    ref = correlate_direct(x, w, 1) + bias[None, :, None, None]
    emu, _ = winograd_emulate(x, w, [alg, alg], policy("fp16"), padding=1)
    return 3 * float(np.linalg.norm(emu + bias[None, :, None, None] - ref) / np.linalg.norm(ref)) + 1e-4


def bound_key(name: str, shape: tuple[int, ...]) -> str:
    return f"{name} {','.join(map(str, shape))}"


def selftest(algorithms: tuple[str, ...] = SELFTEST_ALGORITHMS, dtype: str = "fp16", seed: int = 0,
             log: Any = print, shapes: tuple[tuple[int, ...], ...] = SELFTEST_SHAPES,
             splits: int | None = None, bounds: dict[str, float] | None = None) -> bool:
    """Compare the GPU kernel with the float64 direct correlation on odd shapes and ResNet-50's layers
    (`splits` forces the split-K slice count; by default the launch plan chooses it), each within `bound`
    (taken from `bounds` when given: they need no GPU, so they can be computed ahead). True when all pass."""
    import torch

    from novagen.accuracy import layer_data
    from novagen.catalog import algorithm
    from novagen.reference import correlate_direct

    ok = True
    log(f"{'algorithm':<16} {dtype:<5} {'N,C,H,W,K':<18} {'splits':>6} {'rel err':>10} {'bound':>10}  result")
    for name in algorithms:
        alg = algorithm(name)
        kernel = CudaKernel(alg, dtype=dtype, padding=1, splits=splits)
        for shape in shapes:
            x, w = layer_data(shape, seed=seed)
            bias = np.random.default_rng(seed + 1).standard_normal(shape[4]) * 0.1
            ref = correlate_direct(x, w, 1) + bias[None, :, None, None]
            xt = torch.tensor(x, dtype=kernel.torch_dtype, device="cuda")
            y = kernel(xt, torch.tensor(w, dtype=torch.float32, device="cuda"),
                       torch.tensor(bias, device="cuda")).double().cpu().numpy()
            torch.cuda.synchronize()
            err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
            bar = (bounds or {}).get(bound_key(name, shape)) or bound(name, shape, seed)
            good = bool(np.isfinite(err)) and err <= bar
            ok &= good
            sp = kernel.plan(shape)["splits"]
            log(f"{name:<16} {dtype:<5} {','.join(map(str, shape)):<18} {sp:>6} {err:>10.3e} {bar:>10.3e}  "
                f"{'ok' if good else 'FAIL'}")
    return ok


LAUNCHES = (("F(4,3)/best", "fp16", (2, 19, 13, 17, 21), None, False),
            ("F(2,3)/classic", "fp16", (1, 5, 9, 30, 70), None, True),
            ("F(8,3)/nova", "fp16", (1, 64, 14, 14, 32), 3, False),
            ("F(6,3)/best", "fp32", (1, 40, 11, 11, 24), 2, True),
            ("F(4,3)/best", "fp16", (1, 256, 14, 14, 256), None, False),
            ("F(4,3)/best", "fp16", (32, 64, 56, 56, 64), None, False))
"""Small launches over every path (fp16, TF32, split-K forced and planned, ReLU, F(8,3)) for
compute-sanitizer and Nsight Compute."""


def launches(log: Any = print, small: bool = False) -> None:
    """Run LAUNCHES once each (under compute-sanitizer or ncu: `--launches`); `small` leaves out the batch-32
    launch, which the sanitizers would take minutes over."""
    import torch

    from novagen.catalog import algorithm

    torch.manual_seed(0)
    for name, dtype, shape, splits, relu in LAUNCHES:
        if small and shape[0] > 8:
            continue
        k = CudaKernel(algorithm(name), dtype=dtype, padding=1, relu=relu, splits=splits)
        n, c, h, w, kk = shape
        x = torch.randn(n, c, h, w, device="cuda", dtype=k.torch_dtype)
        y = k(x, torch.randn(kk, c, 3, 3, device="cuda") * 0.1, torch.randn(kk, device="cuda"))
        torch.cuda.synchronize()
        log(f"{name} {dtype} {shape} {k.plan(shape)} -> {tuple(y.shape)} mean |y| {float(y.float().abs().mean()):.4f}")


def cuda_event_seconds(fn: Any) -> float:
    """Seconds of one call of `fn` on the GPU, between two CUDA events (the timer of GPU benchmarks)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def bench_layers(network: str) -> list[tuple[int, int, int, int]]:
    """The distinct 3x3 stride-1 layers (C, H, W, K) of a network table (`novagen.layers`)."""
    from novagen.layers import network_layers

    seen = []
    for layer in network_layers(network, 1):
        c, h, w, k = layer.shape[1:]
        if (c, h, w, k) not in seen:
            seen.append((c, h, w, k))
    return seen


def benchmark(algorithms: tuple[str, ...] = BENCH_ALGORITHMS, batches: tuple[int, ...] = (1, 32),
              networks: tuple[str, ...] = ("resnet50", "vgg16"), repeats: int = 20,
              log: Any = print) -> list[dict[str, Any]]:
    """Time the fp16 kernels against torch.nn.functional.conv2d (cuDNN, fp16, cudnn.benchmark on, NCHW and
    channels_last) on the networks' 3x3 layers, through the one harness (`novagen.timing`): every output
    checked against the float64 conv2d first; a kernel beyond `FP16_BOUND` is reported as failed, never as
    a speed-up.  Per layer, ours is the fastest correct algorithm and cuDNN the faster memory format."""
    import math

    import torch

    from novagen.catalog import algorithm
    from novagen.layers import direct_gflop
    from novagen.timing import FP16_BOUND, Candidate, measure

    torch.backends.cudnn.benchmark = True
    kernels = {name: CudaKernel(algorithm(name), dtype="fp16") for name in algorithms}
    rows = []
    log(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    log(f"{'net':<9} {'N,C,H,W,K':<20} {'best ours':<15} {'ours ms':>8} {'cuDNN ms':>8} {'NHWC ms':>8} "
        f"{'speedup':>8} {'TFLOP/s':>8} {'err':>9} {'cuDNN err':>9}")
    for batch in batches:
        for net in networks:
            for c, h, w_, k in bench_layers(net):
                x = torch.randn(batch, c, h, w_, device="cuda", dtype=torch.float16)
                w = torch.randn(k, c, 3, 3, device="cuda", dtype=torch.float16) * (2.0 / (9 * c)) ** 0.5
                cl = torch.channels_last
                xl, wl = x.contiguous(memory_format=cl), w.contiguous(memory_format=cl)
                ref = torch.nn.functional.conv2d(x.double(), w.double(), padding=1).cpu().numpy()

                def to_np(y: Any) -> Any:
                    return y.double().cpu().numpy()

                cands = [Candidate("cudnn", lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1), to_np,
                                   FP16_BOUND),
                         Candidate("cudnn_nhwc", lambda x=xl, w=wl: torch.nn.functional.conv2d(x, w, padding=1),
                                   to_np, FP16_BOUND)]
                for name, kern in kernels.items():
                    kern.set_weights(w)
                    cands.append(Candidate(name, lambda x=x, w=w, kern=kern: kern(x, w), to_np, FP16_BOUND))
                times = measure(cands, ref, repeats, order="blocks", timer=cuda_event_seconds)
                cudnn = min(times["cudnn"].median_ms, times["cudnn_nhwc"].median_ms)
                ok = [n for n in kernels if times[n].passed]
                best = min(ok, key=lambda n: times[n].median_ms) if ok else None
                shape = (batch, c, h, w_, k)
                gflop = direct_gflop(shape)
                row = {"network": net, "shape": shape, "algorithm": best, "cudnn_ms": times["cudnn"].median_ms,
                       "cudnn_nhwc_ms": times["cudnn_nhwc"].median_ms,
                       "ours_ms": {n: times[n].median_ms for n in kernels},
                       "errors": {n: times[n].error for n in times},
                       "failed": [n for n in times if not times[n].passed],
                       "splits": {n: kernels[n].plan(shape)["splits"] for n in kernels},
                       "speedup": cudnn / times[best].median_ms if best else None}
                rows.append(row)
                if best:
                    log(f"{net:<9} {','.join(map(str, shape)):<20} {best:<15} {times[best].median_ms:>8.3f} "
                        f"{times['cudnn'].median_ms:>8.3f} {times['cudnn_nhwc'].median_ms:>8.3f} "
                        f"{row['speedup']:>7.2f}x {gflop / times[best].median_ms:>8.1f} {times[best].error:>9.2e} "
                        f"{times['cudnn'].error:>9.2e}")
                else:
                    log(f"{net:<9} {','.join(map(str, shape)):<20} every kernel FAILED its check")
        sel = [r["speedup"] for r in rows if r["shape"][0] == batch and r["speedup"]]
        if sel:
            log(f"batch {batch}: geomean {math.exp(sum(map(math.log, sel)) / len(sel)):.2f}x cuDNN over {len(sel)} "
                f"layers, min {min(sel):.2f}x, max {max(sel):.2f}x")
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m novagen.backends.cuda --selftest --bench`: exit 1 when a result is wrong, 2 without a GPU."""
    ap = argparse.ArgumentParser(prog="python -m novagen.backends.cuda",
                                 description="Check and time the generated CUDA kernels (novagen CUDA backend).")
    ap.add_argument("--selftest", action="store_true", help="correctness against the float64 reference")
    ap.add_argument("--bench", action="store_true", help="timing against torch conv2d (cuDNN), batch 1 and 32")
    ap.add_argument("--ptxas", action="store_true", help="registers and spills of each kernel (no GPU needed)")
    ap.add_argument("--launches", action="store_true", help="small launches over every path (for compute-sanitizer "
                    "and ncu)")
    ap.add_argument("--small", action="store_true", help="with --launches: leave out the batch-32 launch")
    ap.add_argument("--batches", default="1,32", help="with --bench: the batch sizes (default 1,32)")
    ap.add_argument("--arch", default=None, help="sm_80, sm_90, ... (default: the GPU's, else sm_80)")
    ap.add_argument("--json", default=None, help="write the benchmark rows to this file")
    ap.add_argument("--bounds", default=None, help="the self-test's bars from this file (see --write-bounds)")
    ap.add_argument("--write-bounds", default=None, help="compute the self-test's bars into this file (no GPU)")
    args = ap.parse_args(argv)
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1 or max(batches) > 1024:
        print(f"--batches {args.batches}: give batch sizes from 1 to 1024, comma-separated", file=sys.stderr)
        return 2
    if args.write_bounds:
        import json

        doc = {bound_key(n, sh): bound(n, sh) for n in SELFTEST_ALGORITHMS for sh in SELFTEST_SHAPES}
        with open(args.write_bounds, "w") as fh:
            json.dump(doc, fh, indent=1)
        print(f"wrote {len(doc)} bounds to {args.write_bounds}")
        if not (args.selftest or args.bench or args.ptxas):
            return 0
    if not (args.selftest or args.bench or args.ptxas or args.launches):
        ap.print_help()
        return 2
    if args.ptxas:
        print(f"{'algorithm':<16} {'kernel':<10} {'registers':>9} {'spill st':>9} {'spill ld':>9}")
        from novagen.catalog import algorithm

        for name, dtype in [(n, "fp16") for n in SELFTEST_ALGORITHMS] + [("F(4,3)/best", "fp32")]:
            arch = args.arch or gpu_arch() or DEFAULT_ARCH
            for kname, st in ptxas_report(algorithm(name), dtype, arch).items():
                kind = kname.rsplit("_", 1)[-1] + (" tf32" if dtype == "fp32" else "")
                print(f"{name:<16} {kind:<10} {st.registers:>9} {st.spill_stores:>9} {st.spill_loads:>9}")
    if not (args.selftest or args.bench or args.launches):
        return 0
    if gpu_arch() is None:
        print("no CUDA GPU visible to PyTorch: the self-test, benchmark and launches need one", file=sys.stderr)
        return 2
    if args.launches:
        launches(small=args.small)
    ok = True
    if args.selftest:
        import json

        bounds = json.loads(Path(args.bounds).read_text()) if args.bounds else None
        ok = selftest(bounds=bounds)
        ok = selftest(("F(4,3)/nova", "F(6,3)/best", "F(8,3)/best"), dtype="fp32", bounds=bounds) and ok  # TF32
        ok = selftest(("F(4,3)/best", "F(8,3)/nova"), shapes=SELFTEST_SHAPES[:3], splits=3, bounds=bounds) and ok
        print("self-test:", "passed" if ok else "FAILED")
    if args.bench:
        import json

        rows = benchmark(batches=batches)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1, default=str)
    return 0 if ok else 1

