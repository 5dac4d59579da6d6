"""Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
as 1, 2, 3", SC 2011), turned into standard normal noise by the Box-Muller transform.

Philox is a function, not a stream: four 32-bit words of counter and two of key go in, four
random 32-bit words come out, and any counter can be computed on its own. So thread q draws
numbers 4q .. 4q + 3 of a draw from counter (q, draw) without any state of its own, and the
next draw only needs a new `draw`. That draw number lives in a device array (`counter[0]`)
that the `advance` kernel increments: a captured CUDA graph that replays "draw, advance" then
gets new noise on every replay, and the whole sequence follows from the key (the seed).

Words are held in uint64 values below 2^32: a product of two of them fits in 64 bits, and its
high and low halves are the 32-bit `mulhi` and `mullo` of the paper. Every constant is a
np.uint64, because Numba turns a uint64 mixed with a plain int into a float64.
"""
import math

import numpy as np
from numba import cuda

MASK = np.uint64(0xFFFFFFFF)
SHIFT = np.uint64(32)
MULTIPLIER_0, MULTIPLIER_1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
WEYL_0, WEYL_1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)  # the key's increments (golden ratio, √3 − 1)
ROUNDS = 10
ONE = np.uint64(1)
TWO_TO_MINUS_32 = 2.0 ** -32


def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1): four 32-bit words.

    Each round multiplies two words by the constants, and mixes the products' high halves with
    the other two words and the key: (hi1 ⊕ c1 ⊕ k0, lo1, hi0 ⊕ c3 ⊕ k1, lo0). The key is bumped
    by the Weyl constants between rounds.
    """
    for r in range(ROUNDS):
        if r > 0:
            k0 = (k0 + WEYL_0) & MASK
            k1 = (k1 + WEYL_1) & MASK
        product_0 = MULTIPLIER_0 * c0
        product_1 = MULTIPLIER_1 * c2
        c0, c1, c2, c3 = ((product_1 >> SHIFT) ^ c1 ^ k0, product_1 & MASK,
                          (product_0 >> SHIFT) ^ c3 ^ k1, product_0 & MASK)
    return c0, c1, c2, c3


def box_muller(word_a, word_b):
    """Two independent N(0, 1) numbers from two uniform 32-bit words:
    r = √(−2 ln u1), (r cos 2πu2, r sin 2πu2) with u1 = (a + 1)/2^32 in (0, 1] (so ln u1 is finite)
    and u2 = b/2^32 in [0, 1)."""
    radius = math.sqrt(-2.0 * math.log((float(word_a) + 1.0) * TWO_TO_MINUS_32))
    angle = 2.0 * math.pi * float(word_b) * TWO_TO_MINUS_32
    return radius * math.cos(angle), radius * math.sin(angle)


philox4x32_device = cuda.jit(device=True)(philox4x32)
box_muller_device = cuda.jit(device=True)(box_muller)


@cuda.jit
def normal(counter, key0, key1, out):
    """out[4q .. 4q + 3] = Box-Muller of Philox4x32-10(q_lo, q_hi, draw_lo, draw_hi; key0, key1),
    draw = counter[0]. Thread q writes its four numbers (those still inside out).

    counter is a uint64 device array of one element; it is only read here (see `advance`), so
    every thread sees the same draw number whatever order the blocks run in.
    """
    draw = counter[0]
    for q in range(cuda.grid(1), (out.size + 3) // 4, cuda.gridsize(1)):
        word = np.uint64(q)
        r0, r1, r2, r3 = philox4x32_device(word & MASK, word >> SHIFT, draw & MASK, draw >> SHIFT,
                                           np.uint64(key0), np.uint64(key1))
        z0, z1 = box_muller_device(r0, r1)
        z2, z3 = box_muller_device(r2, r3)
        first = 4 * q
        out[first] = z0
        if first + 1 < out.size:
            out[first + 1] = z1
        if first + 2 < out.size:
            out[first + 2] = z2
        if first + 3 < out.size:
            out[first + 3] = z3


@cuda.jit
def advance(counter):
    """counter[0] += 1, by one thread: a launch of its own, after every thread of the kernels that
    read the count has read it (a kernel's blocks cannot wait for one another)."""
    if cuda.grid(1) == 0:
        counter[0] += ONE
