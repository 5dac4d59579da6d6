#!/usr/bin/env bash
# The GPU check, end to end, in one command, on a machine with an NVIDIA GPU and this repository:
#
#     bash examples/gpu_check.sh [LOG]        # LOG defaults to gpu-check-DATE.log
#
# 1. installs the GPU extra if CuPy or numba-cuda is missing ('.[gpu,dev]' for a CUDA 12 driver,
#    '.[gpu-cuda13,dev]' for CUDA 13, as nvidia-smi reports it);
# 2. runs the whole test suite on the GPU (tests/conftest.py turns Numba's simulator on only when
#    there is no GPU, so the kernels run for real);
# 3. the speed table for foster and chollet at batch 32, 128 and 1024: our kernels and PyTorch eager
#    (examples/bench_models.py --device cuda, which skips PyTorch when it is not installed), and
#    CuPy's own expressions (minivae bench --kernels never);
# 4. each kernel of one step timed alone (examples/bench_kernels.py: GPU ms, host µs per launch,
#    achieved GB/s against the card's);
# 5. one epoch of each preset on the GPU (test loss; foster's is in docs/gpu.md).
# Everything goes to the log. MNIST must be there already: the run reads it from $MINIVAE_DATA or
# ~/.cache/minivae (python -m minivae data fetches it where there is a network).
#
# Last run on a GPU: never. Its steps repeat those of the H100 run at commit e935342 (2026-11-24);
# docs/gpu.md has that run's figures and what has not run on a GPU since.
set -u -o pipefail
cd "$(dirname "$0")/.."
LOG=${1:-gpu-check-$(date +%Y%m%d-%H%M%S).log}
STEPS=${STEPS:-50}
exec > >(tee "$LOG") 2>&1
failed=0
step() { echo; echo "==== $* ($(date +%H:%M:%S))"; }
run() { echo "+ $*"; "$@" || { echo "!!!! FAILED ($?): $*"; failed=1; }; }

step "the machine"
run nvidia-smi
cuda_major=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
if ! python -c "import cupy, numba_cuda, pytest" 2>/dev/null; then
    extra=$([ "${cuda_major:-12}" -ge 13 ] && echo gpu-cuda13 || echo gpu)
    run python -m pip install ".[$extra,dev]"
fi
run python -c "import sys, numpy, cupy, numba, numba_cuda
print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| cupy', cupy.__version__,
      '| numba', numba.__version__, '| numba-cuda', numba_cuda.__version__)
print('GPU:', cupy.cuda.runtime.getDeviceProperties(0)['name'].decode())"

step "the test suite on the GPU"
run python -m pytest -q -p no:cacheprovider

step "speed: our kernels and PyTorch eager (median of 3 turns, $STEPS steps)"
run python examples/bench_models.py --device cuda --model foster chollet --batch-size 32 128 1024 \
    --steps "$STEPS" --repeats 3

step "speed: CuPy's own expressions (--kernels never)"
for model in foster chollet; do
    for batch in 32 128 1024; do
        run python -m minivae bench --device cuda --kernels never --model "$model" \
            --batch-size "$batch" --steps "$STEPS"
    done
done

step "each kernel of one step alone: GPU ms, host µs per launch, achieved GB/s"
for setting in "foster 1024" "foster 32" "chollet 1024"; do
    set -- $setting
    run python examples/bench_kernels.py --model "$1" --batch-size "$2"
done

step "one epoch of each preset on the GPU"
for model in foster chollet; do
    start=$(date +%s)
    run python -m minivae train --model "$model" --epochs 1 --device cuda --no-progress \
        --out "runs/gpu-check-$model"
    echo "$model: one epoch in $(( $(date +%s) - start )) s (including start-up)"
done

step "done: $([ $failed = 0 ] && echo 'every step passed' || echo 'SOME STEPS FAILED, see above'); log in $LOG"
exit $failed
