#!/bin/sh
# The GPU issue's device check in one call (under ten minutes on an H100/H200), from the repository root:
#   OUT=out sh examples/gpu_device_check.sh
# 1. self-test: every F(2..8,3) kernel (classic, nova, best) on odd shapes and ResNet-50's 3x3 layers against
#    float64 within the fp16 model's bound; the TF32 path; forced split-K;
# 2. compute-sanitizer memcheck and racecheck over every kernel path; Nsight Compute occupancy figures;
# 3. benchmark: ResNet-50 and VGG-16 3x3 layers, batch 1 and 32, fp16, against cuDNN (NCHW and channels_last).
# Bounds of step 1 need no GPU: compute them ahead with
#   python -m novagen.backends.cuda --write-bounds bounds.json   (then BOUNDS=bounds.json)
# Kernels built ahead for the GPU's arch (NOVAGEN_CACHE_DIR) are found by content hash and not rebuilt.
set -u
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0), torch.backends.cudnn.version())"
BOUNDS=${BOUNDS:-}
timeout 150 python3 -m novagen.backends.cuda --selftest ${BOUNDS:+--bounds "$BOUNDS"} 2>&1 | tee "$OUT/selftest.log"
timeout 70 compute-sanitizer --tool memcheck python3 -m novagen.backends.cuda --launches --small > "$OUT/memcheck.log" 2>&1
tail -4 "$OUT/memcheck.log"
timeout 70 compute-sanitizer --tool racecheck python3 -m novagen.backends.cuda --launches --small > "$OUT/racecheck.log" 2>&1
tail -4 "$OUT/racecheck.log"
timeout 60 ncu --kernel-name regex:fused --metrics launch__registers_per_thread,launch__occupancy_limit_registers,\
launch__occupancy_limit_shared_mem,launch__grid_size,sm__warps_active.avg.pct_of_peak_sustained_active,\
sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed,\
dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sectors_srcunit_tex_op_read.sum,gpu__time_duration.sum \
    python3 -m novagen.backends.cuda --launches > "$OUT/ncu.log" 2>&1
grep -E "fused|registers|occupancy|warps_active|hmma|throughput|sectors|duration|grid_size" "$OUT/ncu.log" | head -90
timeout 200 python3 -m novagen.backends.cuda --bench --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
