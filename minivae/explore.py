"""Move through a trained VAE's latent space with the mouse: `python -m minivae explore RUN`.

On the left, the test set's codes μ, coloured by label (as in latent_scatter.png); on the right,
the decoder's image for the point under the mouse, redrawn as it moves. A click pins a point:
the test images whose codes lie nearest to it (in the whole latent space) appear under it.

A 2-D latent space (both book VAEs) is the plot's plane itself: the point (u, v) is z = (u, v).
A larger one is seen through a plane: through the test codes' mean, spanned by two of their
principal directions (the first two unless others are chosen), with the rest of z, the part off
the plane, held at one test image's code (a right click on another code holds that one's).

Each part works without a window, so each is tested alone: `LatentPlane` (a plot point to z and
back), `nearest` (the test codes closest to a z), `encode` (the test set's μ, in batches) and
`Explorer` (the figure, and the mouse handlers that update it).
"""
from dataclasses import dataclass, replace

import numpy as np

from matplotlib.figure import Figure

from . import backend, plots
from .latent import in_batches
from .tensor import Tensor, no_grad

FIGURE_SIZE = (12, 6)   # inches: 1200 × 600 pixels in a saved picture


@dataclass(frozen=True)
class LatentPlane:
    """The plot's plane in z-space: the point (u, v) is z = origin + u·basis[0] + v·basis[1],
    with basis's two rows orthonormal. `held` is the test image whose code gives z off the plane."""
    origin: np.ndarray            # (D,)
    basis: np.ndarray             # (2, D)
    axis_names: tuple = ("z[0]", "z[1]")
    held: int = None              # None for a 2-D latent space: there is nothing off the plane

    @classmethod
    def identity(cls):
        """A 2-D latent space: (u, v) is z itself."""
        return cls(np.zeros(2), np.eye(2))

    @classmethod
    def principal(cls, codes, axes=(1, 2), held=0):
        """The plane through the mean of `codes` (N, D) spanned by their principal directions
        `axes` (1 is the direction of largest variance), holding z off the plane at codes[held].

        With the mean m and P the projection onto the plane, origin = m + (I − P)(codes[held] − m):
        every z on the plane has codes[held]'s part off it, and a code's plot point is its pair of
        principal components, (z − m)·basis, as in a PCA plot."""
        codes = np.asarray(codes, dtype=np.float64)
        mean = codes.mean(axis=0)
        centred = codes - mean
        # the eigenvectors of the (D, D) scatter matrix, by decreasing variance: for N ≫ D much
        # quicker than an SVD of the (N, D) codes (about ten times for 20,000 × 200)
        _, vectors = np.linalg.eigh(centred.T @ centred)
        basis = vectors[:, ::-1].T[[a - 1 for a in axes]]
        # a direction's sign is arbitrary: fix it so that its largest entry is positive
        basis = basis * np.sign(basis[np.arange(2), np.abs(basis).argmax(axis=1)])[:, None]
        through_mean = cls(mean, basis, tuple(f"principal direction {a}" for a in axes))
        return through_mean.holding(codes[held], held)

    def holding(self, code, index):
        """The same plane with z off it held at `code` (test image `index`'s): the origin moves
        off the plane by code's part off it, origin + (I − P)(code − origin), so every plot point
        stays where it was."""
        off_plane = np.asarray(code, dtype=np.float64) - self.origin
        off_plane -= (off_plane @ self.basis.T) @ self.basis
        return replace(self, origin=self.origin + off_plane, held=index)

    def to_z(self, u, v):
        """The plot point (u, v) -> z, float32 (D,), as the decoder takes it."""
        return (self.origin + u * self.basis[0] + v * self.basis[1]).astype(np.float32)

    def project(self, z):
        """Codes (N, D) -> their plot points (N, 2): the nearest points of the plane."""
        return (np.asarray(z, dtype=np.float64) - self.origin) @ self.basis.T


def check_plane_options(z_dim, n_codes, axes, held):
    """ValueError naming the option when --axes or --hold does not fit the latent space or the
    number of test images encoded."""
    if z_dim == 2:
        for option, value in (("--axes", axes), ("--hold", held)):
            if value is not None:
                raise ValueError(f"{option} applies to a latent space of more than 2 dimensions; "
                                 "this run's has 2, which the plot shows whole")
        return
    directions = min(z_dim, n_codes)
    if axes is not None and (max(axes) > directions or axes[0] == axes[1]):
        raise ValueError(f"--axes {axes[0]},{axes[1]}: choose two different principal directions from 1 "
                         f"to {directions} ({z_dim} latent dimensions, {n_codes} test images encoded)")
    if held is not None and held >= n_codes:
        raise ValueError(f"--hold {held}: there are {n_codes} test images encoded (0 to {n_codes - 1})")


def plane_for(codes, axes=None, held=None):
    """The plane the explorer shows for these codes: z itself for 2-D codes, else `principal`."""
    if codes.shape[1] == 2:
        return LatentPlane.identity()
    return LatentPlane.principal(codes, axes or (1, 2), held or 0)


def nearest(codes, z, k):
    """(indices, distances) of the k codes (N, D) nearest to z (D,), nearest first (Euclidean,
    in the whole latent space; ties in index order)."""
    distances = np.linalg.norm(np.asarray(codes, dtype=np.float64) - z, axis=1)
    order = np.argsort(distances, kind="stable")[:k]
    return order, distances[order]


def encode(model, images, device="cpu", progress=True, batch_size=250):
    """The test set's codes μ (N, z_dim), encoded in batches under a progress bar (tqdm, when
    installed and `progress`): a big test set takes seconds to minutes, before the window opens."""
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(images), desc="encoding the test set", unit="image", dynamic_ncols=True)
        except ImportError:
            pass
    model.eval()
    try:
        with no_grad():
            return in_batches(lambda x: model.encode(x)[0], images, device, batch_size,
                              on_batch=bar.update if bar else None)
    finally:
        if bar:
            bar.close()


def decoder_of(model, device="cpu"):
    """z (D,) -> the decoder's image (C, H, W), NumPy: model.decode on a batch of one."""
    model.eval()

    def decode(z):
        with no_grad():
            batch = Tensor(np.asarray(z, dtype=np.float32)[None], device=None if device == "cpu" else device)
            return backend.to_numpy(model.decode(batch).data)[0]
    return decode


def picture(image):
    """(C, H, W) in [0, 1] -> what imshow takes: (H, W) for grey (C = 1), (H, W, 3) for colour."""
    return image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)


class Explorer:
    """The figure and its mouse handlers: moving over the scatter decodes the point under the
    mouse into the right-hand image; a left click pins the point and shows its nearest test images;
    on a plane (z_dim > 2), a right click holds z off the plane at the code drawn nearest the click.

    decode: z (D,) -> image (C, H, W); codes (N, D) and images (N, C, H, W): the test set's, with
    labels (N,) or None. `live` (default: when the canvas is a window's that can blit) redraws
    only what a move or a click changes, over the pixels kept from the last whole redraw: that
    one, the scatter's thousands of points among it, takes a good part of a second; decoding a
    point, a few milliseconds."""

    def __init__(self, figure, decode, plane, codes, images, labels=None, what="digit", class_names=None,
                 neighbours=8, title=None, live=None):
        self.figure, self.decode, self.plane = figure, decode, plane
        self.codes, self.images, self.labels, self.class_names = codes, images, labels, class_names
        self.points = plane.project(codes)                     # (N, 2): where each code is drawn
        columns = (neighbours + 1) // 2
        grid = figure.add_gridspec(3, 1 + columns, width_ratios=[2.2 * columns] + [1] * columns,
                                   height_ratios=[2.4, 1, 1])
        self.map_ax = figure.add_subplot(grid[:, 0])
        self._draw_map(what)
        self.decoded_ax = figure.add_subplot(grid[0, 1:])
        self.neighbour_axes = [figure.add_subplot(grid[1 + k // columns, 1 + k % columns])
                               for k in range(neighbours)]
        style = dict(cmap="gray", vmin=0, vmax=1) if images.shape[1] == 1 else {}
        style["interpolation"] = "nearest"   # the pixels as they are; also the quickest to draw
        blank = picture(images[0]) * 0
        self.decoded_image = self.decoded_ax.imshow(blank, **style)
        self.neighbour_images = [ax.imshow(blank, visible=False, **style) for ax in self.neighbour_axes]
        for ax in [self.decoded_ax, *self.neighbour_axes]:
            ax.set_xticks([])
            ax.set_yticks([])
        self.neighbour_axes[0].set_ylabel("nearest\n(label, distance)" if labels is not None else
                                          "nearest\n(distance)", fontsize="small")
        if title:
            figure.suptitle(title)

        canvas = figure.canvas
        self.live = live if live is not None else (canvas.required_interactive_framework is not None
                                                   and canvas.supports_blit)
        self.backgrounds = None
        if self.live:
            # what moves is left out of a whole draw and drawn over it (_on_draw). The decoded
            # image's title stays: drawing text costs as much as the image, and the toolbar shows
            # the mouse's (u, v)
            for artist in self._pin_artists() + [self.decoded_image]:
                artist.set_animated(True)
            self.decoded_ax.set_title("decoded at the mouse (the toolbar says where)", fontsize="medium")
            canvas.mpl_connect("draw_event", self._on_draw)
        canvas.mpl_connect("motion_notify_event", self.on_move)
        canvas.mpl_connect("button_press_event", self.on_click)
        self.z, self.shown, self.pinned, self.nearest = None, None, None, None
        self.show(0.0, 0.0)

    def _draw_map(self, what):
        ax, plane = self.map_ax, self.plane
        plots.draw_latent_scatter(ax, self.points, self.labels, what, self.class_names, plane.axis_names)
        self.held_marker, = ax.plot([], [], marker="*", color="black", markersize=12, linestyle="none")
        self._mark_held()
        self.neighbour_marker = ax.scatter([], [], s=50, facecolors="none", edgecolors="black",
                                           linewidths=0.8, zorder=3)
        self.pin_marker, = ax.plot([], [], marker="P", color="black", markeredgecolor="white",
                                   markersize=14, linestyle="none", zorder=4)

    def _mark_held(self):
        held = self.plane.held
        if held is None:
            self.map_ax.set_title(f"{len(self.codes)} test images' codes", fontsize="medium")
            return
        self.map_ax.set_title(f"{len(self.codes)} test images' codes; off the plane, z is test image "
                              f"{held}'s (★)", fontsize="medium")
        self.held_marker.set_data(*self.points[held, :, None])

    # ---- what the mouse does ----

    def on_move(self, event):
        if event.inaxes is self.map_ax and event.xdata is not None:
            self.show(event.xdata, event.ydata)
        elif self.pinned is not None and self.shown != self.pinned:
            self.show(*self.pinned)          # off the scatter: back to the pinned point
        else:
            return
        self._redraw_decoded()

    def on_click(self, event):
        toolbar = getattr(self.figure.canvas, "toolbar", None)
        if toolbar is not None and toolbar.mode:       # zooming or panning: the click is theirs
            return
        if event.inaxes is not self.map_ax or event.xdata is None:
            return
        if event.button == 1:
            self.pin(event.xdata, event.ydata)
            self._redraw_pin()
        elif event.button == 3 and self.plane.held is not None:   # the code drawn nearest the click
            on_screen = self.map_ax.transData.transform(self.points)
            self.hold(int(np.argmin(np.hypot(*(on_screen - (event.x, event.y)).T))))
            self.figure.canvas.draw_idle()

    # ---- drawing only what changed (blitting) ----

    def _pin_artists(self):
        """What a click changes: the markers on the scatter, the nearest images and their titles."""
        return [self.neighbour_marker, self.pin_marker, *self.neighbour_images,   # in drawing order
                *(ax.title for ax in self.neighbour_axes)]

    def _on_draw(self, event):
        """After a whole draw: keep the pixels under what moves, then draw that on top."""
        canvas = self.figure.canvas
        self.backgrounds = {"figure": canvas.copy_from_bbox(self.figure.bbox),
                            "decoded": canvas.copy_from_bbox(self.decoded_ax.bbox)}
        for artist in self._pin_artists() + [self.decoded_image]:
            self.figure.draw_artist(artist)

    def _redraw_decoded(self):
        if self.backgrounds is None:    # not live, or not drawn yet
            self.figure.canvas.draw_idle()
            return
        self.figure.canvas.restore_region(self.backgrounds["decoded"])
        self.figure.draw_artist(self.decoded_image)
        self.figure.canvas.blit(self.decoded_ax.bbox)

    def _redraw_pin(self):
        if self.backgrounds is None:
            self.figure.canvas.draw_idle()
            return
        self.figure.canvas.restore_region(self.backgrounds["figure"])
        for artist in self._pin_artists() + [self.decoded_image]:
            self.figure.draw_artist(artist)
        self.figure.canvas.blit(self.figure.bbox)

    # ---- what the figure shows ----

    def show(self, u, v):
        """Decode the plot point (u, v) into the right-hand image; returns the image (C, H, W)."""
        self.shown = (u, v)
        self.z = self.plane.to_z(u, v)
        image = self.decode(self.z)
        self.decoded_image.set_data(picture(image))
        if not self.live:
            coordinates = ", ".join(f"{value:.2f}" for value in (u, v))
            where = f"z = ({coordinates})" if self.plane.held is None else f"({coordinates}) on the plane"
            self.decoded_ax.set_title(f"decoded at {where}", fontsize="medium")
        return image

    def pin(self, u, v):
        """Show (u, v), mark it, and show the test images whose codes lie nearest to its z."""
        self.show(u, v)
        self.pinned = (u, v)
        indices, distances = nearest(self.codes, self.z, len(self.neighbour_axes))
        self.pin_marker.set_data([u], [v])
        self.neighbour_marker.set_offsets(self.points[indices])
        for ax, image, k, distance in zip(self.neighbour_axes, self.neighbour_images, indices, distances):
            image.set_data(picture(self.images[k]))
            image.set_visible(True)
            label = "" if self.labels is None else f"{self._name(self.labels[k])}, "
            ax.set_title(f"{label}{distance:.2f}", fontsize="small")
        for ax, image in zip(self.neighbour_axes[len(indices):], self.neighbour_images[len(indices):]):
            image.set_visible(False)                    # fewer test images than places
            ax.set_title("")
        self.nearest = indices
        return indices

    def hold(self, index):
        """Hold z off the plane at test image `index`'s code, and decode again what is shown."""
        self.plane = self.plane.holding(self.codes[index], index)
        self._mark_held()
        if self.pinned is not None:
            self.pin(*self.pinned)
        self.show(*self.shown)

    def _name(self, label):
        return self.class_names[label] if self.class_names is not None else str(label)


def run(model, images, labels=None, what="digit", class_names=None, title=None, at=None, save=None,
        axes=None, held=None, neighbours=8, device="cpu", progress=True):
    """The explorer of `model` over its test set (images (N, C, H, W), labels (N,) or None).

    Without `save`: a window (checked for first, so that no display fails before the encoding).
    With `save`: the figure with the point `at` pinned, written to that file; returns its path.
    For a latent space of more than 2 dimensions, `axes` (two principal directions, from 1) and
    `held` (the test image whose z is held off the plane) choose the plane; `at` is on it."""
    check_plane_options(model.z_dim, len(images), axes, held)
    figure = _window_figure() if save is None else Figure(figsize=FIGURE_SIZE, layout="constrained")
    codes = encode(model, images, device, progress)
    plane = plane_for(codes, axes, held)
    hint = "" if save else ("\nmove the mouse over the codes; click to pin a point and see its nearest "
                            "test images")
    if hint and plane.held is not None:
        hint += "; right-click a code to hold z off the plane at it"
    explorer = Explorer(figure, decoder_of(model, device), plane, codes, images, labels, what, class_names,
                        neighbours, (title or "") + hint)
    if at is not None:
        explorer.pin(*at)
    if save is not None:
        return plots.save_figure(figure, save)
    figure.canvas.draw()
    if hasattr(figure, "set_layout_engine"):   # matplotlib 3.6+; 3.5 lays out every whole redraw
        figure.set_layout_engine("none")   # laid out once: laying out costs as much as the drawing
    import matplotlib.pyplot as plt    # only for a window: a saved figure needs no pyplot
    plt.show()
    return None


def _window_figure():
    """A pyplot figure in a window, or a RuntimeError when matplotlib has no window to give."""
    import matplotlib.pyplot as plt
    figure = plt.figure(figsize=FIGURE_SIZE, layout="constrained")
    if figure.canvas.required_interactive_framework is None:   # Agg and the other file-only backends
        plt.close(figure)
        raise RuntimeError(f"explore opens a window, but matplotlib's backend here ({plt.get_backend()}) "
                           "draws only to files (no display?): give --at Z0,Z1 --save FILE to write the "
                           "figure instead")
    return figure
