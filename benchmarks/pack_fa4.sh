#!/usr/bin/env bash
# Pack flash-attn-4 and its dependencies for a GPU machine that has torch but no network, for
# Python 3.12 / x86-64 / CUDA 13 (the device machines). Writes build/fa4-site.tar.xz: a ready
# site-packages folder (about 74 MB; the CuTe DSL compiler library is most of it).
#   bash benchmarks/pack_fa4.sh
# On the GPU machine:  mkdir -p S && xz -dc fa4-site.tar.xz | tar xf - -C S
#   export PYTHONPATH=S/nvidia_cutlass_dsl/dsl_packages:S:$PYTHONPATH   (the .pth file of nvidia-cutlass-dsl
#   is not read from a PYTHONPATH folder, hence the first entry)
# With a carry limit below the archive's size, `split -b 40000000` it, carry the parts in separate calls
# into an ignored folder (build/), and `cat` them back together before unpacking.
set -eu
W=$(mktemp -d); S=$(mktemp -d)
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
pip_dl() { python3 -m pip download -q --no-deps "${TARGET[@]}" -d "$W" "$@"; }
pip_dl --pre "flash-attn-4>=4.0.0b30" "nvidia-cutlass-dsl==4.8.1" "nvidia-cutlass-dsl-libs-base==4.8.1" \
  "nvidia-cutlass-dsl-libs-core==4.8.1" "nvidia-cutlass-dsl-libs-cu13==4.8.1" quack-kernels "apache-tvm-ffi<0.2" \
  torch-c-dlpack-ext einops "cuda-bindings>=13,<14" cuda-pathfinder protobuf
# one wheel at a time: pip --target would replace the shared nvidia_cutlass_dsl/ folder wheel by wheel
for w in "$W"/*.whl; do T=$(mktemp -d); python3 -m pip install -q --no-deps --no-compile "${TARGET[@]}" --target "$T" "$w"; cp -rn "$T"/. "$S"/; rm -rf "$T"; done
mkdir -p build && tar cf - -C "$S" . | xz -9e -T0 > build/fa4-site.tar.xz
rm -rf "$W" "$S"; ls -la build/fa4-site.tar.xz
