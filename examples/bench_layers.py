"""Time every convolution layer of the two book VAEs: forward + backward, ours against PyTorch.

Each layer runs alone on random float32 data of its real shape (MNIST, 1×28×28 images, 3×3 kernels)
and is timed from the forward pass to the last gradient (x, w and b; the images of the first
encoder layer need no gradient, as in training). PyTorch, when it imports, runs the same layer
with the same "same" padding (explicit asymmetric pads and crops) on as many threads as we have
cores; `ratio` is our time over its time.

Both libraries run in this one process, taking turns, and their thread pools (OpenBLAS's and
PyTorch's) can slow each other: on a 2-core machine both columns came out up to 2.5× slower than
the same layers inside a whole training step. Read the ratios as rough; for whole-model figures
use examples/bench_models.py, which runs each library in a process of its own.

    python examples/bench_layers.py                 # batches 32 and 128
    python examples/bench_layers.py --batch 64 --repeats 10
"""
import argparse
import os
import time

import numpy as np

import minivae
import minivae.functional as F

# (model, layer, op, C_in, C_out, stride, input size), all with 3×3 kernels and padding "same"
LAYERS = [
    ("foster", "enc1", "conv", 1, 32, 1, 28),
    ("foster", "enc2", "conv", 32, 64, 2, 28),
    ("foster", "enc3", "conv", 64, 64, 2, 14),
    ("foster", "enc4", "conv", 64, 64, 1, 7),
    ("foster", "dec1", "convT", 64, 64, 1, 7),
    ("foster", "dec2", "convT", 64, 64, 2, 7),
    ("foster", "dec3", "convT", 64, 32, 2, 14),
    ("foster", "dec4", "convT", 32, 1, 1, 28),
    ("chollet", "enc1", "conv", 1, 32, 1, 28),
    ("chollet", "enc2", "conv", 32, 64, 2, 28),
    ("chollet", "enc3", "conv", 64, 64, 1, 14),
    ("chollet", "enc4", "conv", 64, 64, 1, 14),
    ("chollet", "dec1", "convT", 64, 32, 2, 14),
    ("chollet", "dec2", "conv", 32, 1, 1, 28),
]
K = 3


def median_ms(steps, repeats):
    """Median time of each step in ms; the steps take turns, so a busy machine slows them alike."""
    for step in steps:
        step()  # warm-up: first-touch allocations, BLAS threads
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, laps in zip(steps, times):
            start = time.perf_counter()
            step()
            laps.append(time.perf_counter() - start)
    return [1000 * float(np.median(laps)) for laps in times]


def ours(op, x, w, b, g, stride):
    x, w, b = (minivae.Tensor(a, requires_grad=grad) for a, grad in ((x, x.shape[1] > 1), (w, True), (b, True)))

    layer = F.conv2d if op == "conv" else F.conv_transpose2d

    def step():
        layer(x, w, b, stride=stride, padding="same").backward(g)
        x.grad = w.grad = b.grad = None
    return step


def theirs(op, x, w, b, g, stride):
    """PyTorch's step on the same layer: examples/torch_reference.py's "same"-padded conv layers."""
    import torch
    from torch_reference import SameConv, SameConvT
    c_in, c_out = (w.shape[1], w.shape[0]) if op == "conv" else (w.shape[0], w.shape[1])
    layer = (SameConv if op == "conv" else SameConvT)(c_in, c_out, stride, x.shape[2])
    layer.weight.data, layer.bias.data = torch.tensor(w), torch.tensor(b)
    x, g = torch.tensor(x, requires_grad=x.shape[1] > 1), torch.tensor(g)

    def step():
        layer(x).backward(g)
        x.grad = layer.weight.grad = layer.bias.grad = None
    return step, lambda: layer(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per layer (median reported)")
    args = parser.parse_args()
    try:
        import torch
        torch.set_num_threads(os.cpu_count())
    except ImportError:
        torch = None
        print("(PyTorch not installed: timing minivae only)")

    print(f"{'model':<8} {'layer':<5} {'op':<5} {'shape':<22} {'batch':>5} {'ours ms':>8} "
          f"{'torch ms':>8} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for batch in args.batch:
        totals = [0.0, 0.0]
        for model, name, op, c_in, c_out, stride, size in LAYERS:
            out = size // stride if op == "conv" else size * stride
            w_shape = (c_out, c_in, K, K) if op == "conv" else (c_in, c_out, K, K)
            x = rng.standard_normal((batch, c_in, size, size)).astype(np.float32)
            w = (0.1 * rng.standard_normal(w_shape)).astype(np.float32)
            b = rng.standard_normal(c_out).astype(np.float32)
            g = rng.standard_normal((batch, c_out, out, out)).astype(np.float32)
            steps = [ours(op, x, w, b, g, stride)]
            if torch is not None:
                step, forward = theirs(op, x, w, b, g, stride)
                steps.append(step)
                layer = F.conv2d if op == "conv" else F.conv_transpose2d
                with minivae.no_grad(), torch.no_grad():  # same numbers, so same semantics
                    diff = np.abs(layer(x, w, b, stride=stride, padding="same").numpy()
                                  - forward().numpy()).max()
                assert diff < 1e-3, f"{model} {name}: outputs differ from PyTorch by {diff}"
            times = median_ms(steps, args.repeats)
            shape = f"{c_in}x{size}² -> {c_out}x{out}² s{stride}"
            line = f"{model:<8} {name:<5} {op:<5} {shape:<22} {batch:>5} {times[0]:>8.2f}"
            if torch is not None:
                line += f" {times[1]:>8.2f} {times[0] / times[1]:>6.2f}"
            totals = [total + t for total, t in zip(totals, times)]
            print(line, flush=True)
        if torch is not None:
            print(f"{'all 14 layers':<42} {batch:>5} {totals[0]:>8.2f} {totals[1]:>8.2f} "
                  f"{totals[0] / totals[1]:>6.2f}\n")


if __name__ == "__main__":
    main()
