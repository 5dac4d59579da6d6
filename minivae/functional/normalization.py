"""Normalization and regularization layers' ops: batch normalization and dropout. Both behave
differently in training and in evaluation, so both take a `training` flag."""
import numpy as np

from .. import backend, rng as _rng
from ..tensor import Tensor
from ..workspace import workspace
from ._common import check_float, tensors, xp_of

__all__ = ["batch_norm", "dropout"]


def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum=0.99, eps=1e-3):
    """Per-channel batch normalization of x (N, C) or (N, C, H, W):  y = γ·x̂ + β,
    x̂ = (x - mean) / σ,  σ = sqrt(var + eps), statistics taken per channel c over N (and H, W).
    gamma, beta: Tensors (C,), the learned scale and shift.

    Training: mean and var are the batch's (biased variance, divided by the count m of values
    per channel). Then, with g = dL/dy and sums per channel over those m values,
        dL/dx = (1/m) · γ/σ · (m·g - Σg - x̂·Σ(g·x̂)),  dL/dγ = Σ g·x̂,  dL/dβ = Σ g.
    (The two subtracted terms are the paths through the batch mean and variance.)
    Evaluation: mean and var are the running statistics, constants, so dL/dx = γ/σ · g.

    running_mean, running_var: plain arrays (C,) on x's device, not Tensors; they carry no
    gradient. In training they are updated in place, as Keras does it:
        running = momentum · running + (1 - momentum) · batch statistic,
    with the biased batch variance (Keras 3 takes it from ops.moments; PyTorch instead uses the
    unbiased one). They may be None in training, to keep no running statistics.
    Defaults momentum 0.99 and eps 1e-3 are Keras's BatchNormalization defaults.
    """
    op = "batch_norm"
    x, gamma, beta = tensors(x, gamma, beta)
    xp = xp_of(op, x, gamma, beta)
    check_float(op, x=x, gamma=gamma, beta=beta)
    if x.ndim not in (2, 4):
        raise ValueError(f"{op}: x must have shape (N, C) or (N, C, H, W), got {tuple(x.shape)}")
    channels = x.shape[1]
    if isinstance(running_mean, Tensor) or isinstance(running_var, Tensor):
        raise TypeError(f"{op}: running_mean and running_var must be plain arrays (C,), not "
                        "Tensors; pass their .data")
    for name, t in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"{op}: {name} must have shape ({channels},) for x of shape "
                             f"{tuple(x.shape)}, got {tuple(t.shape)}")
    backend.array_module(x.data, running_mean, running_var, op=op)  # same device, or raise
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: evaluation (training=False) needs running_mean and running_var")

    axes = (0,) if x.ndim == 2 else (0, 2, 3)        # every axis but the channel axis
    per_channel = (1, channels) + (1,) * (x.ndim - 2)  # (1, C) or (1, C, 1, 1), to broadcast
    count = x.size // channels                        # m, values per channel
    if training:
        mean = x.data.mean(axis=axes, keepdims=True)
        var = ((x.data - mean) ** 2).mean(axis=axes, keepdims=True)  # biased
        if running_mean is not None:
            running_mean[...] = momentum * running_mean + (1 - momentum) * mean.reshape(channels)
        if running_var is not None:
            running_var[...] = momentum * running_var + (1 - momentum) * var.reshape(channels)
    else:
        mean = running_mean.astype(x.dtype, copy=False).reshape(per_channel)
        var = running_var.astype(x.dtype, copy=False).reshape(per_channel)
    inv_std = 1 / xp.sqrt(var + eps)  # 1/σ, (1, C[, 1, 1])
    x_hat = (x.data - mean) * inv_std
    g_scale = gamma.data.reshape(per_channel)
    y = g_scale * x_hat + beta.data.reshape(per_channel)

    def backward(g):
        sum_g = g.sum(axis=axes, keepdims=True)
        sum_g_xhat = (g * x_hat).sum(axis=axes, keepdims=True)
        if training:
            dx = g_scale * inv_std / count * (count * g - sum_g - x_hat * sum_g_xhat)
        else:
            dx = g_scale * inv_std * g
        return dx, sum_g_xhat.reshape(channels), sum_g.reshape(channels)
    return Tensor.from_op(y, (x, gamma, beta), backward, op)


def dropout(x, rate, training=True, rng=None):
    """Inverted dropout: y = x · mask / (1 - rate), each mask entry 1 with probability 1 - rate,
    else 0, so E[y] = x and evaluation needs no rescaling;  dL/dx = dL/dy · mask / (1 - rate).

    Identity (x itself) when training is False or rate is 0. The mask is drawn with NumPy on
    the host from `rng` (default `minivae.rng.generator("dropout")`) and moved to x's device.
    Its arrays come from the workspace, laid out as x is, and y and dL/dx too: a fresh array at
    every step costs a page fault per page, and y in x's layout spares the next convolution a copy.
    """
    (x,) = tensors(x)
    xp = xp_of("dropout", x)
    check_float("dropout", x=x)
    if not 0 <= rate < 1:
        raise ValueError(f"dropout: rate must be in [0, 1), got {rate}")
    if not training or rate == 0:
        return x
    rng = _rng.generator("dropout") if rng is None else rng
    uniform = rng.random(out=workspace.empty(x.shape, np.float64))  # the numbers rng.random(x.shape) gives
    on_host = x.data if xp is np else uniform   # the host array whose layout the mask takes
    keep = np.greater_equal(uniform, rate, out=workspace.like(on_host, bool))  # probability 1 - rate
    # 1 / (1 - rate) rounded once in x's dtype, so the scale is exactly keep / (1 - rate)
    scale = np.multiply(keep, x.dtype.type(1) / x.dtype.type(1 - rate), out=workspace.like(on_host, x.dtype))
    scale = backend.to_device(scale, x.device)
    y = xp.multiply(x.data, scale, out=workspace.like(x.data))
    return Tensor.from_op(y, (x,), lambda g: (xp.multiply(g, scale, out=workspace.like(scale, g.dtype)),),
                          "dropout")
