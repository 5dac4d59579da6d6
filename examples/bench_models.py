"""Training speed of the two book VAEs, minivae against PyTorch on the same model, in one run.

For each preset and batch size: `minivae bench` times training steps on real MNIST (images/s,
ms per step, peak memory), then the PyTorch twin of examples/torch_reference.py, starting from
the same weights, times the same number of steps on real MNIST batches, with as many threads
(OMP_NUM_THREADS=1 python examples/bench_models.py compares the two on one core).
Each runs in a process of its own, so each peak memory is its own. The two take turns --repeats
times and the medians are reported, so a noisy machine slows both alike. `ratio` is minivae's
median images/s over PyTorch's (above 1: minivae is faster). Without PyTorch only minivae is
timed. Each result is also printed as one JSON line.

    python examples/bench_models.py                          # both presets, batches 32 and 128
    python examples/bench_models.py --model foster --batch-size 32 --steps 50
    python examples/bench_models.py --device cuda --batch-size 32 128 1024
"""
import argparse
import json
import os
import subprocess
import sys
import time

from minivae import bench, data, rng
from minivae.train import TrainConfig, build


def torch_bench(model, batch_size, steps, device, warmup=3):
    """PyTorch's training images/s and peak memory on `model`'s twin, on shuffled MNIST batches."""
    import torch
    from torch_reference import torch_twin

    torch.set_num_threads(threads())
    net, _, _ = build(TrainConfig(model=model, batch_size=batch_size).resolved())
    twin, loss_fn, optimizer = torch_twin(model, net)
    twin.to(device)
    images, _ = data.load_mnist("train", "mnist", quiet=True)
    order = rng.generator("bench").permutation(len(images))
    batches = [torch.tensor(images[order[i * batch_size:(i + 1) * batch_size]]).to(device)
               for i in range(min(warmup + steps, len(images) // batch_size))]

    def step(x):
        optimizer.zero_grad()
        loss = loss_fn(x, *twin(x))
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the GPU

    for i in range(warmup):
        step(batches[i % len(batches)])
    start = time.perf_counter()
    for i in range(steps):
        step(batches[(warmup + i) % len(batches)])
    seconds = time.perf_counter() - start
    return {"images_per_s": round(batch_size * steps / seconds, 1), "peak_rss_mb": round(bench.peak_rss_mb(), 1)}


def threads():
    """As many threads as NumPy's BLAS gets: OMP_NUM_THREADS where set, else the usable cores."""
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


def last_json_line(command):
    """Run `command` (a list) and return the JSON object on its last line of output."""
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def median_run(runs):
    """The run with the median images/s (the upper one of an even count), its peak memory the largest seen."""
    middle = sorted(runs, key=lambda run: run["images_per_s"])[len(runs) // 2]
    return {**middle, "peak_rss_mb": max(run["peak_rss_mb"] for run in runs), "repeats": len(runs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["foster", "chollet"])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="turns each; medians are reported")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.torch_only:
        print(json.dumps(torch_bench(args.model[0], args.batch_size[0], args.steps, args.device)))
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
        print("(PyTorch not installed: timing minivae only)")

    print(f"{'model':<8} {'batch':>5} {'minivae img/s':>13} {'ms/step':>8} {'peak MB':>8} "
          f"{'torch img/s':>11} {'torch MB':>8} {'ratio':>6}")
    results = []
    for model in args.model:
        for batch_size in args.batch_size:
            common = ["--model", model, "--batch-size", str(batch_size), "--steps", str(args.steps),
                      "--device", args.device]
            ours, theirs = [], []
            for _ in range(args.repeats):
                ours.append(last_json_line([sys.executable, "-m", "minivae", "bench"] + common))
                if torch is not None:
                    theirs.append(last_json_line([sys.executable, __file__, "--torch-only"] + common))
            result = median_run(ours)
            if theirs:
                result["torch_images_per_s"] = median_run(theirs)["images_per_s"]
                result["torch_peak_rss_mb"] = max(run["peak_rss_mb"] for run in theirs)
                result["ratio"] = round(result["images_per_s"] / result["torch_images_per_s"], 2)
            print(f"{model:<8} {batch_size:>5} {result['images_per_s']:>13.1f} "
                  f"{result['ms_per_step']:>8.1f} {result['peak_rss_mb']:>8.0f} "
                  f"{result.get('torch_images_per_s', float('nan')):>11.1f} "
                  f"{result.get('torch_peak_rss_mb', float('nan')):>8.0f} "
                  f"{result.get('ratio', float('nan')):>6.2f}", flush=True)
            results.append(result)
    print("peak MB: each process's peak resident memory (data, model, Python and library included).")
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
