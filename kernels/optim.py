"""Fused optimizer steps: one thread per parameter element updates it and its state in place.

One kernel reads g and the state once and writes the state and the parameter once, where the
NumPy expressions would make several passes with temporaries. Flat arrays, grid-stride loops.
"""
import math

from numba import cuda


@cuda.jit
def adam_update(p, g, m, v, lr_t, beta1, beta2, eps):
    """Adam as Keras writes it; thread i updates p[i], m[i], v[i]:

        m = β1·m + (1 − β1)·g,   v = β2·v + (1 − β2)·g²,   p = p − lr_t · m / (√v + eps).

    lr_t = lr·√(1 − β2^t) / (1 − β1^t) carries the bias correction, computed once on the host
    per step, so the kernel needs no step counter.
    """
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        m[i] = beta1 * m[i] + (1.0 - beta1) * g[i]
        v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
        p[i] -= lr_t * m[i] / (math.sqrt(v[i]) + eps)


@cuda.jit
def rmsprop_update(p, g, s, lr, rho, eps, eps_inside_root):
    """RMSprop (see minivae/optim.py); thread i updates p[i] and s[i]:

        s = ρ·s + (1 − ρ)·g²,   p = p − lr · g / (√s + eps)      (Keras 2, PyTorch; the default)
                                p = p − lr · g / √(s + eps)      (eps_inside_root: tf.keras 2, Keras 3)
    """
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        s[i] = rho * s[i] + (1.0 - rho) * g[i] * g[i]
        if eps_inside_root:
            p[i] -= lr * g[i] / math.sqrt(s[i] + eps)
        else:
            p[i] -= lr * g[i] / (math.sqrt(s[i]) + eps)
