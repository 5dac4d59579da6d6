"""A dense layer with a narrow input on the CPU: the decoders' first layer, the 2 numbers of the
latent z in, 12544 (Chollet) or 3136 (Foster) out.

linear keeps the batch innermost (linear.py): x as X (K, N), y as Y (F, N), w as it is (K, F).
With K that small, each output row is K rows of X scaled, and each gradient a sum along one row:

    forward   Y[f] = act(b[f] + Σ_k w[k, f] · X[k])
    backward  G'[f] = G[f] · act'(Y[f]),  db[f] = Σ_n G'[f, n],  dw[k, f] = Σ_n X[k, n] · G'[f, n],
              dX[k] = Σ_f w[k, f] · G'[f]

OpenBLAS runs a product with K = 2 at a few GFLOP/s, and the plain path goes over the (F, N)
arrays five times: the product writes Y and the bias and activation pass rewrites it; backward,
one pass writes G' and sums db, and the two products read G' back. Here forward writes Y once,
each row finished in its registers, and backward reads G and Y once and writes no G': along row f,
a run of LANES numbers of the batch at a time, G' is made in a register, Σ G' and each
Σ X[k] · G' kept lane by lane in K + 1 more, and each of dX's K rows (small enough to stay in
the cache) takes w[k, f] · G'. At the row's end each sum's lanes are added up.

Each thread takes a stretch of rows: db and dw are each summed by one thread in a fixed order, so
their bits do not depend on the thread count; dX is summed by each thread over its rows and the
threads' sums added in order (other last bits on another thread count). The forward's sums are
those of OpenBLAS's product (one multiply, then fused multiply-adds in k order), and its bias and
activation those of cpu_kernels.finish_run. The matrix products of linear.py stay the reference,
tested against this path (tests/test_narrow.py).
"""
import os

import numpy as np

from .. import cpu_kernels, threads
from ..workspace import workspace
from . import simd

settings = {"enabled": os.environ.get("MINIVAE_NARROW", "auto") != "never"}
MAX_IN = 4          # in_features at most (blocks are compiled for each width that is used)
_compiled = {}      # "forward", "backward": the loops over rows; "lanes": the vector width


def suits(x, w):
    """Does linear take this path for x (N, K) and w (K, F)? float32 NumPy arrays, K at most
    MAX_IN, w C-contiguous (as a parameter is), the batch a whole number of vectors, and the CPU
    kernels on."""
    return (settings["enabled"] and isinstance(x, np.ndarray) and isinstance(w, np.ndarray)
            and x.dtype == w.dtype == np.float32 and 0 < w.shape[0] <= MAX_IN and w.flags.c_contiguous
            and cpu_kernels.available() and x.shape[0] > 0 and x.shape[0] % _lanes() == 0)


def forward(x, w, bias=None, activation=None):
    """Y (F, N) = act(wᵀ @ X + bias[:, None]) for x (N, K), its rows split over the threads."""
    xt = np.ascontiguousarray(x.T)                            # X (K, N): a copy where x is laid out otherwise
    width, n = w.shape[1], x.shape[0]
    y = workspace.empty((width, n), x.dtype)
    kind, slope = cpu_kernels.activation_code(activation)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias) if has_bias else np.zeros(width, x.dtype)
    rows, ks = _loop("forward"), (0,) * w.shape[0]
    pieces = _pieces(width, n)
    threads.run(lambda p: rows(xt, w, bias, has_bias, kind, slope, y, ks, *pieces[p]), len(pieces))
    return y


def backward(g, y, x, w, activation, need_dx=True):
    """(dX (K, N) or None where not needed, dw (K, F), db (F,)) for G = g (F, N) (C-contiguous, as
    y), y and x (N, K) as forward had them, and the activation fused there (or None)."""
    xt = np.ascontiguousarray(x.T)
    width, n = w.shape[1], x.shape[0]
    slope = cpu_kernels.activation_code(activation)[1]
    dw, db = np.empty(w.shape, g.dtype), np.empty(width, g.dtype)
    pieces = _pieces(width, n)
    # each thread's sum of dX a cache line (16 floats) or more from the next: written at every row,
    # a line two threads shared would pass between their cores each time
    partials = np.zeros((len(pieces), xt.size + 16), g.dtype)[:, :xt.size].reshape((len(pieces),) + xt.shape)
    rows, ks, with_slope = _loop("backward"), (0,) * w.shape[0], activation is not None
    threads.run(lambda p: rows(g, y, xt, w, with_slope, slope, dw, db, partials[p], ks, *pieces[p]), len(pieces))
    dx = None
    if need_dx:
        dx = partials[0]
        for part in partials[1:]:
            dx += part
    return dx, dw, db


def _pieces(rows, n):
    """[start, stop) of the rows for each thread (one, where the arrays are small)."""
    return threads.bounds(rows, max(1, min(threads.count(), rows * n // threads.MIN_PIECE)))


def _lanes():
    if "lanes" not in _compiled:
        _compiled["lanes"] = simd.vector_width()
    return _compiled["lanes"]


# ---- the kernels: loops over rows around the blocks below ----------------------------------------
# K reaches the loops as a tuple of K zeros, `ks`: its type (a tuple of K ints) tells Numba the K, so
# that it compiles (and caches on disk) each loop once for each K a model has, its block written for it.

forward_block = backward_block = None    # made by _loop


def forward_rows(xt, w, bias, has_bias, kind, slope, y, ks, f0, f1):
    """y[f] for the rows f0 <= f < f1 (forward)."""
    n, width = xt.shape[1], w.shape[1]
    flat_x, flat_w, flat_y = xt.reshape(-1), w.reshape(-1), y.reshape(-1)
    for f in range(f0, f1):
        forward_block(flat_x, flat_w, flat_y, bias, f, width, n, has_bias, kind, slope, ks)


def backward_rows(g, y, xt, w, with_slope, slope, dw, db, dx, ks, f0, f1):
    """dw[:, f] and db[f] for the rows f0 <= f < f1, and their share of dX added into dx (backward)."""
    n, width = xt.shape[1], w.shape[1]
    flat_g, flat_y, flat_x, flat_w = g.reshape(-1), y.reshape(-1), xt.reshape(-1), w.reshape(-1)
    flat_dw, flat_dx = dw.reshape(-1), dx.reshape(-1)
    for f in range(f0, f1):
        backward_block(flat_g, flat_y, flat_x, flat_w, flat_dw, db, flat_dx, f, width, n, with_slope, slope, ks)


def _loop(direction):
    """forward_rows or backward_rows, compiled (or loaded from the cache) at the first use."""
    if direction not in _compiled:
        g = globals()
        g["forward_block"], g["backward_block"] = _forward_block(_lanes()), _backward_block(_lanes())
        _compiled.update(forward=cpu_kernels.jit(forward_rows), backward=cpu_kernels.jit(backward_rows))
    return _compiled[direction]


# ---- the blocks, in LLVM's IR (simd.py): Numba's own loops over rows this short ran 3-10x slower --

def _forward_block(lanes):
    """The intrinsic block(x, w, y, bias, f, width, n, has_bias, kind, slope, ks), ks K zeros: for each run of
    lanes numbers v of the batch, y[f·n + v ...] = finish(w[f]·x[v ...], then + w[k·width + f]·x[k·n
    + v ...] for 0 < k < k_in, each a fused multiply-add), finished as simd.finisher does it."""
    import numba

    @numba.extending.intrinsic
    def block(typingctx, x, w, y, bias, f, width, n, has_bias, kind, slope, ks):
        k_in = ks.count

        def codegen(context, builder, signature, args):
            vec, fma, data, integer = simd.tools(context, builder, signature, args, lanes)
            x_p, w_p, y_p, bias_p = data(0), data(1), data(2), data(3)
            f, width, n = integer(4), integer(5), integer(6)
            ws = [simd.splat(builder, builder.load(builder.gep(w_p, [builder.add(builder.mul(simd.i64(k), width), f)])),
                             vec, lanes) for k in range(k_in)]
            b = simd.splat(builder, builder.load(builder.gep(bias_p, [f])), vec, lanes)
            finish = simd.finisher(builder, vec, lanes, integer(7), integer(8), args[9])
            row = builder.gep(y_p, [builder.mul(f, n)])
            entry, loop, done, v, _ = simd.open_loop(builder, vec, 0)
            at = builder.mul(v, simd.i64(lanes))
            xs = [simd.load(builder, builder.gep(x_p, [builder.add(builder.mul(simd.i64(k), n), at)]), vec)
                  for k in range(k_in)]
            s = builder.fmul(ws[0], xs[0])
            for k in range(1, k_in):
                s = builder.call(fma, [ws[k], xs[k], s])
            simd.store(builder, finish(s, b), builder.gep(row, [at]), vec)
            simd.close_loop(builder, v, [], [], entry, loop, builder.sdiv(n, simd.i64(lanes)), done, vec)
            return context.get_dummy_value()
        return numba.types.none(x, w, y, bias, f, width, n, has_bias, kind, slope, ks), codegen
    return block


def _backward_block(lanes):
    """The intrinsic block(g, y, x, w, dw, db, dx, f, width, n, with_slope, slope, ks) for row f: over
    the runs v of the batch, g' = g[f·n + v ...] times the slope read off y[f·n + v ...] where
    with_slope (1 where y > 0, slope where y <= 0, 0 where y is NaN: cpu_kernels.slope_at), else
    g' = g; Σ g' and Σ x[k·n + v ...] · g' kept lane by lane, and dx[k·n + v ...] += w[k·width +
    f] · g'; then db[f] and dw[k·width + f] each the sum of its lanes (simd.add_lanes)."""
    import numba

    @numba.extending.intrinsic
    def block(typingctx, g, y, x, w, dw, db, dx, f, width, n, with_slope, slope, ks):
        k_in = ks.count

        def codegen(context, builder, signature, args):
            vec, fma, data, integer = simd.tools(context, builder, signature, args, lanes)
            g_p, y_p, x_p, w_p, dw_p, db_p, dx_p = (data(i) for i in range(7))
            f, width, n = integer(7), integer(8), integer(9)
            before = simd.gradient_before(builder, vec, lanes, builder.icmp_signed("!=", integer(10), simd.i64(0)),
                                          args[11])
            w_at = [builder.add(builder.mul(simd.i64(k), width), f) for k in range(k_in)]
            ws = [simd.splat(builder, builder.load(builder.gep(w_p, [at])), vec, lanes) for at in w_at]
            row_g, row_y = builder.gep(g_p, [builder.mul(f, n)]), builder.gep(y_p, [builder.mul(f, n)])
            entry, loop, done, v, sums = simd.open_loop(builder, vec, k_in + 1)
            at = builder.mul(v, simd.i64(lanes))
            g_v = simd.load(builder, builder.gep(row_g, [at]), vec)
            y_v = simd.load(builder, builder.gep(row_y, [at]), vec)
            gp = before(g_v, y_v)
            new = [builder.fadd(sums[0], gp)]
            for k in range(k_in):
                offset = builder.add(builder.mul(simd.i64(k), n), at)
                new.append(builder.call(fma, [simd.load(builder, builder.gep(x_p, [offset]), vec), gp, sums[k + 1]]))
                dx_v = builder.gep(dx_p, [offset])
                simd.store(builder, builder.call(fma, [ws[k], gp, simd.load(builder, dx_v, vec)]), dx_v, vec)
            simd.close_loop(builder, v, sums, new, entry, loop, builder.sdiv(n, simd.i64(lanes)), done, vec)
            builder.store(simd.add_lanes(builder, new[0], lanes), builder.gep(db_p, [f]))
            for k in range(k_in):
                builder.store(simd.add_lanes(builder, new[k + 1], lanes), builder.gep(dw_p, [w_at[k]]))
            return context.get_dummy_value()
        return numba.types.none(g, y, x, w, dw, db, dx, f, width, n, with_slope, slope, ks), codegen
    return block
