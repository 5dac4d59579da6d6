"""The bias gradient, db[c] = Σ_{n,h,w} g[n, c, h, w]: sums over every axis but the channel axis.

A sum over a long run cannot keep a GPU busy with one block per channel (a conv layer has 1 to
64 channels; an H100 runs 132 blocks of 1024 threads at once), so it is done in two passes:
pass 1 splits each channel's values among many blocks, each of which adds its share into one
partial sum; pass 2 adds each channel's partial sums (the same kernel, run on pass 1's output).

Two kernels, for the two ways the values can lie in memory:
- channel_sums, g (B, C, S) with S contiguous (a conv's (1, C, OH·OW·N) CHWN rows, or an NCHW
  array's (N, C, H·W)): a block adds up a strided share of one channel's B·S values, then its
  threads combine their sums with the shared-memory tree reduction.
- column_sums, g (R, C) C-contiguous (a dense layer's (N, C) gradient): the channel is the
  fastest axis, so each thread owns a column and walks down its rows.
"""
from numba import cuda

THREADS = 256  # the most threads per block; the shared buffer holds one partial sum per thread


@cuda.jit
def channel_sums(g, partial):
    """partial[c, b] = the sum of block b's share of channel c's values, for g (B, C, S).

    Grid (chunks, C): block (b, c) adds the channel's flat indices k = b·T + t, stepping by
    chunks·T (T = blockDim.x, k = i·S + s for g[i, c, s]): each warp reads 32 consecutive
    addresses while S >= 32 (coalesced). blockDim.x must be a power of two, at most THREADS.
    """
    t = cuda.threadIdx.x
    batch, channels, size = g.shape
    chunk, chunks = cuda.blockIdx.x, cuda.gridDim.x
    partial_sums = cuda.shared.array(THREADS, g.dtype)
    for c in range(cuda.blockIdx.y, channels, cuda.gridDim.y):   # a grid-stride loop over channels
        total = 0.0
        for k in range(chunk * cuda.blockDim.x + t, batch * size, chunks * cuda.blockDim.x):
            i = k // size
            total += g[i, c, k - i * size]
        partial_sums[t] = total
        cuda.syncthreads()

        half = cuda.blockDim.x // 2
        while half > 0:  # thread t < half adds in its partner's sum; the upper half then idles
            if t < half:
                partial_sums[t] += partial_sums[t + half]
            cuda.syncthreads()  # every add of this step lands before the next step reads it
            half //= 2

        if t == 0:
            partial[c, chunk] = partial_sums[0]
        cuda.syncthreads()  # thread 0 has read the sum before the next channel overwrites it


@cuda.jit
def column_sums(g, partial):
    """partial[b, c] = Σ of g[r, c] over block row b's share of the rows r, for g (R, C).

    Grid (column blocks, chunks): thread x of the row of blocks b owns column c and adds rows
    b, b + chunks, ...: at each row, consecutive threads read consecutive addresses (coalesced).
    """
    rows, columns = g.shape
    chunk, chunks = cuda.blockIdx.y, cuda.gridDim.y
    for c in range(cuda.grid(1), columns, cuda.gridsize(1)):
        total = 0.0
        for r in range(chunk, rows, chunks):
            total += g[r, c]
        partial[chunk, c] = total
