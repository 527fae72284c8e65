#!/usr/bin/env bash
# The CUDA toolkit for `--features cuda` builds, from NVIDIA's PyPI wheels only (no GPU, no
# driver, no apt), pinned and hash-checked, unpacked into one CUDA_ROOT-shaped folder:
#   DIR/bin/nvcc, DIR/nvvm/bin/cicc, DIR/include (CUDA, CCCL, cuBLAS, cuRAND, NCCL headers),
#   DIR/lib (the libraries with the unversioned names the linker asks for),
#   DIR/lib/stubs/libcuda.so (a link-time stand-in for the driver, see below).
# Idempotent: does nothing when DIR/.complete names this script's pin list. Prints DIR.
#
#   tests/tools/cuda-toolkit.sh [DIR]   (default ${IKOL_CUDA:-~/.cache/ikol/cuda-13.0})
#
# Why CUDA 13.0 and not 12.9: every `nvidia-cuda-nvcc-cu12` wheel (checked 12.1.105, 12.6.85,
# 12.8.93, 12.9.41, 12.9.86) ships only ptxas and libnvvm, no `nvcc`, `cicc` or `cudafe++`, so
# candle-kernels' build script cannot run with them. CUDA 13's wheels (`nvidia-cuda-nvcc`,
# `nvidia-nvvm`, `nvidia-cuda-crt`, ...) are the first with the whole compiler and share one
# tree (nvidia/cu13). A GPU machine running these builds needs driver R580 or newer.
#
# The driver stub: cudarc (under candle) links libcuda dynamically, and the driver library is
# not in any wheel (it comes with the NVIDIA driver). Like NVIDIA's own lib64/stubs/libcuda.so,
# the stand-in exports the driver API's names (every `cu*` function cuda.h declares, before and
# after its versioning macros) with the real soname libcuda.so.1, so a binary links here and
# loads the real driver on a GPU machine. Every stub function returns CUDA_ERROR_STUB_LIBRARY
# (34), so a binary run against the stub (DIR/lib/stubs-run) reports "no CUDA device" cleanly.
set -euo pipefail
DIR=${1:-${IKOL_CUDA:-$HOME/.cache/ikol/cuda-13.0}}

# name==version --hash=sha256:... (observed on PyPI 2026-12-07; pip refuses any other file).
PINS='nvidia-cuda-nvcc==13.0.88 --hash=sha256:56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03
nvidia-nvvm==13.0.88 --hash=sha256:c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0
nvidia-cuda-crt==13.0.88 --hash=sha256:2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4
nvidia-cuda-runtime==13.0.96 --hash=sha256:7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
nvidia-cuda-nvrtc==13.0.88 --hash=sha256:ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575
nvidia-cuda-cccl==13.0.85 --hash=sha256:e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649
nvidia-cublas==13.0.2.14 --hash=sha256:0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c
nvidia-curand==10.4.0.35 --hash=sha256:1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc
nvidia-nccl-cu13==2.28.9 --hash=sha256:e4553a30f34195f3fa1da02a6da3d6337d28f2003943aa0a3d247bbc25fefc42'

if [ -f "$DIR/.complete" ] && [ "$(cat "$DIR/.complete")" = "$PINS" ]; then
    echo "$DIR"
    exit 0
fi

# Work beside DIR (same file system: the tree is moved into place, not copied; peak disk about
# 870 MB of wheels + 1.4 GB unpacked).
mkdir -p "$(dirname "$DIR")"
WORK=$(mktemp -d "$(dirname "$DIR")/.ikol-cuda.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "$PINS" > "$WORK/requirements.txt"
echo "cuda-toolkit: downloading the CUDA 13.0 wheels (about 870 MB) from PyPI" >&2
# Fixed platform tags: the download does not depend on the local Python's tags.
python3 -m pip download -q --no-deps --require-hashes --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_18_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 \
    -r "$WORK/requirements.txt" -d "$WORK/wheels" >&2

rm -rf "$DIR.partial"
for w in "$WORK"/wheels/*.whl; do
    unzip -q -o "$w" -d "$WORK/tree" -x '*.dist-info/*'
    rm -f "$w"
done
# nvidia/cu13 is already a CUDA_ROOT; NCCL comes in its own folder (nvidia/nccl).
mv "$WORK/tree/nvidia/cu13" "$DIR.partial"
cp -a "$WORK/tree/nvidia/nccl/include/." "$DIR.partial/include/"
cp -a "$WORK/tree/nvidia/nccl/lib/." "$DIR.partial/lib/"
find "$DIR.partial" -name '__init__.py' -delete
rm -rf "$DIR.partial/lib/cmake" "$DIR.partial/.metadata"

# The unversioned names `-lcudart -lcublas ...` resolve to.
(cd "$DIR.partial/lib" && for f in lib*.so.*; do
    base=${f%%.so.*}
    case $base in *.alt) continue ;; esac
    [ -e "$base.so" ] || ln -s "$f" "$base.so"
done)

# The driver stub (see the header): names from cuda.h, expanded through its own macros.
mkdir -p "$DIR.partial/lib/stubs" "$DIR.partial/lib/stubs-run"
names=$(grep -oE 'CUresult CUDAAPI cu[A-Za-z0-9_]+' "$DIR.partial/include/cuda.h" | awk '{print $3}' | sort -u)
{
    echo '#include <cuda.h>'
    for n in $names; do echo "IKOL_NAME $n"; done
} > "$WORK/names.c"
expanded=$(gcc -E -P -I"$DIR.partial/include" "$WORK/names.c" | awk '$1 == "IKOL_NAME" {print $2}')
{
    echo '/* Link-time stand-in for the NVIDIA driver library: see tests/tools/cuda-toolkit.sh. */'
    for n in $(printf '%s\n' $names $expanded | sort -u); do
        echo "int $n(void) { return 34; /* CUDA_ERROR_STUB_LIBRARY */ }"
    done
} > "$WORK/libcuda_stub.c"
gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$DIR.partial/lib/stubs/libcuda.so" "$WORK/libcuda_stub.c"
ln -s ../stubs/libcuda.so "$DIR.partial/lib/stubs-run/libcuda.so.1"

"$DIR.partial/bin/nvcc" --version | grep -q 'release 13.0' || {
    echo "cuda-toolkit: $DIR.partial/bin/nvcc does not run or is not CUDA 13.0" >&2; exit 1; }
echo "$PINS" > "$DIR.partial/.complete"
rm -rf "$DIR"
mv "$DIR.partial" "$DIR"
echo "$DIR"
