"""The pictures of a trained VAE, written into its run folder (see `minivae.plots` for drawing)."""
from pathlib import Path

import numpy as np

from . import backend, data, plots
from .tensor import Tensor, no_grad


def in_batches(fn, x, device, batch_size=500, on_batch=None):
    """fn applied to x in batches; the results (NumPy) concatenated. on_batch(n), if given, is
    told the size of each batch once it is done (a progress bar's update)."""
    outs = []
    for start in range(0, len(x), batch_size):
        batch = Tensor(x[start:start + batch_size], device=None if device == "cpu" else device)
        outs.append(backend.to_numpy(fn(batch).data))
        if on_batch:
            on_batch(len(outs[-1]))
    return np.concatenate(outs)


def write_pictures(model, test_images, test_labels, metrics, out_dir, device="cpu", seed=0, dataset="mnist"):
    """reconstructions.png, samples.png, latent_scatter.png, manifold.png (2-D latents), losses.png;
    the legends name the `dataset`'s classes (digits, or Fashion-MNIST's items)."""
    what = data.WHAT[dataset]
    out = Path(out_dir)
    model.eval()
    paths = []
    with no_grad():
        originals = test_images[:10]
        recons = in_batches(lambda x: model.decode(model.encode(x)[0]), originals, device)  # z = mu
        paths.append(plots.save_reconstructions(originals, recons, out / "reconstructions.png"))
        z = np.random.default_rng(seed).standard_normal((100, model.z_dim)).astype(np.float32)
        paths.append(plots.save_samples(in_batches(model.decode, z, device), out / "samples.png"))
        mu = in_batches(lambda x: model.encode(x)[0], test_images, device)
        paths.append(plots.save_latent_scatter(mu, test_labels, out / "latent_scatter.png", what,
                                               data.CLASS_NAMES[dataset]))
        if model.z_dim == 2:
            def decode(z_grid):
                return in_batches(model.decode, np.asarray(z_grid, np.float32), device)
            paths.append(plots.save_manifold(decode, out / "manifold.png", what=what))
    model.train()
    if metrics:
        paths.append(plots.save_loss_curves(metrics, out / "losses.png"))
    return paths
