"""The bias gradient, db[c] = Σ_{n,h,w} g[n, c, h, w]: the classic shared-memory tree reduction.

One block per channel. Each thread first sums a strided slice of its channel on its own, then
the block adds the per-thread sums pairwise in shared memory, halving the count each step, so
THREADS partial sums take log2(THREADS) steps instead of THREADS.
"""
from numba import cuda

THREADS = 256  # the most threads per block; the shared buffer holds one partial sum per thread


@cuda.jit
def bias_grad(g, db):
    """db[c] = Σ_{n,s} g[n, c, s] for g (N, C, S) (S = H·W, or 1 for a dense layer).

    Block c owns channel c; blockDim.x must be a power of two, at most THREADS.
    Thread t sums elements t, t + blockDim.x, ... of the channel's N·S values (consecutive
    threads read consecutive addresses), then joins the tree.
    """
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    batch, _, size = g.shape
    partial = cuda.shared.array(THREADS, g.dtype)

    total = 0.0
    for k in range(t, batch * size, cuda.blockDim.x):
        total += g[k // size, c, k % size]
    partial[t] = total
    cuda.syncthreads()

    half = cuda.blockDim.x // 2
    while half > 0:  # thread t < half adds in its partner's sum; the upper half then idles
        if t < half:
            partial[t] += partial[t + half]
        cuda.syncthreads()  # every add of this step lands before the next step reads it
        half //= 2

    if t == 0:
        db[c] = partial[0]
