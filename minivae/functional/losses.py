"""Losses: the reconstruction terms of a VAE (binary cross-entropy, mean squared error) and
its regularizer, the KL divergence of the encoder's Gaussian from the standard normal prior.

The elementwise losses share one pattern: compute ℓ_i and dℓ_i/dx_i, then reduce. Only the
prediction gets a gradient; the target is data (it may be a Tensor, but it is not a graph input).
Where `backend.kernels_for` says so (on the GPU by default), a fused kernel from kernels/losses.py
computes ℓ_i and dℓ_i/dx_i together in one pass, and the gradient is kept for backward; the
reduction stays an xp sum either way.
"""
from .. import backend, kernels
from ..tensor import Tensor
from ..workspace import workspace
from ._common import check_float, check_ndim, tensors, xp_of
from .activations import sigmoid_array

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss", "gaussian_kl"]

REDUCTIONS = ("mean", "sum", "none")
BCE_EPSILON = 1e-7  # Keras's backend.epsilon(): probabilities are clipped to [1e-7, 1 - 1e-7]


def _prediction_and_target(op, pred, target, reduction):
    """Check the arguments shared by the elementwise losses; the target comes back as an array
    of the prediction's dtype."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    pred, target = tensors(pred, target)
    xp_of(op, pred, target, same_dtype=False)   # the target takes pred's dtype below
    check_float(op, pred=pred)
    if pred.shape != target.shape:
        raise ValueError(f"{op}: prediction has shape {tuple(pred.shape)} but target has shape "
                         f"{tuple(target.shape)}; they must match")
    return pred, target.data.astype(pred.dtype, copy=False)


def _laid_out_as(t, like):
    """The target t in the memory layout of the prediction `like` (a copy where they differ: the
    predictions come as views of the convolutions' batch-last memory, the targets as the images
    were loaded), so that the elementwise work after it runs over both arrays in one order."""
    if t.strides == like.strides:
        return t
    out = workspace.like(like)
    out[...] = t
    return out


def _reduced_loss(op, loss, local_grad, pred, reduction):
    """The loss ℓ (elementwise, of pred's shape) reduced as asked, as a Tensor.

    local_grad() gives dℓ_i/dpred_i;  dL/dpred_i = dL/dy · dℓ_i/dpred_i · (1/n for "mean").
    """
    xp = xp_of(op, pred)
    if reduction == "none":
        return Tensor.from_op(loss, (pred,), lambda g: (g * local_grad(),), op)
    scale = 1 / loss.size if reduction == "mean" else 1
    y = xp.asarray(loss.sum() * scale, dtype=loss.dtype)  # shape ()
    return Tensor.from_op(y, (pred,), lambda g: (g * scale * local_grad(),), op)


def binary_cross_entropy(p, target, reduction="mean"):
    """ℓ = -[t·log p + (1 - t)·log(1 - p)] on probabilities p;  dℓ/dp = (p - t) / (p (1 - p)).

    p is first clipped to [ε, 1 - ε] with ε = 1e-7 (Keras's epsilon), so p = 0 or 1 gives a large
    but finite loss instead of inf. Where the clip is active the gradient is the clip's: zero.
    """
    op = "binary_cross_entropy"
    p, t = _prediction_and_target(op, p, target, reduction)
    if backend.kernels_for(p.data, t):
        loss, grad = kernels.bce_with_grad(p.data, t, BCE_EPSILON)
        return _reduced_loss(op, loss, lambda: grad, p, reduction)
    xp = xp_of(op, p)
    t = _laid_out_as(t, p.data)
    clipped = xp.clip(p.data, BCE_EPSILON, 1 - BCE_EPSILON, out=workspace.like(p.data))
    loss = xp.log(clipped, out=workspace.like(p.data))
    loss *= t                                                     # t·log p
    other = xp.subtract(1, clipped, out=workspace.like(p.data))
    xp.log(other, out=other)
    other *= xp.subtract(1, t, out=workspace.like(p.data))        # (1 − t)·log(1 − p)
    loss += other
    xp.negative(loss, out=loss)

    def local_grad():
        inside = xp.equal(clipped, p.data, out=workspace.like(p.data, bool))  # where the clip changed nothing
        grad = xp.multiply(inside, xp.subtract(clipped, t, out=workspace.like(p.data)), out=workspace.like(p.data))
        below = xp.subtract(1, clipped, out=workspace.like(p.data))
        below *= clipped                                          # p (1 − p)
        return xp.divide(grad, below, out=grad)
    return _reduced_loss(op, loss, local_grad, p, reduction)


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """ℓ = BCE(σ(x), t), computed from the logit x as max(x, 0) - x·t + log(1 + e^{-|x|});
    dℓ/dx = σ(x) - t.

    This form never evaluates e^{|x|} or log 0, so it is finite for any x without a clip.
    """
    op = "binary_cross_entropy_with_logits"
    x, t = _prediction_and_target(op, logits, target, reduction)
    xp = xp_of(op, x)
    loss = xp.maximum(x.data, 0) - x.data * t + xp.log1p(xp.exp(-xp.abs(x.data)))
    return _reduced_loss(op, loss, lambda: sigmoid_array(xp, x.data) - t, x, reduction)


def mse_loss(pred, target, reduction="mean"):
    """ℓ = (pred - t)²;  dℓ/dpred = 2 (pred - t)."""
    op = "mse_loss"
    pred, t = _prediction_and_target(op, pred, target, reduction)
    if backend.kernels_for(pred.data, t):
        loss, grad = kernels.mse_with_grad(pred.data, t)
        return _reduced_loss(op, loss, lambda: grad, pred, reduction)
    xp = xp_of(op, pred)
    diff = xp.subtract(pred.data, _laid_out_as(t, pred.data), out=workspace.like(pred.data))
    return _reduced_loss(op, xp.multiply(diff, diff, out=workspace.like(diff)),
                         lambda: xp.multiply(diff, 2, out=workspace.like(diff)), pred, reduction)


def gaussian_kl(mu, log_var):
    """KL(N(μ, σ²) ‖ N(0, 1)) per sample, summed over the latent dimensions j:
    y = -½ Σ_j (1 + log σ²_j - μ_j² - σ²_j),  mu and log_var (N, D) -> y (N,).

    dL/dμ = dL/dy · μ,  dL/d(log σ²) = dL/dy · ½ (σ² - 1).
    """
    mu, log_var = tensors(mu, log_var)
    xp = xp_of("gaussian_kl", mu, log_var)
    check_float("gaussian_kl", mu=mu, log_var=log_var)
    check_ndim("gaussian_kl", "mu", mu, 2, "(N, latent_dim)")
    if log_var.shape != mu.shape:
        raise ValueError(f"gaussian_kl: mu has shape {tuple(mu.shape)} but log_var has shape "
                         f"{tuple(log_var.shape)}; they must match")
    if backend.kernels_for(mu.data, log_var.data):  # each element's kl and both gradients, one pass
        kl, dmu, dlog_var = kernels.gaussian_kl_with_grad(mu.data, log_var.data)
        return Tensor.from_op(kl.sum(axis=1), (mu, log_var),
                              lambda g: (g[:, None] * dmu, g[:, None] * dlog_var), "gaussian_kl")
    var = xp.exp(log_var.data)
    y = -0.5 * (1 + log_var.data - mu.data ** 2 - var).sum(axis=1)  # (N,)

    def backward(g):
        g = g[:, None]  # (N, 1): each sample's gradient spreads over its D latent dimensions
        return g * mu.data, g * 0.5 * (var - 1)
    return Tensor.from_op(y, (mu, log_var), backward, "gaussian_kl")
