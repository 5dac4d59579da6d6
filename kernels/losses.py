"""Fused loss kernels: each thread writes an element's loss AND its gradient, in one pass over memory.

The per-element losses come back whole; summing them per sample (a row sum) or over the batch is
left to the caller's `xp.sum`, which CuPy already does with a tuned reduction. The gradients are
of the per-element loss with respect to the inputs; the caller scales them by dL/d(loss).
Flat arrays, grid-stride loops, arguments as (inputs..., numbers..., outputs...).
"""
import math

from numba import cuda


@cuda.jit
def bce_with_grad(p, t, low, high, loss, grad):
    """Binary cross-entropy on probabilities p with targets t, p clamped to [low, high] = [eps, 1 − eps]:

        loss = −(t·ln p + (1 − t)·ln(1 − p)),   dloss/dp = −t/p + (1 − t)/(1 − p) = (p − t) / (p·(1 − p)).

    The clamp keeps ln finite when a sigmoid saturates to exactly 0 or 1; its slope is 0 outside
    [low, high], so a clamped p gets a zero gradient. (The launcher rounds the bounds to p's
    dtype, as the op's xp.clip does.) Thread i computes loss[i] and grad[i].
    """
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pc = min(max(p[i], low), high)
        loss[i] = -(t[i] * math.log(pc) + (1.0 - t[i]) * math.log(1.0 - pc))
        clamped = p[i] < low or p[i] > high
        grad[i] = 0.0 if clamped else (pc - t[i]) / (pc * (1.0 - pc))


@cuda.jit
def mse_with_grad(pred, t, loss, grad):
    """Squared error: loss = (pred − t)²,  dloss/dpred = 2·(pred − t). Thread i computes loss[i] and grad[i]."""
    for i in range(cuda.grid(1), pred.size, cuda.gridsize(1)):
        d = pred[i] - t[i]
        loss[i] = d * d
        grad[i] = 2.0 * d


@cuda.jit
def gaussian_kl_with_grad(mu, log_var, kl, dmu, dlog_var):
    """KL(N(mu, e^log_var) ‖ N(0, 1)) per element, and its gradients:

        kl = −½·(1 + log_var − mu² − e^log_var),   dkl/dmu = mu,   dkl/dlog_var = ½·(e^log_var − 1).

    Thread i computes kl[i], dmu[i] and dlog_var[i].
    """
    for i in range(cuda.grid(1), mu.size, cuda.gridsize(1)):
        var = math.exp(log_var[i])
        kl[i] = -0.5 * (1.0 + log_var[i] - mu[i] * mu[i] - var)
        dmu[i] = mu[i]
        dlog_var[i] = 0.5 * (var - 1.0)
