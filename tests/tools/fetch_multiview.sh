#!/usr/bin/env bash
# Fetches the 4 synchronised, calibrated views of pose2sim's single-person demo from a registry
# package, idempotently, each file checked by SHA-256 (the input of `multiview-accuracy`):
# pose2sim 0.10.49 on PyPI (BSD-3-Clause, Copyright (c) 2022 perfanalytics) ships
# Pose2Sim/Demo_SinglePerson/videos/cam01.mp4 .. cam04.mp4 (one real man on a lab treadmill,
# portrait 1080x1920 / 1088x1920, 60 fps, 100 frames; cam02 is VP9, the others H.264) and
# Pose2Sim/Demo_SinglePerson/calibration/Calib.qca.txt (Qualisys .qca XML).
# Usage: fetch_multiview.sh [DIR]   (default ~/.cache/ikol/media/pose2sim-multiview); prints DIR.
# The wheel is kept in ~/.cache/ikol/wheels ($IKOL_WHEELS), shared with fetch_demo_media.sh.
set -euo pipefail
DIR=${1:-${IKOL_MEDIA:-$HOME/.cache/ikol/media}/pose2sim-multiview}
WHEELS=${IKOL_WHEELS:-$HOME/.cache/ikol/wheels}
WHEEL=pose2sim-0.10.49-py3-none-any.whl
WHEEL_SHA=403e0dc4065898ba6a595e72a8970950310979253d60e24c2e00b16b36bf21e1
PREFIX=Pose2Sim/Demo_SinglePerson

# name in DIR | path in the wheel | SHA-256 (pinned)
FILES=(
  "cam01.mp4 $PREFIX/videos/cam01.mp4 cf4f2816c86bea4bfbea255333d8626ff32a3ecabdab8b0fb147cea9167fde3a"
  "cam02.mp4 $PREFIX/videos/cam02.mp4 94ff87cf978b8406e8aa36ab3c5362e72848994e87652f0dc7a33c315e8e0442"
  "cam03.mp4 $PREFIX/videos/cam03.mp4 b8b329f832f178f27ecb78d024d5026b96c6adb36c387bfe2c0af85eab8a11ca"
  "cam04.mp4 $PREFIX/videos/cam04.mp4 b5c0e7863fd70d008e7178d3c556b045b0ea5f78fcd61ca548a0b2e807e641f7"
  "Calib.qca.txt $PREFIX/calibration/Calib.qca.txt fd90e4bbae3278ef1dc0cdd42a34ee06bf88286f628a02c00a29407aa39e34c5"
)

ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum --quiet -c - 2>/dev/null; }

missing=()
for entry in "${FILES[@]}"; do
    read -r name member sha <<<"$entry"
    ok "$DIR/$name" "$sha" || missing+=("$entry")
done

if [ ${#missing[@]} -gt 0 ]; then
    mkdir -p "$WHEELS" "$DIR"
    if ! ok "$WHEELS/$WHEEL" "$WHEEL_SHA"; then
        echo "fetch_multiview: downloading $WHEEL (51 MB) from PyPI" >&2
        python3 -m pip download -q --no-deps -d "$WHEELS" pose2sim==0.10.49 >&2
        ok "$WHEELS/$WHEEL" "$WHEEL_SHA" || { echo "fetch_multiview: $WHEELS/$WHEEL: SHA-256 mismatch" >&2; exit 1; }
    fi
    for entry in "${missing[@]}"; do
        read -r name member sha <<<"$entry"
        python3 - "$WHEELS/$WHEEL" "$member" "$DIR/$name" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
        ok "$DIR/$name" "$sha" || { echo "fetch_multiview: $DIR/$name: SHA-256 mismatch" >&2; exit 1; }
    done
fi
echo "$DIR"
