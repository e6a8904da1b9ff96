#!/usr/bin/env bash
# The CUDA path checked and timed in one short run (bench/gpu_check.py says what it does).
#
#   bench/gpu_check.sh prepare   here: gather into .gpu/ what the GPU machine lacks (the
#                                weights, the demo images and coco128, the pycocotools wheel)
#   bench/gpu_check.sh run       there, from the checkout with .gpu/ beside it: install the
#                                wheels into /tmp/site and run the check; the JSON goes to
#                                $OUT/gpu_check.json (else bench/results/gpu_check.json)
#   bench/gpu_check.sh dry-run   here: the same script on the CPU, tiny (checks it works)
#
# The GPU machine has PyTorch, NumPy, OpenCV and Pillow but no network: everything else
# travels in .gpu/ (about 60 MB; .gitignore keeps it out of the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SHARED=${SHARED:-../shared/testdata}
WEIGHTS_DIR=${WEIGHTS_DIR:-weights}

case "${1:-}" in
  prepare)
    rm -rf .gpu && mkdir -p .gpu/weights .gpu/darknet .gpu/coco128_val2017 .gpu/wheels
    cp "$WEIGHTS_DIR"/yolov3-tiny.cfg "$WEIGHTS_DIR"/yolov3-tiny.weights "$WEIGHTS_DIR"/coco.names .gpu/weights/
    cp "$SHARED"/darknet/*.jpg "$SHARED"/darknet/yolov3.cfg .gpu/darknet/
    cp -r "$SHARED"/coco128_val2017/images "$SHARED"/coco128_val2017/*.json .gpu/coco128_val2017/
    # The GPU machine's Python is 3.12 on x86-64 Linux.
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .gpu/wheels pycocotools==2.0.11
    du -sh .gpu
    ;;
  run)
    if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .gpu/wheels/*.whl
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONUNBUFFERED=1
    exec timeout 480 "$PYTHON" bench/gpu_check.py --data .gpu \
      --out "${OUT:-bench/results}/gpu_check.json" "${@:2}"
    ;;
  dry-run)
    if [ ! -d .gpu ]; then "$0" prepare; fi
    exec "$PYTHON" bench/gpu_check.py --data .gpu --cpu-dry-run \
      --out bench/results/gpu_check_dry_run.json "${@:2}"
    ;;
  *)
    sed -n '2,14p' "$0"
    exit 2
    ;;
esac
