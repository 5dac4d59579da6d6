"""Time training steps of a book VAE at the steady state (`minivae bench`): the median of several
repeats in images/s and ms per step, minor page faults per step, peak memory, and which BLAS ran
with how many threads.

A step here is the training loop's step (minivae/train.py): a shuffled MNIST batch, forward,
backward, optimizer step, in as many processes as training takes (parallel.py). The first steps
are slower (the workspace fills up, the BLAS starts its threads), so `warmup` steps run untimed
first.
"""
import datetime
import os
import platform
import resource
import statistics
import time

import numpy as np

from . import backend, cpu_kernels, data, parallel, rng, threads
from .train import TrainConfig, build, to_tensor

OPENBLAS_TUNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # set on some machines; they slow NumPy


def peak_rss_mb(who=resource.RUSAGE_SELF):
    """This process's peak resident memory (Linux reports ru_maxrss in KiB); with
    RUSAGE_CHILDREN, the largest of its ended child processes' (parallel.py's)."""
    return resource.getrusage(who).ru_maxrss / 1024


def minor_faults():
    """Pages this process has touched for the first time so far (each one zeroed by the kernel)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def blas_info():
    """Which BLAS NumPy runs and with how many threads (threadpoolctl's answer where it is
    installed, else NumPy's build configuration and OpenBLAS's own count), and the OPENBLAS_*
    tuning variables set in this process's environment."""
    info = {"openblas_env": {name: os.environ[name] for name in OPENBLAS_TUNING if name in os.environ}}
    try:
        import threadpoolctl
        pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            info.update(blas=f"{pools[0]['internal_api']} {pools[0]['version']}",
                        blas_threads=pools[0]["num_threads"])
            return info
    except ImportError:
        pass
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    info.update(blas=f"{blas.get('name')} {blas.get('version')}", blas_threads=threads.blas_threads())
    return info


def cpu_model():
    """The CPU's model name as /proc/cpuinfo gives it ("AMD EPYC"), else what the platform says:
    a speed figure means little without the machine it was taken on."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine():
    """What a speed figure was taken on, and when: the CPU model, the usable cores, the UTC date."""
    return {"cpu": cpu_model(), "cores": threads.usable_cores(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def training_images(batch_size, data_dir=None, synthetic=False, image_shape=(1, 28, 28)):
    """MNIST's training images, or (synthetic) 8 batches of random ones of `image_shape` (C, H, W)
    that need no data set."""
    if synthetic:
        return rng.generator("bench").random((batch_size * 8,) + tuple(image_shape), dtype=np.float32)
    return data.load_mnist("train", "mnist", data_dir, quiet=True)[0]


def endless_batches(images, batch_size):
    """Batches of images, epoch after epoch, each epoch shuffled as the training loop does it."""
    while True:
        yield from data.batches(images, batch_size, generator=rng.generator("shuffle"), drop_last=True)


def run(model="foster", batch_size=32, steps=50, device="cpu", data_dir=None, synthetic=False,
        warmup=10, repeats=5, processes=0):
    """Time `repeats` runs of `steps` training steps after `warmup` untimed ones; report the
    median run's images/s and ms per step, and minor page faults per step over all timed steps.
    processes: as TrainConfig.processes (0: as training chooses)."""
    config = TrainConfig(model=model, batch_size=batch_size, device=device, processes=processes).resolved()
    net, optimizer, loss_fn = build(config)
    batches = endless_batches(training_images(batch_size, data_dir, synthetic, net.input_shape),
                              batch_size)
    processes = parallel.processes_for(config, net)
    shared = None if processes == 1 else parallel.DataParallel(net, optimizer, loss_fn, batch_size,
                                                               net.input_shape, processes)

    def step():
        if shared is not None:
            return shared.step(next(batches))[0]
        x = to_tensor(next(batches), device)
        loss, _, _ = loss_fn(x, *net(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()  # .item() waits for the GPU, so the timing is honest

    try:
        for _ in range(warmup):
            step()
        seconds, faults = [], minor_faults()
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            seconds.append(time.perf_counter() - start)
        faults = (minor_faults() - faults) / (steps * repeats)
    finally:
        if shared is not None:
            shared.close()
    median = statistics.median(seconds)
    result = {"model": model, "device": device, "batch_size": batch_size, "steps": steps,
              "repeats": repeats, "images_per_s": round(batch_size * steps / median, 1),
              "ms_per_step": round(1000 * median / steps, 2), "minor_faults_per_step": round(faults, 1),
              "peak_rss_mb": round(peak_rss_mb(), 1), **machine()}
    if shared is not None:   # each other process's peak as well (their memory adds to this one's)
        result["peak_rss_mb_each_other_process"] = round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1)
    if device == "cpu":
        result.update(blas_info(), patch_copies=cpu_kernels.describe(), pool_threads=threads.count(),
                      processes=processes)
    else:
        result["kernels"] = backend.kernel_mode()
        result["gpu_pool_mb"] = round(backend.require_cuda().get_default_memory_pool().total_bytes() / 2**20, 1)
    return result
