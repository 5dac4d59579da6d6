"""Will a training step fit in memory? An estimate made before the first step, so that a batch too
large for the machine is refused with both figures instead of being killed by the kernel's
out-of-memory killer minutes later.

The estimate is measured rather than derived: one forward and backward pass at batch 2 and at
batch 4 under `tracemalloc` (which sees every NumPy allocation: activations, the im2col patches,
gradients), then a straight line through the two peaks, extended to the batch asked for. Memory
that NumPy does not allocate (BLAS work space, the interpreter) is not counted, so the figure is
a lower bound: a step that does not fit by this estimate surely does not fit.
"""
import os
import tracemalloc

import numpy as np

from . import backend
from .tensor import Tensor
from .workspace import workspace

def image_bytes(input_shape):
    """One float32 image of shape (C, H, W) as the training loop holds it."""
    return 4 * int(np.prod(input_shape))


def step_bytes(model, loss_fn, batch_size, input_shape=None):
    """About how many bytes one training step (forward + backward) allocates at `batch_size`, for
    images of `input_shape` (C, H, W), by default the model's."""
    input_shape = model.input_shape if input_shape is None else input_shape

    def peak(n):
        x = Tensor(np.full((n,) + tuple(input_shape), 0.5, np.float32))
        was_tracing = tracemalloc.is_tracing()   # someone else's tracing is left running
        if not was_tracing:
            tracemalloc.start()
        workspace.clear()   # a first step, whose arrays the workspace then keeps: all counted
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        try:
            loss, _, _ = loss_fn(x, *model(x))
            loss.backward()
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            if not was_tracing:
                tracemalloc.stop()
            model.zero_grad()
            workspace.clear()

    small, large = peak(2), peak(4)
    per_image = max(large - small, 0) / 2
    return int(small + (batch_size - 2) * per_image)


def available_bytes(device="cpu"):
    """Memory free for new allocations: MemAvailable of /proc/meminfo (else the free pages the
    OS reports) on the CPU, the GPU's free memory on a GPU; None when it cannot be told."""
    if device != "cpu":
        free, _total = backend.require_cuda().cuda.runtime.memGetInfo()
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024   # the file counts in KiB
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(n):
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"
