"""Foster's faces end to end, on a dozen small synthetic faces: the foster-faces preset trained one
step on a folder of 128×128 colour images, its pictures, `morph` by index and by file, and
`arithmetic` with CelebA's attribute file in either layout, which decodes exactly
z + s·(mean z with the attribute − mean z without); then the bad inputs, each one line."""
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")

import minivae  # noqa: E402
from helpers import faces_folder, write_attributes  # noqa: E402
from minivae import cli, data, latent_commands, plots, train  # noqa: E402
from minivae.tensor import no_grad  # noqa: E402

N_IMAGES = 20


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory):
    """(run folder, images folder): foster-faces trained one step of 4 on N_IMAGES faces."""
    root = tmp_path_factory.mktemp("faces")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        mp.setenv("MPLCONFIGDIR", str(root / "matplotlib"))
        faces_folder(root / "faces", N_IMAGES, size=128)
        code = cli.main(["train", "--model", "foster-faces", "--images", str(root / "faces"), "--out",
                         str(root / "run"), "--limit-steps", "1", "--batch-size", "4", "--no-progress"])
        assert code == 0
        yield root / "run", root / "faces"


@pytest.fixture
def here(tmp_path, monkeypatch, faces_run):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(faces_run[0].parent / "cache"))   # the run's cache serves
    return tmp_path


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_faces_run_has_its_colour_pictures(faces_run):
    run, _ = faces_run
    for name in ("reconstructions.png", "samples.png", "latent_histograms.png", "losses.png"):
        assert (run / name).stat().st_size > 0, name
    assert not (run / "manifold.png").exists()   # z_dim 200: no latent plane to draw


@pytest.mark.parametrize("ends", [("0", "1"), ("000001.png", "000002.png")], ids=["indices", "files"])
def test_morph(here, faces_run, capsys, ends):
    start, end = (ends if ends[0].isdigit() else [faces_run[1] / name for name in ends])
    code, out, err = run_cli(capsys, "morph", faces_run[0], "--from", start, "--to", end, "--steps", "4")
    assert code == 0, err
    assert out.strip() == "morph.png" and (here / "morph.png").stat().st_size > 0


@pytest.mark.parametrize("layout", ["csv", "txt"])
def test_arithmetic_decodes_z_plus_s_times_the_attribute_direction(here, faces_run, monkeypatch, layout):
    run, folder = faces_run
    table = here / f"attributes.{layout}"
    shutil.copy(folder / "list_attr_celeba.csv", here / "attributes.csv")
    if layout == "txt":   # the same values in the other layout
        rows = [line.split(",") for line in (here / "attributes.csv").read_text().splitlines()]
        write_attributes(table, [r[0] for r in rows[1:]], [[int(v) for v in r[1:]] for r in rows[1:]],
                         rows[0][1:])
    drawn = []
    monkeypatch.setattr(plots, "save_arithmetic", lambda grid, strengths, attribute, out: drawn.append(grid))
    model, config, _ = train.load_run_model(run)
    latent_commands.arithmetic(model, config, run, "Smiling", table, n=2, strengths=[0.0, 2.5], sample=100,
                       seed=0, out="x.png", log=lambda line: None)
    (grid,) = drawn

    # the same, step by step: the training images with and without, the means, the two faces
    train_set = data.open_dataset(config, "train", model.input_shape)
    smiling = {line.split(",")[0]: line.split(",")[1] == "1"
               for line in (here / "attributes.csv").read_text().splitlines()[1:]}
    has = np.array([smiling[path.name] for path in train_set.paths])
    model.eval()
    with no_grad():
        def codes(indices):
            return model.encode(minivae.tensor(train_set.images(indices)))[0].data.astype(np.float64)
        with_, without = codes(np.flatnonzero(has)), codes(np.flatnonzero(~has))
        direction = (with_.sum(axis=0) / len(with_) - without.sum(axis=0) / len(without)).astype(np.float32)
        faces = data.open_dataset(config, "test", model.input_shape).images([0, 1])   # the 2 test images
        z = model.encode(minivae.tensor(faces))[0].data
        expected = model.decode(minivae.tensor(z + np.float32(2.5) * direction)).data
    assert grid.shape == (2, 2, 3, 128, 128)
    np.testing.assert_array_equal(grid[:, 1], expected)


def test_arithmetic_writes_its_picture(here, faces_run, capsys):
    code, out, err = run_cli(capsys, "arithmetic", faces_run[0], "--attribute", "Smiling",
                             "--strengths=-2,0,2", "--sample", "3", "--seed", "1")
    assert code == 0, err
    assert out.splitlines()[-1] == "arithmetic_Smiling.png"
    assert "Smiling: mean z of 3 of the" in out and "(a random sample)" in out
    assert (here / "arithmetic_Smiling.png").stat().st_size > 0


def mismatched_attributes(here, folder):
    """An attributes file naming other images than the folder's."""
    names = [f"{k:06d}.jpg" for k in range(1, N_IMAGES + 1)]
    return write_attributes(here / "other.csv", names, np.ones((N_IMAGES, 3), int))


BAD = [   # (options after RUN, what the one line must say, set-up returning extra options)
    (["--attribute", "Bald"], "--attribute Bald: .* has no such attribute; it has Smiling, Eyeglasses, Young",
     None),
    (["--attribute", "Smiling"], r"other.csv does not match the images: 18 of the 18 images are not in "
                                 r"it \(e.g. 000001.png, 000002.png, 0000\d\d.png\)", mismatched_attributes),
    (["--attribute", "Smiling", "--attributes", "nowhere.csv"], "--attributes nowhere.csv: cannot read it", None),
    (["--attribute", "Smiling", "--n", "0"], "--n: must be from 1 to 50, not 0", None),
    (["--attribute", "Smiling", "--strengths", "1,x"], "--strengths: expected numbers separated by commas", None),
]


@pytest.mark.parametrize("options, says, setup", BAD, ids=[" ".join(o) for o, _, _ in BAD])
def test_bad_arithmetic_is_one_line(here, faces_run, capsys, options, says, setup):
    run, folder = faces_run
    extra = ["--attributes", setup(here, folder)] if setup else []
    try:
        code, out, err = run_cli(capsys, "arithmetic", run, *options, *extra)
    except SystemExit as exc:   # argparse's usage errors
        code, err = exc.code, capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1
    assert re.search(says, err), err
    assert not list(here.glob("*.png"))


def test_morph_of_a_file_that_is_not_there(here, faces_run, capsys):
    code, _, err = run_cli(capsys, "morph", faces_run[0], "--from", "0", "--to", "nowhere.png")
    assert code == 1 and "--to nowhere.png: neither a test-set index nor an image file" in err
    assert err.count("\n") == 1 and not (here / "morph.png").exists()
