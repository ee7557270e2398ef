#!/usr/bin/env bash
# Everything the Triton backend needs a GPU for, in one run (for the `device` tool's 30-minute budget):
# the CUDA tests, the adder layer benchmark (ResNet-20 and ResNet-18 shapes) and the ResNet-20 training
# step. Writes logs and tables to $OUT (default: gpu-check/). Run from the repository root:
#     bash scripts/gpu_check.sh                 # autotuned kernels
#     SLAC_TRITON_AUTOTUNE=0 bash scripts/gpu_check.sh    # first config only (compiles much less)
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=src:.${PYTHONPATH:+:$PYTHONPATH}  # the library, and tools/ beside it
unset TRITON_INTERPRET
python=${PYTHON:-python}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/device.txt"

status=0
# the cuda-marked tests and every Triton test on the GPU (small shapes, all strides, half types)
$python -m pytest tests/test_adder_triton.py -q -p no:cacheprovider 2>&1 | tee "$OUT/tests.txt" | tail -5 \
    || status=1
# the launch without the autotuner (SLAC_TRITON_AUTOTUNE=0 is read at import: a process of its own)
SLAC_TRITON_AUTOTUNE=0 $python -m pytest tests/test_adder_triton.py -q -p no:cacheprovider \
    -k "matches_reference or half or large" 2>&1 | tee "$OUT/tests-no-autotune.txt" | tail -3 || status=1
$python -m tools.sass --first 2>&1 | tee "$OUT/sass.txt" | tail -8 || status=1
$python -m slac.cli bench adder --device cuda --repeats 5 \
    --methods official triton conv2d conv2d-tf32 conv2d-bf16 --json "$OUT/adder.json" 2>&1 \
    | tee "$OUT/adder.txt" | tail -30 || status=1
$python -m slac.cli bench step --device cuda --batch 256 --models resnet20 --steps 5 2>&1 \
    | tee "$OUT/step.txt" | tail -10 || status=1
exit $status
