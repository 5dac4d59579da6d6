"""GPU training speed in one process: minivae with our kernels (launched by CuPy, and by Numba),
with CuPy's own expressions (`use_kernels("never")`), and PyTorch eager on the same model, taking turns.

examples/bench_models.py runs each side in a process of its own, which on a GPU costs a CUDA
context and every kernel's compilation per process; here the three share one process and take
turns --rounds times, and each figure is the median of its turns. Each turn is `minivae.bench.run`
(or bench_models.torch_bench): warm-up steps, then --steps timed training steps on shuffled MNIST
batches, ending on `.item()` so the GPU has finished. Prints a table, then one JSON line per row;
then, where PyTorch is installed, what the GPU itself did per step (CUPTI through torch.profiler):
its busy milliseconds (the kernels' and copies' own time) and how many kernels and copies ran.

    python examples/gpu_speed.py                                  # both presets, batch 32 128 1024
    python examples/gpu_speed.py --model foster --batch-size 1024 --steps 50 --rounds 5
"""
import argparse
import contextlib
import json
import statistics

from bench_models import torch_bench

from minivae import backend, bench, kernels

# kernels: our kernels, launched by CuPy (kernels/launch.py); numba: the same kernels launched by
# Numba's own launcher; never: CuPy's own expressions; torch: PyTorch eager
SIDES = ("kernels", "numba", "never", "torch")


@contextlib.contextmanager
def minivae_side(side):
    """Run minivae as `side` ("kernels", "numba" or "never") inside the block."""
    through_cupy = kernels.LAUNCH_THROUGH_CUPY
    kernels.LAUNCH_THROUGH_CUPY = side == "kernels"
    try:
        with backend.use_kernels("never" if side == "never" else "auto"):
            yield
    finally:
        kernels.LAUNCH_THROUGH_CUPY = through_cupy


def one_turn(side, model, batch_size, steps):
    """images/s of one turn of `side` (see SIDES)."""
    if side == "torch":
        return torch_bench(model, batch_size, steps, "cuda", repeats=1)["images_per_s"]
    with minivae_side(side):
        return bench.run(model, batch_size, steps, device="cuda", repeats=1)["images_per_s"]


def gpu_activity(side, model, batch_size, steps):
    """(GPU busy ms per step, GPU activities per step) of `side` over `steps` training steps."""
    from torch.profiler import ProfilerActivity, profile
    with minivae_side(side), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        bench.run(model, batch_size, steps, device="cuda", warmup=0, repeats=1)
    events = [e for e in profiler.key_averages() if e.self_device_time_total > 0]
    return (sum(e.self_device_time_total for e in events) / 1000 / steps,
            sum(e.count for e in events) / steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["foster", "chollet"])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128, 1024])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import torch
        sides = SIDES if torch.cuda.is_available() else SIDES[:3]
    except ImportError:
        torch, sides = None, SIDES[:3]
    cupy = backend.require_cuda()
    gpu = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"GPU: {gpu}; CPU: {bench.cpu_model()}; {bench.machine()['date']}; "
          f"{args.steps} steps a turn, medians of {args.rounds} turns; CuPy {cupy.__version__}, "
          f"PyTorch {torch.__version__ if torch else '-'}")
    print(f"{'model':<8} {'batch':>5} " + " ".join(f"{side + ' img/s':>13}" for side in sides)
          + "  kernels/numba  kernels/never" + ("  kernels/torch" if "torch" in sides else ""))
    rows = []
    for model in args.model:
        for batch_size in args.batch_size:
            turns = {side: [] for side in sides}
            for _ in range(args.rounds):
                for side in sides:
                    turns[side].append(one_turn(side, model, batch_size, args.steps))
            row = {"model": model, "batch_size": batch_size, "gpu": gpu, "steps": args.steps,
                   "rounds": args.rounds, **{f"{side}_images_per_s": round(statistics.median(t), 1)
                                             for side, t in turns.items()}}
            for other in ("numba", "never"):
                row[f"kernels_over_{other}"] = round(row["kernels_images_per_s"] / row[f"{other}_images_per_s"], 2)
            line = f"{model:<8} {batch_size:>5} " + " ".join(
                f"{row[side + '_images_per_s']:>13.1f}" for side in sides) + \
                f"  {row['kernels_over_numba']:>13.2f}  {row['kernels_over_never']:>13.2f}"
            if "torch" in sides:
                row["kernels_over_torch"] = round(row["kernels_images_per_s"] / row["torch_images_per_s"], 2)
                line += f"  {row['kernels_over_torch']:>13.2f}"
            print(line, flush=True)
            rows.append(row)
    for row in rows:
        print(json.dumps(row))
    if "torch" not in sides:
        return
    print("what the GPU did per step (CUPTI): busy ms, kernels and copies")
    for model in args.model:
        for batch_size in args.batch_size:
            for side in sides[:3]:
                try:
                    busy, activities = gpu_activity(side, model, batch_size, args.steps)
                    print(f"{model:<8} {batch_size:>5} {side:<8} {busy:8.2f} ms {activities:7.0f}", flush=True)
                except Exception as exc:  # the profiler is an extra: say why it failed, go on
                    print(f"{model:<8} {batch_size:>5} {side:<8} profiler failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
