"""Sampling the VAE's latent code in a way gradients can pass through."""
from .. import backend, kernels, rng
from ..tensor import Tensor
from ._common import check_float, tensors, xp_of

__all__ = ["reparameterize"]


def reparameterize(mu, log_var, eps=None):
    """z = μ + σ·ε with σ = exp(½ log σ²) and ε ~ N(0, 1): a sample of N(μ, σ²) written as a
    differentiable function of μ and log σ², the randomness kept in ε (the reparameterization trick).

    dL/dμ = dL/dz,  dL/d(log σ²) = dL/dz · ½ σ ε.  ε gets no gradient.

    eps: the noise, of mu's shape; when None it is drawn from `minivae.rng.generator("sample")`
    on the host (so `minivae.manual_seed` fixes it) and moved to mu's device.
    """
    mu, log_var, eps = tensors(mu, log_var, eps)
    xp = xp_of("reparameterize", mu, log_var, eps)
    check_float("reparameterize", mu=mu, log_var=log_var)
    for name, t in (("log_var", log_var), ("eps", eps)):
        if t is not None and t.shape != mu.shape:
            raise ValueError(f"reparameterize: mu has shape {tuple(mu.shape)} but {name} has "
                             f"shape {tuple(t.shape)}; they must match")
    if eps is None:
        noise = rng.generator("sample").standard_normal(mu.shape, dtype=mu.dtype)
        noise = backend.to_device(noise, mu.device)
    else:
        noise = eps.data.astype(mu.dtype, copy=False)
    if backend.kernels_for(mu.data, log_var.data, noise):  # kernels/sampling.py: z; both gradients in one pass
        z = kernels.reparameterize_forward(mu.data, log_var.data, noise)
        return Tensor.from_op(z, (mu, log_var),
                              lambda g: kernels.reparameterize_backward(log_var.data, noise, g),
                              "reparameterize")
    std = xp.exp(0.5 * log_var.data)
    z = mu.data + std * noise
    return Tensor.from_op(z, (mu, log_var), lambda g: (g, g * 0.5 * std * noise), "reparameterize")
