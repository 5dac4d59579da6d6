"""im2col and col2im with the batch innermost: copy every kernel-sized patch into a column, and back.

Column layout (the one minivae/functional/im2col.py makes with strided slices, so conv2d is W @ cols):

    cols[(c·kh + i)·kw + j, (oy·out_w + ox)·N + n] = x[c, oy·sh − pad_top + i, ox·sw − pad_left + j, n]

a (C·kh·kw, out_h·out_w·N) matrix, with 0 where the index falls outside x (in the padding). The
image is given as its (C, H, W, N) view ("CHWN", batch fastest), the memory layout the
convolutions keep their activations in: consecutive threads then read and write consecutive
addresses, one image of the batch each.
Only the top and left padding are given; the output size says how far the windows reach, so
the bottom/right padding is implied. That expresses both PyTorch's symmetric padding and
Keras "same" padding, which puts the odd extra row/column at the bottom/right.
"""
from numba import cuda


@cuda.jit
def im2col(x, cols, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w):
    """x (C, H, W, N) -> cols (C·kh·kw, out_h·out_w·N), layout above.

    Each thread writes one element of cols: it splits its row into (c, i, j) and its column
    into (oy, ox, n), and reads the pixel that tap (i, j) of window (oy, ox) covers, or 0.
    """
    _, height, width, batch = x.shape
    n_cols = cols.shape[1]
    for k in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        row, col = k // n_cols, k % n_cols
        c, i, j = row // (kh * kw), (row // kw) % kh, row % kw
        oy, ox, n = col // (out_w * batch), (col // batch) % out_w, col % batch
        y = oy * sh - pad_top + i
        xx = ox * sw - pad_left + j
        inside = 0 <= y < height and 0 <= xx < width
        cols[row, col] = x[c, y, xx, n] if inside else 0.0


@cuda.jit
def col2im(cols, x, kh, kw, sh, sw, pad_top, pad_left, out_h, out_w):
    """cols (C·kh·kw, out_h·out_w·N) -> x (C, H, W, N): the adjoint of im2col.

    Each thread owns one pixel x[c, y, xx, n] and sums every column entry im2col copied from it:
    tap i of window row oy reads image row y when oy·sh = y + pad_top − i, so for each i that
    oy counts only if it is a whole number in [0, out_h) (likewise j, ox). The thread gathers
    into its own pixel, so no two threads write one address and no atomics are needed. The taps
    are added in the order (i, j), the order functional/im2col.py adds its slices in.
    """
    _, height, width, batch = x.shape
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c, y = k // (height * width * batch), (k // (width * batch)) % height
        xx, n = (k // batch) % width, k % batch
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
