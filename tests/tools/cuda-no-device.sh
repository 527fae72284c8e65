#!/usr/bin/env bash
# The CUDA build on a machine without a GPU (make cuda-build): the binaries start (the CUDA
# libraries from the wheels through their run path, the driver stub of
# tests/tools/cuda-toolkit.sh in place of the driver) and refuse `--device cuda` (and
# `ikolbackbone device=cuda` in a pipeline) with an error naming the device, exit status 1, no
# panic.
#   tests/tools/cuda-no-device.sh BIN_DIR CUDA_DIR
set -euo pipefail
BIN=$1
CUDA=$2
# The CUDA libraries come through the binaries' run path (make cuda-build); only the driver is
# stood in for.
export LD_LIBRARY_PATH=$CUDA/lib/stubs-run${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
check() {
    local name=$1; shift
    set +e
    out=$("$@" 2>&1 </dev/null)
    rc=$?
    set -e
    if [ "$rc" != 1 ] || ! grep -q "CUDA device 0 requested" <<<"$out" || grep -q panicked <<<"$out"; then
        echo "cuda-no-device: $name: expected a clean refusal (exit 1, 'CUDA device 0 requested'), got exit $rc:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "cuda-no-device: $name: $(grep -m1 'CUDA device 0 requested' <<<"$out")"
}
check "ikol-train --device cuda" "$BIN/ikol-train" --device cuda train --print-default
check "ikol backbone --device cuda" "$BIN/ikol" backbone --checkpoint /nonexistent.pth \
    --image "$(dirname "$0")/../../docs/body-model.png" --device cuda --output /dev/null
# The element: ikolbackbone device=cuda fails the pipeline at start with GStreamer's error.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
pipeline=$(mktemp --suffix=.pipeline)
report=$(mktemp)
trap 'rm -f "$pipeline" "$report"' EXIT
cat > "$pipeline" <<'PIPE'
# Variables:
#   CKPT  a heatmap checkpoint
videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=64
  ! ikolcrop roi=0,0,64,64 detector=none
  ! ikolbackbone model=heatmap checkpoint=${CKPT} device=cuda ! fakesink
PIPE
check "ikolbackbone device=cuda" "$BIN/ikol" run "$pipeline" \
    CKPT="$ROOT/elements/backbone/tests/data/ikol24_r34w2.pth"
# gpu-check on this machine: every GPU line SKIP with the reason, exit 0, the JSON written.
"$BIN/gpu-check" --quick --out "$report" </dev/null | sed 's/^/cuda-no-device: gpu-check: /'
grep -q '"cuda_device": false' "$report" && grep -q 'CUDA_ERROR_STUB_LIBRARY' "$report" || {
    echo "cuda-no-device: gpu-check did not report the missing device:" >&2; cat "$report" >&2; exit 1; }
