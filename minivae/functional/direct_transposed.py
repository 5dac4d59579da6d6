"""Direct transposed convolution on the CPU: col2im(Wᵀ @ X) without the product Wᵀ @ X in memory.

A transposed convolution's output (and a strided conv2d's dL/dx, the same map) is, in conv.py,
the product Wᵀ @ X, one row per output channel c and kernel tap t = (i, j), one column per input
pixel (p, q) and image n, followed by col2im, which adds each number of that matrix onto the
output pixel it lands on:

    out[c, p·sH + i - top, q·sW + j - left, n] += (Wᵀ @ X)[(c, i, j), (p, q, n)]

At a stride-2 layer of 28×28 outputs (Foster's conv_1 dL/dx, its decoder's conv_t_2) that matrix
is 7.2 MB at batch 32: written to memory by the product, read back by col2im. Here the two are one
pass (whole training steps 6-10% faster on a 2-core Xeon VM: docs/performance.md). For one output
channel c and a pair of runs of LANES (16, or 8 without AVX-512) columns of X (the batch
innermost, as the convolutions keep it: CHWN, see im2col.py), a block keeps the kH·kW × 2 vectors
of sums in registers through the sum over X's channels,

    s[t, u] = Σ_k W[k, c, t] · X[k, run u],         t = (i, j) < kH·kW, u < 2,

then adds each onto the output where it lands (`toff`, a table of output offsets per run and
tap; a tap that lands outside the output is added into a scratch vector and dropped). The output
channel's rows being written stay in the cache, and X is read in stripes of input rows
(STRIPE_BYTES) that stay in the cache while the thread's channels pass over them.

The runs are taken from the last to the first: each output pixel then gets its terms in (i, j)
order, as col2im adds them, each term made over K in k order with one fused multiply-add per term,
as OpenBLAS makes a product whose K it sums in one block. So the bits are those of col2im(Wᵀ @ X)
(tests/test_direct_transposed.py), which stays the reference. The threads split the output
channels: each channel is made the same way on any thread count. Output rows are zeroed when the
walk first reaches them and finished (the bias, then the activation) as soon as all their terms are in.
"""
import numpy as np

from .. import cpu_kernels, threads
from ..workspace import workspace
from . import direct, simd

MIN_CHANNELS = 8        # channels in (X's rows): with fewer a block's sums are short
KERNEL = (3, 3)         # the blocks' kernel size (every layer of both books' models): 2 × 9 vectors of sums
STRIPE_BYTES = 256 << 10    # the input rows each stripe of X holds (at 32 and 1024 KiB no faster alone)
FETCH_AHEAD = 2         # each block prefetches the runs of X the next block reads (they lie just before)
_compiled = {}
_tables = {}            # geometry -> toff: made once per layer shape
# made by _compile (the blocks need Numba and this CPU's vector width)
scatter_block_1 = scatter_block_2 = None


def suits(x_mat, w, batch, bias=None):
    """Does col2im(Wᵀ @ X) for X = x_mat (C_in, H·W·N) and w (C_in, C_out, kH, kW) take this path?
    float32 NumPy arrays (the bias too), X C-contiguous, the batch a multiple of LANES, at least
    MIN_CHANNELS channels in, a 3×3 kernel, the direct path on (MINIVAE_DIRECT) and the CPU kernels
    on (Numba there). (With one channel out, the last layers', on one thread: foster 32's step
    0.988, chollet 16's 0.988, the images split over two threads no faster: docs/performance.md.)"""
    return (direct.settings["enabled"] and isinstance(x_mat, np.ndarray) and isinstance(w, np.ndarray)
            and x_mat.dtype == w.dtype == np.float32 and x_mat.flags.c_contiguous
            and (bias is None or (isinstance(bias, np.ndarray) and bias.dtype == np.float32))
            and w.shape[0] >= MIN_CHANNELS and w.shape[2:] == KERNEL and _compile()
            and batch % _compiled["lanes"] == 0)


def scatter(x_mat, w, shape, stride, pads, bias=None, activation=None):
    """col2im(Wᵀ @ X) (+ bias, then an activations.Fused, where given) for X = x_mat (C_in, H·W·N),
    w (C_in, C_out, kH, kW): the (N, C_out, OH, OW) array `shape`, a view of CHWN memory."""
    n, channels, oh, ow = shape
    (kh, kw), (sh, sw), (top, bottom, left, right) = w.shape[2:], stride, pads
    in_h, in_w = (oh + top + bottom - kh) // sh + 1, (ow + left + right - kw) // sw + 1
    lanes = _compiled["lanes"]
    taps = kh * kw
    # W as (C_out, C_in, taps): the taps a block broadcasts for each k, side by side
    w_taps = np.ascontiguousarray(w.reshape(w.shape[0], channels, taps).transpose(1, 0, 2))
    out = workspace.empty((channels, oh, ow, n), x_mat.dtype)
    toff = _landing_table(in_h, in_w, n, lanes, (oh, ow), (kh, kw), stride, top, left)
    stripe_rows = max(1, STRIPE_BYTES // (x_mat.shape[0] * in_w * n * 4))
    kind, slope = cpu_kernels.activation_code(activation)
    parts = max(1, min(threads.count(), channels))
    scratch = workspace.empty((parts, lanes), x_mat.dtype)       # each thread's vector for taps that land outside
    pieces = threads.bounds(channels, parts)
    threads.run(lambda p: _compiled["scatter_channels"](w_taps, x_mat, out, toff, scratch[p], lanes, stripe_rows,
                                                         in_h, in_w, kh, sh, top, bias, kind, slope, FETCH_AHEAD,
                                                         *pieces[p]), parts)
    return out.transpose(3, 0, 1, 2)


def _landing_table(in_h, in_w, batch, lanes, out_hw, kernel, stride, top, left):
    """toff[(run v = (p, q, n0), tap t = (i, j))]: where in an output channel's (OH, OW, N) numbers
    run v's sum for tap t lands, (r·OW + s)·N + n0 for r = p·sH + i - top, s = q·sW + j - left;
    -1 where (r, s) is outside the output."""
    key = (in_h, in_w, batch, lanes, out_hw, kernel, stride, top, left)
    if key not in _tables:
        (out_h, out_w), (kh, kw), (sh, sw) = out_hw, kernel, stride
        p, q, n0, i, j = np.ix_(np.arange(in_h), np.arange(in_w), np.arange(0, batch, lanes),
                                np.arange(kh), np.arange(kw))
        r, s = p * sh + i - top, q * sw + j - left
        inside = (r >= 0) & (r < out_h) & (s >= 0) & (s < out_w)
        _tables[key] = np.where(inside, (r * out_w + s) * batch + n0, -1).astype(np.int64).ravel()
    return _tables[key]


# ---- the kernel: a Python loop around blocks written in LLVM IR ---------------------------------

def scatter_channels(w_taps, x, out, toff, scratch, lanes, stripe_rows, in_h, in_w, kh, sh, top, bias, kind,
                     slope, ahead, c0, c1):
    """out[c] for c0 <= c < c1: col2im(Wᵀ @ X)'s channel c (+ bias[c], then relu (kind 1) or
    leaky_relu (kind 2, that slope)). X's input rows in stripes from the last to the first; in a
    stripe, for each channel, its runs from the last to the first, two to a block."""
    ks, plane = x.shape[0], x.shape[1]
    taps = w_taps.shape[2]
    out_h, row = out.shape[1], out.shape[2] * out.shape[3]      # an output row's numbers
    runs_a_row = in_w * out.shape[3] // lanes
    flat_x = x.reshape(-1)
    p1 = in_h
    while p1 > 0:
        p0 = max(0, p1 - stripe_rows)
        # output rows the walk first reaches in this stripe (input rows p0..p1 land from row p0·sH - top on;
        # the last stripe's rows down to the bottom), and the rows whose terms are all in once it is done
        # (row r takes input rows from ceil((r + top - kH + 1) / sH), so from r = (p0 - 1)·sH - top + kH)
        z0, z1 = max(0, p0 * sh - top), (out_h if p1 == in_h else min(out_h, max(0, p1 * sh - top)))
        f0 = 0 if p0 == 0 else min(out_h, max(0, (p0 - 1) * sh - top + kh))
        f1 = out_h if p1 == in_h else min(out_h, max(0, (p1 - 1) * sh - top + kh))
        for c in range(c0, c1):
            plane_c, w_c = out[c].reshape(-1), w_taps[c].reshape(-1)
            plane_c[z0 * row:z1 * row] = 0
            v0, v = p0 * runs_a_row, p1 * runs_a_row
            while v - v0 >= 2:
                v -= 2
                fetch = ahead if v - v0 >= ahead else 0
                scatter_block_2(w_c, flat_x, v * lanes, plane, ks, plane_c, toff, v * taps, scratch, fetch)
            if v > v0:
                v -= 1
                scatter_block_1(w_c, flat_x, v * lanes, plane, ks, plane_c, toff, v * taps, scratch, 0)
            if bias is not None or kind != 0:
                cpu_kernels.finish_run(plane_c[f0 * row:f1 * row], bias, c, kind, slope)
        p1 = p0


def _scatter_block(lanes, runs, taps):
    """The intrinsic block(w, x, at, plane, ks, out, toff, t_at, scratch, ahead): for t < taps, u < runs,
        s[t, u] = Σ_{k < ks} w[k·taps + t] · x[k·plane + at + u·lanes ...]     (a vector of lanes)
    kept in registers through the loop over k; then, for u from the last run to the first and t in
    order, out[toff[t_at + u·taps + t] ...] += s[t, u], or scratch += s[t, u] where that is -1.
    Each k also prefetches x[k·plane + at - ahead·lanes ...]: with ahead 2, the runs the block
    before these (the next one taken) reads; with 0, the lines just read (nothing to fetch)."""
    import numba

    @numba.extending.intrinsic
    def block(typingctx, w, x, at, plane, ks, out, toff, t_at, scratch, ahead):
        def codegen(context, builder, signature, args):
            vec, fma, data, integer = simd.tools(context, builder, signature, args, lanes)
            w_p, x_p, out_p, toff_p, scratch_p = data(0), data(1), data(5), data(6), data(8)
            at, plane, ks, t_at, ahead = integer(2), integer(3), integer(4), integer(7), integer(9)
            x_run = builder.gep(x_p, [at])
            back = builder.mul(ahead, simd.i64(-lanes))
            entry, loop, done, k, sums = simd.open_loop(builder, vec, taps * runs)
            x_k = builder.gep(x_run, [builder.mul(k, plane)])
            xs = [simd.load(builder, builder.gep(x_k, [simd.i64(u * lanes)]), vec) for u in range(runs)]
            for u in range(runs):
                simd.prefetch(builder, builder.gep(x_k, [builder.add(back, simd.i64(u * lanes))]))
            w_k = builder.gep(w_p, [builder.mul(k, simd.i64(taps))])
            new = []
            for t in range(taps):
                w_t = simd.splat(builder, builder.load(builder.gep(w_k, [simd.i64(t)])), vec, lanes)
                new += [builder.call(fma, [w_t, x_u, sums[t * runs + u]]) for u, x_u in enumerate(xs)]
            simd.close_loop(builder, k, sums, new, entry, loop, ks, done, vec)
            for u in reversed(range(runs)):               # the later run's terms first
                for t in range(taps):
                    offset = builder.load(builder.gep(toff_p, [builder.add(t_at, simd.i64(u * taps + t))]))
                    inside = builder.icmp_signed(">=", offset, simd.i64(0))
                    pointer = builder.select(inside, builder.gep(out_p, [offset]), scratch_p)
                    added = builder.fadd(simd.load(builder, pointer, vec), new[t * runs + u])
                    simd.store(builder, added, pointer, vec)
            return context.get_dummy_value()
        return numba.types.none(w, x, at, plane, ks, out, toff, t_at, scratch, ahead), codegen
    return block


def _compile():
    """Build the blocks for this CPU's vector width and compile the kernel (or load it from the
    cache) once; False where the CPU kernels are off."""
    if not cpu_kernels.available():
        return False
    if not _compiled:
        lanes, taps = simd.vector_width(), KERNEL[0] * KERNEL[1]
        g = globals()
        g["scatter_block_2"], g["scatter_block_1"] = _scatter_block(lanes, 2, taps), _scatter_block(lanes, 1, taps)
        _compiled.update(scatter_channels=cpu_kernels.jit(scatter_channels), lanes=lanes)
    return True
