"""Fused optimizer steps: one thread per parameter element updates it and its state in place.

One kernel reads g and the state once and writes the state and the parameter once, where the
NumPy expressions would make several passes with temporaries. Flat arrays, grid-stride loops.

Each rule comes twice: with its numbers passed by the host at each launch (adam_update,
rmsprop_update: what minivae.optim runs), and with the learning rate, and Adam's step count t,
read from device arrays (adam_update_device_step, rmsprop_update_device_lr). A CUDA graph
captures a launch's arguments once, so a host-side t would replay the first step's bias
correction forever; the second kind reads t from the GPU, where philox.advance increments it once
per step, and the learning rate from where a schedule can change it without a new capture.
"""
import math

from numba import cuda


@cuda.jit(device=True)
def adam_rule(p, g, m, v, i, lr_t, beta1, beta2, eps):
    """m = β1·m + (1 − β1)·g,   v = β2·v + (1 − β2)·g²,   p = p − lr_t · m / (√v + eps), at element i."""
    m[i] = beta1 * m[i] + (1.0 - beta1) * g[i]
    v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
    p[i] -= lr_t * m[i] / (math.sqrt(v[i]) + eps)


@cuda.jit(device=True)
def rmsprop_rule(p, g, s, i, lr, rho, eps, eps_inside_root):
    """s = ρ·s + (1 − ρ)·g²,   p = p − lr · g / (√s + eps)      (Keras 2, PyTorch; the default)
                               p = p − lr · g / √(s + eps)      (eps_inside_root: tf.keras 2, Keras 3)"""
    s[i] = rho * s[i] + (1.0 - rho) * g[i] * g[i]
    if eps_inside_root:
        p[i] -= lr * g[i] / math.sqrt(s[i] + eps)
    else:
        p[i] -= lr * g[i] / (math.sqrt(s[i]) + eps)


@cuda.jit
def adam_update(p, g, m, v, lr_t, beta1, beta2, eps):
    """Adam as Keras writes it (adam_rule); thread i updates p[i], m[i], v[i].

    lr_t = lr·√(1 − β2^t) / (1 − β1^t) carries the bias correction, computed once on the host
    per step, so the kernel needs no step counter.
    """
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        adam_rule(p, g, m, v, i, lr_t, beta1, beta2, eps)


@cuda.jit
def adam_update_device_step(p, g, m, v, step, lr, beta1, beta2, eps):
    """adam_update with t = step[0] (a uint64 device array) and lr = lr[0] (a float64 device array).

    Each thread computes the bias correction lr_t = lr·√(1 − β2^t) / (1 − β1^t) itself: two
    powers, little next to reading and writing four arrays.
    """
    t = float(step[0])
    lr_t = lr[0] * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        adam_rule(p, g, m, v, i, lr_t, beta1, beta2, eps)


@cuda.jit
def rmsprop_update(p, g, s, lr, rho, eps, eps_inside_root):
    """RMSprop (see minivae/optim.py and rmsprop_rule); thread i updates p[i] and s[i]."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        rmsprop_rule(p, g, s, i, lr, rho, eps, eps_inside_root)


@cuda.jit
def rmsprop_update_device_lr(p, g, s, lr, rho, eps, eps_inside_root):
    """rmsprop_update with lr = lr[0] read from a float64 device array."""
    rate = lr[0]
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        rmsprop_rule(p, g, s, i, rate, rho, eps, eps_inside_root)
