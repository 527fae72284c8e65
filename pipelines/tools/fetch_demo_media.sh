#!/usr/bin/env bash
# Fetches the real demo clip from a registry package, idempotently, and checks its SHA-256:
# pose2sim 0.10.49 on PyPI (BSD-3-Clause, Copyright (c) 2022 perfanalytics) ships
# Pose2Sim/Demo_SinglePerson/videos/cam01.mp4: one real man on a lab treadmill, full body,
# 1080x1920 portrait, 60 fps, 100 frames, H.264.
# Usage: fetch_demo_media.sh [DIR]   (default ~/.cache/ikol/media); prints the clip's path.
set -euo pipefail
DIR=${1:-${IKOL_MEDIA:-$HOME/.cache/ikol/media}}
WHEELS=${IKOL_WHEELS:-$HOME/.cache/ikol/wheels}
WHEEL=pose2sim-0.10.49-py3-none-any.whl
WHEEL_SHA=403e0dc4065898ba6a595e72a8970950310979253d60e24c2e00b16b36bf21e1
CLIP=$DIR/pose2sim/cam01.mp4
CLIP_SHA=cf4f2816c86bea4bfbea255333d8626ff32a3ecabdab8b0fb147cea9167fde3a

ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum --quiet -c - 2>/dev/null; }

if ! ok "$CLIP" "$CLIP_SHA"; then
    mkdir -p "$WHEELS" "$DIR/pose2sim"
    if ! ok "$WHEELS/$WHEEL" "$WHEEL_SHA"; then
        echo "fetch_demo_media: downloading $WHEEL (51 MB) from PyPI" >&2
        python3 -m pip download -q --no-deps -d "$WHEELS" pose2sim==0.10.49 >&2
        ok "$WHEELS/$WHEEL" "$WHEEL_SHA" || { echo "fetch_demo_media: $WHEELS/$WHEEL: SHA-256 mismatch" >&2; exit 1; }
    fi
    python3 - "$WHEELS/$WHEEL" "$CLIP" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("Pose2Sim/Demo_SinglePerson/videos/cam01.mp4") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    ok "$CLIP" "$CLIP_SHA" || { echo "fetch_demo_media: $CLIP: SHA-256 mismatch" >&2; exit 1; }
fi
echo "$CLIP"
