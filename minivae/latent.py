"""Walks in a trained VAE's latent space, as Foster's chapter shows them on faces: a morph from one
image into another along the line between their codes, and attribute arithmetic (the mean code of
the images with an attribute, say Smiling, minus that of the images without it: a direction that
adds the attribute to any face's code).

Functions of a model and arrays: images (N, C, H, W) float32 in [0, 1], codes (N, z_dim). A code
here is the encoder's mean mu, not a sample, so that a picture is the same each time it is drawn.
The model runs in evaluation mode (batch norm on its running statistics, no dropout).
"""
import numpy as np

from . import backend
from .tensor import Tensor, no_grad


def in_batches(fn, x, device="cpu", batch_size=500, on_batch=None):
    """fn applied to x in batches; the results (NumPy) concatenated. on_batch(n), if given, is
    told the size of each batch once it is done (a progress bar's update)."""
    outs = []
    with no_grad():
        for start in range(0, len(x), batch_size):
            batch = Tensor(x[start:start + batch_size], device=None if device == "cpu" else device)
            outs.append(backend.to_numpy(fn(batch).data))
            if on_batch:
                on_batch(len(outs[-1]))
    return np.concatenate(outs)


def encode(model, images, device="cpu", batch_size=500):
    """images (N, C, H, W) -> their codes mu (N, z_dim)."""
    model.eval()
    return in_batches(lambda x: model.encode(x)[0], images, device, batch_size)


def decode(model, z, device="cpu", batch_size=500):
    """codes (N, z_dim) -> images (N, C, H, W)."""
    model.eval()
    return in_batches(model.decode, np.asarray(z, np.float32), device, batch_size)


def morph(model, start, end, steps=10, device="cpu"):
    """start, end: one image each, (C, H, W). Returns the (steps, C, H, W) images decoded from
    z_t = (1 − t)·mu(start) + t·mu(end), t = 0, 1/(steps − 1), ..., 1, and the codes z_t.

    One image at a time, so that the first and last images are exactly decode(mu(start)) and
    decode(mu(end)) of each image alone (a matrix product's rounding can depend on its row count)."""
    if steps < 2:
        raise ValueError(f"morph: steps must be at least 2 (the two ends), not {steps}")
    ends = encode(model, np.stack([start, end]), device, batch_size=1)
    t = np.linspace(0, 1, steps, dtype=np.float32)[:, None]
    z = (1 - t) * ends[0] + t * ends[1]   # t = 0 and t = 1 give the ends exactly
    return decode(model, z, device, batch_size=1), z


def choose(indices, limit, generator):
    """At most `limit` of `indices`, drawn without replacement and kept in their order (all of them
    when there are no more than `limit`)."""
    indices = np.asarray(indices)
    if len(indices) <= limit:
        return indices
    return np.sort(generator.choice(indices, size=limit, replace=False))


def mean_code(model, load, indices, device="cpu", batch_size=500):
    """The mean code of the images load(indices), read and encoded `batch_size` at a time (so that
    thousands of faces never sit in memory together), summed in float64."""
    total = np.zeros(model.z_dim, np.float64)
    for start in range(0, len(indices), batch_size):
        codes = encode(model, load(indices[start:start + batch_size]), device, batch_size)
        total += codes.astype(np.float64).sum(axis=0)
    return total / len(indices)


def attribute_direction(model, load, with_indices, without_indices, device="cpu", batch_size=500):
    """mean code of the images with the attribute − mean code of those without, float32 (z_dim,)."""
    if len(with_indices) == 0 or len(without_indices) == 0:
        raise ValueError(f"attribute_direction: {len(with_indices)} images with the attribute and "
                         f"{len(without_indices)} without; the direction needs some of each")
    with_mean = mean_code(model, load, with_indices, device, batch_size)
    without_mean = mean_code(model, load, without_indices, device, batch_size)
    return (with_mean - without_mean).astype(np.float32)


def add_direction(model, images, direction, strengths, device="cpu"):
    """images (n, C, H, W) -> (n, S, C, H, W): image i decoded from mu_i + s·direction for each of
    the S strengths s (s = 0: its plain reconstruction)."""
    z = encode(model, images, device)
    columns = [decode(model, z + np.float32(s) * direction, device) for s in strengths]
    return np.stack(columns, axis=1)
