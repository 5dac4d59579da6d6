"""Numba CPU kernels for the patch copies of the convolutions and for leaky_relu, run on every core.

NumPy runs im2col's and col2im's strided slice copies on one core; only the matrix products use
them all. These two kernels compute the same arrays as the NumPy expressions in
functional/im2col.py (which stay the reference, and the path without Numba), with the channels
shared out among Numba's threads (`prange`):

- im2col copies each patch entry from x, or writes 0 where the patch reaches into the padding,
  so it needs no padded copy of x;
- col2im gathers, for each pixel, the patch entries that were read from it, and adds them in the
  order NumPy's loop over the kernel offsets (i, j) adds them, starting from 0: the same sums
  in the same order, so the same bits. Each pixel is written by one thread, so no thread count
  changes a result.
- leaky_relu's forward makes its slope (1 or a) and y = slope·x in one pass over memory instead of
  NumPy's five, and its backward multiplies by the slope on every core (both the same float32
  products as functional/activations.py's NumPy lines).

Only float32 (the training dtype) takes this path, so that the compiled versions are few: compiled
on first use and cached on disk (cache=True), they cost about 1.7 s at a process's first convolution
(importing Numba, loading the cache) and, the very first time, 5-15 s to compile. Numba's thread
count follows OMP_NUM_THREADS where that is set, as the BLAS does. MINIVAE_CPU_KERNELS=never in the
environment turns them off (to compare, or to rule them out). Numba is imported at the first
convolution, not with minivae (so importing minivae stays quick, and NUMBA_* settings made after
it still count).
"""
import os

import numpy as np

prange = range  # numba.prange once compiled: the loop over channels that the threads share out
settings = {"enabled": os.environ.get("MINIVAE_CPU_KERNELS", "auto") != "never"}
_compiled = {}    # name -> the compiled kernel, filled at the first use


def use_for(*arrays):
    """Run these kernels on these arrays? float32 NumPy arrays, with the kernels on and Numba there."""
    return (settings["enabled"] and all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays)
            and _compile())


def describe():
    """'numba, N threads' or 'numpy' (where the patch copies run), for the benchmarks."""
    if not (settings["enabled"] and _compile()):
        return "numpy"
    import numba
    return f"numba, {numba.get_num_threads()} threads"


def _compile():
    """Compile the kernels below (or load them from the cache) once; False where Numba is missing."""
    global prange
    if not _compiled:
        try:
            import numba
        except ImportError:
            settings["enabled"] = False
            return False
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():
            numba.set_num_threads(max(1, min(int(os.environ["OMP_NUM_THREADS"]), numba.config.NUMBA_NUM_THREADS)))
        if "NUMBA_THREADING_LAYER" not in os.environ:
            # Numba's own pool, whose threads wait without spinning: OpenMP's spin-waits kept a core
            # busy between kernels, which the BLAS's threads (and other processes) then lacked.
            numba.config.THREADING_LAYER = "workqueue"
        prange = numba.prange
        for kernel in (im2col_chwn, col2im_chwn, leaky_relu_flat, multiply_flat):
            _compiled[kernel.__name__] = numba.njit(parallel=True, cache=True)(kernel)
    return True


def im2col(x_chwn, cols, sh, sw, top, left):
    _compiled["im2col_chwn"](x_chwn, cols, sh, sw, top, left)


def col2im(cols, out, sh, sw, top, left):
    _compiled["col2im_chwn"](cols, out, sh, sw, top, left)


def leaky_relu(x, y, slope, negative_slope):
    """Fill y and slope (laid out as x) with leaky_relu's output and slope; False (nothing done)
    where the three cannot be walked as one flat run of memory."""
    flats = [in_memory_order(a) for a in (x, y, slope)]
    if any(f is None for f in flats) or not x.strides == y.strides == slope.strides:
        return False
    _compiled["leaky_relu_flat"](*flats, np.float32(negative_slope))
    return True


def multiply(a, b, out):
    """out = a · b elementwise, as np.multiply; False (nothing done) unless all three share a layout."""
    flats = [in_memory_order(v) for v in (a, b, out)]
    if any(f is None for f in flats) or not a.strides == b.strides == out.strides:
        return False
    _compiled["multiply_flat"](*flats)
    return True


def in_memory_order(a):
    """a's elements as a 1-D view in the order they sit in memory, or None where they have gaps."""
    order = sorted(range(a.ndim), key=lambda axis: -a.strides[axis])
    walked = a.transpose(order)
    return walked.reshape(-1) if walked.flags.c_contiguous else None


def leaky_relu_flat(x, y, slope, negative_slope):
    """slope = 1 where x > 0, a where x <= 0, 0 where x is NaN (as (x <= 0)·a + (x > 0)); y = x·slope."""
    for k in prange(x.size):
        s = np.float32(1) if x[k] > 0 else (negative_slope if x[k] <= 0 else np.float32(0))
        slope[k] = s
        y[k] = x[k] * s


def multiply_flat(a, b, out):
    for k in prange(a.size):
        out[k] = a[k] * b[k]


def im2col_chwn(x, cols, sh, sw, top, left):
    """cols[c, i, j, p, q, n] = x[c, p·sH + i - top, q·sW + j - left, n], or 0 off the image.
    x (C, H, W, N), cols (C, kH, kW, OH, OW, N)."""
    channels, height, width, batch = x.shape
    _, kh, kw, oh, ow, _ = cols.shape
    for c in prange(channels):
        for i in range(kh):
            for j in range(kw):
                for p in range(oh):
                    row = p * sh + i - top
                    for q in range(ow):
                        col = q * sw + j - left
                        if 0 <= row < height and 0 <= col < width:
                            for n in range(batch):
                                cols[c, i, j, p, q, n] = x[c, row, col, n]
                        else:
                            for n in range(batch):
                                cols[c, i, j, p, q, n] = 0


def col2im_chwn(cols, out, sh, sw, top, left):
    """out[c, r, s, n] = Σ over the offsets (i, j) whose patch read pixel (r, s) of
    cols[c, i, j, p, q, n], p = (r + top - i) / sH, q = (s + left - j) / sW, summed in (i, j)
    order. cols (C, kH, kW, OH, OW, N), out (C, H, W, N)."""
    channels, height, width, batch = out.shape
    _, kh, kw, oh, ow, _ = cols.shape
    for c in prange(channels):
        for r in range(height):
            for s in range(width):
                for n in range(batch):
                    out[c, r, s, n] = 0
                for i in range(kh):
                    p, rest = divmod(r + top - i, sh)
                    if rest != 0 or p < 0 or p >= oh:
                        continue
                    for j in range(kw):
                        q, rest = divmod(s + left - j, sw)
                        if rest != 0 or q < 0 or q >= ow:
                            continue
                        for n in range(batch):
                            out[c, r, s, n] += cols[c, i, j, p, q, n]
