"""Direct convolution on the CPU: conv2d's product W @ cols and its weight gradient dY @ colsᵀ,
read straight from the padded input instead of from im2col's matrix `cols`.

In the CHWN layout (im2col.py) a run of LANES (16, or 8 without AVX-512) consecutive columns of

    cols[k = (c, i, j), (oh, ow, n)] = x_pad[c, oh·sH + i, ow·sW + j, n]

that stays within one pixel (the batch a multiple of LANES) is LANES consecutive numbers of x_pad,
starting at koff[k] + voff[v] for run v = (oh, ow, n0), with

    koff[(c, i, j)] = ((c·Hp + i)·Wp + j)·N,        voff[(oh, ow, n0)] = (oh·sH·Wp + ow·sW)·N + n0.

So the matrix need not be made: kH·kW copies of x written to memory (conv_1 of Chollet's encoder:
3.6 MB from 1.6) and read back by the product. Two kernels read the runs where they lie:

    forward:          Y[o, run v] = Σ_k W[o, k] · x_pad[koff[k] + voff[v] ...]
    weight gradient:  dW[o, k] = Σ_v Σ_lanes dY[o, run v] ⊙ x_pad[koff[k] + voff[v] ...]

Each keeps a block of its results in the CPU's vector registers for the whole sum: the forward
ROWS (8) output channels × 2 runs (a BLAS "microkernel": per k, 2 vector loads, 8 numbers of W
broadcast, 16 vector fused multiply-adds), the weight gradient 4 output channels × 6 k's, each a
vector of LANES partial sums (per run, 10 vector loads and 24 multiply-adds), added up at the end.
The weight gradient goes over the runs a tile of RUN_TILE at a time, every block of the tile before
the next tile: the tile's rows of dY and runs of x stay in the cache while the blocks pass, where a
block over all the runs read its 4 rows and 6 k's through the whole of dY and x, more than the
nearest caches hold (conv_1 of Foster's encoder at batch 32, one thread: 2.9 -> 1.95 ms).
The forward reads, for a pair of runs, one vector at each of its K offsets, K streams through
memory at once: more than the CPU's prefetchers follow, so in a training step, where x_pad is no
longer in the cache, the loads waited on memory. So the first block of output channels for a
pair of runs (the others find them in the cache) also asks for the lines of the pair FETCH_AHEAD
runs on (foster 128's step 4% faster, foster 32's and chollet's 1%).

Numba's own loops keep such sums in memory rather than in registers (6 GFLOP/s, where these run at
100-180 on one core), so the blocks are written in LLVM's IR (`_forward_block`, `_gradient_block`),
the language Numba compiles Python to, as Numba "intrinsics"; the loops around them are Python.

The forward sums each output in k order with one fused multiply-add per term, as OpenBLAS's product
of the matrix does: the same bits where OpenBLAS sums K in one block (conv_1's K = 288). The weight
gradient sums in another order than a matrix product (lanes, then the lanes' sums as a tree, then
the tiles' sums in order): its last bits differ. Neither depends on the thread count (each result
is made by one thread, the same way). im2col's path (conv.py) stays the reference, tested against
this one (tests/test_direct.py).
"""
import os

import numpy as np

from .. import cpu_kernels, threads
from ..workspace import workspace
from . import simd

settings = {"enabled": os.environ.get("MINIVAE_DIRECT", "auto") != "never"}
ROWS = 8                # forward: output channels per block (C_out must be a multiple)
RUNS = 2                # forward: runs of LANES columns per block (a last odd run alone)
GRAD_ROWS, GRAD_KS = 4, 6   # weight gradient: output channels × k's per block (a last 3 k's alone)
RUN_TILE = 64           # weight gradient: runs per tile (at 32 and 96 slower; docs/performance.md)
FETCH_AHEAD = 2         # forward: the first block of a pair of runs prefetches the runs this far on
                        # (0: none; 4, 8 and 16 no better than 2)
_compiled = {}
_offsets = {}           # geometry -> (koff, voff): made once per layer shape
# made by _compile (the blocks need Numba and this CPU's vector width)
forward_block_1 = forward_block_2 = forward_block_2_fetch = None
gradient_block_1 = gradient_block_2 = gradient_block_3 = None
gradient_block_4 = gradient_block_6 = None


def suits(x, w):
    """Does im2col's product for x (N, C_in, H, W) and the kernel array w (C_out, C_in, kH, kW)
    take this path? float32 NumPy arrays, the batch a multiple of LANES, C_out a multiple of ROWS,
    C_in·kH·kW a multiple of 3, and the CPU kernels on (Numba there). (It pays on one thread and
    two, at batches 16 to 128, in whole training steps: docs/performance.md.)"""
    return (settings["enabled"] and isinstance(x, np.ndarray)
            and isinstance(w, np.ndarray) and x.dtype == w.dtype == np.float32
            and w.shape[0] % ROWS == 0 and w[0].size % 3 == 0 and _compile()
            and x.shape[0] % _compiled["lanes"] == 0)


class Patches:
    """im2col's matrix, unmade: x padded (C, Hp, Wp, N) and the offsets koff, voff of its runs.

    before: where x is dL/dy after an op's fused activation, (y, the activation's negative_slope,
    sums or None), y the op's output (N, C, H, W), to take the patches of dL/dy · slope(y), the
    gradient before the activation, made in the padded copy's pass instead of a pass of its own
    (and its channels' sums, the bias gradient, written to sums where given): gradient_suits
    says where."""

    def __init__(self, x, kernel, stride, pads, before=None):
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (top, bottom, left, right) = kernel, stride, pads
        hp, wp = h + top + bottom, w + left + right
        self.out_hw = ((hp - kh) // sh + 1, (wp - kw) // sw + 1)
        self.columns = self.out_hw[0] * self.out_hw[1] * n
        self.x_pad = _padded(x.transpose(1, 2, 3, 0), top, left, hp, wp, before)
        key = (c, hp, wp, n, kh, kw, sh, sw)
        if key not in _offsets:
            lanes, (oh, ow) = _compiled["lanes"], self.out_hw
            koff = (((np.arange(c)[:, None, None] * hp + np.arange(kh)[:, None]) * wp + np.arange(kw)) * n)
            voff = ((np.arange(oh)[:, None, None] * sh * wp + np.arange(ow)[:, None] * sw) * n
                    + np.arange(0, n, lanes))
            _offsets[key] = koff.ravel().astype(np.int64), voff.ravel().astype(np.int64)
        self.koff, self.voff = _offsets[key]


def gradient_suits(g, y, w, sums):
    """Can Patches take dL/dy = g after a fused activation with output y as its `before`? Where
    suits(g, w), g and y are views of CHWN memory (as the ops hand them on), and, where the bias
    sums are wanted, each image row of a channel (W·N numbers) whole groups of SUM_LANES, as
    cpu_kernels.sum_rows adds them."""
    rows, y_rows = g.transpose(1, 2, 3, 0), y.transpose(1, 2, 3, 0)
    return (suits(g, w) and isinstance(y, np.ndarray) and y.dtype == g.dtype and rows.flags.c_contiguous
            and y_rows.flags.c_contiguous and (not sums or g.shape[3] * g.shape[0] % cpu_kernels.SUM_LANES == 0))


def correlate(patches, w, bias=None, activation=None):
    """W @ cols (+ bias per row, then an activations.Fused, where given): (C_out, OH·OW·N), the
    runs of columns split over the threads, each block finished while it is in the cache."""
    # W as (C_out/ROWS, K, ROWS): the ROWS numbers a block broadcasts for each k, side by side
    w_blocks = np.ascontiguousarray(w.reshape(w.shape[0] // ROWS, ROWS, -1).transpose(0, 2, 1))
    y = workspace.empty((w.shape[0], patches.columns), w.dtype)
    kind, slope = cpu_kernels.activation_code(activation)
    runs = patches.voff.size
    parts = _parts(runs // RUNS, 2 * y.size * patches.koff.size)
    pieces = threads.bounds(runs, parts, RUNS)
    x_flat = patches.x_pad.reshape(-1)
    threads.run(lambda p: _compiled["forward_runs"](w_blocks, x_flat, patches.koff, patches.voff, y, bias,
                                                     kind, slope, _compiled["lanes"], FETCH_AHEAD, *pieces[p]),
                parts)
    return y


def weight_grad(g, patches):
    """dY @ colsᵀ for dY = g (C_out, OH·OW·N): (C_out, C_in·kH·kW), the k's split over the threads."""
    ks = patches.koff.size
    g = np.ascontiguousarray(g)
    dw = workspace.empty((g.shape[0], ks), g.dtype)
    tile_sums = workspace.empty(dw.shape, dw.dtype)             # each thread its own k's of it
    parts = _parts(ks // GRAD_KS, 2 * g.size * ks)
    pieces = threads.bounds(ks, parts, GRAD_KS)
    x_flat = patches.x_pad.reshape(-1)
    threads.run(lambda p: _compiled["gradient_ks"](g, x_flat, patches.koff, patches.voff, dw, tile_sums,
                                                    _compiled["lanes"], *pieces[p]), parts)
    return dw


def products_t_suits(dtype, rows, length):
    """Does products_t take A @ Bᵀ for A of `rows` rows and both `length` long? float32, rows a
    multiple of GRAD_ROWS, length of LANES, this path and the CPU kernels on. (Winograd's dM @ Vᵀ
    in whole training steps on a 2-core Xeon VM, against OpenBLAS's product: Chollet 32 0.982 and
    0.978, Chollet 128 0.990, Chollet 16 1.001, Foster 32 0.999: docs/performance.md.)"""
    return (settings["enabled"] and dtype == np.float32 and rows % GRAD_ROWS == 0 and _compile()
            and length % _compiled["lanes"] == 0)


def products_t(a, b, length, out):
    """out[p] = A_p @ B_pᵀ for every plane p, A_p (M, length) the first M·length numbers of a[p]
    and B_p (K, length) those of b[p] (a and b C-contiguous 2-D, a plane per row), length a
    multiple of LANES, M of GRAD_ROWS, out (P, M, K): the weight-gradient block over each plane's
    rows, the planes split whole over the threads (each summed the same way on any thread count).
    Winograd's dM @ Vᵀ."""
    lanes = _compiled["lanes"]
    koff = np.arange(out.shape[2], dtype=np.int64) * length
    voff = np.arange(0, length, lanes, dtype=np.int64)
    parts = _parts(out.shape[0], 2 * out.size * length)
    pieces = threads.bounds(out.shape[0], parts)
    threads.run(lambda p: _compiled["plane_grads"](a, b, length, koff, voff, out, *pieces[p]), parts)
    return out


def _parts(blocks, flops):
    """Threads for a job of `blocks` blocks and `flops` multiply-adds·2 (one, where small)."""
    return max(1, min(threads.count(), blocks, flops // threads.MIN_SPLIT_FLOPS))


def _padded(x_chwn, top, left, hp, wp, before=None):
    """x (C, H, W, N) inside zeros to (C, Hp, Wp, N): x itself where that is no padding and x is
    contiguous (as the convolutions hand it on), else a workspace copy made by channels on the
    threads; an x laid out otherwise (a caller's (N, C, H, W) array) copied into place in one
    strided pass. With `before` (see Patches), x · slope(y) inside zeros, always a copy."""
    (channels, height, width, batch), contiguous = x_chwn.shape, x_chwn.flags.c_contiguous
    y_rows, slope, sums = (None, np.float32(0), None) if before is None else before
    if y_rows is not None:
        y_rows = y_rows.transpose(1, 2, 3, 0).reshape(channels, height, -1)
        slope = np.float32(slope or 0)
    elif (height, width) == (hp, wp) and contiguous:
        return x_chwn
    out = workspace.empty((channels, hp, wp, batch), x_chwn.dtype)
    if not contiguous:
        assert y_rows is None, "_padded: `before` needs x in CHWN memory (gradient_suits)"
        out.fill(0)
        out[:, top:top + height, left:left + width] = x_chwn
        return out
    parts = max(1, min(threads.count(), channels, out.size // threads.MIN_PIECE))
    pieces = threads.bounds(channels, parts)
    rows, out_rows = x_chwn.reshape(channels, height, -1), out.reshape(channels, hp, -1)
    threads.run(lambda p: _compiled["pad"](rows, out_rows, top, left * batch, y_rows, sums, slope, *pieces[p]),
                parts)
    return out


# ---- the kernels: Python loops around blocks written in LLVM IR ---------------------------------

def forward_runs(w_blocks, x, koff, voff, y, bias, kind, slope, lanes, ahead, v0, v1):
    """y[:, columns of runs v0..v1) = W @ cols there (runs of `lanes` columns), + bias[o], then relu
    (kind 1) or leaky_relu (kind 2, that slope) as cpu_kernels.finish_run makes them, each block
    finished in its registers before it is stored; bias may be None. A pair of runs' first block
    prefetches the runs `ahead` on (none where ahead is 0)."""
    blocks, ks = w_blocks.shape[0], w_blocks.shape[1]
    columns = y.shape[1]
    flat_w, flat_y = w_blocks.reshape(-1), y.reshape(-1)
    has_bias = bias is not None
    biases = bias if bias is not None else np.zeros(blocks * ROWS, np.float32)
    v = v0
    while v < v1:
        runs = RUNS if v + RUNS <= v1 else 1
        fetch = ahead > 0 and v + ahead + RUNS <= voff.size
        for b in range(blocks):
            at = b * ROWS * columns + v * lanes             # y[b·ROWS, v·lanes]
            if runs == RUNS and b == 0 and fetch:
                forward_block_2_fetch(flat_w, x, koff, voff[v:], flat_y, at, columns, ks,
                                      biases, has_bias, kind, slope, ahead)
            elif runs == RUNS:
                forward_block_2(flat_w[b * ks * ROWS:], x, koff, voff[v:], flat_y, at, columns, ks,
                                biases[b * ROWS:], has_bias, kind, slope, 0)
            else:
                forward_block_1(flat_w[b * ks * ROWS:], x, koff, voff[v:], flat_y, at, columns, ks,
                                biases[b * ROWS:], has_bias, kind, slope, 0)
        v += runs


def gradient_ks(g, x, koff, voff, dw, tile_sums, lanes, k0, k1):
    """dw[:, k0:k1] = Σ over the runs of g[o, run] ⊙ x_pad[koff[k] + voff[run] ...], summed by tiles
    of RUN_TILE runs: each tile's blocks write their sums into tile_sums (dw's shape), which are
    then added onto dw, tile after tile."""
    rows, columns = g.shape
    ks, runs = dw.shape[1], voff.size
    flat_g, flat_sums = g.reshape(-1), tile_sums.reshape(-1)
    for r in range(rows):
        for k in range(k0, k1):
            dw[r, k] = 0
    for t in range(0, runs, RUN_TILE):
        tile = min(RUN_TILE, runs - t)
        for r in range(0, rows, GRAD_ROWS):
            k = k0
            while k < k1:
                if k + GRAD_KS <= k1:
                    gradient_block_6(flat_g, r * columns + t * lanes, columns, x, koff[k:], voff[t:], tile,
                                     flat_sums, r * ks + k, ks)
                    k += GRAD_KS
                else:
                    gradient_block_3(flat_g, r * columns + t * lanes, columns, x, koff[k:], voff[t:], tile,
                                     flat_sums, r * ks + k, ks)
                    k += 3
        for r in range(rows):
            for k in range(k0, k1):
                dw[r, k] += tile_sums[r, k]


def plane_grads(a, b, length, koff, voff, out, p0, p1):
    """out[p] = A_p @ B_pᵀ for the planes p0 <= p < p1 (products_t). A group of B's rows (the
    block's k's) is taken with every group of A's rows in turn, while it is in the cache: the
    blocks read GRAD_ROWS rows afresh each instead of up to GRAD_KS."""
    rows, ks = out.shape[1], out.shape[2]
    for p in range(p0, p1):
        flat_a, flat_b, flat_out = a[p], b[p], out[p].reshape(-1)
        k = 0
        while k < ks:
            left = ks - k
            group = 6 if left >= 6 else (4 if left >= 4 else (2 if left >= 2 else 1))
            for r in range(0, rows, GRAD_ROWS):
                at = r * ks + k
                if group == 6:
                    gradient_block_6(flat_a, r * length, length, flat_b, koff[k:], voff, voff.size, flat_out, at, ks)
                elif group == 4:
                    gradient_block_4(flat_a, r * length, length, flat_b, koff[k:], voff, voff.size, flat_out, at, ks)
                elif group == 2:
                    gradient_block_2(flat_a, r * length, length, flat_b, koff[k:], voff, voff.size, flat_out, at, ks)
                else:
                    gradient_block_1(flat_a, r * length, length, flat_b, koff[k:], voff, voff.size, flat_out, at, ks)
            k += group


def pad(x, out, top, left, y, sums, negative_slope, c0, c1):
    """out[c, top + r, left·N + j] = x[c, r, j], zeros around it, for channels c0..c1: x (C, H, W·N)
    and out (C, Hp, Wp·N), each row of x one run of memory, copied in one loop (SIMD). Where y is
    given (x's shape), x · slope(y) instead, as cpu_kernels.activation_grad_flat makes it (the
    gradient before a fused activation with output y); and where sums is given too, sums[c] = the
    channel's sum of those, added as cpu_kernels.sum_rows adds a row (W·N a multiple of SUM_LANES)."""
    height, width = x.shape[1], x.shape[2]
    group = cpu_kernels.SUM_LANES
    lanes = np.zeros(group, np.float32)
    for c in range(c0, c1):
        lanes[:] = 0
        for r in range(out.shape[1]):
            row = out[c, r]
            if r < top or r >= top + height:
                row[:] = 0
                continue
            row[:left] = 0
            row[left + width:] = 0
            frm, to = x[c, r - top], row[left:left + width]
            if y is None:
                for j in range(width):
                    to[j] = frm[j]
            elif sums is None:
                slopes_of = y[c, r - top]
                for j in range(width):
                    to[j] = frm[j] * cpu_kernels.slope_at(slopes_of[j], negative_slope)
            else:
                for start in range(0, width, group):     # slices: every loop index is k alone (SIMD)
                    part, y_part, to_part = frm[start:start + group], y[c, r - top, start:start + group], \
                        to[start:start + group]
                    for k in range(group):
                        v = part[k] * cpu_kernels.slope_at(y_part[k], negative_slope)
                        to_part[k] = v
                        lanes[k] += v
        if sums is not None:
            total = lanes[0]
            for k in range(1, group):
                total += lanes[k]
            sums[c] = total


def _forward_block(lanes, runs, fetch=False):
    """The intrinsic block(w, x, koff, voff, y, at, ldy, ks, bias, has_bias, kind, slope, ahead): for
    r < ROWS, u < runs, l < lanes,
        y[at + r·ldy + u·lanes + l] = finish(Σ_{k < ks} w[k·ROWS + r] · x[koff[k] + voff[u] + l], r),
    the ROWS·runs vectors of sums kept in registers through the loop over k, then finished as
    cpu_kernels.finish_run finishes them (+ bias[r] where has_bias; then relu where kind is 1,
    leaky_relu with that slope where 2) and stored. Where fetch, each k also prefetches the runs
    `ahead` on, x[koff[k] + voff[ahead + u] ...] (voff must reach that far; else ahead is unread)."""
    import numba

    @numba.extending.intrinsic
    def block(typingctx, w, x, koff, voff, y, at, ldy, ks, bias, has_bias, kind, slope, ahead):
        def codegen(context, builder, signature, args):
            vec, fma, data, integer = simd.tools(context, builder, signature, args, lanes)
            w_p, x_p, koff_p, voff_p, y_p, bias_p = (data(i) for i in (0, 1, 2, 3, 4, 8))
            at, ldy, ks = integer(5), integer(6), integer(7)
            runs_p = [builder.gep(x_p, [builder.load(builder.gep(voff_p, [simd.i64(u)]))]) for u in range(runs)]
            later_p = [builder.gep(x_p, [builder.load(builder.gep(voff_p, [builder.add(integer(12), simd.i64(u))]))])
                       for u in range(runs)] if fetch else []     # the runs `ahead` on
            entry, loop, done, k, sums = simd.open_loop(builder, vec, ROWS * runs)
            offset = builder.load(builder.gep(koff_p, [k]))
            xs = [simd.load(builder, builder.gep(p, [offset]), vec) for p in runs_p]
            for p in later_p:
                simd.prefetch(builder, builder.gep(p, [offset]))
            w_k = builder.gep(w_p, [builder.mul(k, simd.i64(ROWS))])
            new = []
            for r in range(ROWS):                         # W[o, k] in every lane, times each run
                w_r = simd.splat(builder, builder.load(builder.gep(w_k, [simd.i64(r)])), vec, lanes)
                new += [builder.call(fma, [w_r, x_u, sums[r * runs + u]]) for u, x_u in enumerate(xs)]
            simd.close_loop(builder, k, sums, new, entry, loop, ks, done, vec)
            finish = simd.finisher(builder, vec, lanes, integer(9), integer(10), args[11])
            for r in range(ROWS):
                row = builder.gep(y_p, [builder.add(at, builder.mul(simd.i64(r), ldy))])
                b_r = simd.splat(builder, builder.load(builder.gep(bias_p, [simd.i64(r)])), vec, lanes)
                for u in range(runs):
                    simd.store(builder, finish(new[r * runs + u], b_r), builder.gep(row, [simd.i64(u * lanes)]), vec)
            return context.get_dummy_value()
        return numba.types.none(w, x, koff, voff, y, at, ldy, ks, bias, has_bias, kind, slope, ahead), codegen
    return block


def _gradient_block(lanes, ks):
    """The intrinsic block(g, at, ldg, x, koff, voff, nruns, dw, out_at, ldw): for r < GRAD_ROWS, j < ks,
        dw[out_at + r·ldw + j] = Σ_lanes Σ_{v < nruns} g[at + r·ldg + v·lanes + l] · x[koff[j] + voff[v] + l],
    GRAD_ROWS·ks vectors of partial sums (one per lane) kept in registers through the loop over the
    runs, then each added up (_add_lanes)."""
    import numba

    @numba.extending.intrinsic
    def block(typingctx, g, at, ldg, x, koff, voff, nruns, dw, out_at, ldw):
        def codegen(context, builder, signature, args):
            vec, fma, data, integer = simd.tools(context, builder, signature, args, lanes)
            g_p, x_p, koff_p, voff_p, dw_p = data(0), data(3), data(4), data(5), data(7)
            at, ldg, nruns, out_at, ldw = integer(1), integer(2), integer(6), integer(8), integer(9)
            g_rows = [builder.gep(g_p, [builder.add(at, builder.mul(simd.i64(r), ldg))]) for r in range(GRAD_ROWS)]
            x_ks = [builder.gep(x_p, [builder.load(builder.gep(koff_p, [simd.i64(j)]))]) for j in range(ks)]
            entry, loop, done, v, sums = simd.open_loop(builder, vec, GRAD_ROWS * ks)
            offset = builder.load(builder.gep(voff_p, [v]))
            column = builder.mul(v, simd.i64(lanes))
            gs = [simd.load(builder, builder.gep(p, [column]), vec) for p in g_rows]
            xs = [simd.load(builder, builder.gep(p, [offset]), vec) for p in x_ks]
            new = [builder.call(fma, [g_r, x_j, sums[r * ks + j]])
                   for r, g_r in enumerate(gs) for j, x_j in enumerate(xs)]
            simd.close_loop(builder, v, sums, new, entry, loop, nruns, done, vec)
            for r in range(GRAD_ROWS):
                row = builder.gep(dw_p, [builder.add(out_at, builder.mul(simd.i64(r), ldw))])
                for j in range(ks):
                    builder.store(simd.add_lanes(builder, new[r * ks + j], lanes), builder.gep(row, [simd.i64(j)]))
            return context.get_dummy_value()
        return numba.types.none(g, at, ldg, x, koff, voff, nruns, dw, out_at, ldw), codegen
    return block


def _compile():
    """Build the blocks for this CPU's vector width (16 floats with AVX-512, else 8) and compile
    the kernels (or load them from the cache) once; False where the CPU kernels are off."""
    if not cpu_kernels.available():
        return False
    if not _compiled:
        lanes = simd.vector_width()
        g = globals()
        g["forward_block_2"], g["forward_block_1"] = _forward_block(lanes, 2), _forward_block(lanes, 1)
        g["forward_block_2_fetch"] = _forward_block(lanes, 2, fetch=True)
        g["gradient_block_6"], g["gradient_block_3"] = _gradient_block(lanes, 6), _gradient_block(lanes, 3)
        for ks in (4, 2, 1):
            g[f"gradient_block_{ks}"] = _gradient_block(lanes, ks)
        _compiled.update(forward_runs=cpu_kernels.jit(forward_runs), gradient_ks=cpu_kernels.jit(gradient_ks),
                         plane_grads=cpu_kernels.jit(plane_grads),
                         pad=cpu_kernels.jit(pad), lanes=lanes)
    return True
