#!/usr/bin/env bash
# Run the benchmarks on a GPU machine from the repo root; logs and JSON go to $OUT (default outputs/bench).
# Usage: bash benchmarks/run_device.sh [kernels] [dit] [generate] [generate-plain] [memory]   (default: dit generate)
# Needs diffusers importable (on the device machine: the wheels in .whl, see docs/performance.md).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
OUT=$(realpath -m "${OUT:-outputs/bench}"); mkdir -p "$OUT"; export OUT
what=${*:-dit generate}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader || true
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'cudnn', torch.backends.cudnn.version())"
cd benchmarks
for w in $what; do
  case $w in
    kernels) timeout ${T_KERNELS:-90} python3 kernels.py 2>&1 | tee "$OUT/kernels.log" ;;
    dit) timeout ${T_DIT:-400} python3 dit_forward.py ${DIT_ARGS:-} 2>&1 | tee "$OUT/dit_forward.log" ;;
    generate) timeout ${T_GEN:-240} python3 generate.py ${GEN_ARGS:-} 2>&1 | tee "$OUT/generate.log" ;;
    memory) timeout ${T_MEM:-330} python3 memory_configs.py ${MEM_ARGS:-} 2>&1 | tee "$OUT/memory_configs.log" ;;
    generate-plain) timeout ${T_GEN:-240} python3 generate.py --plain ${GEN_ARGS:-} --out "$OUT/plain" 2>&1 | tee "$OUT/generate_plain.log" ;;
  esac
done
