"""Each CUDA kernel of one training step, timed alone: GPU time, host time per launch, bandwidth.

Runs one training step of a preset on random images with every launcher in minivae.kernels
wrapped to record its calls, then replays each recorded call --repeats times. For each launcher:
its calls per step; the GPU milliseconds per step (CUDA events around the replays: for a kernel
shorter than a launch's host time this shows the host's pace instead); the host microseconds per
launch (the replays' wall time before the GPU is waited for); the bytes of the arrays it reads
and writes, each counted once (the least any kernel must move: data read twice from cache is not
counted); and those bytes over its GPU time, the achieved GB/s, to set against the card's
(about 3,350 GB/s on an H100 SXM). Replaying the optimizer updates changes the model's numbers,
which does not matter here. Each row is also printed as a JSON line.

    python examples/bench_kernels.py --model foster --batch-size 1024
    python examples/bench_kernels.py --simulate        # no GPU: a tiny step in Numba's simulator,
                                                       # to check this script (its times mean nothing)
"""
import argparse
import json
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAUNCHERS = ("relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
             "sigmoid_forward", "sigmoid_backward", "reparameterize_forward", "reparameterize_backward",
             "bce_with_grad", "mse_with_grad", "gaussian_kl_with_grad", "adam_update", "rmsprop_update",
             "bias_grad", "im2col", "col2im", "gemm")
WRITTEN_IN_PLACE = {"adam_update": ("p", "m", "v"), "rmsprop_update": ("p", "s")}  # the first args


def array_bytes(values):
    return sum(v.nbytes for v in values if hasattr(v, "nbytes"))


def record_one_step(model, batch_size, device):
    """[(launcher name, launcher, args, kwargs, bytes moved)] of one training step, in order."""
    import numpy as np
    from minivae import backend, kernels, rng
    from minivae.train import TrainConfig, build, to_tensor
    calls, originals = [], {name: getattr(kernels, name) for name in LAUNCHERS}
    for name in LAUNCHERS:
        def spy(*args, _name=name, _launcher=getattr(kernels, name), **kwargs):
            out = _launcher(*args, **kwargs)
            outputs = out if isinstance(out, tuple) else (out,)
            written = args[:len(WRITTEN_IN_PLACE.get(_name, ()))]
            calls.append((_name, _launcher, args, kwargs, array_bytes(args) + array_bytes(outputs + written)))
            return out
        setattr(kernels, name, spy)
    config = TrainConfig(model=model, batch_size=batch_size, device=device).resolved()
    net, optimizer, loss_fn = build(config)
    images = rng.generator("bench").random((batch_size, 1, 28, 28), dtype=np.float32)
    with backend.use_kernels("always" if device == "cpu" else "auto"):
        x = to_tensor(images, device)
        loss, _, _ = loss_fn(x, *net(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, launcher in originals.items():  # unwrapped, so that the replays are not recorded
        setattr(kernels, name, launcher)
    return calls


def time_calls(calls, repeats, gpu):
    """{name: [calls, GPU ms per step, host µs per launch, bytes per step]} over the replays."""
    rows = defaultdict(lambda: [0, 0.0, 0.0, 0])
    cupy = None
    if gpu:
        from minivae import backend
        cupy = backend.require_cuda()
    for name, launcher, args, kwargs, moved in calls:
        launcher(*args, **kwargs)                                # compiled and warm
        if cupy:
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            cupy.cuda.get_current_stream().synchronize()
            start.record()
        begin = time.perf_counter()
        for _ in range(repeats):
            launcher(*args, **kwargs)
        host_s = (time.perf_counter() - begin) / repeats
        if cupy:
            stop.record()
            stop.synchronize()
            gpu_ms = cupy.cuda.get_elapsed_time(start, stop) / repeats
        else:
            gpu_ms = 1000 * host_s
        row = rows[name]
        row[0] += 1
        row[1] += gpu_ms
        row[2] += 1e6 * host_s
        row[3] += moved
    for row in rows.values():
        row[2] /= row[0]                                         # µs per launch, averaged over calls
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="foster")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--simulate", action="store_true", help="no GPU: Numba's simulator, batch 1")
    args = parser.parse_args()
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        args.batch_size, args.repeats = 1, 1
        from minivae import kernels
        kernels.THREADS_PER_BLOCK, kernels.MAX_BLOCKS = 32, 4   # few Python threads, each looping
        sys.setswitchinterval(2e-4)                              # the simulator's threads take turns
    device = "cpu" if args.simulate else "cuda"
    calls = record_one_step(args.model, args.batch_size, device)
    rows = time_calls(calls, args.repeats, gpu=not args.simulate)
    total_ms = sum(row[1] for row in rows.values())
    print(f"{args.model}, batch {args.batch_size}, {device}{' (simulated)' if args.simulate else ''}: "
          f"{sum(row[0] for row in rows.values())} launcher calls, {total_ms:.2f} ms of kernels per step")
    print(f"{'launcher':<24} {'calls':>5} {'GPU ms/step':>11} {'host µs/launch':>14} {'MB/step':>8} {'GB/s':>7}")
    for name, (count, ms, host_us, moved) in sorted(rows.items(), key=lambda item: -item[1][1]):
        print(f"{name:<24} {count:>5} {ms:>11.3f} {host_us:>14.1f} {moved / 1e6:>8.1f} {moved / 1e6 / ms:>7.0f}")
    for name, (count, ms, host_us, moved) in rows.items():
        print(json.dumps({"model": args.model, "batch_size": args.batch_size, "launcher": name, "calls": count,
                          "gpu_ms_per_step": round(ms, 4), "host_us_per_launch": round(host_us, 1),
                          "bytes_per_step": moved, "gb_per_s": round(moved / 1e6 / ms, 1),
                          "simulated": args.simulate}))


if __name__ == "__main__":
    main()
