#!/usr/bin/env bash
# The GPU check, end to end, in one command, on a machine with an NVIDIA GPU and this repository:
#
#     bash examples/gpu_check.sh [DIR]          # DIR (default gpu-check-DATE) gets the logs
#     QUICK=1 bash examples/gpu_check.sh DIR    # the short mode: 5 minutes on an H200 machine
#
# 1. installs the GPU extra if CuPy or numba-cuda is missing ('.[gpu,dev]' for a CUDA 12 driver,
#    '.[gpu-cuda13,dev]' for CUDA 13, as nvidia-smi reports it);
# 2. one epoch of each preset ($EPOCH_MODELS, default "foster chollet") on the GPU (DIR/epochs.log:
#    test loss, images/s; and each run's reconstructions), while the whole test suite runs on the
#    GPU beside it (DIR/suite.log; tests/conftest.py turns Numba's simulator on only when there is
#    no GPU, so the kernels run for real). The epochs' images/s are taken with the suite running
#    beside them: their losses are the point, examples/gpu_speed.py's table the speed;
# 3. the speed table, in one process: our kernels (launched by CuPy, and by Numba), CuPy's own
#    expressions (--kernels never) and PyTorch eager, at batch 32, 128 and 1024 (examples/gpu_speed.py);
# 4. each kernel of one step timed alone (examples/bench_kernels.py: GPU ms, host µs per launch,
#    achieved GB/s);
# 5. where the host's time goes in a GPU step (cProfile).
# Everything goes to DIR/check.log too. MNIST must be there already: the run reads it from
# $MINIVAE_DATA or ~/.cache/minivae (python -m minivae data fetches it where there is a network).
set -u -o pipefail
cd "$(dirname "$0")/.."
DIR=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
QUICK=${QUICK:-0}
mkdir -p "$DIR"
exec > >(tee "$DIR/check.log") 2>&1
EPOCH_MODELS=${EPOCH_MODELS:-foster chollet}
if [ "$QUICK" = 1 ]; then   # each may be set beforehand, as STEPS and ROUNDS of the speed table
    SUITE_LIMIT=${SUITE_LIMIT:-210} EPOCH_LIMIT=${EPOCH_LIMIT:-140} STEPS=${STEPS:-20} ROUNDS=${ROUNDS:-2}
    KERNEL_REPEATS=${KERNEL_REPEATS:-5}
else
    SUITE_LIMIT=${SUITE_LIMIT:-1800} EPOCH_LIMIT=${EPOCH_LIMIT:-1800} STEPS=${STEPS:-50} ROUNDS=${ROUNDS:-3}
    KERNEL_REPEATS=${KERNEL_REPEATS:-20}
fi
PY=${PYTHON:-python3}
failed=0
step() { echo; echo "==== $* ($(date +%H:%M:%S))"; }
run() { echo "+ $*"; "$@"; local rc=$?; [ $rc = 0 ] || { echo "!!!! FAILED ($rc): $*"; failed=1; }; return $rc; }

step "the machine"
run nvidia-smi
cuda_major=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
if ! "$PY" -c "import cupy, numba_cuda, pytest" 2>/dev/null; then
    extra=$([ "${cuda_major:-12}" -ge 13 ] && echo gpu-cuda13 || echo gpu)
    run "$PY" -m pip install ".[$extra,dev]"
fi
run "$PY" -c "import sys, numpy, cupy, numba, numba_cuda
print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| cupy', cupy.__version__,
      '| numba', numba.__version__, '| numba-cuda', numba_cuda.__version__)
print('GPU:', cupy.cuda.runtime.getDeviceProperties(0)['name'].decode(),
      '| driver', cupy.cuda.runtime.driverGetVersion(), '| runtime', cupy.cuda.runtime.runtimeGetVersion())"

step "one epoch of each preset on the GPU (DIR/epochs.log), beside the test suite (DIR/suite.log)"
(
    for model in $EPOCH_MODELS; do
        start=$(date +%s)
        echo "+ $PY -m minivae train --model $model --epochs 1 --device cuda --no-progress"
        timeout "$EPOCH_LIMIT" "$PY" -m minivae train --model "$model" --epochs 1 --device cuda \
            --no-progress --out "runs/gpu-check-$model"
        echo "$model: exit $?, one epoch in $(( $(date +%s) - start )) s (start-up included)"
        cp "runs/gpu-check-$model/reconstructions.png" "$DIR/$model-reconstructions.png"
    done
) > "$DIR/epochs.log" 2>&1 &
epochs=$!
workers=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 8")
echo "+ $PY -m pytest -rs -p no:cacheprovider $workers"
timeout "$SUITE_LIMIT" "$PY" -m pytest -rs -p no:cacheprovider $workers > "$DIR/suite.log" 2>&1
rc=$?
tail -n 15 "$DIR/suite.log"
[ $rc = 0 ] || { echo "!!!! FAILED ($rc): the test suite"; failed=1; }
wait $epochs
cat "$DIR/epochs.log"
[ "$(grep -c "exit 0," "$DIR/epochs.log")" = "$(echo $EPOCH_MODELS | wc -w)" ] || { echo "!!!! FAILED: an epoch"; failed=1; }

step "speed: our kernels, CuPy's own expressions and PyTorch eager"
run "$PY" examples/gpu_speed.py --steps "$STEPS" --rounds "$ROUNDS"

step "each kernel of one step alone: GPU ms, host µs per launch, achieved GB/s"
run "$PY" examples/bench_kernels.py --model foster --batch-size 1024 --repeats "$KERNEL_REPEATS"

step "where the host's time goes in a GPU step (cProfile of 100 foster steps at batch 32)"
run "$PY" -c "import cProfile, pstats; from minivae import bench
bench.run('foster', 32, 5, device='cuda', repeats=1)
cProfile.run(\"bench.run('foster', 32, 100, device='cuda', warmup=0, repeats=1)\", '$DIR/host.prof')
pstats.Stats('$DIR/host.prof').sort_stats('tottime').print_stats(25)
pstats.Stats('$DIR/host.prof').sort_stats('cumulative').print_stats('minivae', 30)"

step "done: $([ $failed = 0 ] && echo 'every step passed' || echo 'SOME STEPS FAILED, see above'); logs in $DIR"
exit $failed
