"""Numba CPU kernels for the patch copies of the convolutions and for leaky_relu.

They compute the same arrays as the NumPy expressions in functional/im2col.py and
functional/activations.py (which stay the reference, and the path without Numba), in fewer passes
over memory:

- im2col copies each patch entry from x, or writes 0 where the patch reaches into the padding,
  so it needs no padded copy of x;
- col2im gathers, for each pixel, the patch entries that were read from it, and adds them in the
  order NumPy's loop over the kernel offsets (i, j) adds them, starting from 0: the same sums
  in the same order, so the same bits;
- leaky_relu's forward makes its slope (1 or a) and y = slope·x in one pass instead of NumPy's
  five (the same float32 products).

They run on the calling thread. Spread over both cores of a 2-core machine with `prange`, they were
5x slower in a training step, not faster: between the matrix products OpenBLAS's own threads
spin-wait on the cores, and every parallel kernel waited for one of them to give its core up
(foster, batch 32, 2 threads: 380-610 ms per step with 2 Numba threads, 61 ms with 1, 80-88 ms
with NumPy's expressions).

Only float32 (the training dtype) takes this path, so that the compiled versions are few: compiled
on first use and cached on disk (cache=True), they cost about 1.7 s at a process's first convolution
(importing Numba, loading the cache) and, the very first time, a few seconds to compile.
MINIVAE_CPU_KERNELS=never in the
environment turns them off (to compare, or to rule them out). Numba is imported at the first
convolution, not with minivae (so importing minivae stays quick, and NUMBA_* settings made after
it still count).
"""
import os

import numpy as np

settings = {"enabled": os.environ.get("MINIVAE_CPU_KERNELS", "auto") != "never"}
_compiled = {}    # name -> the compiled kernel, filled at the first use


def use_for(*arrays):
    """Run these kernels on these arrays? float32 NumPy arrays, with the kernels on and Numba there."""
    return (settings["enabled"] and all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays)
            and _compile())


def describe():
    """'numba' or 'numpy' (what runs the patch copies and leaky_relu), for the benchmarks."""
    return "numba" if settings["enabled"] and _compile() else "numpy"


def _compile():
    """Compile the kernels below (or load them from the cache) once; False where Numba is missing."""
    if not _compiled:
        try:
            import numba
        except ImportError:
            settings["enabled"] = False
            return False
        for kernel in (im2col_chwn, col2im_chwn, leaky_relu_flat):
            _compiled[kernel.__name__] = numba.njit(cache=True)(kernel)
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


def in_memory_order(a):
    """a's elements as a 1-D view in the order they sit in memory, or None where they have gaps."""
    order = sorted(range(a.ndim), key=lambda axis: -a.strides[axis])
    walked = a.transpose(order)
    return walked.reshape(-1) if walked.flags.c_contiguous else None


def leaky_relu_flat(x, y, slope, negative_slope):
    """slope = 1 where x > 0, a where x <= 0, 0 where x is NaN (as (x <= 0)·a + (x > 0)); y = x·slope."""
    for k in range(x.size):
        s = np.float32(1) if x[k] > 0 else (negative_slope if x[k] <= 0 else np.float32(0))
        slope[k] = s
        y[k] = x[k] * s


def im2col_chwn(x, cols, sh, sw, top, left):
    """cols[c, i, j, p, q, n] = x[c, p·sH + i - top, q·sW + j - left, n], or 0 off the image.
    x (C, H, W, N), cols (C, kH, kW, OH, OW, N)."""
    channels, height, width, batch = x.shape
    _, kh, kw, oh, ow, _ = cols.shape
    for c in range(channels):
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
    for c in range(channels):
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
