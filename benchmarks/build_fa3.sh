#!/usr/bin/env bash
# Build FlashAttention-3 (the Hopper kernels of Dao-AILab/flash-attention, package flash_attn_3) as a wheel with
# only what flashi2v's self-attention uses: forward, head dim 128, bf16, sm_90. Everything else is switched
# off through the package's own FLASH_ATTENTION_DISABLE_* flags, which takes the build from hours to minutes.
#   git clone --recursive https://github.com/Dao-AILab/flash-attention
#   bash benchmarks/build_fa3.sh flash-attention [WHEEL_DIR]        # about 2 minutes on 16 cores
# The checkout needs its csrc/cutlass submodule (hence --recursive); measured with flash-attention 0251105.
# Needs nvcc >= 12.3, torch, ninja, setuptools and wheel. With CUDA 13 (measured) or 12.8 it builds offline;
# with other 12.x releases the package's setup.py downloads NVIDIA's nvcc 12.6 / ptxas 12.8 first.
# Then: pip install WHEEL_DIR/flash_attn_3-*.whl, and pipe.enable_fast_path() picks it when flash-attn-4 is
# not installed (flashi2v.fast_path.recipe.best_attention_backend).
set -euo pipefail
SRC=$(realpath "$1"); WHEELS=$(realpath -m "${2:-dist}"); mkdir -p "$WHEELS"
[ -f "$SRC/hopper/setup.py" ] && [ -f "$SRC/README.md" ] || { echo "error: $SRC is not a flash-attention checkout (no hopper/setup.py)"; exit 2; }
[ -d "$SRC/csrc/cutlass/include/cute" ] || { echo "error: $SRC/csrc/cutlass is empty: clone with --recursive or run git submodule update --init csrc/cutlass"; exit 2; }
export FLASH_ATTENTION_FORCE_BUILD=TRUE MAX_JOBS=${MAX_JOBS:-$(nproc)} NVCC_THREADS=${NVCC_THREADS:-4}
for f in BACKWARD SPLIT PAGEDKV APPENDKV LOCAL SOFTCAP PACKGQA FP16 FP8 VARLEN HDIM64 HDIM96 HDIM192 HDIM256 \
         HDIMDIFF64 HDIMDIFF192 SM80; do export FLASH_ATTENTION_DISABLE_$f=TRUE; done
# setup.py runs "git submodule update" unchecked; without a git binary that call itself would fail
if ! command -v git >/dev/null; then B=$(mktemp -d); printf '#!/bin/sh\nexit 0\n' > "$B/git"; chmod +x "$B/git"; PATH=$B:$PATH; fi
cd "$SRC/hopper"
python3 -m pip wheel --no-build-isolation --no-deps -w "$WHEELS" .
ls -la "$WHEELS"/flash_attn_3-*.whl
