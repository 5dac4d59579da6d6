"""Pictures of a trained VAE, drawn from NumPy arrays: reconstructions, prior samples, the latent
space of the test set, Chollet's latent manifold, the latent histograms, the loss curves, and the
latent-space strips of `minivae.latent` (a morph from one image to another, attribute arithmetic).

Each function takes arrays (no model), writes one PNG and returns its path. Figures are
`matplotlib.figure.Figure` objects rendered by Agg, so nothing here touches pyplot's global state
or needs a display. Images are grey, (N, 1, H, W) or (N, H, W), or colour, (N, 3, H, W), with
values in [0, 1].
"""
import math
import os
from pathlib import Path
from statistics import NormalDist

import numpy as np

from . import backend

try:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError as exc:  # matplotlib is the optional "plot" extra
    raise ImportError("minivae.plots needs matplotlib: pip install 'minivae[plot]'") from exc

__all__ = ["save_reconstructions", "save_samples", "save_latent_scatter", "draw_latent_scatter",
           "save_manifold", "manifold_image", "save_latent_histograms", "save_morph", "save_arithmetic",
           "save_loss_curves", "tile_images", "save_figure"]


def _as_images(images, what="images"):
    """(N, 1, H, W) or (N, H, W), NumPy or CuPy -> (N, H, W) NumPy; (N, 3, H, W) -> (N, H, W, 3),
    the layout matplotlib shows as colour."""
    images = backend.to_numpy(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    elif images.ndim == 4 and images.shape[1] == 3:
        images = images.transpose(0, 2, 3, 1)
    if images.ndim != 3 and not (images.ndim == 4 and images.shape[3] == 3):
        raise ValueError(f"{what}: expected shape (N, 1, H, W), (N, H, W) or (N, 3, H, W), "
                         f"got {images.shape}")
    return images


def tile_images(images, ncols, gap=0):
    """(N, H, W) -> one (rows·(H + gap) − gap, ncols·(W + gap) − gap) picture, row by row ((N, H,
    W, 3) -> the same with 3 colours); the gaps and any empty cells in the last row are left at
    0.5 (grey) so that the images stand apart."""
    n, h, w = images.shape[:3]
    rows = math.ceil(n / ncols)
    picture = np.full((rows * (h + gap) - gap, ncols * (w + gap) - gap) + images.shape[3:], 0.5,
                      dtype=np.float32)
    for k, image in enumerate(images):
        top, left = (k // ncols) * (h + gap), (k % ncols) * (w + gap)
        picture[top:top + h, left:left + w] = image
    return picture


def _show(ax, picture):
    """A tiled picture on `ax`, grey or in colour, values 0 to 1, one screen pixel per pixel."""
    if picture.ndim == 2:
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(picture, 0, 1), interpolation="nearest")   # colour: no colour map
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(figure, path):
    """Write the figure, atomically (a temporary file, then a rename: an interrupted save leaves
    the old picture or none); a path without a suffix gets ".png" (as matplotlib would), so the
    path returned is the file written."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        figure.savefig(tmp, dpi=100, format=path.suffix[1:].lower())   # the format the name asks for
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_reconstructions(originals, reconstructions, path, n=10):
    """The first n test images (top row) above their reconstructions (bottom row)."""
    originals = _as_images(originals, "originals")[:n]
    reconstructions = _as_images(reconstructions, "reconstructions")[:n]
    if originals.shape != reconstructions.shape:
        raise ValueError(f"save_reconstructions: {len(originals)} originals of shape "
                         f"{originals.shape[1:]} but {len(reconstructions)} reconstructions "
                         f"of shape {reconstructions.shape[1:]}")
    count = len(originals)
    figure = Figure(figsize=(max(count, 6), 2.4), layout="constrained")
    axes = figure.subplots(2, 1)
    for ax, images, label in zip(axes, (originals, reconstructions), ("original", "reconstruction")):
        _show(ax, tile_images(images, count, gap=2))
        ax.set_ylabel(label)
    figure.suptitle("test images (top) and their reconstructions (bottom)")
    return save_figure(figure, path)


def save_samples(images, path, ncols=10):
    """A grid of images decoded from z ~ N(0, I), ncols to a row."""
    images = _as_images(images)
    ncols = min(ncols, len(images))
    rows = math.ceil(len(images) / ncols)
    figure = Figure(figsize=(ncols, rows + 0.4), layout="constrained")
    ax = figure.add_subplot()
    _show(ax, tile_images(images, ncols, gap=2))
    ax.set_axis_off()
    ax.set_title(f"{len(images)} samples decoded from z ~ N(0, I)")
    return save_figure(figure, path)


def save_latent_scatter(z, labels, path, what="digit", class_names=None):
    """The test set's latent codes, coloured by class (`what` each image shows: "digit", "item"),
    the colour bar labelled with `class_names` when given; the first two dimensions if there are more."""
    z = backend.to_numpy(z)
    if z.ndim != 2:
        raise ValueError(f"save_latent_scatter: expected z (N, D), got z {z.shape}")
    figure = Figure(figsize=(7, 6), layout="constrained")
    ax = figure.add_subplot()
    draw_latent_scatter(ax, z[:, :2], labels, what, class_names)
    which = f"first 2 of {z.shape[1]} latent dimensions" if z.shape[1] > 2 else "2-D latent space"
    ax.set_title(f"{len(z)} test images in the {which}" + (f", by {what}" if labels is not None else ""))
    return save_figure(figure, path)


def draw_latent_scatter(ax, points, labels, what="digit", class_names=None, axis_names=("z[0]", "z[1]")):
    """Points (N, 2) on `ax`, coloured by their labels (N,) with a colour bar naming `what` and
    `class_names`, or all in one colour when labels is None (a data set without classes)."""
    points = backend.to_numpy(points)
    if labels is not None:
        labels = backend.to_numpy(labels).astype(int).ravel()
    if points.ndim != 2 or points.shape[1] != 2 or (labels is not None and len(labels) != len(points)):
        raise ValueError(f"draw_latent_scatter: expected points (N, 2) and N labels (or none), got "
                         f"points {points.shape} and {'no' if labels is None else len(labels)} labels")
    # one colour per digit: tab10 is ten distinct colours; the ±0.5 puts each on an integer
    colours = (dict(color="tab:blue", alpha=0.5) if labels is None else
               dict(c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, alpha=0.7))
    drawn = ax.scatter(points[:, 0], points[:, 1], s=3, linewidths=0, **colours)
    if labels is not None:
        colorbar = ax.figure.colorbar(drawn, ax=ax, ticks=range(10))
        if class_names is not None:
            colorbar.set_ticklabels(class_names)
        colorbar.set_label(what)
        colorbar.solids.set_alpha(1)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])


def manifold_image(decode, n=15, digit_size=28, latent_dim=2):
    """Chollet's manifold (§8.4): decode a grid of z over Gaussian quantiles, tile the digits.

    grid = Φ⁻¹(linspace(0.05, 0.95, n)), so equal steps of probability rather than of z. As in
    the book, the tile in row i, column j decodes z = (grid[j], grid[i]): z[0] grows to the right
    and z[1] grows downwards. With latent_dim > 2 the other dimensions are held at 0. `decode` gets
    all n·n codes at once, a float32 (n·n, latent_dim) array, and returns n·n images.
    Returns the (n·digit_size, n·digit_size) picture and the grid.
    """
    grid = np.array([NormalDist().inv_cdf(q) for q in np.linspace(0.05, 0.95, n)])
    z = np.zeros((n * n, latent_dim), dtype=np.float32)
    z[:, 0] = np.tile(grid, n)     # k = i·n + j -> grid[j]
    z[:, 1] = np.repeat(grid, n)   # k = i·n + j -> grid[i]
    images = backend.to_numpy(decode(z)).reshape(n * n, digit_size, digit_size)
    return tile_images(images, n), grid


def save_manifold(decode, path, n=15, digit_size=28, latent_dim=2, what="digit"):
    """Chollet's n×n latent-manifold picture (see `manifold_image`), axes labelled with z."""
    picture, grid = manifold_image(decode, n, digit_size, latent_dim)
    figure = Figure(figsize=(10, 10.4), layout="constrained")
    ax = figure.add_subplot()
    ax.imshow(picture, cmap="Greys_r", vmin=0, vmax=1)
    centres = digit_size * np.arange(n) + (digit_size - 1) / 2
    labels = [f"{g:.2f}".replace("-0.00", "0.00") for g in grid]  # the middle one is −1e-17
    ax.set_xticks(centres, labels)
    ax.set_yticks(centres, labels)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    held = "; z[2:] = 0" if latent_dim > 2 else ""
    ax.set_title(f"decoded {what}s over the latent plane (Gaussian quantiles 5%–95%{held})")
    return save_figure(figure, path)


def save_loss_curves(metrics, path):
    """Train and test loss by epoch; a second panel with the test reconstruction and KL terms when
    the metrics have them (the training ones dashed, when present too). Every value is drawn as a
    marker, so that a run of one epoch shows its points."""
    if not metrics:
        raise ValueError("save_loss_curves: no metrics to plot")

    def column(key):
        return np.array([m.get(key, np.nan) for m in metrics], dtype=float)

    epochs = column("epoch")
    has_terms = any("test_recon" in m or "test_kl" in m for m in metrics)
    figure = Figure(figsize=(11 if has_terms else 6, 4), layout="constrained")
    axes = figure.subplots(1, 2 if has_terms else 1, squeeze=False)[0]
    axes[0].plot(epochs, column("train_loss"), "o-", markersize=3, label="train")
    axes[0].plot(epochs, column("test_loss"), "o-", markersize=3, label="test")
    axes[0].set_title("loss")
    if has_terms:
        # the two terms differ in scale (reconstruction ≫ KL), so each gets its own y axis
        recon_ax, kl_ax = axes[1], axes[1].twinx()
        for ax, key, colour in ((recon_ax, "recon", "tab:blue"), (kl_ax, "kl", "tab:red")):
            ax.plot(epochs, column(f"test_{key}"), "o-", markersize=3, color=colour, label=f"test {key}")
            if any(f"train_{key}" in m for m in metrics):
                ax.plot(epochs, column(f"train_{key}"), "s--", markersize=3, color=colour,
                        label=f"train {key}")
            ax.set_ylabel(f"{key} term", color=colour)
            ax.tick_params(axis="y", colors=colour)
        recon_ax.set_title("reconstruction and KL terms")
        # beside the panel, not on it: with two y axes no corner is sure to be empty
        kl_ax.legend(handles=recon_ax.get_lines() + kl_ax.get_lines(), loc="upper left",
                     bbox_to_anchor=(1.15, 1))
    for ax in axes:
        ax.set_xlabel("epoch")
        # whole epochs only, even when that is a single tick (the default asks for two, and
        # would fall back to 0.9, 1.0, 1.1 for a run of one epoch)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)   # one epoch: a point in the middle
        ax.grid(alpha=0.3)
    axes[0].legend()
    return save_figure(figure, path)


def save_latent_histograms(z, path, dims=50, ncols=10):
    """Histograms of the first `dims` latent dimensions of the test set's codes z (N, D), each
    against the density of the standard normal, the prior the KL term pulls them towards (as
    Foster's faces notebook shows them)."""
    z = backend.to_numpy(z)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"save_latent_histograms: expected z of shape (N, D), got {z.shape}")
    dims = min(dims, z.shape[1])
    ncols = min(ncols, dims)
    rows = math.ceil(dims / ncols)
    figure = Figure(figsize=(max(1.6 * ncols, 6), 1.3 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, ncols, squeeze=False).ravel()
    grid = np.linspace(-3, 3, 121)
    density = np.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi)
    for d, ax in enumerate(axes):
        if d >= dims:
            ax.set_axis_off()
            continue
        ax.hist(z[:, d], bins=30, range=(-3, 3), density=True, color="tab:blue", alpha=0.7)
        ax.plot(grid, density, color="tab:red", linewidth=1)
        ax.set_xlim(-3, 3)
        ax.set_yticks([])
        ax.set_title(f"z[{d}]", fontsize=8)
        ax.tick_params(labelsize=6)
    which = f"the first {dims} of {z.shape[1]} latent dimensions" if dims < z.shape[1] else "each latent dimension"
    figure.suptitle(f"{which}: {len(z):,} test images' codes (blue)\nagainst N(0, 1) (red)")
    return save_figure(figure, path)


def save_morph(images, path, ends=("from", "to")):
    """A strip of images decoded along a line in latent space: the first is `ends[0]`, the last `ends[1]`."""
    images = _as_images(images)
    count = len(images)
    figure = Figure(figsize=(max(count * 1.1, 4), 1.9), layout="constrained")
    ax = figure.add_subplot()
    _show(ax, tile_images(images, count, gap=2))
    ax.set_title(f"{ends[0]} → {ends[1]}: {count} images decoded along the line between their codes")
    return save_figure(figure, path)


def save_arithmetic(grid, strengths, attribute, path):
    """Attribute arithmetic: grid (n, S, C, H, W) holds, for each of n images (rows), the image
    decoded from z + s·v for each strength s (columns), v the attribute's direction."""
    grid = backend.to_numpy(grid)
    n, columns = grid.shape[:2]
    if columns != len(strengths):
        raise ValueError(f"save_arithmetic: {columns} columns but {len(strengths)} strengths")
    images = _as_images(grid.reshape((n * columns,) + grid.shape[2:]))
    w = images.shape[2]
    figure = Figure(figsize=(1.2 * columns + 0.6, 1.2 * n + 1.2), layout="constrained")
    ax = figure.add_subplot()
    _show(ax, tile_images(images, columns, gap=2))
    ax.set_xticks((w + 2) * np.arange(columns) + (w - 1) / 2, [f"{s:+g}" for s in strengths])
    ax.set_xlabel(f"z + s · ({attribute} direction), s =")
    ax.set_title(f"{attribute}: mean z with it − mean z without, added to {n} images")
    return save_figure(figure, path)
