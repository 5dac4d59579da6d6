"""The pictures of a trained VAE, written into its run folder (see `minivae.plots` for drawing)."""
from pathlib import Path

import numpy as np

from . import data, plots
from .latent import in_batches


def write_pictures(model, test_images, test_labels, metrics, out_dir, device="cpu", seed=0, dataset="mnist"):
    """reconstructions.png, samples.png, latent_scatter.png, latent_histograms.png (the first 50
    latent dimensions against N(0, 1)), manifold.png (2-D latents), losses.png; the legends name
    the `dataset`'s classes (digits, or Fashion-MNIST's items). A folder of images (dataset None)
    has no labels (test_labels None): its scatter has one colour."""
    what = data.WHAT.get(dataset, "image")
    out = Path(out_dir)
    model.eval()
    paths = []
    originals = test_images[:10]
    recons = in_batches(lambda x: model.decode(model.encode(x)[0]), originals, device)  # z = mu
    paths.append(plots.save_reconstructions(originals, recons, out / "reconstructions.png"))
    z = np.random.default_rng(seed).standard_normal((100, model.z_dim)).astype(np.float32)
    paths.append(plots.save_samples(in_batches(model.decode, z, device), out / "samples.png"))
    mu = in_batches(lambda x: model.encode(x)[0], test_images, device)
    paths.append(plots.save_latent_scatter(mu, test_labels, out / "latent_scatter.png", what,
                                           data.CLASS_NAMES.get(dataset)))
    paths.append(plots.save_latent_histograms(mu, out / "latent_histograms.png"))
    if model.z_dim == 2:
        def decode(z_grid):
            return in_batches(model.decode, np.asarray(z_grid, np.float32), device)
        paths.append(plots.save_manifold(decode, out / "manifold.png", what=what))
    model.train()
    if metrics:
        paths.append(plots.save_loss_curves(metrics, out / "losses.png"))
    return paths
