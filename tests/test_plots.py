"""Plots: each picture is written as a real PNG of a sensible size; the manifold grid is laid out as
in Chollet's book (z[0] along the columns, z[1] down the rows, extreme quantiles at the corners)."""
from statistics import NormalDist

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

from minivae import plots  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def digit_like(count, seed=0, channel=True):
    """Blurred random strokes in [0, 1]: a bright bar through the middle at a random angle."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:28, 0:28] - 13.5
    images = []
    for angle in rng.uniform(0, np.pi, count):
        distance = np.abs(rows * np.cos(angle) - cols * np.sin(angle))  # from a line through the centre
        images.append(np.exp(-(distance / 2.0) ** 2) * (np.hypot(rows, cols) < 11))
    images = np.array(images, dtype=np.float32)
    return images[:, None] if channel else images


def face_like(count, seed=0):
    """(count, 3, 32, 32) colour images in [0, 1]: a skin-coloured disc on a random background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:32, 0:32] - 15.5
    disc = (np.hypot(rows, cols) < 11).astype(np.float32)
    skin = np.array([0.9, 0.7, 0.6], np.float32)[:, None, None]
    background = rng.random((count, 3, 1, 1), dtype=np.float32)
    return disc * skin + (1 - disc) * background


def read_png(path, min_size=(100, 100), max_size=(2000, 2000)):
    """Check the file is a non-empty PNG that matplotlib reads back; return its pixels."""
    data = open(path, "rb").read()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    pixels = imread(path)
    height, width = pixels.shape[:2]
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert min_size[0] <= height <= max_size[0] and min_size[1] <= width <= max_size[1]
    assert pixels[..., :3].std() > 0.01  # something was drawn
    return pixels


@pytest.mark.parametrize("kind", ["NCHW", "NHW", "RGB"])
def test_save_reconstructions(tmp_path, kind):
    originals = face_like(12) if kind == "RGB" else digit_like(12, channel=kind == "NCHW")
    path = plots.save_reconstructions(originals, originals * 0.8, tmp_path / "sub" / "recon.png")
    assert path == tmp_path / "sub" / "recon.png"
    pixels = read_png(path)
    assert pixels.shape[1] > 2 * pixels.shape[0]  # two rows of ten: a wide strip


def test_save_reconstructions_refuses_mismatched_arrays(tmp_path):
    with pytest.raises(ValueError, match="originals"):
        plots.save_reconstructions(digit_like(5), digit_like(3), tmp_path / "r.png")


@pytest.mark.parametrize("count", [100, 7])
@pytest.mark.parametrize("like", [digit_like, face_like], ids=["grey", "RGB"])
def test_save_samples(tmp_path, count, like):
    read_png(plots.save_samples(like(count), tmp_path / "samples.png"))


def test_colour_images_keep_their_colours():
    picture = plots.tile_images(plots._as_images(face_like(3)), ncols=2, gap=1)
    assert picture.shape == (2 * 32 + 1, 2 * 32 + 1, 3)
    np.testing.assert_allclose(picture[16, 16], [0.9, 0.7, 0.6])   # the first face's centre
    np.testing.assert_allclose(picture[32, 0], [0.5, 0.5, 0.5])    # the gap row: grey


def test_images_of_two_channels_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"expected shape .*\(N, 3, H, W\), got \(4, 2, 8, 8\)"):
        plots.save_samples(np.zeros((4, 2, 8, 8)), tmp_path / "samples.png")


@pytest.mark.parametrize("dims", [3, 64])
def test_save_latent_histograms(drawn, dims):
    z = np.random.default_rng(0).standard_normal((300, dims))
    plots.save_latent_histograms(z, "hist.png")
    (figure,) = drawn
    shown = [ax for ax in figure.axes if ax.get_visible() and ax.axison]
    assert len(shown) == min(dims, 50)
    assert shown[0].get_title() == "z[0]" and len(shown[0].get_lines()) == 1   # N(0, 1)'s density


def test_latent_histograms_are_written(tmp_path):
    read_png(plots.save_latent_histograms(np.random.default_rng(0).standard_normal((300, 20)),
                                          tmp_path / "hist.png"))


@pytest.mark.parametrize("like", [digit_like, face_like], ids=["grey", "RGB"])
def test_save_morph(tmp_path, like):
    pixels = read_png(plots.save_morph(like(10), tmp_path / "morph.png", ends=("3", "7")), min_size=(100, 400))
    assert pixels.shape[1] > 3 * pixels.shape[0]   # one row: a strip


def test_save_arithmetic_labels_each_column_with_its_strength(drawn):
    grid = face_like(12).reshape(3, 4, 3, 32, 32)
    plots.save_arithmetic(grid, [-3, -1.5, 0, 1.5], "Smiling", "smiling.png")
    (figure,) = drawn
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-3", "-1.5", "+0", "+1.5"]
    assert "Smiling" in ax.get_title()
    with pytest.raises(ValueError, match="4 columns but 2 strengths"):
        plots.save_arithmetic(grid, [1, 2], "Smiling", "smiling.png")


def test_tile_images_places_row_by_row_and_fills_gaps_grey():
    images = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 3), np.float32)
    picture = plots.tile_images(images, ncols=3, gap=1)
    assert picture.shape == (2 * 2 + 1, 3 * 3 + 2)
    assert picture[0, 0] == 0 and picture[0, 4] == 1 and picture[3, 4] == 4
    assert picture[2, 0] == 0.5 and picture[3, 8] == 0.5  # the gap row; the empty sixth cell


@pytest.mark.parametrize("dims", [2, 5])
def test_save_latent_scatter(tmp_path, dims):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    z = rng.standard_normal((500, dims)) + labels[:, None] * 0.3
    read_png(plots.save_latent_scatter(z, labels, tmp_path / "latent.png"))


def test_manifold_grid_matches_the_book(tmp_path):
    n = 4
    seen = []

    def decode(z):
        seen.append(z)
        # paint each tile with its own (z[0], z[1]) so the layout can be checked
        return np.broadcast_to(z[:, :1, None], (len(z), 5, 5)) + 10 * z[:, 1, None, None]

    picture, grid = plots.manifold_image(decode, n=n, digit_size=5)
    (z,) = seen
    assert z.shape == (n * n, 2) and z.dtype == np.float32
    low, high = NormalDist().inv_cdf(0.05), NormalDist().inv_cdf(0.95)
    np.testing.assert_allclose(z[0], [low, low], rtol=1e-6)
    np.testing.assert_allclose(z[n - 1], [high, low], rtol=1e-6)  # first row: z[0] grows rightwards
    np.testing.assert_allclose(z[-1], [high, high], rtol=1e-6)
    np.testing.assert_allclose(grid, [NormalDist().inv_cdf(q) for q in np.linspace(0.05, 0.95, n)])
    tile_top_right, tile_bottom_left = picture[0, -1], picture[-1, 0]
    np.testing.assert_allclose(tile_top_right, high + 10 * low, rtol=1e-6)
    np.testing.assert_allclose(tile_bottom_left, low + 10 * high, rtol=1e-6)


@pytest.mark.parametrize("latent_dim", [2, 3])
def test_save_manifold(tmp_path, latent_dim):
    shapes = []

    def decode(z):
        shapes.append(z.shape)
        return digit_like(len(z))

    read_png(plots.save_manifold(decode, tmp_path / "manifold.png", n=15, latent_dim=latent_dim))
    assert shapes == [(15 * 15, latent_dim)]


@pytest.mark.parametrize("with_terms", [True, False])
def test_save_loss_curves(tmp_path, with_terms):
    metrics = []
    for epoch in range(1, 6):
        record = {"epoch": epoch, "train_loss": 200 / epoch, "test_loss": 190 / epoch}
        if with_terms:
            record.update(test_recon=170 / epoch, test_kl=5 + epoch)
        metrics.append(record)
    pixels = read_png(plots.save_loss_curves(metrics, tmp_path / "losses.png"))
    assert (pixels.shape[1] > 2 * pixels.shape[0]) == with_terms  # two panels side by side


def test_save_loss_curves_refuses_no_metrics(tmp_path):
    with pytest.raises(ValueError, match="no metrics"):
        plots.save_loss_curves([], tmp_path / "losses.png")


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plots would save, kept for inspection (nothing is written)."""
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: figures.append(figure) or path)
    return figures


def test_one_epoch_of_losses_shows_every_line_as_a_point_on_epoch_1(drawn):
    record = {"epoch": 1, "train_loss": 60.0, "test_loss": 55.0, "train_recon": 55.0, "test_recon": 50.0,
              "train_kl": 5.0, "test_kl": 5.0}
    plots.save_loss_curves([record], "losses.png")
    (figure,) = drawn
    figure.canvas.draw()
    lines = [line for ax in figure.axes for line in ax.get_lines()]
    assert sorted(line.get_label() for line in lines) == ["test", "test kl", "test recon", "train",
                                                          "train kl", "train recon"]
    assert all(line.get_marker() not in ("None", "", None) for line in lines)   # one point shows
    for ax in figure.axes:
        assert list(ax.get_xticks()[(ax.get_xticks() >= 0.5) & (ax.get_xticks() <= 1.5)]) == [1.0]
        assert ax.get_xlim() == (0.5, 1.5)


def test_save_writes_png_when_the_name_has_no_suffix(tmp_path):
    path = plots.save_samples(digit_like(3), tmp_path / "new_digits")
    assert path == tmp_path / "new_digits.png" and path.read_bytes().startswith(PNG_SIGNATURE)


def test_fashion_pictures_name_items_not_digits(drawn):
    from minivae import data
    labels = np.arange(20) % 10
    plots.save_latent_scatter(np.random.default_rng(0).standard_normal((20, 2)), labels, "latent.png",
                              data.WHAT["fashion"], data.CLASS_NAMES["fashion"])
    plots.save_manifold(lambda z: digit_like(len(z)), "manifold.png", n=3, what=data.WHAT["fashion"])
    scatter, manifold = drawn
    colorbar_axes = scatter.axes[1]
    assert colorbar_axes.get_ylabel() == "item"
    assert [t.get_text() for t in colorbar_axes.get_yticklabels()] == list(data.CLASS_NAMES["fashion"])
    titles = [scatter.axes[0].get_title(), manifold.axes[0].get_title()]
    assert "by item" in titles[0] and "decoded items" in titles[1]
    assert not any("digit" in title for title in titles)
