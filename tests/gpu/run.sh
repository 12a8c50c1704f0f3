#!/usr/bin/env bash
# GPU checks of the CUDA slice path, for a machine with an NVIDIA GPU (the
# `device` tool's machine, or your own). Everything else in preba builds and
# passes without a GPU; these checks skip with a visible message there.
#
#   tests/gpu/run.sh            # from the repository root
#
# Needs: the NVIDIA driver (libcuda), the onnxruntime-gpu 1.31.1 wheel's
# library and its CUDA 13 / cuDNN libraries (PyPI nvidia-* wheels), found via
# ORT_DYLIB_PATH and LD_LIBRARY_PATH, and the model fixtures (PREBA_MODELS,
# made by `cargo xtask venv`). A machine without network needs them carried in.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "SKIPPED: no GPU (nvidia-smi finds none)"
    exit 0
fi
nvidia-smi -L
nvidia-smi --query-gpu=name,mig.mode.current,memory.total --format=csv
: "${PREBA_MODELS:=$HOME/.cache/preba/models}"
export PREBA_MODELS
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    echo "FAILED: set ORT_DYLIB_PATH to onnxruntime-gpu's libonnxruntime.so (the CPU wheel has no CUDA EP)" >&2
    exit 1
fi
# 1. The worker on one device: pinned arena, one H2D copy per batch, ORT CUDA EP;
#    outputs against the CPU runtime.
PREBA_CUDA_DEVICE="${PREBA_CUDA_DEVICE:-0}" cargo test -q -p preba-slice --test gpu -- --nocapture
# 2. preba serve on every MIG instance (or the whole GPU) with CPU
#    preprocessing, under a short load from `preba bench` that must see no
#    errors; the full KServe checks run on cpu slices in CI.
cargo build -q --bin preba
log=$(mktemp)
target/debug/preba serve --card cpu --slices cuda:all \
    --model "squeezenet1_1=$PREBA_MODELS/squeezenet1_1/1/model.onnx" \
    --http 127.0.0.1:0 --metrics 127.0.0.1:0 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    url=$(sed -n 's/^preba serve: listening on //p' "$log")
    [ -n "$url" ] && break
    kill -0 $pid 2>/dev/null || { cat "$log"; echo "FAILED: preba serve exited" >&2; exit 1; }
    sleep 1
done
[ -n "$url" ] || { cat "$log"; echo "FAILED: preba serve did not start" >&2; exit 1; }
curl -fsS "$url/v2/models/squeezenet1_1/config" | head -c 400; echo
target/debug/preba bench "$url" --model squeezenet1_1 --rate 50 --duration 5 --fail-on-error \
    fixtures/images/imagenet_*.jpg
kill -TERM $pid
wait $pid
echo "gpu: ok"
