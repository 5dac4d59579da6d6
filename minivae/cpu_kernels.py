"""Numba CPU kernels for the patch copies of the convolutions, the activations and the optimizers.

They compute the same arrays as the NumPy expressions in functional/im2col.py and
functional/activations.py (which stay the reference, and the path without Numba), in fewer passes
over memory:

- im2col copies each patch entry from x, or writes 0 where the patch reaches into the padding,
  so it needs no padded copy of x;
- col2im adds each kernel offset's block of patch entries back onto the pixels they were read
  from, offset after offset as NumPy's loop does, starting from 0, without a padded copy: the
  same sums in the same order, so the same bits; for conv_transpose2d's output it then adds the
  bias and applies the activation to each channel while it is in the cache (finish_channel);
- leaky_relu's forward makes its slope (1 or a) and y = slope·x in one pass instead of NumPy's
  five (the same float32 products);
- relu's forward makes y and the mask x > 0 in one pass instead of NumPy's two, and `product`
  (an activation's backward, dL/dy · slope or · mask) reads a bool mask without NumPy's cast;
- RMSprop's and Adam's updates run their formula's float32 operations, in optim.py's order, in one
  pass instead of eight to eleven (the same bits).

Each is compiled with nogil and runs on every core through minivae/threads.py: the patch copies
split by channels, the activations by stretches of memory. (Not Numba's own `prange`: on 2 cores
it made a training step 5x slower, its threads waiting for OpenBLAS's spin-waiting ones.)

Only float32 (the training dtype) takes this path, so that the compiled versions are few: compiled
on first use and cached on disk (cache=True), they cost about 1.7 s at a process's first convolution
(importing Numba, loading the cache) and, the very first time, a few seconds to compile.
MINIVAE_CPU_KERNELS=never in the
environment turns them off (to compare, or to rule them out). Numba is imported at the first
convolution, not with minivae (so importing minivae stays quick, and NUMBA_* settings made after
it still count).
"""
import os
import threading

import numpy as np

from . import threads
from .workspace import workspace

settings = {"enabled": os.environ.get("MINIVAE_CPU_KERNELS", "auto") != "never"}
_compiled = {}    # name -> the compiled kernel, filled at the first use
_compiling = threading.Lock()


def use_for(*arrays):
    """Run these kernels on these arrays? float32 NumPy arrays, with the kernels on and Numba there."""
    return all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays) and available()


def available():
    """Are the kernels on, and Numba there (compiled, or loaded from the cache, at the first ask)?"""
    return settings["enabled"] and _compile()


def describe():
    """'numba' or 'numpy' (what runs the patch copies and leaky_relu), for the benchmarks."""
    return "numba" if settings["enabled"] and _compile() else "numpy"


def _compile():
    """Compile the kernels below (or load them from the cache) once; False where Numba is missing."""
    if _compiled:
        return True
    with _compiling:  # the pool's threads may ask at once: one compiles, the others wait for all of it
        if _compiled:
            return True
        try:
            import numba
        except ImportError:
            settings["enabled"] = False
            return False
        compiled = {}
        # the kernels' helpers, written into their code (from their Python functions, also when
        # the kernels are compiled a second time)
        for helper in (slope_at, finish_run, finish_channel, _sum_short_rows):
            globals()[helper.__name__] = numba.njit(inline="always")(getattr(helper, "py_func", helper))
        for kernel in (im2col_chwn, col2im_chwn, col2im_gather_chwn, leaky_relu_flat, relu_flat, product_flat, product_2d,
                       product_4d, rmsprop_flat, adam_flat, relu_rows, leaky_relu_rows, activation_grad_flat,
                       sum_rows):
            compiled[kernel.__name__] = jit(kernel)
        _compiled.update(compiled)
    return True


def jit(kernel):
    """kernel compiled by Numba as every kernel of ours is: without the GIL (so that the threads of
    minivae/threads.py run at once), cached on disk, and with error_model="numpy": a float division
    by zero gives inf or NaN, as in NumPy, instead of raising; without it every division is checked
    first, and RMSprop's and Adam's loops could not be vectorized (8x slower, the same bits)."""
    import numba
    return numba.njit(cache=True, nogil=True, error_model="numpy")(kernel)


def im2col(x_chwn, cols, sh, sw, top, left):
    """cols (C, kH, kW, OH, OW, N) from x (C, H, W, N), the channels split over the threads."""
    _along_first_axis(_compiled["im2col_chwn"], (x_chwn, cols), sh, sw, top, left)


COL2IM_GATHER_FROM = 65   # batch size from which col2im gathers pixel by pixel (see col2im)


def col2im(cols, out, sh, sw, top, left, bias=None, activation=None):
    """out (C, H, W, N) from cols (C, kH, kW, OH, OW, N), the channels split over the threads; then
    out = activation(out + bias) where given (an activations.Fused), each channel as soon as it is
    summed, while it is in the cache: the numbers of activate_rows, without a pass of its own.

    Two walks give the same sums: offset by offset (col2im_chwn), 1.4-2.9x faster up to batch 64
    at both models' stride-2 shapes, and pixel by pixel (col2im_gather_chwn), 1.25x faster at
    batch 128 (one thread, medians of 15, on a 2-core AMD EPYC VM: docs/performance.md)."""
    kernel = "col2im_gather_chwn" if out.shape[3] >= COL2IM_GATHER_FROM else "col2im_chwn"
    kind, slope = activation_code(activation)
    if bias is None:
        _along_first_axis(_compiled[kernel], (cols, out), sh, sw, top, left, None, kind, slope)
    else:
        _along_first_axis(lambda c, o, b: _compiled[kernel](c, o, sh, sw, top, left, b, kind, slope),
                          (cols, out, bias))


COL2IM_GROUP = 16               # channels of col2im_product's output per product (their kH·kW rows each),
COL2IM_GROUP_BYTES = 2 << 20    # taken where a group's rows fit in one core's L2 cache (2 MiB)


def col2im_pays(channels, taps, columns):
    """Is col2im_product the faster way for `channels` channels of output, `taps` (kH·kW) rows of
    the product each, `columns` long? Where a group's rows fit in COL2IM_GROUP_BYTES, there is a
    group for each thread, and two threads or more. In whole training steps on a 2-core Xeon VM,
    two threads: Chollet's batch 16 0.981, Foster's 16 0.944 and 32 0.985 of the time; with groups
    of 9 channels where 16 did not fit, Chollet's 32 1.004 and Foster's 128 1.012, and Chollet's
    128 (groups of 16: 14 MB) 1.009; on one thread Chollet's 16 1.007, Foster's 32 1.054
    (docs/performance.md)."""
    return (threads.count() > 1 and channels >= COL2IM_GROUP * threads.count()
            and COL2IM_GROUP * taps * columns * 4 <= COL2IM_GROUP_BYTES)


def col2im_product(a, b, out, kernel, out_hw, stride, top, left, bias=None, activation=None):
    """out (C, H, W, N) = col2im(a @ b) (+ bias, then the activation, where given), a (C·kH·kW, K),
    b (K, OH·OW·N): as col2im of the whole product, but made COL2IM_GROUP channels at a time, each
    group's rows of the product (a one-thread BLAS product) added back into out while they are in
    the cache, the groups split over the threads. Made whole, the product of a stride-2 layer's
    dL/dx (Chollet's conv_1, batch 16: 3.6 MB) went out to memory and came back, and was added up
    by channels on other threads than made it. The same bits as col2im(a @ b): each row of the
    product is made over the same K, and each pixel gets its terms in (i, j) order. (The layers
    call it where col2im_pays.)"""
    (kh, kw), (oh, ow), (sh, sw) = kernel, out_hw, stride
    channels, batch = out.shape[0], out.shape[3]
    name = "col2im_gather_chwn" if batch >= COL2IM_GATHER_FROM else "col2im_chwn"
    kind, slope = activation_code(activation)
    taps, size = kh * kw, COL2IM_GROUP
    groups = -(-channels // size)                       # the last one may have fewer channels
    parts = max(1, min(threads.count(), groups, 2 * a.shape[0] * a.shape[1] * b.shape[1] // threads.MIN_SPLIT_FLOPS))
    pieces = threads.bounds(groups, parts)
    rows = [workspace.empty((size * taps, b.shape[1]), b.dtype) for _ in range(parts)]
    # each thread's groups, their arrays sliced out here, before the threads start: a thread that
    # runs Python holds the GIL, and the other's start waits for it
    work = [[] for _ in range(parts)]
    for p in range(parts):
        for group in range(*pieces[p]):
            c0, c1 = group * size, min(channels, (group + 1) * size)
            product = rows[p][:(c1 - c0) * taps]
            work[p].append((a[c0 * taps:c1 * taps], product, product.reshape(c1 - c0, kh, kw, oh, ow, batch),
                            out[c0:c1], None if bias is None else bias[c0:c1]))
    kernel_ = _compiled[name]

    def groups_of(p):
        for a_rows, product, product_6d, out_channels, bias_channels in work[p]:
            np.matmul(a_rows, b, out=product)
            kernel_(product_6d, out_channels, sh, sw, top, left, bias_channels, kind, slope)
    with threads.one_blas_thread():
        threads.run(groups_of, parts)


def activation_code(activation, dtype=np.dtype(np.float32)):
    """(kind, slope) for the kernels that finish an op's output (finish_channel, finish_run, the
    direct and Winograd blocks): kind 0 none, 1 relu, 2 leaky_relu with that slope, a number of
    the arrays' dtype as activations.Fused multiplies by it (0 for the others)."""
    kind = 0 if activation is None else (1 if activation.negative_slope is None else 2)
    return kind, dtype.type(0 if kind < 2 else activation.negative_slope)


def _along_first_axis(kernel, arrays, *args):
    """kernel(*(a[r0:r1] for a in arrays), *args) for one range of the first axis per thread, at
    once (where there is enough to share: the hand-over costs more than a small copy)."""
    rows = arrays[0].shape[0]
    parts = min(threads.count(), rows, max(a.size for a in arrays) // threads.MIN_PIECE)
    pieces = threads.bounds(rows, max(parts, 1))
    threads.run(lambda k: kernel(*(a[slice(*pieces[k])] for a in arrays), *args), len(pieces))


def leaky_relu(x, y, slope, negative_slope):
    """Fill y and slope (laid out as x) with leaky_relu's output and slope; False (nothing done)
    where the three cannot be walked as one flat run of memory."""
    a = np.float32(negative_slope)
    return threads.split_flat(lambda *pieces: _compiled["leaky_relu_flat"](*pieces, a), x, y, slope)


def relu(x, y, positive):
    """Fill y (laid out as x) with max(x, 0) and positive with x > 0; False (nothing done) where
    the three cannot be walked as one flat run of memory."""
    return threads.split_flat(_compiled["relu_flat"], x, y, positive)


def activate(y, negative_slope, row_bias=None):
    """y = relu(y) (negative_slope None) or leaky_relu(y, a), in place, for a 2-D y whose rows are
    runs of memory (a part of a product, on the thread that made it, or a whole output); with
    row_bias, of y + row_bias[:, None] in the same pass.

    A column part of a product is not one run of memory, and Numba compiles a loop over such an
    array for any strides, without SIMD: 50x slower. So the kernel walks the one run of memory
    from the part's first number to its last, as a flat array, and touches only the part's own
    numbers in it (row i is flat[i·row_step : i·row_step + columns]). False (nothing done) where
    the rows of y are not runs of memory."""
    rows, columns = y.shape
    if y.strides[1] != y.itemsize or y.strides[0] < 0 or y.strides[0] % y.itemsize:
        return False
    if rows == 0 or columns == 0:
        return True
    row_step = y.strides[0] // y.itemsize
    if row_step == columns:     # a whole output: its flat view, made in C (as_strided's Python took
        flat = y.reshape(-1)    # 50-60 us in a training step, right after a product emptied the caches)
    else:
        flat = np.lib.stride_tricks.as_strided(y, shape=((rows - 1) * row_step + columns,), strides=(y.itemsize,))
    if negative_slope is None:
        _compiled["relu_rows"](flat, rows, columns, row_step, row_bias)
    else:
        _compiled["leaky_relu_rows"](flat, rows, columns, row_step, row_bias, np.float32(negative_slope))
    return True


def activate_rows(y, negative_slope, row_bias=None):
    """activate on a whole 2-D y (a (C, H·W·N) output, row_bias its channels' bias), its rows
    split over the threads."""
    if row_bias is None:
        _along_first_axis(lambda part: activate(part, negative_slope), (y,))
    else:
        _along_first_axis(lambda part, bias: activate(part, negative_slope, bias), (y, row_bias))


def activation_grad(g, y, out, negative_slope):
    """out = g · slope, the slope read off the activation's output y (see activation_grad_flat);
    False (nothing done) where g, y and out are not laid out alike."""
    a = np.float32(0 if negative_slope is None else negative_slope)
    return threads.split_flat(lambda *pieces: _compiled["activation_grad_flat"](*pieces, a), g, y, out)


SUM_LANES = 64    # a row is summed in 64 running sums (see sum_rows): with 16 or 32 Numba made no SIMD loop of it


def row_sums(rows, sums):
    """sums[c] = Σ_j rows[c, j] for a C-contiguous 2-D float32 rows (a bias gradient: dL/dy as
    (C, H·W·N)), the rows split over the threads, as sum_rows adds them."""
    _along_first_axis(lambda part, out: _compiled["sum_rows"](part, None, None, out, np.float32(0)), (rows, sums))


def activation_grad_rows(g, y, out, sums, negative_slope):
    """out = g · slope (activation_grad) and sums[c] = Σ_j out[c, j] (row_sums: the bias gradient)
    in one pass, for C-contiguous 2-D g, y and out (C, H·W·N), the rows split over the threads."""
    a = np.float32(0 if negative_slope is None else negative_slope)
    _along_first_axis(lambda *parts: _compiled["sum_rows"](*parts, a), (g, y, out, sums))


def product(a, b, out):
    """out = a · b elementwise (b float32 or bool), out laid out as b; False (nothing done) where
    that cannot run here. Where a is laid out as b, in one flat pass; else (a gradient that comes
    back in another layout than its activation's) by 2-D or 4-D loops in b's memory order."""
    if threads.split_flat(_compiled["product_flat"], a, b, out):
        return True
    if a.ndim not in (2, 4) or a.shape != b.shape or a.shape != out.shape:
        return False
    order = sorted(range(b.ndim), key=lambda axis: -b.strides[axis])   # b's slowest axis first
    _along_first_axis(_compiled[f"product_{a.ndim}d"], [x.transpose(order) for x in (a, b, out)])
    return True


def rmsprop(param, grad, mean_square, lr, rho, eps):
    """RMSprop's update (optim.RMSprop, eps outside the root) in place; False where not laid out alike."""
    scalars = [np.float32(v) for v in (lr, rho, 1 - rho, eps)]
    return threads.split_flat(lambda *pieces: _compiled["rmsprop_flat"](*pieces, *scalars),
                              param, grad, mean_square)


def adam(param, grad, m, v, lr_t, beta1, beta2, eps):
    """Adam's update (optim.Adam) in place; False where the four are not laid out alike."""
    scalars = [np.float32(s) for s in (lr_t, beta1, 1 - beta1, beta2, 1 - beta2, eps)]
    return threads.split_flat(lambda *pieces: _compiled["adam_flat"](*pieces, *scalars),
                              param, grad, m, v)


def product_flat(a, b, out):
    for k in range(a.size):
        out[k] = a[k] * np.float32(b[k])


def product_2d(a, b, out):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] * np.float32(b[i, j])


def product_4d(a, b, out):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            for k in range(a.shape[2]):
                for m in range(a.shape[3]):
                    out[i, j, k, m] = a[i, j, k, m] * np.float32(b[i, j, k, m])


def rmsprop_flat(p, g, s, lr, rho, one_minus_rho, eps):
    """s = rho·s + (1 − rho)·g²;  p = p − lr·g / (√s + eps), each operation in float32 as optim.py does it."""
    for k in range(p.size):
        s[k] = s[k] * rho + g[k] * one_minus_rho * g[k]
        p[k] -= g[k] * lr / (np.sqrt(s[k]) + eps)


def adam_flat(p, g, m, v, lr_t, beta1, one_minus_beta1, beta2, one_minus_beta2, eps):
    """m = β1·m + (1 − β1)·g;  v = β2·v + (1 − β2)·g²;  p = p − lr_t·m / (√v + eps), in float32."""
    for k in range(p.size):
        m[k] = m[k] * beta1 + g[k] * one_minus_beta1
        v[k] = v[k] * beta2 + g[k] * one_minus_beta2 * g[k]
        p[k] -= m[k] * lr_t / (np.sqrt(v[k]) + eps)


def leaky_relu_flat(x, y, slope, negative_slope):
    """slope = 1 where x > 0, a where x <= 0, 0 where x is NaN (as (x <= 0)·a + (x > 0)); y = x·slope."""
    for k in range(x.size):
        s = slope_at(x[k], negative_slope)
        slope[k] = s
        y[k] = x[k] * s


def relu_flat(x, y, positive):
    """positive = x > 0; y = max(x, 0) as NumPy's maximum gives it (+0 for -0, NaN for NaN)."""
    for k in range(x.size):
        positive[k] = x[k] > 0
        y[k] = np.float32(0) if x[k] <= 0 else x[k]


def relu_rows(flat, rows, columns, row_step, row_bias):
    """y = max(y (+ row_bias[i]), 0) in place for row i = flat[i·row_step:][:columns], as relu_flat
    makes it (row_bias may be None)."""
    for i in range(rows):
        row = flat[i * row_step:i * row_step + columns]  # a run of memory: its loop is SIMD
        for j in range(columns):
            x = row[j] if row_bias is None else row[j] + row_bias[i]
            row[j] = np.float32(0) if x <= 0 else x


def leaky_relu_rows(flat, rows, columns, row_step, row_bias, negative_slope):
    """y = slope·(y (+ row_bias[i])) in place for row i = flat[i·row_step:][:columns], the slope as
    leaky_relu_flat makes it (row_bias may be None)."""
    for i in range(rows):
        row = flat[i * row_step:i * row_step + columns]
        for j in range(columns):
            x = row[j] if row_bias is None else row[j] + row_bias[i]
            row[j] = x * slope_at(x, negative_slope)


def activation_grad_flat(g, y, out, negative_slope):
    """out = g · slope for y = relu(x) (slope a = 0) or leaky_relu(x, a), a >= 0: the slope 1 where
    y > 0, a where y <= 0, 0 where y is NaN. With a >= 0, y > 0 exactly where x > 0 and y is NaN
    exactly where x is, so these are the slopes relu_flat and leaky_relu_flat give."""
    for k in range(g.size):
        out[k] = g[k] * slope_at(y[k], negative_slope)


def sum_rows(g, y, out, sums, negative_slope):
    """sums[c] = Σ_j v[c, j] for the rows of v = g (y and out None), or of v = g · slope(y) as
    activation_grad_flat makes it, written to out. A row is summed in SUM_LANES running sums,
    number j (of each whole group of SUM_LANES) into sum j % SUM_LANES, a loop of SIMD adds; then
    those are added up in order, and the numbers after the last whole group one by one (a row
    shorter than SUM_LANES: _sum_short_rows). The order depends on the row's length only: the same
    bits on any thread count, fused or not."""
    rows, length = g.shape
    if length < SUM_LANES:
        _sum_short_rows(g, y, out, sums, negative_slope)
        return
    whole = length - length % SUM_LANES
    lanes = np.empty(SUM_LANES, sums.dtype)
    for c in range(rows):
        lanes[:] = 0
        row = g[c]
        for start in range(0, whole, SUM_LANES):
            part = row[start:start + SUM_LANES]      # slices: every loop index is k alone (SIMD)
            if y is None:
                for k in range(SUM_LANES):
                    lanes[k] += part[k]
            else:
                y_part, out_part = y[c, start:start + SUM_LANES], out[c, start:start + SUM_LANES]
                for k in range(SUM_LANES):
                    v = part[k] * slope_at(y_part[k], negative_slope)
                    out_part[k] = v
                    lanes[k] += v
        total = lanes[0]
        for k in range(1, SUM_LANES):
            total += lanes[k]
        for j in range(whole, length):
            if y is None:
                total += row[j]
            else:
                v = row[j] * slope_at(y[c, j], negative_slope)
                out[c, j] = v
                total += v
        sums[c] = total


def _sum_short_rows(g, y, out, sums, negative_slope):
    """sum_rows for rows shorter than SUM_LANES (a dense layer's: one number per image): out made
    first in one flat loop (SIMD), then each row added in 4 running sums, number j into sum j % 4,
    then (s0 + s1) + (s2 + s3). (Chollet's 12544 -> ReLU layer, batch 16: 76 us for the gradient
    and the sums, where the gradient and then a product with ones took 157.)"""
    rows, length = g.shape
    v = g
    if y is not None:
        flat_g, flat_y, flat_out = g.reshape(-1), y.reshape(-1), out.reshape(-1)
        for k in range(flat_g.size):
            flat_out[k] = flat_g[k] * slope_at(flat_y[k], negative_slope)
        v = out
    zero = sums.dtype.type(0)
    whole = length - length % 4
    for c in range(rows):
        row = v[c]
        s0 = s1 = s2 = s3 = zero
        for j in range(0, whole, 4):
            s0 += row[j]
            s1 += row[j + 1]
            s2 += row[j + 2]
            s3 += row[j + 3]
        for j in range(whole, length):
            s0 += row[j]
        sums[c] = (s0 + s1) + (s2 + s3)


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


def col2im_chwn(cols, out, sh, sw, top, left, bias, kind, slope):
    """out[c, r, s, n] = Σ over the offsets (i, j) whose patch read pixel (r, s) of
    cols[c, i, j, p, q, n], r = p·sH + i - top, s = q·sW + j - left, summed in (i, j) order.
    cols (C, kH, kW, OH, OW, N), out (C, H, W, N).

    Walked as NumPy's loop walks it, offset by offset, adding each block of cols onto the pixels
    it was read from: cols is read once, in order, with one channel of out in the cache; each
    pixel still gets its terms in (i, j) order, so the same sums."""
    channels, height, width, batch = out.shape
    _, kh, kw, oh, ow, _ = cols.shape
    for c in range(channels):
        out[c] = 0
        for i in range(kh):
            for j in range(kw):
                for p in range(oh):
                    r = p * sh + i - top
                    if r < 0 or r >= height:
                        continue
                    for q in range(ow):
                        s = q * sw + j - left
                        if 0 <= s < width:
                            for n in range(batch):
                                out[c, r, s, n] += cols[c, i, j, p, q, n]
        finish_channel(out, c, bias, kind, slope)


def col2im_gather_chwn(cols, out, sh, sw, top, left, bias, kind, slope):
    """out[c, r, s, n] = Σ over the offsets (i, j) whose patch read pixel (r, s) of
    cols[c, i, j, p, q, n], p = (r + top - i) / sH, q = (s + left - j) / sW, summed in (i, j)
    order. cols (C, kH, kW, OH, OW, N), out (C, H, W, N). Pixel by pixel: each pixel of out is
    written once, its terms gathered from the kH·kW blocks of cols."""
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
        finish_channel(out, c, bias, kind, slope)


def slope_at(x, negative_slope):
    """leaky_relu's slope at x (a = negative_slope, 0 for relu): 1 where x > 0, a where x <= 0, 0
    where x is NaN (as (x <= 0)·a + (x > 0)). Read off y = relu(x) or leaky_relu(x) with a >= 0
    it is the same: y > 0 exactly where x > 0, and y is NaN exactly where x is."""
    return np.float32(1) if x > 0 else (negative_slope if x <= 0 else np.float32(0))


def finish_channel(out, c, bias, kind, slope):
    """out[c] = out[c] + bias[c] (bias None: as it is), then relu (kind 1) or leaky_relu (kind 2,
    that slope) as relu_rows and leaky_relu_rows make them; nothing for kind 0 without a bias."""
    if bias is None and kind == 0:
        return
    finish_run(out[c].reshape(out.shape[1] * out.shape[2] * out.shape[3]), bias, c, kind, slope)


def finish_run(flat, bias, c, kind, slope):
    """finish_channel on a 1-D run of channel c's numbers (flat)."""
    b = np.float32(0) if bias is None else bias[c]
    if kind == 1:                                             # one loop per kind: each is SIMD
        for k in range(flat.size):
            x = flat[k] if bias is None else flat[k] + b
            flat[k] = np.float32(0) if x <= 0 else x
    elif kind == 2:
        for k in range(flat.size):
            x = flat[k] if bias is None else flat[k] + b
            flat[k] = x * slope_at(x, slope)
    else:
        for k in range(flat.size):
            flat[k] += b
