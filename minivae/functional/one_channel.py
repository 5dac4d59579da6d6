"""A direct convolution for a network's first layer: one channel in, stride 1, no dL/dx; and the
backward pass of a last layer with one channel out (conv.py's _one_channel_out_grads: its dL/dx
is a convolution of one channel in, dL/dy by w, and its dL/dw that one's weight gradient).

The first layer of both MNIST models reads one channel (1 -> 32) from the images, which need no
gradient. By im2col its matrix products are thin: W (32, 9) @ cols (9, H·W·N) sums 9 terms per
output, and OpenBLAS runs a product that thin at a small fraction of its speed, after a copy into
the patch matrix; the weight gradient dY @ colsᵀ needs dY = dL/dy · act'(y) written out first.
Here the kernel taps (i, j) shift whole image rows: with the batch innermost in memory (CHWN, see
im2col.py) tap (i, j) of output row p reads input row p + i shifted by j whole pixels of N numbers,
so a row of y is one long SIMD loop over the nine shifted input rows (a 3×3 kernel: the input padded
with zeros first, the taps summed in a register, then the bias and the activation), and the weight
gradient is one such loop per tap, summing products; no patch matrix is made.

    spread   y[o, p, q]  = act(Σ_{i,j} w[o, i, j] · x[p + i − top, q + j − left] + b[o])
    weights  dw[o, i, j] = Σ_{p,q} dY[o, p, q] · x[p + i − top, q + j − left],   db[o] = Σ_{p,q} dY[o, p, q]

(x is 0 off the image: the zero padding), with dY = dL/dy · act'(y) made inside weights' pass,
one channel at a time into a small buffer that stays in the cache, instead of a pass of its own
writing out the whole of dY.

For a 3×3 kernel in float32 (both models' first layer), with each row of the output whole
vectors, the weight gradient is made in one pass over dL/dy and y instead of ten over dY
(weights_3x3): along each output row, a vector of dY is made in a register and multiplied onto the
nine shifted input runs of the padded input, the nine taps' sums and db's kept lane by lane in ten
registers (a block in LLVM's IR, simd.py), their lanes added up at the end (chollet at batch 16,
one thread: 0.59 -> 0.20 ms).

The numbers are those of the im2col path, which stays the reference (and the path wherever x
needs its gradient), up to float rounding (tests/test_one_channel.py). Each output number is
summed whole by one thread, in a fixed order (both kernels split the output channels over the
threads), so the bits do not depend on the thread count.
"""
import os

import numpy as np

from .. import cpu_kernels, threads
from ..workspace import workspace
from .im2col import to_chwn

settings = {"enabled": os.environ.get("MINIVAE_ONE_CHANNEL", "auto") != "never"}
_compiled = {}

NO_ACTIVATION, RELU, LEAKY_RELU = 0, 1, 2     # the kinds of cpu_kernels.activation_code


def suits(x, w, stride, needs_grad):
    """Does the convolution of x by the kernel w (C_out, C_in, kH, kW) take this path? One channel
    in, stride 1, x needing no gradient, float32 or float64 NumPy arrays, and the CPU kernels on."""
    return (settings["enabled"] and not needs_grad and stride == (1, 1) and w.shape[1] == 1
            and isinstance(x, np.ndarray)
            and x.dtype == w.dtype and x.dtype in (np.float32, np.float64) and _compile())


def rows(a):
    """(N, C, H, W) -> (C, H, W·N): each channel's image rows with the batch innermost, as the
    kernels walk them (free where a is a view of CHWN memory, as the layers make them)."""
    n, c, h, wd = a.shape
    return to_chwn(a).reshape(c, h, wd * n)


def spread(x, w, n, out_hw, pads, bias=None, activation=None):
    """x (1, H, W·N) rows of n images, w (C, 1, kH, kW) -> y (C, OH, OW·N), + bias (C,) and then
    the activation where given, in the same pass."""
    y = workspace.empty((w.shape[0], out_hw[0], out_hw[1] * n), x.dtype)
    kind, slope = cpu_kernels.activation_code(activation, x.dtype)
    taps = np.ascontiguousarray(w[:, 0])                       # (C, kH, kW)
    top, bottom, left, right = pads
    padded = _padded(x[0], top, bottom, left * n, right * n)  # the image rows, zeros around
    _by_parts(w.shape[0], lambda part: _compiled["spread_rows"](
        padded, taps[part], None if bias is None else bias[part], y[part], n, kind, slope, x.dtype.type(1)))
    return y


def weights(g, y, x, n, kernel, pads, activation=None):
    """dL/dw (C, 1, kH, kW) and dL/db (C,) from g = dL/dy and y, the rows (C, OH, OW·N) of the
    layer's output, and x (1, H, W·N), for n images; dY = g · act'(y) is made inside the pass.
    A 3×3 kernel in float32, the rows whole vectors, by weights_3x3 (one pass over g and y, the
    ten sums in registers), else by weights_rows."""
    c = g.shape[0]
    dw = np.empty((c, 1) + tuple(kernel), g.dtype)
    db = np.empty(c, g.dtype)
    kind, slope = cpu_kernels.activation_code(activation, g.dtype)
    if tuple(kernel) == (3, 3) and g.dtype == np.float32 and g.shape[2] % _lanes() == 0:
        top, bottom, left, right = pads
        padded = _padded(x[0], top, bottom, left * n, right * n)
        taps, bias_sums = dw.reshape(c, 9), db
        _by_parts(c, lambda part: _compiled["weights_3x3"](
            g[part], y[part], padded, taps[part], bias_sums[part], n, kind, slope))
        return dw, db
    _by_parts(c, lambda part: _compiled["weights_rows"](
        g[part], y[part], x[0], dw[part, 0], db[part], n, pads[0], pads[2], kind, slope,
        g.dtype.type(1)))
    return dw, db


def _padded(rows, top, bottom, left, right):
    """rows (H, L) inside zeros: (top + H + bottom, left + L + right), a workspace array."""
    padded = workspace.zeros((rows.shape[0] + top + bottom, rows.shape[1] + left + right), rows.dtype)
    padded[top:top + rows.shape[0], left:left + rows.shape[1]] = rows
    return padded


def _by_parts(size, task):
    """task(slice) for count() consecutive parts of range(size) at once, on the pool's threads."""
    parts = [slice(*p) for p in threads.bounds(size, max(1, min(threads.count(), size)))]
    threads.run(lambda k: task(parts[k]), len(parts))


def _compile():
    """Compile the kernels below (or load them from the cache) once; False where the CPU kernels
    are off (MINIVAE_CPU_KERNELS=never) or Numba is missing."""
    if not cpu_kernels.available():
        return False
    if "weights_3x3" not in _compiled:
        globals().update(weights_block=_weights_block(_lanes()), weights_block_lanes=_lanes())
        _compiled.update({kernel.__name__: cpu_kernels.jit(kernel)
                          for kernel in (spread_rows, weights_rows, weights_3x3)})
    return True


def _lanes():
    if "lanes" not in _compiled:
        from . import simd
        _compiled["lanes"] = simd.vector_width()
    return _compiled["lanes"]


# ---- the kernels ----------------------------------------------------------------------------------
#
# Every array is a stack of image rows with the batch innermost: pixel q of a row holds its n images
# at [q·n, q·n + n). spread_rows reads the input padded with zeros, so tap (i, j) of output row p
# reads padded row p + i from number j·n on, the row's whole length. weights_rows reads it as it
# is: tap (i, j) reads input row p + i − top, shifted by (j − left)·n numbers; the output pixels q
# whose tap lands on the image lie in [max(0, left − j), min(OW, W + left − j)), the others read
# zero padding and are skipped. Each pass is written over slices of equal length, a loop that
# Numba's compiler makes SIMD.

def spread_rows(x, w, bias, y, n, kind, slope, one):
    """y[o, p] = act(Σ_{i,j} w[o, i, j] · x[p + i] shifted by j, + bias[o]), for x the padded rows
    (OH + kH − 1, (OW + kW − 1)·n) and y (C, OH, OW·n); kind and slope as
    cpu_kernels.activation_code gives them. Each row of y is made in one pass: the kH·kW taps of an
    output number summed in a register, in the order i, j, then the bias and the activation added
    (for a 3×3 kernel; any other passes over the row once per tap, and once more for the
    activation)."""
    channels, kh, kw = w.shape
    out_height, span = y.shape[1], y.shape[2]
    zero = one - one                                          # 0 and 1 in the arrays' dtype
    for o in range(channels):
        b = zero if bias is None else bias[o]
        for p in range(out_height):
            row = y[o, p]
            if kh == 3 and kw == 3:
                # the nine taps' input runs: rows p, p + 1, p + 2, each shifted by 0, 1 and 2 pixels
                a0, a1, a2 = x[p, :span], x[p, n:n + span], x[p, 2 * n:2 * n + span]
                b0, b1, b2 = x[p + 1, :span], x[p + 1, n:n + span], x[p + 1, 2 * n:2 * n + span]
                c0, c1, c2 = x[p + 2, :span], x[p + 2, n:n + span], x[p + 2, 2 * n:2 * n + span]
                w00, w01, w02 = w[o, 0, 0], w[o, 0, 1], w[o, 0, 2]
                w10, w11, w12 = w[o, 1, 0], w[o, 1, 1], w[o, 1, 2]
                w20, w21, w22 = w[o, 2, 0], w[o, 2, 1], w[o, 2, 2]
                for e in range(span):
                    v = zero + w00 * a0[e] + w01 * a1[e] + w02 * a2[e] + w10 * b0[e] + w11 * b1[e] \
                        + w12 * b2[e] + w20 * c0[e] + w21 * c1[e] + w22 * c2[e] + b
                    if kind == RELU:
                        v = zero if v <= 0 else v
                    elif kind == LEAKY_RELU:
                        v = v * (one if v > 0 else (slope if v <= 0 else zero))
                    row[e] = v
                continue
            row[:] = zero
            for i in range(kh):
                for j in range(kw):
                    tap, frm = w[o, i, j], x[p + i, j * n:j * n + span]
                    for e in range(span):
                        row[e] += tap * frm[e]
            for e in range(span):
                v = row[e] + b
                if kind == RELU:
                    v = zero if v <= 0 else v
                elif kind == LEAKY_RELU:
                    v = v * (one if v > 0 else (slope if v <= 0 else zero))
                row[e] = v


def weights_rows(g, y, x, dw, db, n, top, left, kind, slope, one):
    """dw[o, i, j] = Σ_{p,q} dY[o, p, q] · x[p + i − top, q + j − left] and db[o] = Σ dY[o], for
    dY = g · the activation's slope read off y (g itself with NO_ACTIVATION), the rows g, y
    (C, OH, OW·n) and x (H, W·n). A channel's dY is made first, into memory that stays in the
    cache; then for each tap its products are summed per number of a row, over the rows (a SIMD
    loop), and those sums added up in order."""
    height, width = x.shape[0], x.shape[1] // n
    channels, kh, kw = dw.shape
    out_height, span = g.shape[1], g.shape[2]
    out_width = span // n
    zero = one - one
    dy = np.empty((out_height, span), g.dtype)                # one channel's dY
    partial = np.empty(span, g.dtype)
    for o in range(channels):
        for p in range(out_height):
            gr, yr, dr = g[o, p], y[o, p], dy[p]
            if kind == NO_ACTIVATION:
                dr[:] = gr
            else:
                for e in range(span):                         # slope: 1 where y > 0, a where y <= 0, 0 for NaN
                    dr[e] = gr[e] * (one if yr[e] > 0 else (slope if yr[e] <= 0 else zero))
        for t in range(kh * kw + 1):                          # the taps, then the bias (t = kh·kw)
            partial[:] = zero
            i, j = t // kw, t % kw
            for p in range(out_height):
                if t == kh * kw:
                    dr = dy[p]
                    for e in range(span):
                        partial[e] += dr[e]
                    continue
                r = p + i - top
                if r < 0 or r >= height:
                    continue
                q0, q1 = max(0, left - j), min(out_width, width + left - j)
                if q0 >= q1:
                    continue
                to = partial[q0 * n:q1 * n]
                dr = dy[p, q0 * n:q1 * n]
                frm = x[r, (q0 + j - left) * n:(q1 + j - left) * n]
                for e in range(to.size):
                    to[e] += dr[e] * frm[e]
            total = zero
            for e in range(span):
                total += partial[e]
            if t < kh * kw:
                dw[o, i, j] = total
            else:
                db[o] = total


weights_block = None   # made by _compile


def weights_3x3(g, y, x, taps, db, n, kind, slope):
    """weights_rows for a 3×3 kernel in float32: taps (C, 9) and db (C,), for g and y (C, OH, OW·n)
    and x the input's rows padded with zeros (OH + 2, (OW + 2)·n). Each output row is one loop of
    weights_block over its vectors; each tap's lanes are summed over the rows in memory (row by row,
    in order) and at the end added up as a tree."""
    channels, out_height, span = g.shape
    lanes = weights_block_lanes
    sums = np.empty((10, lanes), np.float32)                  # per lane: the 9 taps' sums, then db's
    flat_x = x.reshape(-1)
    for o in range(channels):
        sums[:] = 0
        flat_g, flat_y = g[o].reshape(-1), y[o].reshape(-1)
        for p in range(out_height):
            weights_block(flat_g, flat_y, flat_x, sums.reshape(-1), p * span, p * x.shape[1], span, n,
                          x.shape[1], kind, slope)
        width = lanes
        while width > 1:                                      # each tap's lanes added as a tree
            width //= 2
            for t in range(10):
                for lane in range(width):
                    sums[t, lane] += sums[t, lane + width]
        for t in range(9):
            taps[o, t] = sums[t, 0]
        db[o] = sums[9, 0]


weights_block_lanes = 16   # set by _compile (a constant in weights_3x3)


def _weights_block(lanes):
    """The intrinsic block(g, y, x, sums, at, x_at, span, n, ldx, kind, slope): over the vectors v of
    one output row, dY = g[at + v ...] times the activation's slope read off y[at + v ...] (1 where
    y > 0, slope where y <= 0 (0 for relu), 0 for NaN; g itself for kind NO_ACTIVATION), and for
    tap (i, j) Σ_v dY · x[x_at + i·ldx + j·n + v ...], and Σ_v dY, ten vectors of sums kept in
    registers, then added onto sums[t·lanes ...]."""
    import numba

    from . import simd

    @numba.extending.intrinsic
    def block(typingctx, g, y, x, sums, at, x_at, span, n, ldx, kind, slope):
        def codegen(context, builder, signature, args):
            vec, fma, data, integer = simd.tools(context, builder, signature, args, lanes)
            g_p, y_p = builder.gep(data(0), [integer(4)]), builder.gep(data(1), [integer(4)])
            x_p, sums_p = builder.gep(data(2), [integer(5)]), data(3)
            n, ldx = integer(7), integer(8)
            taps = [builder.gep(x_p, [builder.add(builder.mul(simd.i64(i), ldx), builder.mul(simd.i64(j), n))])
                    for i in range(3) for j in range(3)]
            before = simd.gradient_before(builder, vec, lanes,
                                          builder.icmp_signed("!=", integer(9), simd.i64(NO_ACTIVATION)), args[10])
            entry, loop, done, v, acc = simd.open_loop(builder, vec, 10)
            offset = builder.mul(v, simd.i64(lanes))
            g_v = simd.load(builder, builder.gep(g_p, [offset]), vec)
            y_v = simd.load(builder, builder.gep(y_p, [offset]), vec)
            dy = before(g_v, y_v)
            new = [builder.call(fma, [simd.load(builder, builder.gep(tap, [offset]), vec), dy, acc[t]])
                   for t, tap in enumerate(taps)]
            new.append(builder.fadd(acc[9], dy))
            simd.close_loop(builder, v, acc, new, entry, loop, builder.sdiv(integer(6), simd.i64(lanes)), done, vec)
            for t in range(10):
                place = builder.gep(sums_p, [simd.i64(t * lanes)])
                simd.store(builder, builder.fadd(simd.load(builder, place, vec), new[t]), place, vec)
            return context.get_dummy_value()
        return numba.types.none(g, y, x, sums, at, x_at, span, n, ldx, kind, slope), codegen
    return block
