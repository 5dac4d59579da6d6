"""Time training steps of a book VAE: images/s, ms per step, peak memory (`minivae bench`)."""
import resource
import time

import numpy as np

from . import backend, data, rng
from .train import TrainConfig, build, to_tensor


def peak_rss_mb():
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(model="foster", batch_size=32, steps=50, device="cpu", data_dir=None, synthetic=False, warmup=3):
    config = TrainConfig(model=model, batch_size=batch_size, device=device).resolved()
    net, optimizer, loss_fn = build(config)
    if synthetic:
        images = rng.generator("bench").random((batch_size * 8, 1, 28, 28), dtype=np.float32)
    else:
        images, _ = data.load_mnist("train", "mnist", data_dir, quiet=True)
    batches = data.batches(images, batch_size, shuffle=True, generator=rng.generator("shuffle"),
                           drop_last=True)

    def step():
        nonlocal batches
        try:
            x = next(batches)
        except StopIteration:
            batches = data.batches(images, batch_size, generator=rng.generator("shuffle"), drop_last=True)
            x = next(batches)
        loss, _, _ = loss_fn(*(lambda x: (x, *net(x)))(to_tensor(x, device)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()  # .item() waits for the GPU, so the timing is honest

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    result = {"model": model, "device": device, "batch_size": batch_size, "steps": steps,
              "images_per_s": round(batch_size * steps / seconds, 1),
              "ms_per_step": round(1000 * seconds / steps, 2), "peak_rss_mb": round(peak_rss_mb(), 1)}
    if device != "cpu":
        result["kernels"] = backend.kernel_mode()
        result["gpu_pool_mb"] = round(backend.require_cuda().get_default_memory_pool().total_bytes() / 2**20, 1)
    return result
