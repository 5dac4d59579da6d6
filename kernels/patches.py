"""im2col and col2im with the batch innermost: copy every kernel-sized patch into a column, and back.

Column layout (the one minivae/functional/im2col.py makes with strided slices, so conv2d is W @ cols):

    cols[(c·kh + i)·kw + j, (oy·out_w + ox)·N + n] = x[c, oy·sh − pad_top + i, ox·sw − pad_left + j, n]

a (C·kh·kw, out_h·out_w·N) matrix, with 0 where the index falls outside x (in the padding). The
image is given as its (C, H, W, N) view ("CHWN", batch fastest), the memory layout the
convolutions keep their activations in.
Only the top and left padding are given; the output size says how far the windows reach, so
the bottom/right padding is implied. That expresses both PyTorch's symmetric padding and
Keras "same" padding, which puts the odd extra row/column at the bottom/right.

How the threads are laid out: threadIdx.x walks the batch n, so that in both arrays consecutive
threads touch consecutive addresses (a warp reads and writes 128 contiguous bytes: coalesced).
Everything else (the channel, the tap, the window or pixel) is the same for a row of threads and
comes from the block and threadIdx.y, so no thread splits a flat index into six parts with
64-bit divisions for each element, which made the one-thread-per-flat-element versions slow.
"""
from numba import cuda


@cuda.jit
def im2col(x, cols, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w):
    """x (C, H, W, N) -> cols (C·kh·kw, out_h·out_w·N), layout above.

    Grid (window blocks, column rows): block row r = (c, i, j) of cols; thread (tx, ty) copies
    tap (i, j) of window blockIdx.x·blockDim.y + ty = (oy, ox) for images n = tx, tx + blockDim.x, ...
    (a contiguous run of x into a contiguous run of cols), or writes 0 in the padding.
    """
    _, height, width, batch = x.shape
    windows = out_h * out_w
    for row in range(cuda.blockIdx.y, cols.shape[0], cuda.gridDim.y):
        c, i, j = row // (kh * kw), (row // kw) % kh, row % kw
        for window in range(cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y, windows,
                            cuda.gridDim.x * cuda.blockDim.y):
            oy = window // out_w
            y = oy * sh - pad_top + i
            xx = (window - oy * out_w) * sw - pad_left + j
            inside = 0 <= y < height and 0 <= xx < width
            start = window * batch
            for n in range(cuda.threadIdx.x, batch, cuda.blockDim.x):
                cols[row, start + n] = x[c, y, xx, n] if inside else 0.0


@cuda.jit
def col2im(cols, x, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w):
    """cols (C·kh·kw, out_h·out_w·N) -> x (C, H, W, N): the adjoint of im2col.

    Grid (pixel blocks, channels): thread (tx, ty) of block (b, c) owns pixels x[c, y, xx, n] of
    pixel b·blockDim.y + ty = (y, xx) for n = tx, tx + blockDim.x, ... and sums every column entry
    im2col copied from it: tap i of window row oy reads image row y when oy·sh = y + pad_top − i,
    so for each i that oy counts only if it is a whole number in [0, out_h) (likewise j, ox). Each
    thread gathers into its own pixels, so no two threads write one address and no atomics are
    needed; a warp reads each tap's entries for 32 consecutive n, a contiguous run of cols. The taps
    are added in the order (i, j), the order functional/im2col.py adds its slices in.
    """
    channels, height, width, batch = x.shape
    for c in range(cuda.blockIdx.y, channels, cuda.gridDim.y):
        for pixel in range(cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y, height * width,
                           cuda.gridDim.x * cuda.blockDim.y):
            y = pixel // width
            xx = pixel - y * width
            for n in range(cuda.threadIdx.x, batch, cuda.blockDim.x):
                total = 0.0
                for i in range(kh):
                    oy_sh = y + pad_top - i
                    oy = oy_sh // sh
                    if oy_sh < 0 or oy * sh != oy_sh or oy >= out_h:
                        continue
                    for j in range(kw):
                        ox_sw = xx + pad_left - j
                        ox = ox_sw // sw
                        if ox_sw < 0 or ox * sw != ox_sw or ox >= out_w:
                            continue
                        total += cols[(c * kh + i) * kw + j, (oy * out_w + ox) * batch + n]
                x[c, y, xx, n] = total
