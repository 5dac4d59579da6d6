"""The latent-space explorer: the plane a plot point lives on, the nearest test codes, the figure's
mouse handlers (driven by synthetic mouse events on Agg, no window), and `explore` on the command
line, with its one-line errors."""
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.backend_bases import MouseEvent  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402

import minivae  # noqa: E402
from minivae import checkpoint, explore, models, train  # noqa: E402
from minivae.tensor import Tensor, no_grad  # noqa: E402
from test_cli import files, here, module_patch, run_cli, snapshot, trained  # noqa: E402,F401 (fixtures)


# ---- the plane -----------------------------------------------------------------------------------

def test_a_2d_latent_space_is_the_plane_itself():
    plane = explore.LatentPlane.identity()
    z = plane.to_z(0.123456789, -2.5)
    assert z.dtype == np.float32 and np.array_equal(z, np.float32([0.123456789, -2.5]))
    codes = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    assert np.array_equal(plane.project(codes), codes)


def stretched_codes(n=400, dims=5, seed=0):
    """Codes whose spread is 5, 3, 2, 1, 0.5 along a random rotation of the axes, around a mean
    away from 0: their principal directions are that rotation's rows."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dims, dims)))
    scales = np.array([5, 3, 2, 1, 0.5])[:dims]
    return (rng.standard_normal((n, dims)) * scales) @ rotation.T + 1.5, rotation.T


@pytest.mark.parametrize("axes, held", [((1, 2), 0), ((2, 4), 7)])
def test_the_plane_of_principal_directions_holds_the_rest_of_z_at_one_code(axes, held):
    codes, directions = stretched_codes()
    plane = explore.LatentPlane.principal(codes, axes, held)
    assert np.allclose(plane.basis @ plane.basis.T, np.eye(2))                # orthonormal
    for row, axis in zip(plane.basis, axes):                                   # the chosen directions
        assert abs(row @ directions[axis - 1]) > 0.99
    # a code's plot point is its pair of principal components, about the mean
    centred = codes - codes.mean(axis=0)
    assert np.allclose(plane.project(codes), centred @ plane.basis.T)
    # every point of the plane differs from the held code only within the plane
    for u, v in [(0.0, 0.0), (3.0, -1.0), (-7.5, 2.25)]:
        z = plane.to_z(u, v)
        off_plane = (z - codes[held]) - ((z - codes[held]) @ plane.basis.T) @ plane.basis
        assert np.allclose(off_plane, 0, atol=1e-5)
        assert np.allclose(plane.project(z[None])[0], (u, v), atol=1e-5)
    assert np.allclose(plane.to_z(*plane.project(codes[held:held + 1])[0]), codes[held], atol=1e-5)


def test_the_principal_directions_point_the_same_way_every_time():
    codes, _ = stretched_codes()
    first = explore.LatentPlane.principal(codes).basis
    again = explore.LatentPlane.principal(-(-codes)).basis
    flipped = explore.LatentPlane.principal(codes[::-1].copy()).basis
    assert np.array_equal(first, again) and np.allclose(first, flipped)


@pytest.mark.parametrize("z_dim, n_codes, axes, held, says", [
    (2, 10, (1, 2), None, "--axes applies to a latent space of more than 2 dimensions"),
    (2, 10, None, 3, "--hold applies to a latent space of more than 2 dimensions"),
    (5, 10, (1, 6), None, "--axes 1,6: choose two different principal directions from 1 to 5"),
    (5, 3, (1, 4), None, "--axes 1,4: choose two different principal directions from 1 to 3"),
    (5, 10, (2, 2), None, "--axes 2,2: choose two different"),
    (5, 10, None, 10, "--hold 10: there are 10 test images encoded (0 to 9)"),
])
def test_plane_options_that_do_not_fit_are_refused_by_name(z_dim, n_codes, axes, held, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        explore.check_plane_options(z_dim, n_codes, axes, held)
    explore.check_plane_options(z_dim, n_codes, None, None)   # the defaults always fit


# ---- the nearest codes ---------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [2, 5])
def test_nearest_finds_the_nearest_codes_in_order(dims):
    rng = np.random.default_rng(dims)
    codes = rng.standard_normal((300, dims)).astype(np.float32)
    z = rng.standard_normal(dims).astype(np.float32)
    indices, distances = explore.nearest(codes, z, 6)
    by_distance = sorted(range(len(codes)), key=lambda i: math.dist(codes[i].tolist(), z.tolist()))
    assert list(indices) == by_distance[:6]
    assert np.allclose(distances, [math.dist(codes[i].tolist(), z.tolist()) for i in by_distance[:6]])


# ---- the figure, driven by synthetic mouse events -------------------------------------------------

def tiny_vae(channels, z_dim):
    """Foster's configurable VAE at a toy size: (C, 8, 8) images, one conv each way."""
    minivae.manual_seed(1)
    return models.VariationalAutoencoder((channels, 8, 8), (4,), (3,), (2,), (channels,), (3,), (2,), z_dim)


def decoded(model, z):
    """The model's own decoding of one z (D,), as the right-hand image must show it: (H, W) for
    grey, (H, W, 3) for colour."""
    with no_grad():
        image = model.decode(Tensor(z[None])).data[0]
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


KINDS = [(1, 2), (3, 5)]
KIND_IDS = ["grey, 2-D latent", "RGB, 5-D latent"]


def make_explorer(channels, z_dim, live=False):
    """An explorer of a tiny untrained model over 60 random images, drawn once on an Agg canvas
    (matplotlib's non-interactive backend: it draws, but into memory)."""
    model = tiny_vae(channels, z_dim)
    images = np.random.default_rng(0).random((60, channels, 8, 8)).astype(np.float32)
    labels = np.arange(60) % 10
    codes = explore.encode(model, images, progress=False, batch_size=25)
    figure = Figure(figsize=explore.FIGURE_SIZE, layout="constrained")
    FigureCanvasAgg(figure)
    shown = explore.Explorer(figure, explore.decoder_of(model), explore.plane_for(codes), codes, images,
                             labels, neighbours=5, live=live)
    figure.canvas.draw()   # the layout is fixed at the first draw
    shown.model = model
    return shown


@pytest.fixture(params=KINDS, ids=KIND_IDS)
def explorer(request, keep_global_rng_state):
    return make_explorer(*request.param)


def mouse(explorer, name, across, up, button=None, over=None):
    """Send the figure a mouse event at a point of the scatter (or of the axes `over`), given as
    fractions of its width and height (an untrained model's codes span a small square); returns
    the event."""
    x, y = (over or explorer.map_ax).transAxes.transform((across, up))
    event = MouseEvent(name, explorer.figure.canvas, x, y, button=button)
    explorer.figure.canvas.callbacks.process(name, event)
    return event


def shown_image(explorer):
    return np.asarray(explorer.decoded_image.get_array())


def test_the_codes_are_the_encoders_mu(explorer):
    with no_grad():
        mu = explorer.model.encode(Tensor(explorer.images))[0].data
    assert np.allclose(explorer.codes, mu, atol=1e-6)


@pytest.mark.parametrize("across, up", [(0.5, 0.5), (0.1, 0.8), (0.97, 0.03)])
def test_moving_the_mouse_shows_the_decoding_of_the_z_under_it(explorer, across, up):
    event = mouse(explorer, "motion_notify_event", across, up)
    assert event.inaxes is explorer.map_ax
    plane = explorer.plane
    if plane.held is None:   # 2-D: the event's data coordinates are z
        assert np.array_equal(explorer.z, np.float32([event.xdata, event.ydata]))
    else:                    # on the plane at the event's point, and the held code's off it
        assert np.allclose(plane.project(explorer.z[None])[0], (event.xdata, event.ydata), atol=1e-5)
        off_plane = explorer.z - explorer.codes[plane.held]
        assert np.allclose(off_plane - (off_plane @ plane.basis.T) @ plane.basis, 0, atol=1e-5)
    assert np.array_equal(shown_image(explorer), decoded(explorer.model, explorer.z))


def test_a_click_pins_the_point_and_shows_its_nearest_test_images(explorer):
    event = mouse(explorer, "button_press_event", 0.4, 0.6, button=1)
    z = explorer.z
    distances = [math.dist(code.tolist(), z.tolist()) for code in explorer.codes]
    nearest = sorted(range(len(distances)), key=distances.__getitem__)[:5]
    assert explorer.pinned == (event.xdata, event.ydata)
    assert list(explorer.nearest) == nearest
    for image, k in zip(explorer.neighbour_images, nearest):
        shown = np.asarray(image.get_array())
        expected = explorer.images[k]
        assert np.array_equal(shown, expected[0] if expected.shape[0] == 1 else expected.transpose(1, 2, 0))
    assert np.allclose(explorer.pin_marker.get_data(), [[event.xdata], [event.ydata]])
    # the mouse moves on, then leaves the scatter: the pinned point's decoding comes back
    mouse(explorer, "motion_notify_event", 0.9, 0.1)
    assert not np.array_equal(shown_image(explorer), decoded(explorer.model, z))
    mouse(explorer, "motion_notify_event", 0.5, 0.5, over=explorer.decoded_ax)
    assert np.array_equal(explorer.z, z) and np.array_equal(shown_image(explorer), decoded(explorer.model, z))


def changed_pixels(canvas, action):
    """Which pixels of the canvas (rows from the top) `action` changed."""
    before = np.asarray(canvas.buffer_rgba()).copy()
    action()
    return np.any(before != np.asarray(canvas.buffer_rgba()), axis=2)


def pixels_of(canvas, boxes):
    """A mask of the canvas's pixels inside any of the display boxes (y from the bottom)."""
    height, width = np.asarray(canvas.buffer_rgba()).shape[:2]
    mask = np.zeros((height, width), bool)
    for box in boxes:
        mask[height - int(np.ceil(box.y1)):height - int(box.y0), int(box.x0):int(np.ceil(box.x1))] = True
    return mask


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_live_moves_and_clicks_redraw_only_what_they_change(kind, keep_global_rng_state):
    """In a window, a move redraws the decoded image, and a click the markers and the nearest
    images too, over the pixels kept from the last whole draw (blitting): no whole redraw."""
    explorer = make_explorer(*kind, live=True)
    canvas = explorer.figure.canvas
    whole_draws = []
    canvas.mpl_connect("draw_event", whole_draws.append)
    changed = changed_pixels(canvas, lambda: mouse(explorer, "motion_notify_event", 0.2, 0.9))
    decoded_area = pixels_of(canvas, [explorer.decoded_ax.bbox])
    assert changed[decoded_area].any() and not changed[~decoded_area].any()
    x0, y0, x1, y1 = explorer.decoded_ax.bbox.extents    # the image is drawn with the decoding
    top, bottom = changed.shape[0] - int(y1), changed.shape[0] - int(y0)
    inside = np.asarray(canvas.buffer_rgba())[top + 2:bottom - 2, int(x0) + 2:int(x1) - 2, :3]
    assert abs(inside.mean() / 255 - decoded(explorer.model, explorer.z).mean()) < 0.02

    changed = changed_pixels(canvas, lambda: mouse(explorer, "button_press_event", 0.6, 0.3, button=1))
    neighbours = pixels_of(canvas, [ax.get_tightbbox() for ax in explorer.neighbour_axes])
    assert changed[neighbours].any() and changed[pixels_of(canvas, [explorer.map_ax.bbox])].any()
    assert whole_draws == []


def test_a_right_click_on_a_plane_holds_the_rest_of_z_at_the_code_under_it(keep_global_rng_state):
    explorer = make_explorer(3, 5)
    mouse(explorer, "button_press_event", 0.5, 0.5, button=1)
    points_before, pinned_z = explorer.points.copy(), explorer.z
    k = 17
    x, y = explorer.map_ax.transData.transform(explorer.points[k])
    event = MouseEvent("button_press_event", explorer.figure.canvas, x + 1, y - 1, button=3)
    explorer.figure.canvas.callbacks.process(event.name, event)
    plane = explorer.plane
    assert plane.held == k
    assert np.allclose(plane.project(explorer.codes), points_before)     # the scatter stays put
    assert np.allclose(plane.to_z(*plane.project(explorer.codes[k:k + 1])[0]), explorer.codes[k], atol=1e-5)
    # the pinned point keeps its place on the plane, but its z now has image k's part off it
    assert np.allclose(plane.project(explorer.z[None])[0], explorer.pinned, atol=1e-5)
    assert not np.allclose(explorer.z, pinned_z)
    assert np.array_equal(shown_image(explorer), decoded(explorer.model, explorer.z))
    assert np.allclose(explorer.held_marker.get_data(), explorer.points[k][:, None])


def test_clicks_other_than_a_left_click_on_the_scatter_pin_nothing(explorer):
    mouse(explorer, "button_press_event", 0.4, 0.6, button=3)
    mouse(explorer, "button_press_event", 0.5, 0.5, button=1, over=explorer.decoded_ax)
    assert explorer.pinned is None


# ---- the command line ----------------------------------------------------------------------------

def trained_run(folder, model):
    """A run of the preset `model` trained for one step of 8 on the tiny MNIST in the working folder."""
    config = train.TrainConfig(model=model, batch_size=8, limit_steps=1, out=str(folder),
                               data_dir=str(folder.parent / "data" / "mnist"), progress=False)
    train.train(config, log=lambda line: None)
    return folder


@pytest.mark.parametrize("preset", ["foster", "chollet"])   # the presets that train on MNIST
def test_save_writes_the_figure_for_the_point(here, capsys, preset):
    run = here / "run" if preset == "foster" else trained_run(here / preset, preset)
    code, out, err = run_cli(capsys, "explore", run, "--at=-0.5,0.25", "--save", "at.png", "--no-progress",
                             "--neighbours", "4")
    assert code == 0, err
    assert out.strip() == "at.png"
    pixels = imread(here / "at.png")
    assert pixels.shape[:2] == (600, 1200) and pixels[..., :3].std() > 0.05


@pytest.fixture
def five_d_run(here, monkeypatch):
    """A run of a tiny model with a 5-D latent space, trained for one step on the tiny MNIST."""
    monkeypatch.setitem(models.PRESETS, "tiny5", models.Preset(
        lambda: models.VariationalAutoencoder((1, 28, 28), (4,), (3,), (2,), (1,), (3,), (2,), z_dim=5),
        models.foster_loss, "adam", 1e-3, 8, "a tiny 5-D model for the tests"))
    return trained_run(here / "run5", "tiny5")


def test_save_on_a_plane_of_a_larger_latent_space(five_d_run, capsys, monkeypatch):
    pinned, real_pin = [], explore.Explorer.pin    # the explorer the command makes, kept when it pins

    def pin(self, u, v):
        pinned.append(self)
        return real_pin(self, u, v)
    monkeypatch.setattr(explore.Explorer, "pin", pin)
    code, out, err = run_cli(capsys, "explore", five_d_run, "--at", "1.5,-0.5", "--axes", "2,3",
                             "--hold", "4", "--limit", "30", "--save", "plane.png", "--no-progress")
    assert code == 0, err
    assert imread("plane.png").shape[:2] == (600, 1200)
    (shown,) = pinned
    assert shown.pinned == (1.5, -0.5) and shown.plane.held == 4 and shown.codes.shape == (30, 5)
    assert shown.plane.axis_names == ("principal direction 2", "principal direction 3")
    model, _, _ = train.load_run_model(five_d_run)
    assert np.array_equal(shown_image(shown), decoded(model, shown.plane.to_z(1.5, -0.5)))


BAD = [   # (argv after `explore`, what the one line must say, set-up of the working folder or None)
    (["nowhere", "--at", "0,0", "--save", "x.png"], "no checkpoint at nowhere", None),
    (["empty", "--at", "0,0", "--save", "x.png"], "no checkpoint at empty/checkpoint.npz", "empty"),
    (["young", "--at", "0,0", "--save", "x.png"], "young/checkpoint.npz: no checkpoint yet", "young"),
    (["other", "--at", "0,0", "--save", "x.png"], "other/checkpoint.npz does not fit the 'chollet' model",
     "other"),
    (["run", "--at", "1", "--save", "x.png"], "--at: expected two values Z0,Z1, not '1'", None),
    (["run", "--at", "1,2,3", "--save", "x.png"], "--at: expected two values Z0,Z1, not '1,2,3'", None),
    (["run", "--at", "nan,0", "--save", "x.png"], "--at: expected a finite number, not nan", None),
    (["run", "--at", "0,-inf", "--save", "x.png"], "--at: expected a finite number, not -inf", None),
    (["run", "--at", "zero,0", "--save", "x.png"], "--at: expected a number, not 'zero'", None),
    (["run", "--at", "-1,0"], "--at: expected one argument", None),
    (["run", "--save", "x.png"], "--save writes the figure for one point: give it with --at Z0,Z1", None),
    (["run", "--at", "0,0", "--save", "x.xyz"], "--save x.xyz: matplotlib cannot write .xyz files", None),
    (["run", "--at", "0,0", "--save", "run"], "--save run is a folder", None),
    (["run", "--at", "0,0", "--save", "x.png", "--axes", "1,2"],
     "--axes applies to a latent space of more than 2 dimensions", None),
    (["run", "--axes", "0,1"], "--axes: must be at least 1, not 0", None),
    (["run", "--limit", "-1"], "--limit: must be at least 0 (0: all)", None),
    (["run", "--neighbours", "0"], "--neighbours: must be from 1 to 32, not 0", None),
    (["run", "--device", "foo"], "--device: unknown device 'foo'", None),
    (["run"], "explore opens a window, but matplotlib's backend here (agg) draws only to files", None),
]


def copy_of_run(here, folder, **config):
    """here/folder: the trained run's checkpoint, with these settings changed in its config."""
    model_state, optimizer_state, meta = checkpoint.load(here / "run" / "checkpoint.npz")
    meta["config"].update(config)
    checkpoint.save(here / folder / "checkpoint.npz", model_state, optimizer_state, meta)
    return here / folder


def test_a_run_trained_on_a_gpu_is_explored_on_the_cpu(here, capsys):
    """The checkpoint says where the run was trained; explore decodes on its own --device (cpu)."""
    copy_of_run(here, "gpu_run", device="cuda:0")
    code, out, err = run_cli(capsys, "explore", "gpu_run", "--at", "0,0", "--save", "gpu.png",
                             "--no-progress")
    assert code == 0 and (here / "gpu.png").is_file(), err


def bad_run_folder(here, kind):
    """A run folder that cannot be explored: an empty folder, one whose first epoch has not ended
    (its config but no checkpoint yet), or one whose checkpoint names another model."""
    if kind == "other":
        copy_of_run(here, kind, model="chollet")
        return
    (here / kind).mkdir()
    if kind == "young":
        (here / kind / "config.json").write_text((here / "run" / "config.json").read_text())


@pytest.mark.parametrize("argv, says, setup", BAD, ids=[" ".join(argv) for argv, _, _ in BAD])
def test_bad_input_is_one_line_naming_it_and_writes_nothing(here, capsys, argv, says, setup):
    import matplotlib.pyplot as plt
    plt.switch_backend("agg")   # no window can open here, whatever the machine has
    if setup:
        bad_run_folder(here, setup)
    before = snapshot(here)
    code, out, err = run_cli(capsys, "explore", *argv)
    assert code != 0
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert says in err, err
    assert snapshot(here) == before
