"""A tiled shared-memory matrix product C = A @ B: the teaching GEMM.

The library multiplies with cuBLAS (CuPy's `@`) by default; this kernel shows what such a
product does and is checked against it. Each block computes one TILE×TILE tile of C, one thread
per element. To do so it walks along K one TILE-wide strip at a time: every thread copies one
element of A's strip and one of B's into shared memory, the block waits until the tiles are
full, and then each thread does TILE multiply-adds from the fast shared copies. Each element of
A and B is so read from global memory M/TILE or N/TILE times rather than M or N times.
"""
from numba import cuda

TILE = 16  # a block is TILE×TILE threads: 256


@cuda.jit
def gemm(a, b, c):
    """c = a @ b for a (M, K), b (K, N), c (M, N).

    Thread (ty, tx) of block (by, bx) computes c[by·TILE + ty, bx·TILE + tx]. Elements outside
    the matrices load as 0 (sizes need not be multiples of TILE), and only threads inside c
    write. The sum is kept in a float64 register.
    """
    a_tile = cuda.shared.array((TILE, TILE), a.dtype)
    b_tile = cuda.shared.array((TILE, TILE), b.dtype)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    m, k_size = a.shape
    n = b.shape[1]

    total = 0.0
    for k0 in range(0, k_size, TILE):
        # thread (ty, tx) loads a[row, k0 + tx] and b[k0 + ty, col]
        a_tile[ty, tx] = a[row, k0 + tx] if row < m and k0 + tx < k_size else 0.0
        b_tile[ty, tx] = b[k0 + ty, col] if k0 + ty < k_size and col < n else 0.0
        cuda.syncthreads()  # both tiles are full
        for k in range(TILE):
            total += a_tile[ty, k] * b_tile[k, tx]
        cuda.syncthreads()  # everyone is done reading before the next strip overwrites the tiles
    if row < m and col < n:
        c[row, col] = total
