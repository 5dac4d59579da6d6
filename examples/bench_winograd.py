"""One 3×3 stride-1 convolution layer, forward and backward, by Winograd's F(2×2, 3×3) or
F(4×4, 3×3) (the one winograd.tile_size picks for the size) against im2col and a matrix product
(minivae/functional/winograd.py and functional/conv.py), on the CPU.

Both paths run in this one process and take turns (rounds of `--steps` timed steps each), so a
noisy machine slows both alike; each round's median is kept and the medians of the rounds are
printed. The layer is conv2d with "same" padding, its bias and a fused ReLU, on float32 data laid
out as the convolutions hand it on (batch innermost); the upstream gradient is laid out the same
way. Winograd's path is forced on at every shape here (its own rules would skip some).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python examples/bench_winograd.py   # 64 channels, 7×7 and 14×14, batches 16-128
    python examples/bench_winograd.py --size 14 --batch 16 32 --rounds 20

(Some machines set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for old OpenBLAS builds; they slow a
current NumPy's products, and a user's machine has neither: unset them in the command, as above.)
"""
import argparse
import time

import numpy as np

from minivae import functional as F
from minivae import bench
from minivae.functional import winograd
from minivae.functional.activations import Fused
from minivae.tensor import Tensor


def layer_times(batch, channels, size, rounds, steps):
    """Median seconds of one forward + backward, {True: Winograd, False: im2col}."""
    rng = np.random.default_rng(0)
    x = np.ascontiguousarray(rng.standard_normal((channels, size, size, batch), np.float32)).transpose(3, 0, 1, 2)
    x = Tensor(x, requires_grad=True)
    w = Tensor(0.05 * rng.standard_normal((channels, channels, 3, 3), np.float32), requires_grad=True)
    b = Tensor(np.zeros(channels, np.float32), requires_grad=True)
    g = np.ones((channels, size, size, batch), np.float32).transpose(3, 0, 1, 2)
    medians = {True: [], False: []}
    for _ in range(rounds):
        for on in (False, True):
            winograd.settings["enabled"] = on
            for _ in range(2):                      # warm the workspace for this path
                F.conv2d(x, w, b, padding="same", activation=Fused()).backward(g)
            seconds = []
            for _ in range(steps):
                start = time.perf_counter()
                F.conv2d(x, w, b, padding="same", activation=Fused()).backward(g)
                seconds.append(time.perf_counter() - start)
            medians[on].append(np.median(seconds))
    return {on: float(np.median(m)) for on, m in medians.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, nargs="+", default=[7, 14], help="the output's height and width")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    winograd.MIN_COLUMNS, winograd.MAX_SPARE = {m: 1 for m in winograd.TILE_SIZES}, 16.0
    probe = np.zeros((1, args.channels, 4, 4), np.float32)
    if not winograd.suits(probe, np.zeros((args.channels, args.channels, 3, 3), np.float32), (1, 1), (1, 1, 1, 1)):
        raise SystemExit(f"bench_winograd: Winograd's path cannot run here ({args.channels} channels; it needs "
                         f"{winograd.MIN_CHANNELS}+, and Numba with the CPU kernels on)")
    machine = bench.machine()
    print(f"{machine['cpu']}, {machine['cores']} cores, {machine['date']}; {args.channels} channels in and out, 3×3, stride 1, 'same', fused ReLU; "
          f"medians of {args.rounds} rounds of {args.steps}")
    print(f"{'size':>5} {'batch':>6} {'im2col ms':>10} {'winograd ms':>12} {'speedup':>8}")
    for size in args.size:
        for batch in args.batch:
            t = layer_times(batch, args.channels, size, args.rounds, args.steps)
            print(f"{size:>5} {batch:>6} {1e3 * t[False]:>10.3f} {1e3 * t[True]:>12.3f} {t[False] / t[True]:>8.2f}")


if __name__ == "__main__":
    main()
