"""Many small matrix products at once, C[p] = A[p] @ B[p] for each plane p, where the inner size K
is short (Winograd's 16 or 36 products of a layer: K = 64 channels, N = tiles·batch columns).

OpenBLAS copies ("packs") B into a buffer of its own before each product and A into another; with
K = 64 that copy is a large share of the work: at these shapes its products ran at 50-70% of the
CPU's peak. Here A and B are read where they lie: each block of C, ROWS rows × VECTORS vectors of
LANES columns, is a BLAS "microkernel", its sums kept in the CPU's vector registers for the whole
loop over k:

    for k < K:   C[r, j...] += A[r, k] · B[k, j...]       (r < ROWS: A[r, k] in every lane;
                                                          j... the VECTORS·LANES columns of the block)

per k, VECTORS loads of B, ROWS numbers of A broadcast, ROWS·VECTORS fused multiply-adds (with
AVX-512, 4 × 6 = 24 vectors of sums). A column block's K rows of B (K × 384 bytes) are
read from memory once, by its first block of rows, and then from the cache by the others; that
first block also asks the CPU to fetch the next column block's rows (a prefetch per row and
vector), as OpenBLAS's packing loop would read them in order. The block is written in LLVM's IR
(simd.py), as the direct path's are.

Where a thread's share of C is large (STREAM_FROM), far past what the caches hold, the blocks store
it with non-temporal stores: an ordinary store to a line the cache does not hold first reads that
line in from memory, and its write-back comes later; a non-temporal store of whole lines goes to
memory without either (it needs C's vectors to start on their own boundaries: the workspace's
arrays start on a cache line). What makes C next then reads it from memory, so below that size,
where C would still be in the cache for it, the ordinary stores pay.

Each C[r, j] is summed in k order, one fused multiply-add per term starting from 0: OpenBLAS's
numbers where it sums K in one block (it does for K up to a few hundred). Each plane is made by one
thread, so the bits do not depend on the thread count. NumPy's matmul stays the reference
(tests/test_small_products.py).
"""
import os

import numpy as np

from .. import cpu_kernels, threads
from . import simd

settings = {"enabled": os.environ.get("MINIVAE_SMALL_PRODUCTS", "auto") != "never",
            "stream": True}          # (a switch for A/Bs: False keeps every store an ordinary one)
ROWS = 4                    # a block of C: ROWS rows × VECTORS[LANES] vectors of LANES columns, the sums in
VECTORS = {16: 6, 8: 3}     # 24 of AVX-512's 32 registers, or 12 of AVX2's 16 (the last columns in 3, 2, 1)
MAX_K = 256                 # K at most: a column block's K rows of B stay in the 48 KiB L1 cache
STREAM_FROM = 8 << 20       # bytes of C a thread, from which its wide blocks store past the cache (Chollet's
                            # 14×14 layers from batch 64 on one thread, 128 on two: docs/performance.md)
_compiled = {}
block_wide = block_wide_fetching = block_3 = block_2 = block_1 = None     # made by _compile
block_wide_streaming = block_wide_fetching_streaming = store_fence = None
_lanes, _vectors = 16, 6    # set by _compile before planes_loop is compiled (constants there)


def suits(a, b, out):
    """Does products take out = a @ b? float32 NumPy arrays of planes (P, M, K) @ (P, K, N) -> (P, M,
    N), M a multiple of ROWS, K at most MAX_K, N of LANES, a's steps whole floats, the rows of b and
    out runs of memory, and the CPU kernels on."""
    if not (settings["enabled"] and all(isinstance(t, np.ndarray) and t.dtype == np.float32 and t.ndim == 3
                                        for t in (a, b, out))):
        return False
    (planes, m, k), n = a.shape, out.shape[2]
    return (b.shape == (planes, k, n) and out.shape == (planes, m, n) and m % ROWS == 0 and k <= MAX_K
            and all(s % 4 == 0 and s >= 0 for s in a.strides) and _rows_of_runs(b) and _rows_of_runs(out)
            and _compile() and n % _compiled["lanes"] == 0)


def products(a, b, out):
    """out[p] = a[p] @ b[p] for every plane p (see suits), the planes shared out whole among the
    threads. Returns out."""
    planes, m, k = a.shape
    steps = [s // a.itemsize for t in (a, b, out) for s in t.strides[:2]]   # in floats: per plane, per row
    parts = min(threads.count(), max(1, 2 * out[0].size * planes * k // threads.MIN_SPLIT_FLOPS))
    pieces = threads.bounds(planes, parts)
    stream = streams(out, parts)
    threads.run(lambda p: _compiled["planes"](a, a.strides[2] // a.itemsize, b, out, *steps, m, k, out.shape[2],
                                               *pieces[p], stream), parts)
    return out


def streams(out, parts):
    """Do the wide blocks store out with non-temporal stores, `parts` threads making it? Where each
    thread's share is STREAM_FROM bytes or more, and every vector stored starts on a vector's
    boundary in memory (out's start, and its steps from plane to plane and row to row whole vectors)."""
    lanes, item = _compiled["lanes"], out.itemsize
    return (settings["stream"] and out.nbytes >= STREAM_FROM * parts and out.ctypes.data % (lanes * item) == 0
            and out.strides[0] % (lanes * item) == 0 and out.strides[1] % (lanes * item) == 0)


def _rows_of_runs(t):
    """Are t's rows (its last axis) runs of memory, a whole number of floats apart, plane to plane too?"""
    item = t.itemsize
    return (t.strides[2] == item and t.strides[1] % item == 0 and t.strides[0] % item == 0
            and t.strides[1] >= t.shape[2] * item and t.strides[0] >= 0)


# ---- the kernel: loops over planes and blocks around the block below ------------------------------

def planes_loop(a, a_col, b, out, a_plane, a_row, b_plane, ldb, o_plane, ldo, m, ks, n, p0, p1, stream):
    """out[p] = A_p @ B_p for the planes p0 <= p < p1, each array given by its data and its steps
    (in floats) from plane to plane and from row to row: A_p (m, ks), a_col from column to column;
    B_p (ks, n) and C_p (m, n), their rows runs of memory; stream: the wide blocks' stores
    non-temporal (see streams), then a fence, so that they have reached memory when this returns."""
    lanes, wide = _lanes, _vectors
    for p in range(p0, p1):
        b_at, o_at = p * b_plane, p * o_plane
        j = 0
        while j < n:
            left = (n - j) // lanes
            for r in range(0, m, ROWS):
                a_at, at = p * a_plane + r * a_row, o_at + r * ldo + j
                if left >= wide:
                    if stream and r == 0:
                        block_wide_fetching_streaming(a, a_at, a_row, a_col, b, b_at + j, ldb, out, at, ldo, ks)
                    elif stream:
                        block_wide_streaming(a, a_at, a_row, a_col, b, b_at + j, ldb, out, at, ldo, ks)
                    elif r == 0:
                        block_wide_fetching(a, a_at, a_row, a_col, b, b_at + j, ldb, out, at, ldo, ks)
                    else:
                        block_wide(a, a_at, a_row, a_col, b, b_at + j, ldb, out, at, ldo, ks)
                elif left >= 3:
                    block_3(a, a_at, a_row, a_col, b, b_at + j, ldb, out, at, ldo, ks)
                elif left == 2:
                    block_2(a, a_at, a_row, a_col, b, b_at + j, ldb, out, at, ldo, ks)
                else:
                    block_1(a, a_at, a_row, a_col, b, b_at + j, ldb, out, at, ldo, ks)
            j += lanes * (wide if left >= wide else (3 if left >= 3 else left))
    if stream:
        store_fence()


def _fence():
    """The intrinsic fence(): after it every store made before it, the non-temporal ones too (which
    are ordered with nothing else), is seen by every thread. On x86 the store fence `sfence` (LLVM's
    own full fence there is a locked add, which Intel does not promise to order them); elsewhere
    LLVM's full fence."""
    import numba
    from llvmlite import binding, ir
    x86 = binding.get_process_triple().startswith(("x86_64", "i386", "i686"))

    @numba.extending.intrinsic
    def fence(typingctx):
        def codegen(context, builder, signature, args):
            if x86:
                builder.call(simd.function(builder, "llvm.x86.sse.sfence", ir.VoidType(), []), [])
            else:
                builder.fence("seq_cst")
            return context.get_dummy_value()
        return numba.types.none(), codegen
    return fence


def _block(lanes, vectors, fetch, stream=False):
    """The intrinsic block(a, a_at, a_row, a_col, b, b_at, ldb, out, o_at, ldo, ks): for r < ROWS,
    u < vectors, l < lanes (a, b and out by their data, the steps in floats),
        out[o_at + r·ldo + u·lanes + l] = Σ_{k < ks} a[a_at + r·a_row + k·a_col] · b[b_at + k·ldb + u·lanes + l],
    the ROWS·vectors vectors of sums kept in registers through the loop over k, each term a fused
    multiply-add in k order; where fetch, each k also prefetches the next `vectors` vectors of b's
    row k (the next column block's); where stream, the sums are stored non-temporally (each vector
    must then start on a vector's boundary)."""
    import numba

    @numba.extending.intrinsic
    def block(typingctx, a, a_at, a_row, a_col, b, b_at, ldb, out, o_at, ldo, ks):
        def codegen(context, builder, signature, args):
            vec, fma, data, integer = simd.tools(context, builder, signature, args, lanes)
            a_p, a_row, a_col = builder.gep(data(0), [integer(1)]), integer(2), integer(3)
            a_rows = [builder.gep(a_p, [builder.mul(simd.i64(r), a_row)]) for r in range(ROWS)]
            b_p, ldb = builder.gep(data(4), [integer(5)]), integer(6)
            o_p, ldo = builder.gep(data(7), [integer(8)]), integer(9)
            entry, loop, done, k, sums = simd.open_loop(builder, vec, ROWS * vectors)
            b_k = builder.gep(b_p, [builder.mul(k, ldb)])
            bs = [simd.load(builder, builder.gep(b_k, [simd.i64(u * lanes)]), vec) for u in range(vectors)]
            if fetch:
                for u in range(vectors):
                    simd.prefetch(builder, builder.gep(b_k, [simd.i64((vectors + u) * lanes)]))
            a_k = builder.mul(k, a_col)
            new = []
            for r in range(ROWS):
                a_r = simd.splat(builder, builder.load(builder.gep(a_rows[r], [a_k])), vec, lanes)
                new += [builder.call(fma, [a_r, b_u, sums[r * vectors + u]]) for u, b_u in enumerate(bs)]
            simd.close_loop(builder, k, sums, new, entry, loop, integer(10), done, vec)
            for r in range(ROWS):
                row = builder.gep(o_p, [builder.mul(simd.i64(r), ldo)])
                for u in range(vectors):
                    store = simd.store_past_cache if stream else simd.store
                    store(builder, new[r * vectors + u], builder.gep(row, [simd.i64(u * lanes)]), vec)
            return context.get_dummy_value()
        return numba.types.none(a, a_at, a_row, a_col, b, b_at, ldb, out, o_at, ldo, ks), codegen
    return block


def _compile():
    """Build the blocks for this CPU's vector width and compile the loop (or load it from the
    cache) once; False where the CPU kernels are off (or Numba is missing)."""
    if not cpu_kernels.available():
        return False
    if not _compiled:
        lanes, g = simd.vector_width(), globals()
        g["_lanes"], g["_vectors"] = lanes, VECTORS[lanes]
        g["block_wide"], g["block_wide_fetching"] = (_block(lanes, VECTORS[lanes], fetch) for fetch in (False, True))
        g["block_wide_streaming"], g["block_wide_fetching_streaming"] = (_block(lanes, VECTORS[lanes], fetch, True)
                                                                         for fetch in (False, True))
        g["store_fence"] = _fence()
        for vectors in (3, 2, 1):
            g[f"block_{vectors}"] = _block(lanes, vectors, fetch=False)
        _compiled.update(planes=cpu_kernels.jit(planes_loop), lanes=lanes)
    return True
