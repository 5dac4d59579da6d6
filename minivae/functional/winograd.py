"""Winograd's F(2×2, 3×3) and F(4×4, 3×3): a 3×3, stride-1 convolution with 2.25× or 4× fewer
multiply-adds than im2col.

(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015.) The output is cut into
m×m tiles. The (m + 2)×(m + 2) input patch d that a tile reads and the 3×3 kernel g are each taken
to a "Winograd space" of that size, where the convolution of the two becomes an elementwise product:

    y_tile = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A          (m×m outputs from an (m + 2)×(m + 2) patch)

The smallest, F(2×2, 3×3), 2×2 outputs from a 4×4 patch:

        Bᵀ = [1  0 -1  0]     G = [1    0    0 ]     Aᵀ = [1  1  1  0]
             [0  1  1  0]         [1/2  1/2  1/2]          [0  1 -1 -1]
             [0 -1  1  0]         [1/2 -1/2  1/2]
             [0  1  0 -1]         [0    0    1 ]

In 1-D, y0 = m0 + m1 + m2 = d0·g0 + d1·g1 + d2·g2 and y1 = m1 - m2 - m3 = d1·g0 + d2·g1 + d3·g2:
four products instead of six; in 2-D, 16 instead of 36. Summed over the input channels, each of
the (m + 2)² entries ξ of Winograd space is one matrix product:

    M[ξ] = U[ξ] @ V[ξ],   U[ξ] = (G g Gᵀ)[ξ] (C_out, C_in),   V[ξ] = (Bᵀ d B)[ξ] (C_in, tiles·N)

16 multiply-adds per 4 outputs where im2col's W @ cols does 9 per output. The transforms only add,
subtract and halve (1/2 is exact in binary), and the patches are 4 numbers per input pixel where
im2col copies 9, so this is faster wherever the products dominate: 64 channels in and out.

F(4×4, 3×3) does the same with 4×4 tiles from 6×6 patches: 36 multiply-adds per 16 outputs, 2.25
per output. Its Bᵀ and Aᵀ (the kernels _bt and _at below) multiply by 2, 4, 5 and 8, and its G
by 1/4, 1/6, 1/12 and 1/24, which binary cannot hold exactly: in float32 its results stray from
exact about ten times as far as F(2×2)'s (up to 1e-5 of the largest value against 1e-6 at 64
channels). A layer takes the tile size whose tiles cover its output with the fewest outputs to
spare, and on a tie the larger (`TILE_SIZES`): Chollet's 14×14 layers F(2×2), Foster's 7×7 ones
F(4×4) (both cover 7×7 with 8×8). On a 2-core Xeon VM, F(4×4) at 14×14 made Chollet's training
step 5-6% slower than F(2×2), and at 7×7 Foster's 4-5% faster than im2col (docs/performance.md).

The backward pass is the adjoint of each step, read from the right:

    dM[ξ] = (A dY Aᵀ)[ξ]                               (each m×m tile of dL/dy)
    dU[ξ] = dM[ξ] @ V[ξ]ᵀ,   dL/dw = Gᵀ dU G          (the forward pass's V is kept for this)
    dV[ξ] = U[ξ]ᵀ @ dM[ξ],   dL/dx = B dV Bᵀ, each tile's patch added back onto the patch it read

The numbers are those of im2col's path up to float rounding (tests/test_winograd.py checks both
against each other, and the gradients by central differences in float64). The products are
shared out whole among the threads, so the bits do not depend on the thread count. In float32,
with the columns in whole vectors (the batch a multiple of 16, or 8), dM @ Vᵀ is made by the
direct path's weight-gradient block (direct.products_t), both operands read along their rows:
OpenBLAS's product with the transpose was the slowest of the three. U @ V and Uᵀ @ dM are made by
small_products.py, which reads both operands where they lie (OpenBLAS copies them first, a large
share of a product with K = 64). The transforms
are Numba kernels (below), looping over channels and tiles with the batch innermost, where the
convolutions keep it (CHWN, see im2col.py); so this path runs where Numba does, on NumPy arrays.
"""
import os

import numpy as np

from .. import cpu_kernels, threads
from ..workspace import workspace
from . import direct, small_products

settings = {"enabled": os.environ.get("MINIVAE_WINOGRAD", "auto") != "never"}
MIN_CHANNELS = 16       # with fewer channels in or out the products are too thin to pay for the transforms
TILE_SIZES = (4, 2)     # the output tiles' sides m, the one taken on a tie first
MIN_COLUMNS = {2: 768,  # nor with fewer tiles·images: F(2×2) at 14×14 and batch 16 (784 of them) ran the layer
               4: 64}   # 26% faster than im2col, at 7×7 and batch 16 (256) 10% slower; F(4×4) at 7×7 and
                        # batch 16 (64) made Foster's step 2.5-4% faster
MIN_COLUMNS_BESIDE_DIRECT = {2: 768,   # the same where direct.py's path takes the layer otherwise: Foster's
                             4: 128}   # step at batch 16 4% faster without F(4×4), at 32 even, at 128 3% slower
MAX_SPARE = 1.35        # nor where the tiles cover 35% more than the output (a 7×7 output takes 8×8 in tiles,
                        # 64 outputs for 49: there F(4×4) made Foster's step 5% faster, F(2×2) 0.3%)
_compiled = {}

G = {2: np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),   # the kernel's transform
     4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])}


def suits(x, w, stride, pads):
    """Does conv2d(x, w) with this stride and padding take this path? A 3×3 kernel, stride 1, at
    least MIN_CHANNELS channels in and out, MIN_COLUMNS columns in the products (more where the
    direct path would take it: MIN_COLUMNS_BESIDE_DIRECT), tiles that fit the output (MAX_SPARE),
    float32 or float64 NumPy arrays, and the CPU kernels on (Numba there)."""
    if not (settings["enabled"] and stride == (1, 1) and w.shape[2:] == (3, 3)
            and min(w.shape[:2]) >= MIN_CHANNELS and isinstance(x, np.ndarray)):
        return False
    n, _, h, wd = x.shape
    top, bottom, left, right = pads
    oh, ow = h + top + bottom - 2, wd + left + right - 2
    m = tile_size(oh, ow)
    tiles = -(-oh // m) * -(-ow // m)
    least = (MIN_COLUMNS_BESIDE_DIRECT if direct.suits(x, w) else MIN_COLUMNS)[m]
    return (tiles * n >= least and m * m * tiles <= MAX_SPARE * oh * ow and x.dtype == w.dtype
            and x.dtype in (np.float32, np.float64) and _compile())


def tile_size(oh, ow):
    """The side m of the output tiles for an oh×ow output: of TILE_SIZES, the one whose tiles
    cover it with the fewest outputs to spare, the first of them on a tie."""
    return min(TILE_SIZES, key=lambda m: -(-oh // m) * -(-ow // m) * m * m)


def forward(x, w, pads, bias=None, activation=None):
    """conv2d of x (N, C_in, H, W) by w (C_out, C_in, 3, 3), stride 1, padding pads (top, bottom,
    left, right), plus bias (C_out,) and then an activations.Fused where given.
    Returns (kept, y): what backward needs, and y as the CHWN array (C_out, OH, OW, N)."""
    n, c, h, wd = x.shape
    top, bottom, left, right = pads
    oh, ow = h + top + bottom - 2, wd + left + right - 2
    m = tile_size(oh, ow)
    th, tw = -(-oh // m), -(-ow // m)                          # m×m output tiles down and across
    v = input_transform(x, top, left, m, th, tw)
    u = kernel_transform(w, m)                                     # ((m + 2)², C_out, C_in)
    products = _tile_rows(m, w.shape[0], th * tw, n, x.dtype)
    _products(u, _matrices(v, c), _matrices(products, w.shape[0]))
    y = workspace.empty((w.shape[0], oh, ow, n), x.dtype)   # (tiles reaching past it: see _crop_tile)
    kind, slope = cpu_kernels.activation_code(activation, x.dtype)
    _by_channels(_kernel("output_tiles", m), w.shape[0], products.size, products, y, bias, kind, slope)
    return (m, u, v, x.shape, pads), y


def backward(g, kept, need_dx=True, need_dw=True):
    """dL/dx (as a CHWN array (C_in, H, W, N)) and dL/dw (C_out, C_in, 3, 3) of forward's
    convolution for dL/dy = g (N, C_out, OH, OW), before the bias and activation (each None where
    not needed)."""
    m, u, v, (n, c, h, wd), (top, bottom, left, right) = kept
    o, oh, ow = g.shape[1:]
    th, tw = -(-oh // m), -(-ow // m)
    dm = _tile_rows(m, o, th * tw, n, g.dtype)
    g_chwn = g.transpose(1, 2, 3, 0)                                    # (tiles reaching past it: see _edge_tile)
    if not g_chwn.flags.c_contiguous:
        g_chwn = _copy(g_chwn)
    _by_channels(_kernel("gradient_tiles", m), o, dm.size, g_chwn, dm)
    dw = dx = None
    if need_dw:
        du = workspace.empty((dm.shape[0], o, c), g.dtype)
        if direct.products_t_suits(g.dtype, o, th * tw * n):   # the direct path's weight-gradient block
            direct.products_t(dm.reshape(dm.shape[0], -1), v.reshape(v.shape[0], -1), th * tw * n, du)
        else:
            _products(_matrices(dm, o), _matrices(v, c).transpose(0, 2, 1), du)
        dw = kernel_gradient(du)
    if need_dx:
        dv = _tile_rows(m, c, th * tw, n, g.dtype)
        _products(u.transpose(0, 2, 1), _matrices(dm, o), _matrices(dv, c))
        dx = input_gradient_of(dv, (n, c, h, wd), top, left, m, th, tw)
    return dx, dw


def input_transform(x, top, left, m, th, tw):
    """V = Bᵀ d B for every m×m output tile of x (N, C, H, W) padded by top rows and left columns
    (and zeros below and right to whole tiles): ((m + 2)², C·TH·TW + 1, N), as _tile_rows lays it
    out; tile (c, ty, tx) reads the (m + 2)×(m + 2) patch d whose corner is (m·ty, m·tx)."""
    n, c, h, wd = x.shape
    v = _tile_rows(m, c, th * tw, n, x.dtype)
    x_chwn = x.transpose(1, 2, 3, 0)
    if not x_chwn.flags.c_contiguous:                  # (the layers hand on CHWN memory: no copy)
        x_chwn = _copy(x_chwn)
    if m == 2:
        _by_channels("input_tiles", c, v.size, x_chwn, v.reshape(v.shape[0], -1), th, tw, top, left)
    else:
        _by_channels(_kernel("input_tiles", m), c, v.size, x_chwn, v, th, tw, top, left)
    return v


def input_gradient_of(dv, x_shape, top, left, m, th, tw):
    """dL/dx = B dV Bᵀ for every tile, added onto the patch it read, the padding cut off: the
    adjoint of input_transform, as a CHWN array (C, H, W, N) for x of x_shape (N, C, H, W)."""
    n, c, h, wd = x_shape
    dx = workspace.empty((c, h, wd, n), dv.dtype)
    if m == 2:
        _by_channels("input_gradient", c, dv.size, dv.reshape(dv.shape[0], -1), dx, th, tw, top, left)
    else:
        _by_channels(_kernel("input_gradient", m), c, dv.size, dv, dx, th, tw, top, left)
    return dx


def _tile_rows(m, channels, tiles, batch, dtype):
    """The (m + 2)² entries of Winograd space for `tiles` tiles of each of `channels` channels,
    each entry (channels·tiles + 1, batch): one tile more than needed (see the kernels below)."""
    return workspace.empty(((m + 2) ** 2, channels * tiles + 1, batch), dtype)


def _matrices(rows, channels):
    """The (m + 2)² matrices (channels, tiles·N) in _tile_rows: a view."""
    return rows[:, :rows.shape[1] - 1].reshape(rows.shape[0], channels, -1)


def kernel_transform(w, m=2):
    """U = G g Gᵀ for every (output, input) channel pair of w (C_out, C_in, 3, 3), for m×m tiles:
    ((m + 2)², C_out, C_in). Entry ξ = (m + 2)·a + b is Σ_ij G[a, i]·G[b, j]·g[i, j]: one product
    with the (m + 2)²×9 matrix G ⊗ G."""
    g_kron = _g_kron(m, w.dtype)
    u = workspace.empty((g_kron.shape[0], w.shape[0] * w.shape[1]), w.dtype)
    with threads.one_blas_thread():   # OpenBLAS's own threads would then spin, in our threads' way
        np.matmul(g_kron, w.reshape(-1, 9).T, out=u)
    return u.reshape(-1, *w.shape[:2])


def kernel_gradient(du):
    """dL/dg = Gᵀ dU G, the adjoint of kernel_transform: ((m + 2)², C_out, C_in) -> (C_out, C_in, 3, 3)."""
    m = round(du.shape[0] ** 0.5) - 2
    dg = workspace.empty((du.shape[1] * du.shape[2], 9), du.dtype)
    with threads.one_blas_thread():
        np.matmul(du.reshape(du.shape[0], -1).T, _g_kron(m, du.dtype), out=dg)
    return dg.reshape(*du.shape[1:], 3, 3)


def _g_kron(m, dtype):
    """G ⊗ G ((m + 2)²×9): row (m + 2)·a + b, column 3·i + j holds G[a, i]·G[b, j] (for m = 2: 0,
    ±1/4, ±1/2 or 1, exact; for m = 4 rounded to dtype from float64)."""
    if (m, dtype) not in _G_KRON:
        _G_KRON[m, dtype] = np.kron(G[m], G[m]).astype(dtype)
    return _G_KRON[m, dtype]


_G_KRON = {}


def _copy(a):
    """a contiguous workspace copy of a."""
    out = workspace.empty(a.shape, a.dtype)
    out[...] = a
    return out


def _products(a, b, out):
    """out[ξ] = a[ξ] @ b[ξ] for every ξ, the products shared out whole among the threads (each a
    one-thread BLAS product), so that each is computed the same way on any thread count. In float32
    by small_products.py where it suits (B read in place, not packed: faster at K = 64)."""
    if small_products.suits(a, b, out):
        return small_products.products(a, b, out)
    count = out.shape[0]
    parts = min(threads.count(), max(1, 2 * out[0].size * count * a.shape[2] // threads.MIN_SPLIT_FLOPS))
    pieces = [slice(*p) for p in threads.bounds(count, parts)]
    with threads.one_blas_thread():
        threads.run(lambda k: np.matmul(a[pieces[k]], b[pieces[k]], out=out[pieces[k]]), parts)
    return out


def _by_channels(name, channels, size, *args):
    """The kernel `name`(*args, c0, c1) for one range [c0, c1) of channels per thread, at once."""
    parts = max(1, min(threads.count(), channels, size // threads.MIN_PIECE))
    pieces = threads.bounds(channels, parts)
    threads.run(lambda k: _compiled[name](*args, *pieces[k]), parts)


def _compile():
    """Compile the kernels below (or load them from the cache) once; False where the CPU kernels
    are off (MINIVAE_CPU_KERNELS=never) or Numba is missing."""
    if not cpu_kernels.available():
        return False
    if not _compiled:
        import numba
        # The kernels' helpers first, each under its own name, so that the kernels calling them
        # compile with them (written into the kernels' code where called: inline="always").
        for helper in (_finish_tile, _edge_tile, _crop_tile, _pad_channel, _cut_out, _cut_out_by_parity,
                       _bt, _b, _at, _a, _output_tile, _gradient_tile, _output_tile_4x4, _gradient_tile_4x4,
                       _output_edge, _gradient_edge, _output_edge_4x4, _gradient_edge_4x4):
            globals()[helper.__name__] = numba.njit(inline="always")(helper)
        for kernel in ("input_tiles", "output_tiles", "gradient_tiles", "input_gradient"):
            for m in G:
                _compiled[_kernel(kernel, m)] = cpu_kernels.jit(globals()[_kernel(kernel, m)])
    return True


def _kernel(name, m):
    """The name of kernel `name` for m×m tiles: F(2×2)'s as named, F(4×4)'s with "_4x4" after it."""
    return name if m == 2 else f"{name}_{m}x{m}"


# ---- the transforms: Numba kernels ---------------------------------------------------------------
#
# Each walks the tiles of its channels, and for each tile loops over the images n (the innermost
# axis of every array here) in a few loops that Numba's compiler turns into SIMD instructions;
# F(2×2)'s input_tiles and input_gradient walk a row of tiles in each loop, a longer run (their
# docstrings say how).
# First F(2×2, 3×3)'s four, then F(4×4, 3×3)'s.
# (It does not where a loop's index is anything but n plus numbers fixed for the loop, or where it
# stores to more than about 12 places: it would first have to check that none of them overlaps
# another, and gives up. So each loop makes one row of a tile.)
# The 16 entries ξ of Winograd space are v[ξ] (the products' V[ξ], M[ξ]): v[ξ, tile, n], tile
# (c·TH + ty)·TW + tx. One tile more than that needs: 4 KiB apart, the 16 places a loop writes
# would fall in the same few sets of the cache (2-6x slower). The input kernels pad each channel
# to whole tiles in a buffer of their own first (in the cache, and on every thread at once, where a
# padded copy of the whole input made beforehand ran on one). A tile of the output (or of its
# gradient) that reaches past the image's edge is made in (or read from) a buffer of one tile,
# whose part on the image is then copied out (or in): _crop_tile, _edge_tile; so no loop over a
# tile looks for the edge of an image, and no cropped copy of the whole output (or padded copy of
# its gradient) is made, a pass on one thread (at Foster's 7×7 layers, whose 4×4 tiles cover 8×8).

def input_tiles(x, v, th, tw, top, left, c0, c1):
    """v[4·i + j, tile (c, ty, tx)] = (Bᵀ d B)[i, j] for the 4×4 patch d of x (C, H, W, N) padded by
    top rows and left columns (and zeros to whole tiles) whose corner is (2·ty, 2·tx). A row of
    tiles at a time: each channel is first padded into a buffer with its columns split by parity
    (column 2a + p of image n at d[row, p, a·N + n]), so the four columns 2tx .. 2tx + 3 that tile
    tx reads are, for all the row's tiles and images at once, four runs of memory: the even and
    the odd columns, and both again one tile on. v (16, (C·TH·TW + 1)·N): the planes of v, flat.
    (Tile by tile, each loop would run over the N images only: with N = 16 it spent more on
    setting up than on adding, and the whole pass took 1.7× as long.)"""
    height, width, batch = x.shape[1], x.shape[2], x.shape[3]
    run = tw * batch
    d = np.empty((2 * th + 2, 2, (tw + 1) * batch), x.dtype)
    for c in range(c0, c1):
        d[:] = 0
        for row in range(height):
            for col in range(width):
                a, parity = divmod(left + col, 2)
                to, frm = d[top + row, parity, a * batch:(a + 1) * batch], x[c, row, col]
                for n in range(batch):
                    to[n] = frm[n]
        for ty in range(th):
            at, r = (c * th + ty) * run, 2 * ty
            for i in range(4):
                # row i of Bᵀ d is (d0 - d2, d1 + d2, d2 - d1, d1 - d3)[i] = row p ∓ row q of d;
                # that row (t0..t3) times B: (t0 - t2, t1 + t2, t2 - t1, t1 - t3)
                p, q, e = r + (0, 1, 2, 1)[i], r + (2, 2, 1, 3)[i], 4 * i
                # slices, so that every loop index is j alone: Numba then knows none is negative
                p0, p1, q0, q1 = d[p, 0, :run], d[p, 1, :run], d[q, 0, :run], d[q, 1, :run]
                p2, p3 = d[p, 0, batch:batch + run], d[p, 1, batch:batch + run]     # one tile on
                q2, q3 = d[q, 0, batch:batch + run], d[q, 1, batch:batch + run]
                v0, v1 = v[e, at:at + run], v[e + 1, at:at + run]
                v2, v3 = v[e + 2, at:at + run], v[e + 3, at:at + run]
                if i == 1:
                    for j in range(run):
                        t0, t1, t2, t3 = p0[j] + q0[j], p1[j] + q1[j], p2[j] + q2[j], p3[j] + q3[j]
                        v0[j], v1[j], v2[j], v3[j] = t0 - t2, t1 + t2, t2 - t1, t1 - t3
                else:
                    for j in range(run):
                        t0, t1, t2, t3 = p0[j] - q0[j], p1[j] - q1[j], p2[j] - q2[j], p3[j] - q3[j]
                        v0[j], v1[j], v2[j], v3[j] = t0 - t2, t1 + t2, t2 - t1, t1 - t3


def output_tiles(m, y, bias, kind, slope, o0, o1):
    """y[o, 2·ty + a, 2·tx + b] = (Aᵀ M A)[a, b] for the 4×4 M = m[:, tile (o, ty, tx)]
    (+ bias[o]), then relu (kind 1) or leaky_relu (kind 2, that slope) as activations.Fused
    applies them (y <= 0 becomes 0 or slope·y). y (C_out, OH, OW, N), TH = ⌈OH / 2⌉, TW = ⌈OW / 2⌉:
    first the tiles that lie whole on y, then those reaching past its edge (_output_edge)."""
    height, width, batch = y.shape[1], y.shape[2], y.shape[3]
    th, tw = (height + 1) // 2, (width + 1) // 2
    edge = np.empty((1, 2, 2, batch), y.dtype)
    for o in range(o0, o1):
        for ty in range(height // 2):
            for tx in range(width // 2):
                _output_tile(m, (o * th + ty) * tw + tx, y, o, 2 * ty, 2 * tx)
                _finish_tile(y, o, 2 * ty, 2 * tx, 2, 2, bias, kind, slope)
        for ty in range(th):
            for tx in range(width // 2 if ty < height // 2 else 0, tw):
                _output_edge(m, (o * th + ty) * tw + tx, edge, y, o, 2 * ty, 2 * tx, bias, kind, slope)


def _output_tile(m, tile, out, o, r, s):
    """out[o, r + a, s + b] = (Aᵀ M A)[a, b] for the 4×4 M = m[:, tile]."""
    for n in range(out.shape[3]):
        # row 0 of Aᵀ M is M0 + M1 + M2, row 1 is M1 - M2 - M3 (M0..M3 the rows of M: entries
        # 0-3, 4-7, 8-11, 12-15 of m); each row (t0..t3) times A: (t0 + t1 + t2, t1 - t2 - t3)
        t0 = m[0, tile, n] + m[4, tile, n] + m[8, tile, n]
        t1 = m[1, tile, n] + m[5, tile, n] + m[9, tile, n]
        t2 = m[2, tile, n] + m[6, tile, n] + m[10, tile, n]
        t3 = m[3, tile, n] + m[7, tile, n] + m[11, tile, n]
        out[o, r, s, n], out[o, r, s + 1, n] = t0 + t1 + t2, t1 - t2 - t3
    for n in range(out.shape[3]):
        t0 = m[4, tile, n] - m[8, tile, n] - m[12, tile, n]
        t1 = m[5, tile, n] - m[9, tile, n] - m[13, tile, n]
        t2 = m[6, tile, n] - m[10, tile, n] - m[14, tile, n]
        t3 = m[7, tile, n] - m[11, tile, n] - m[15, tile, n]
        out[o, r + 1, s, n], out[o, r + 1, s + 1, n] = t0 + t1 + t2, t1 - t2 - t3


def gradient_tiles(g, dm, o0, o1):
    """dm[:, tile (o, ty, tx)] = A G Aᵀ for the 2×2 tile G of g (C_out, OH, OW, N) at
    (2·ty, 2·tx), zeros past g's edge: the adjoint of output_tiles."""
    height, width, batch = g.shape[1], g.shape[2], g.shape[3]
    th, tw = (height + 1) // 2, (width + 1) // 2
    edge = np.empty((1, 2, 2, batch), g.dtype)
    for o in range(o0, o1):
        for ty in range(height // 2):
            for tx in range(width // 2):
                _gradient_tile(g, o, 2 * ty, 2 * tx, dm, (o * th + ty) * tw + tx)
        for ty in range(th):
            for tx in range(width // 2 if ty < height // 2 else 0, tw):
                _gradient_edge(g, edge, o, 2 * ty, 2 * tx, dm, (o * th + ty) * tw + tx)


def _gradient_tile(g, o, r, s, dm, tile):
    """dm[:, tile] = A G Aᵀ for the 2×2 tile G of g[o] at (r, s)."""
    for n in range(g.shape[3]):
        # the rows of A G are G0, G0 + G1, G0 - G1 and -G1, for G0 and G1 the tile's rows r and
        # r + 1; each row (t0, t1) times Aᵀ: (t0, t0 + t1, t0 - t1, -t1), entries 4·i to 4·i + 3
        t0, t1 = g[o, r, s, n], g[o, r, s + 1, n]
        dm[0, tile, n], dm[1, tile, n], dm[2, tile, n], dm[3, tile, n] = t0, t0 + t1, t0 - t1, -t1
    for n in range(g.shape[3]):
        t0, t1 = g[o, r, s, n] + g[o, r + 1, s, n], g[o, r, s + 1, n] + g[o, r + 1, s + 1, n]
        dm[4, tile, n], dm[5, tile, n], dm[6, tile, n], dm[7, tile, n] = t0, t0 + t1, t0 - t1, -t1
    for n in range(g.shape[3]):
        t0, t1 = g[o, r, s, n] - g[o, r + 1, s, n], g[o, r, s + 1, n] - g[o, r + 1, s + 1, n]
        dm[8, tile, n], dm[9, tile, n], dm[10, tile, n], dm[11, tile, n] = t0, t0 + t1, t0 - t1, -t1
    for n in range(g.shape[3]):
        t0, t1 = -g[o, r + 1, s, n], -g[o, r + 1, s + 1, n]
        dm[12, tile, n], dm[13, tile, n], dm[14, tile, n], dm[15, tile, n] = t0, t0 + t1, t0 - t1, -t1


def input_gradient(dv, dx, th, tw, top, left, c0, c1):
    """dx[c] for the channels c0 <= c < c1: the patches B dV Bᵀ of a channel's tiles (dV = dv[:,
    tile (c, ty, tx)]), each added onto the 4×4 patch of the padded input it was read from (corner
    (2·ty, 2·tx)), the padding (top, left) then cut off. The adjoint of input_tiles, in one pass:
    the sums go into one padded channel in the cache (buf), where writing every patch out and
    adding them back (col2im) would pass over memory four times the size of dx. A row of tiles at
    a time, as input_tiles reads them: buf is laid out as its d (columns split by parity), and
    tile tx adds its columns 0 and 1 onto the even and odd columns at tx, its columns 2 and 3 onto
    those at tx + 1, in a loop of their own (in one loop, tile tx + 1 would add onto the same
    places). dv (16, (C·TH·TW + 1)·N): the planes of dv, flat. dx (C, H, W, N)."""
    batch = dx.shape[3]
    run = tw * batch
    buf = np.empty((2 * th + 2, 2, (tw + 1) * batch), dx.dtype)
    t = np.empty((4, run), dx.dtype)                            # a row of B dV, for a row of tiles
    one = dx.dtype.type(1)
    for c in range(c0, c1):
        buf[:] = 0
        for ty in range(th):
            at = (c * th + ty) * run
            for i in range(4):
                # row i of B dV is (V0, V1 - V2 + V3, V1 + V2 - V0, -V3)[i], for V0..V3 the rows of dV
                # (entries 0-3, 4-7, 8-11, 12-15 of dv); that row (t0..t3) times Bᵀ is
                # (t0, t1 - t2 + t3, t1 + t2 - t0, -t3), added onto row 2·ty + i of the patch
                sign = one if i < 3 else -one
                if i == 0 or i == 3:                           # V0 or V3 as it is
                    e = 12 * (i // 3)
                    t0, t1 = dv[e, at:at + run], dv[e + 1, at:at + run]
                    t2, t3 = dv[e + 2, at:at + run], dv[e + 3, at:at + run]
                else:                                          # V1 ∓ V2 ± V3 or V0, into t
                    for k in range(4):
                        a, b = dv[4 + k, at:at + run], dv[8 + k, at:at + run]
                        d = dv[(12 if i == 1 else 0) + k, at:at + run]
                        row = t[k]
                        if i == 1:
                            for j in range(run):
                                row[j] = a[j] - b[j] + d[j]
                        else:
                            for j in range(run):
                                row[j] = a[j] + b[j] - d[j]
                    t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
                even, odd = buf[2 * ty + i, 0, :run], buf[2 * ty + i, 1, :run]
                for j in range(run):                           # columns 0 and 1: even and odd at tx
                    even[j] += sign * t0[j]
                    odd[j] += sign * (t1[j] - t2[j] + t3[j])
                even, odd = buf[2 * ty + i, 0, batch:batch + run], buf[2 * ty + i, 1, batch:batch + run]
                for j in range(run):                           # columns 2 and 3: at tx + 1
                    even[j] += sign * (t1[j] + t2[j] - t0[j])
                    odd[j] -= sign * t3[j]
        _cut_out_by_parity(buf, dx, c, top, left)


def _cut_out_by_parity(buf, dx, c, top, left):
    """dx[c] = the padded channel buf, its columns split by parity (as input_tiles' d), without
    its padding: the adjoint of input_tiles' padding."""
    batch = dx.shape[3]
    for row in range(dx.shape[1]):
        for col in range(dx.shape[2]):
            a, parity = divmod(left + col, 2)
            frm, to = buf[top + row, parity, a * batch:(a + 1) * batch], dx[c, row, col]
            for n in range(batch):
                to[n] = frm[n]


def _pad_channel(x, c, d, top, left):
    """d = channel c of x (C, H, W, N) with top rows and left columns of zeros before it and zeros
    after it to d's size: the padded channel the tiles read (the adjoint of _cut_out)."""
    d[:] = 0
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            for n in range(x.shape[3]):
                d[top + i, left + j, n] = x[c, i, j, n]


def _cut_out(buf, dx, c, top, left):
    """dx[c] = the padded channel buf without its padding."""
    for i in range(dx.shape[1]):
        for j in range(dx.shape[2]):
            for n in range(dx.shape[3]):
                dx[c, i, j, n] = buf[top + i, left + j, n]


def _finish_tile(y, o, r, s, rows, cols, bias, kind, slope):
    """The bias and the activation on the rows×cols tile of y at (r, s) in channel o, while it is in
    the cache: y + bias[o], then relu (kind 1) or leaky_relu (kind 2, that slope) as activations.Fused
    applies them (y <= 0 becomes 0 or slope·y)."""
    if bias is None and kind == 0:
        return
    for a in range(rows):
        for b in range(cols):
            for n in range(y.shape[3]):
                value = y[o, r + a, s + b, n]
                if bias is not None:
                    value = value + bias[o]
                if kind == 1:
                    value = 0 if value <= 0 else value
                elif kind == 2:
                    value = value * slope if value <= 0 else value
                y[o, r + a, s + b, n] = value


def _crop_tile(edge, y, o, r, s):
    """y[o, r + a, s + b] = edge[0, a, b] for the part of the tile at (r, s) that lies on y: an
    output tile made in edge because it reaches past y's edge."""
    for a in range(min(edge.shape[1], y.shape[1] - r)):
        for b in range(min(edge.shape[2], y.shape[2] - s)):
            for n in range(y.shape[3]):
                y[o, r + a, s + b, n] = edge[0, a, b, n]


def _edge_tile(g, edge, o, r, s):
    """edge[0] = the tile of g[o] at (r, s), zeros where it reaches past g's edge (the adjoint of
    _crop_tile)."""
    edge[:] = 0
    for a in range(min(edge.shape[1], g.shape[1] - r)):
        for b in range(min(edge.shape[2], g.shape[2] - s)):
            for n in range(g.shape[3]):
                edge[0, a, b, n] = g[o, r + a, s + b, n]


# The tiles reaching past the output's edge, in a loop of their own after the whole tiles' (with a
# branch for them in that loop, it ran 1.2-1.5x slower): the last tile of each row of tiles where
# the width is not a multiple of m, then every tile of the last row where the height is not.

def _output_edge(m, tile, edge, y, o, r, s, bias, kind, slope):
    """output_tiles' tile at (r, s) of y[o], reaching past y's edge: made in edge, its part on y
    copied there and finished."""
    _output_tile(m, tile, edge, 0, 0, 0)
    _crop_tile(edge, y, o, r, s)
    _finish_tile(y, o, r, s, min(2, y.shape[1] - r), min(2, y.shape[2] - s), bias, kind, slope)


def _gradient_edge(g, edge, o, r, s, dm, tile):
    """gradient_tiles' tile at (r, s) of g[o], reaching past g's edge: read from edge, g's part
    of it with zeros around."""
    _edge_tile(g, edge, o, r, s)
    _gradient_tile(edge, 0, 0, 0, dm, tile)


def _output_edge_4x4(m, tile, t, edge, y, o, r, s, bias, kind, slope):
    """_output_edge for output_tiles_4x4."""
    _output_tile_4x4(m, tile, t, edge, 0, 0, 0)
    _crop_tile(edge, y, o, r, s)
    _finish_tile(y, o, r, s, min(4, y.shape[1] - r), min(4, y.shape[2] - s), bias, kind, slope)


def _gradient_edge_4x4(g, edge, o, r, s, t, dm, tile):
    """_gradient_edge for gradient_tiles_4x4."""
    _edge_tile(g, edge, o, r, s)
    _gradient_tile_4x4(edge, 0, 0, 0, t, dm, tile)


# ---- F(4×4, 3×3) -----------------------------------------------------------------------------------
#
# The same four kernels for 4×4 tiles from 6×6 patches. Each 2-D transform is its 1-D one applied to
# the columns of the tile, into a small buffer t, and then to the rows of t: two loops of at most
# six stores each, where one loop making all 36 entries would not be turned into SIMD code (above).
# The 1-D transforms are the helpers _bt, _at and their adjoints _b, _a; their factors are float32
# numbers, so that float32 arithmetic stays float32 (a Python 4 would make it float64).
#
#     Bᵀ = [4  0 -5  0  1  0]     G = [ 1/4     0     0 ]     Aᵀ = [1  1  1  1  1  0]
#          [0 -4 -4  1  1  0]         [-1/6  -1/6  -1/6 ]          [0  1 -1  2 -2  0]
#          [0  4 -4 -1  1  0]         [-1/6   1/6  -1/6 ]          [0  1  1  4  4  0]
#          [0 -2 -1  2  1  0]         [1/24  1/12   1/6 ]          [0  1 -1  8 -8  1]
#          [0  2 -1 -2  1  0]         [1/24 -1/12   1/6 ]
#          [0  4  0 -5  0  1]         [ 0     0     1   ]

_2, _4, _5, _8 = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


def _bt(d0, d1, d2, d3, d4, d5):
    """Bᵀ d for a column d of six."""
    return (_4 * d0 - _5 * d2 + d4, d3 + d4 - _4 * (d1 + d2), _4 * (d1 - d2) + d4 - d3,
            _2 * (d3 - d1) + d4 - d2, _2 * (d1 - d3) + d4 - d2, _4 * d1 - _5 * d3 + d5)


def _b(v0, v1, v2, v3, v4, v5):
    """B v, the adjoint of _bt (the columns of Bᵀ)."""
    return (_4 * v0, _4 * (v2 - v1 + v5) + _2 * (v4 - v3), -_5 * v0 - _4 * (v1 + v2) - v3 - v4,
            v1 - v2 + _2 * (v3 - v4) - _5 * v5, v0 + v1 + v2 + v3 + v4, v5)


def _at(m0, m1, m2, m3, m4, m5):
    """Aᵀ m for a column m of six: four numbers."""
    return (m0 + m1 + m2 + m3 + m4, m1 - m2 + _2 * (m3 - m4), m1 + m2 + _4 * (m3 + m4),
            m1 - m2 + _8 * (m3 - m4) + m5)


def _a(g0, g1, g2, g3):
    """A g, the adjoint of _at (the columns of Aᵀ): six numbers."""
    return (g0, g0 + g1 + g2 + g3, g0 - g1 + g2 - g3, g0 + _2 * g1 + _4 * g2 + _8 * g3,
            g0 - _2 * g1 + _4 * g2 - _8 * g3, g3)


def input_tiles_4x4(x, v, th, tw, top, left, c0, c1):
    """v[6·i + j, tile (c, ty, tx)] = (Bᵀ d B)[i, j] for the 6×6 patch d of x (C, H, W, N) padded
    by top rows and left columns (and zeros to whole tiles) whose corner is (4·ty, 4·tx); each
    channel is padded first, into a buffer (d) that stays in the cache."""
    batch = x.shape[3]
    d = np.empty((4 * th + 2, 4 * tw + 2, batch), x.dtype)
    t = np.empty((6, 6, batch), x.dtype)                      # Bᵀ d
    for c in range(c0, c1):
        _pad_channel(x, c, d, top, left)
        for ty in range(th):
            for tx in range(tw):
                tile, r, s = (c * th + ty) * tw + tx, 4 * ty, 4 * tx
                for j in range(6):
                    for n in range(batch):
                        t[0, j, n], t[1, j, n], t[2, j, n], t[3, j, n], t[4, j, n], t[5, j, n] = _bt(
                            d[r, s + j, n], d[r + 1, s + j, n], d[r + 2, s + j, n],
                            d[r + 3, s + j, n], d[r + 4, s + j, n], d[r + 5, s + j, n])
                for i in range(6):
                    e = 6 * i
                    for n in range(batch):
                        v[e, tile, n], v[e + 1, tile, n], v[e + 2, tile, n], v[e + 3, tile, n], \
                            v[e + 4, tile, n], v[e + 5, tile, n] = _bt(
                                t[i, 0, n], t[i, 1, n], t[i, 2, n], t[i, 3, n], t[i, 4, n], t[i, 5, n])


def output_tiles_4x4(m, y, bias, kind, slope, o0, o1):
    """y[o, 4·ty + a, 4·tx + b] = (Aᵀ M A)[a, b] for the 6×6 M = m[:, tile (o, ty, tx)]
    (+ bias[o], then the activation, as output_tiles). y (C_out, OH, OW, N), TH = ⌈OH / 4⌉,
    TW = ⌈OW / 4⌉."""
    height, width, batch = y.shape[1], y.shape[2], y.shape[3]
    th, tw = (height + 3) // 4, (width + 3) // 4
    t = np.empty((4, 6, batch), y.dtype)                      # Aᵀ M
    edge = np.empty((1, 4, 4, batch), y.dtype)
    for o in range(o0, o1):
        for ty in range(height // 4):
            for tx in range(width // 4):
                _output_tile_4x4(m, (o * th + ty) * tw + tx, t, y, o, 4 * ty, 4 * tx)
                _finish_tile(y, o, 4 * ty, 4 * tx, 4, 4, bias, kind, slope)
        for ty in range(th):
            for tx in range(width // 4 if ty < height // 4 else 0, tw):
                _output_edge_4x4(m, (o * th + ty) * tw + tx, t, edge, y, o, 4 * ty, 4 * tx, bias, kind, slope)


def _output_tile_4x4(m, tile, t, out, o, r, s):
    """out[o, r + a, s + b] = (Aᵀ M A)[a, b] for the 6×6 M = m[:, tile], by way of t = Aᵀ M."""
    for j in range(6):
        for n in range(out.shape[3]):
            t[0, j, n], t[1, j, n], t[2, j, n], t[3, j, n] = _at(
                m[j, tile, n], m[6 + j, tile, n], m[12 + j, tile, n],
                m[18 + j, tile, n], m[24 + j, tile, n], m[30 + j, tile, n])
    for a in range(4):
        for n in range(out.shape[3]):
            out[o, r + a, s, n], out[o, r + a, s + 1, n], out[o, r + a, s + 2, n], out[o, r + a, s + 3, n] = _at(
                t[a, 0, n], t[a, 1, n], t[a, 2, n], t[a, 3, n], t[a, 4, n], t[a, 5, n])


def gradient_tiles_4x4(g, dm, o0, o1):
    """dm[:, tile (o, ty, tx)] = A G Aᵀ for the 4×4 tile G of g (C_out, OH, OW, N) at
    (4·ty, 4·tx), zeros past g's edge: the adjoint of output_tiles_4x4."""
    height, width, batch = g.shape[1], g.shape[2], g.shape[3]
    th, tw = (height + 3) // 4, (width + 3) // 4
    t = np.empty((6, 4, batch), g.dtype)                      # A G
    edge = np.empty((1, 4, 4, batch), g.dtype)
    for o in range(o0, o1):
        for ty in range(height // 4):
            for tx in range(width // 4):
                _gradient_tile_4x4(g, o, 4 * ty, 4 * tx, t, dm, (o * th + ty) * tw + tx)
        for ty in range(th):
            for tx in range(width // 4 if ty < height // 4 else 0, tw):
                _gradient_edge_4x4(g, edge, o, 4 * ty, 4 * tx, t, dm, (o * th + ty) * tw + tx)


def _gradient_tile_4x4(g, o, r, s, t, dm, tile):
    """dm[:, tile] = A G Aᵀ for the 4×4 tile G of g[o] at (r, s), by way of t = A G."""
    for b in range(4):
        for n in range(g.shape[3]):
            t[0, b, n], t[1, b, n], t[2, b, n], t[3, b, n], t[4, b, n], t[5, b, n] = _a(
                g[o, r, s + b, n], g[o, r + 1, s + b, n], g[o, r + 2, s + b, n], g[o, r + 3, s + b, n])
    for i in range(6):
        e = 6 * i
        for n in range(g.shape[3]):
            dm[e, tile, n], dm[e + 1, tile, n], dm[e + 2, tile, n], dm[e + 3, tile, n], \
                dm[e + 4, tile, n], dm[e + 5, tile, n] = _a(t[i, 0, n], t[i, 1, n], t[i, 2, n], t[i, 3, n])


def input_gradient_4x4(dv, dx, th, tw, top, left, c0, c1):
    """input_gradient for 6×6 patches at stride 4: the adjoint of input_tiles_4x4 in one pass."""
    batch = dx.shape[3]
    buf = np.empty((4 * th + 2, 4 * tw + 2, batch), dx.dtype)
    t = np.empty((6, 6, batch), dv.dtype)                     # B dV
    for c in range(c0, c1):
        buf[:] = 0
        for ty in range(th):
            for tx in range(tw):
                tile, r, s = (c * th + ty) * tw + tx, 4 * ty, 4 * tx
                for j in range(6):
                    for n in range(batch):
                        t[0, j, n], t[1, j, n], t[2, j, n], t[3, j, n], t[4, j, n], t[5, j, n] = _b(
                            dv[j, tile, n], dv[6 + j, tile, n], dv[12 + j, tile, n],
                            dv[18 + j, tile, n], dv[24 + j, tile, n], dv[30 + j, tile, n])
                for i in range(6):
                    for n in range(batch):
                        p0, p1, p2, p3, p4, p5 = _b(t[i, 0, n], t[i, 1, n], t[i, 2, n],
                                                    t[i, 3, n], t[i, 4, n], t[i, 5, n])
                        buf[r + i, s, n] += p0
                        buf[r + i, s + 1, n] += p1
                        buf[r + i, s + 2, n] += p2
                        buf[r + i, s + 3, n] += p3
                        buf[r + i, s + 4, n] += p4
                        buf[r + i, s + 5, n] += p5
        _cut_out(buf, dx, c, top, left)
