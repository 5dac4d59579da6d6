"""Memory and speed of training on a folder of images: the figures of docs/data.md.

    python examples/bench_images.py --folder /tmp/jpegs --make 20000     # CelebA-sized JPEGs, then measure
    python examples/bench_images.py --folder /tmp/jpegs --shape 3,128,128 --no-steps

1. --make N: N smooth random colour JPEGs of 178 x 218 (CelebA's size) in the folder, unless there.
2. Open the folder (listing, split) and build its cache at --shape (C,H,W): the time of each.
3. One pass over the training split's batches: its time, and the process's resident memory.
4. Unless --no-steps: training steps of --model, alternately fed by the folder's batches and by
   `bench --synthetic`'s random arrays (the same step as minivae.bench), the median of each.
Prints one JSON line. Run it once per folder size: peak memory is the process's.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minivae import bench, data, rng  # noqa: E402
from minivae.train import TrainConfig, build, to_tensor  # noqa: E402


def make_jpegs(folder, count, seed=0):
    """count 178 x 218 JPEGs: random 12 x 10 colour fields, enlarged smoothly (JPEG's kind of picture)."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    for i in range(count):
        path = folder / f"{i:06d}.jpg"
        if not path.exists():
            field = Image.fromarray(g.integers(0, 256, (12, 10, 3), dtype=np.uint8))
            field.resize((178, 218), Image.BILINEAR).save(path, quality=90)


def resident_mb():
    """VmRSS now (/proc/self/status), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--make", type=int, default=0, help="make this many JPEGs first")
    parser.add_argument("--shape", default="1,28,28", help="C,H,W the images are read at")
    parser.add_argument("--model", default="foster")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks of each kind")
    parser.add_argument("--no-steps", action="store_true", help="measure reading only")
    parser.add_argument("--no-read-ahead", action="store_true", help="read each batch when it is asked for")
    parser.add_argument("--compare-read-ahead", action="store_true",
                        help="also time steps fed by the folder without read-ahead")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    if args.make:
        make_jpegs(args.folder, args.make)

    result = {"folder": str(args.folder), "shape": shape, "read_ahead": not args.no_read_ahead, "rss_mb_at_start": round(resident_mb(), 1)}
    train_set, seconds = timed(lambda: data.ImageFolder(args.folder, shape, "train"))
    train_set.read_ahead = not args.no_read_ahead
    result.update(images=len(train_set.listing), train_images=len(train_set), open_s=round(seconds, 2))
    built, seconds = timed(lambda: train_set.prepare(progress=False))
    result.update(cache_build_s=round(seconds, 1) if built else "(cache there already)",
                  cache_mb=round(train_set.cache.path.stat().st_size / 2**20, 1))
    g = np.random.default_rng(0)
    count, seconds = timed(lambda: sum(len(x) for x in train_set.batches(args.batch_size, generator=g)))
    index = np.arange(args.batch_size)
    read_ms = statistics.median(timed(lambda: train_set.images(index))[1] for _ in range(50)) * 1000
    result.update(epoch_read_s=round(seconds, 2), read_ms_per_batch=round(read_ms, 3),
                  rss_mb_after_epoch=round(resident_mb(), 1), peak_rss_mb_after_epoch=round(bench.peak_rss_mb(), 1))

    if not args.no_steps:
        config = TrainConfig(model=args.model, batch_size=args.batch_size).resolved()
        net, optimizer, loss_fn = build(config)
        # bench --synthetic's random images (8 batches of them), at this shape
        synthetic = rng.generator("bench").random((args.batch_size * 8,) + shape, dtype=np.float32)
        feeds = {"folder": endless(lambda: train_set.batches(args.batch_size, drop_last=True)),
                 "synthetic": bench.endless_batches(synthetic, args.batch_size)}
        if args.compare_read_ahead:   # the same folder, each batch read when asked for
            unhurried = data.ImageFolder(args.folder, shape, "train")
            unhurried.read_ahead = False
            feeds["folder, no read-ahead"] = endless(lambda: unhurried.batches(args.batch_size, drop_last=True))

        waits = {name: [] for name in feeds}   # how long each step waited for its batch

        def steps(name, n):
            feed = feeds[name]
            start = time.perf_counter()
            for _ in range(n):
                asked = time.perf_counter()
                x = to_tensor(next(feed), "cpu")
                waits[name].append(time.perf_counter() - asked)
                loss, _, _ = loss_fn(x, *net(x))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss.item()
            return (time.perf_counter() - start) / n * 1000

        for name in feeds:   # warm-up: the workspace, the BLAS threads
            steps(name, 10)
        ms = {name: [] for name in feeds}
        for repeat in range(args.repeats):   # alternating, so that a noisy neighbour hits both alike
            for name in (list(feeds) if repeat % 2 == 0 else list(feeds)[::-1]):
                ms[name].append(steps(name, args.steps))
        medians = {name: statistics.median(values) for name, values in ms.items()}
        def ratio(name):   # the median over repeats of name's time / synthetic's, run back to back
            return round(statistics.median(a / b for a, b in zip(ms[name], ms["synthetic"])), 3)
        result.update(model=args.model, batch_size=args.batch_size,
                      ms_per_step={name: round(m, 2) for name, m in medians.items()},
                      ms_per_step_runs={name: [round(v, 2) for v in values] for name, values in ms.items()},
                      over_synthetic={name: ratio(name) for name in feeds if name != "synthetic"},
                      wait_ms_per_batch={name: round(statistics.median(w) * 1000, 4) for name, w in waits.items()})
    result.update(peak_rss_mb=round(bench.peak_rss_mb(), 1), cpu=cpu_model(), cores=os.cpu_count())
    print(json.dumps(result))


def endless(epoch):
    """Batches from epoch(), one epoch after another."""
    while True:
        yield from epoch()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    rng.manual_seed(0)
    main()
