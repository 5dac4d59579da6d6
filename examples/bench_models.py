"""Training speed of the book VAEs, minivae against PyTorch on the same model, in one run.

For each thread count, preset and batch size: `minivae bench` times training steps on real MNIST
(images/s, ms per step, minor page faults per step, peak memory), then the PyTorch twin of
examples/torch_reference.py, starting from the same weights, times the same steps on real MNIST
batches with as many threads. With --synthetic, and always for foster-faces (whose 3×128×128
faces no data set here holds), both time random images of the model's shape instead. Each runs in a process of its own, so each peak memory is its own.
The two take turns --repeats times and the medians are reported, so a noisy machine slows both
alike. `ratio` is minivae's median images/s over PyTorch's (above 1: minivae is faster). Without
PyTorch only minivae is timed. The table's head names the CPU (its model name from /proc/cpuinfo),
the usable cores, the date and the libraries' versions; each result is also printed as one JSON
line, which names the CPU and the date again.

The child processes run without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (some machines set them,
and they slow a current NumPy by 15-25%; a user's machine has neither), and with
OMP_NUM_THREADS set to the thread count; the BLAS that ran and its thread count are printed.

    python examples/bench_models.py                          # both presets, batches 32 and 128
    python examples/bench_models.py --threads 1 2 --model chollet --batch-size 16 32 128
    python examples/bench_models.py --model foster --batch-size 32 --steps 50
    python examples/bench_models.py --model foster-faces --batch-size 32 --steps 5
    python examples/bench_models.py --device cuda --batch-size 32 128 1024
    python examples/bench_models.py --baseline /tmp/before   # against another checkout, in the same turns
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import minivae
from minivae import bench, rng
from minivae.train import TrainConfig, build


SYNTHETIC_ONLY = {"foster-faces"}   # presets whose images no data set here holds


def torch_bench(model, batch_size, steps, device, synthetic=False, warmup=10, repeats=5):
    """PyTorch's training images/s (the median of `repeats` runs of `steps`), minor page faults
    per step and peak memory on `model`'s twin, on shuffled MNIST batches (or random images)."""
    import torch
    from torch_reference import torch_twin

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))))
    net, _, _ = build(TrainConfig(model=model, batch_size=batch_size).resolved())
    twin, loss_fn, optimizer = torch_twin(model, net)
    twin.to(device)
    images = bench.training_images(batch_size, synthetic=synthetic, image_shape=net.input_shape)
    order = rng.generator("bench").permutation(len(images))
    batches = [torch.tensor(images[order[i * batch_size:(i + 1) * batch_size]]).to(device)
               for i in range(min(warmup + steps * repeats, len(images) // batch_size))]

    def step(x):
        optimizer.zero_grad()
        loss = loss_fn(x, *twin(x))
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the GPU

    for i in range(warmup):
        step(batches[i % len(batches)])
    seconds, faults, i = [], bench.minor_faults(), warmup
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step(batches[i % len(batches)])
            i += 1
        seconds.append(time.perf_counter() - start)
    faults = (bench.minor_faults() - faults) / (steps * repeats)
    return {"images_per_s": round(batch_size * steps / float(np.median(seconds)), 1),
            "minor_faults_per_step": round(faults, 1), "peak_rss_mb": round(bench.peak_rss_mb(), 1),
            "torch_threads": torch.get_num_threads()}


def child_environment(threads):
    """This environment without the OPENBLAS_* tuning variables, with `threads` threads for both."""
    env = {k: v for k, v in os.environ.items() if k not in bench.OPENBLAS_TUNING}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def last_json_line(command, env):
    """Run `command` (a list) and return the JSON object on its last line of output."""
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_run(runs):
    """The run with the median images/s (the upper one of an even count), its peak memory the largest
    seen: for a minivae run whose steps were shared among processes (minivae/parallel.py), the sum of
    theirs."""
    middle = sorted(runs, key=lambda run: run["images_per_s"])[len(runs) // 2]
    return {**middle, "peak_rss_mb": max(run["peak_rss_mb"] + (run.get("processes", 1) - 1)
                                         * run.get("peak_rss_mb_each_other_process", 0) for run in runs),
            "repeats": len(runs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["foster", "chollet"])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat, in each process")
    parser.add_argument("--threads", type=int, nargs="+", default=[len(os.sched_getaffinity(0))],
                        help="thread counts to compare at (default: the usable cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="turns each (processes); medians are reported")
    parser.add_argument("--baseline", metavar="DIR",
                        help="another checkout of minivae (e.g. `git worktree add /tmp/before main`), timed "
                             "in the same turns: its images/s and its ratio to PyTorch are printed too")
    parser.add_argument("--synthetic", action="store_true", help="random images instead of MNIST "
                        "(always so for foster-faces)")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "minivae", "__init__.py")):
        parser.error(f"--baseline {args.baseline}: no minivae package in that folder")
    if args.torch_only:
        print(json.dumps(torch_bench(args.model[0], args.batch_size[0], args.steps, args.device,
                                     args.synthetic)))
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
        print("(PyTorch not installed: timing minivae only)")

    removed = [name for name in bench.OPENBLAS_TUNING if name in os.environ]
    machine = bench.machine()
    versions = {"minivae": minivae.__version__, "numpy": np.__version__,
                "torch": torch.__version__ if torch is not None else None}
    print(f"CPU: {machine['cpu']}, {machine['cores']} usable cores; {machine['date']}")
    print(f"minivae {versions['minivae']}, NumPy {versions['numpy']}, PyTorch {versions['torch'] or '-'}, "
          f"BLAS: {bench.blas_info()['blas']}; children run with OMP_NUM_THREADS = the thread count"
          + (f", without {' and '.join(removed)}" if removed else ""))
    if args.baseline:
        print(f"baseline: the minivae in {args.baseline}")
    print(f"{'model':<12} {'batch':>5} {'thr':>3} {'proc':>4} {'minivae img/s':>13} {'ms/step':>8} {'faults':>6} "
          f"{'peak MB':>8} {'torch img/s':>11} {'faults':>6} {'torch MB':>8} {'ratio':>6}"
          + (f" {'baseline img/s':>14} {'its ratio':>9}" if args.baseline else ""))
    results = []
    for threads in args.threads:
        env = child_environment(threads)
        baseline_env = {**env, "PYTHONPATH": os.path.abspath(args.baseline or ".")}
        for model in args.model:
            for batch_size in args.batch_size:
                common = ["--model", model, "--batch-size", str(batch_size), "--steps", str(args.steps),
                          "--device", args.device]
                if args.synthetic or model in SYNTHETIC_ONLY:
                    common.append("--synthetic")
                ours, theirs, baseline = [], [], []
                for _ in range(args.repeats):
                    ours.append(last_json_line([sys.executable, "-m", "minivae", "bench"] + common, env))
                    if args.baseline:
                        baseline.append(last_json_line([sys.executable, "-m", "minivae", "bench"] + common,
                                                       baseline_env))
                    if torch is not None:
                        theirs.append(last_json_line([sys.executable, __file__, "--torch-only"] + common, env))
                result = {**median_run(ours), "threads": threads, "versions": versions}
                if theirs:
                    torch_run = median_run(theirs)
                    result.update(torch_images_per_s=torch_run["images_per_s"],
                                  torch_minor_faults_per_step=torch_run["minor_faults_per_step"],
                                  torch_peak_rss_mb=torch_run["peak_rss_mb"],
                                  torch_threads=torch_run["torch_threads"],
                                  ratio=round(result["images_per_s"] / torch_run["images_per_s"], 2))
                if baseline:
                    result["baseline_images_per_s"] = median_run(baseline)["images_per_s"]
                    if theirs:
                        result["baseline_ratio"] = round(result["baseline_images_per_s"]
                                                         / result["torch_images_per_s"], 2)
                nan = float("nan")
                print(f"{model:<12} {batch_size:>5} {threads:>3} {result.get('processes', 1):>4} "
                      f"{result['images_per_s']:>13.1f} "
                      f"{result['ms_per_step']:>8.1f} {result['minor_faults_per_step']:>6.0f} "
                      f"{result['peak_rss_mb']:>8.0f} {result.get('torch_images_per_s', nan):>11.1f} "
                      f"{result.get('torch_minor_faults_per_step', nan):>6.0f} "
                      f"{result.get('torch_peak_rss_mb', nan):>8.0f} {result.get('ratio', nan):>6.2f}"
                      + (f" {result['baseline_images_per_s']:>14.1f} {result.get('baseline_ratio', nan):>9.2f}"
                         if baseline else ""), flush=True)
                results.append(result)
    print("proc: the processes minivae's steps were shared among (minivae/parallel.py), one core each; "
          "faults: minor page faults per step (minivae: its first process's); peak MB: each library's peak "
          "resident memory (data, model, Python and library included; minivae in more than one process: "
          "the sum of theirs, pages they share counted in each).")
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
