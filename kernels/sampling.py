"""The VAE's reparameterization trick, z = mu + σ·eps with σ = exp(½·log_var): one thread per element.

eps ~ N(0, 1) is drawn on the host (by the library's RNG) and passed in, so the kernels are
deterministic and the backward pass reuses the same eps. Flat arrays, grid-stride loops,
arguments as (inputs..., outputs...), as in activations.py.
"""
import math

from numba import cuda


@cuda.jit
def reparameterize_forward(mu, log_var, eps, z):
    """z = mu + exp(½·log_var)·eps. Thread i computes z[i]."""
    for i in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        z[i] = mu[i] + math.exp(0.5 * log_var[i]) * eps[i]


@cuda.jit
def reparameterize_backward(log_var, eps, g, dmu, dlog_var):
    """dL/dmu = g;  dL/dlog_var = g · ½·exp(½·log_var)·eps  (g = dL/dz).

    Both gradients in one pass. Thread i computes dmu[i] and dlog_var[i].
    """
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        dmu[i] = g[i]
        dlog_var[i] = g[i] * 0.5 * math.exp(0.5 * log_var[i]) * eps[i]
