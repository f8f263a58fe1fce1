#!/usr/bin/env bash
# Pack flash-attn-4 and its dependencies (quack-kernels, the CuTe DSL) for a GPU machine that has torch but no
# network, for Python 3.12 / x86-64 / CUDA 13 (the device machines; their image already has cuda-bindings,
# cuda-pathfinder, einops and protobuf). Writes build/fa4-site.tar.xz, a ready site-packages folder (about
# 69 MB; the CuTe DSL compiler library is most of it), and its 23 MB parts build/fa4-site.tar.xz.partNN.
#   bash benchmarks/pack_fa4.sh
# Carry the parts in separate calls (the repo plus one part stays under a 64 MiB carry limit), then on the GPU
# machine unpack into a folder named site-packages (quack keys the functions it compiles by their source
# unless they live under a "site-packages" path, and cutlass-dsl's cannot be keyed that way):
#   S=/tmp/fa4/site-packages; mkdir -p $S && cat build/fa4-site.tar.xz.part* | xz -dc | tar xf - -C $S
#   export PYTHONPATH=$S/nvidia_cutlass_dsl/dsl_packages:$S:$PYTHONPATH   (the .pth file of nvidia-cutlass-dsl
#   is not read from a PYTHONPATH folder, hence the first entry)
set -eu
W=$(mktemp -d); S=$(mktemp -d)
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
pip_dl() { python3 -m pip download -q --no-deps "${TARGET[@]}" -d "$W" "$@"; }
pip_dl --pre "flash-attn-4==4.0.0b36" "nvidia-cutlass-dsl==4.8.1" "nvidia-cutlass-dsl-libs-base==4.8.1" \
  "nvidia-cutlass-dsl-libs-core==4.8.1" "nvidia-cutlass-dsl-libs-cu13==4.8.1" "quack-kernels==0.6.5" \
  "apache-tvm-ffi<0.2" torch-c-dlpack-ext
# one wheel at a time: pip --target would replace the shared nvidia_cutlass_dsl/ folder wheel by wheel
for w in "$W"/*.whl; do T=$(mktemp -d); python3 -m pip install -q --no-deps --no-compile "${TARGET[@]}" --target "$T" "$w"; cp -rn "$T"/. "$S"/; rm -rf "$T"; done
rm -rf "$S"/nvidia_cutlass_dsl/cu13/lib/stubs  # aarch64 / QNX stubs
mkdir -p build && tar cf - -C "$S" . | xz -9 -T0 > build/fa4-site.tar.xz
rm -f build/fa4-site.tar.xz.part*; split -b 23000000 -d build/fa4-site.tar.xz build/fa4-site.tar.xz.part
rm -rf "$W" "$S"; ls -la build/fa4-site.tar.xz*
