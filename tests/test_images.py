"""Folders of images as a data set (minivae/data/images.py, image_cache.py), on small images made
here: PNG and JPEG, several sizes, grayscale and colour, one corrupt and one cut short.

First each image as Keras reads it (converted, resized by nearest neighbour), then the folder
(its sorted listing, the test split), the cache (built once, atomically, rebuilt for a changed
folder), MNIST's digits read from PNG files exactly as from the IDX files, and training on a
folder: reproducible, resumable, refusing a folder that changed.
"""
import numpy as np
import pytest
from helpers import fill, make_files, trust

from minivae import data, rng, train
from minivae.data import images as images_module

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Caches under tmp_path; no $MINIVAE_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIVAE_DATA", raising=False)


def smooth_image(height, width, channels, seed=0):
    """uint8 (H, W, C): a smooth random picture (so JPEG keeps it close) with some fine detail."""
    g = np.random.default_rng(seed)
    coarse = g.integers(0, 256, (height // 4 + 2, width // 4 + 2, channels))
    return np.kron(coarse, np.ones((4, 4, 1)))[:height, :width].astype(np.uint8)


def save(path, pixels, mode=None):
    """Write uint8 (H, W, C) pixels as an image file (its format from the suffix), in `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    (image.convert(mode) if mode else image).save(path)
    return path


def keras_reads(path, image_shape):
    """What Keras' load_img(path, color_mode, target_size=(H, W), interpolation="nearest")
    returns, written out with Pillow as Keras' own code does it, as uint8 (C, H, W)."""
    channels, height, width = image_shape
    image = Image.open(path)
    mode = "RGB" if channels == 3 else "L"
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.NEAREST)
    return np.asarray(image).reshape(height, width, channels).transpose(2, 0, 1)


# ---- one image ----------------------------------------------------------------------------------

IMAGE_FILES = {   # name: (suffix, (H, W), channels, Pillow mode written); JPEG has no alpha or palette
    "gray-28-png": (".png", (28, 28), 1, None), "gray-28-jpg": (".jpg", (28, 28), 1, None),
    "rgb-celeba-size-png": (".png", (218, 178), 3, None), "rgb-celeba-size-jpg": (".jpg", (218, 178), 3, None),
    "rgba-png": (".png", (30, 41), 3, "RGBA"), "palette-png": (".png", (40, 40), 3, "P"),
    "rgb-of-gray-png": (".png", (17, 60), 1, "RGB"), "rgb-of-gray-jpg": (".jpg", (17, 60), 1, "RGB"),
}


@pytest.mark.parametrize("suffix, size, channels, mode", IMAGE_FILES.values(), ids=IMAGE_FILES.keys())
@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 28, 28), (3, 16, 12)])
def test_an_image_is_converted_and_resized_as_keras_does(tmp_path, suffix, size, channels, mode, image_shape):
    path = save(tmp_path / f"image{suffix}", smooth_image(*size, channels), mode)
    pixels = data.decode(path, image_shape)
    assert pixels.dtype == np.uint8 and pixels.shape == image_shape
    np.testing.assert_array_equal(pixels, keras_reads(path, image_shape))


def test_nearest_neighbour_repeats_and_drops_pixels():
    """The resize itself, on an image small enough to work out by hand: 2 x 2 -> 4 x 4 repeats each
    pixel in a 2 x 2 block; 4 x 4 -> 2 x 2 keeps one pixel of each block."""
    small = np.array([[10, 20], [30, 40]], np.uint8)
    image = Image.fromarray(small)
    up = np.asarray(image.resize((4, 4), Image.NEAREST))
    np.testing.assert_array_equal(up, np.kron(small, np.ones((2, 2), np.uint8)))
    down = np.asarray(Image.fromarray(up).resize((2, 2), Image.NEAREST))
    np.testing.assert_array_equal(down, small)


def test_the_images_are_uint8_over_255_as_float32(tmp_path):
    pixels = smooth_image(28, 28, 1)
    save(tmp_path / "folder" / "a.png", pixels)
    save(tmp_path / "folder" / "b.png", pixels[::-1].copy())
    ds = data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")
    x = ds.images([0])
    expected = pixels[..., 0].astype(np.float32)
    expected /= 255
    assert x.dtype == np.float32 and x.shape == (1, 1, 28, 28)
    assert np.array_equal(x[0, 0], expected)


def write_jpeg(path):
    return save(path, smooth_image(64, 48, 3))


@pytest.mark.parametrize("spoil, complaint", [
    (lambda path: path.write_bytes(b"not an image at all" * 20), "cannot identify image file"),
    (lambda path: path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2]), "truncated"),
    (lambda path: path.write_bytes(b""), "cannot identify image file"),
], ids=["corrupt", "truncated", "empty"])
def test_a_damaged_image_is_one_line_naming_it(tmp_path, spoil, complaint):
    folder = tmp_path / "folder"
    for name in ("a", "b", "c"):
        write_jpeg(folder / f"{name}.jpg")
    spoil(folder / "b.jpg")
    ds = data.ImageFolder(folder, (3, 32, 32), "train")
    with pytest.raises(data.DataError, match=complaint) as error:
        ds.prepare(progress=False)
    assert str(folder / "b.jpg") in str(error.value) and "\n" not in str(error.value)
    assert not list((tmp_path / "cache").rglob("*.uint8")) and not list((tmp_path / "cache").rglob("*.part"))


# ---- the folder ---------------------------------------------------------------------------------

def test_the_listing_is_every_jpeg_and_png_below_the_folder_sorted(tmp_path):
    folder = tmp_path / "folder"
    for name in ("b/2.PNG", "a.jpeg", "b/10.jpg", "c.JPG", "b/1.png"):
        save(folder / name, smooth_image(8, 8, 1))
    (folder / "notes.txt").write_text("not an image")
    (folder / "d.png").mkdir()   # a folder, whatever its name
    listing = data.Listing(folder)
    assert listing.names == ["a.jpeg", "b/1.png", "b/10.jpg", "b/2.PNG", "c.JPG"]
    ds = data.ImageFolder(folder, (1, 8, 8), "train")
    assert [path.relative_to(folder).as_posix() for path in ds.paths] == \
        [listing.names[i] for i in ds.positions]
    for k, path in enumerate(ds.paths):
        assert ds.index_of(path) == k == ds.index_of(path.relative_to(folder))


@pytest.mark.parametrize("make, complaint", [
    (lambda folder: folder.mkdir(), "no JPEG or PNG images"),
    (lambda folder: (folder.mkdir(), (folder / "a.gif").write_bytes(b"GIF89a")), "no JPEG or PNG images"),
    (lambda folder: None, "no such folder"),
    (lambda folder: folder.write_text(""), "not a folder"),
    (lambda folder: save(folder / "only.png", smooth_image(8, 8, 1)), "one image only"),
], ids=["empty", "no-jpeg-or-png", "missing", "a-file", "one-image"])
def test_a_folder_without_images_is_one_line(tmp_path, make, complaint):
    make(tmp_path / "folder")
    with pytest.raises(data.DataError, match=complaint) as error:
        data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")
    assert str(tmp_path / "folder") in str(error.value) and "\n" not in str(error.value)


def digit_folder(folder, n, seed=0):
    """n grayscale 28 x 28 PNGs named 00000.png, 00001.png, ...; returns their pixels (n, 28, 28)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.uint8)
    for i, image in enumerate(pixels):
        save(folder / f"{i:05d}.png", image[..., None])
    return pixels


def test_without_a_partition_file_a_fixed_tenth_is_held_out(tmp_path, keep_global_rng_state):
    digit_folder(tmp_path / "folder", 50)
    import minivae
    splits = []
    for seed in (0, 1):   # the run's seed does not move the split
        minivae.manual_seed(seed)
        train_set, test_set = (data.ImageFolder(tmp_path / "folder", (1, 28, 28), split)
                               for split in ("train", "test"))
        splits.append((train_set.positions, test_set.positions))
    (train_a, test_a), (train_b, test_b) = splits
    assert np.array_equal(test_a, test_b) and np.array_equal(train_a, train_b)
    assert len(test_a) == 5 and sorted(np.concatenate([train_a, test_a])) == list(range(50))
    assert "5 images held out (10%, fixed split)" in test_set.description


@pytest.mark.parametrize("file_name, lines", [
    ("list_eval_partition.csv", ["image_id,partition"] + [f"{i:05d}.png,{p}" for i, p in
                                                         enumerate([0, 0, 1, 2, 0, 2, 1, 0])]),
    ("list_eval_partition.txt", [f"{i:05d}.png {p}" for i, p in enumerate([0, 0, 1, 2, 0, 2, 1, 0])]),
])
def test_celebas_partition_file_gives_the_test_split(tmp_path, file_name, lines):
    folder = tmp_path / "folder"
    digit_folder(folder / "img_align_celeba", 8)   # CelebA's layout: the images in a subfolder
    (folder / file_name).write_text("\n".join(lines) + "\n")
    test_set = data.ImageFolder(folder, (1, 28, 28), "test")
    train_set = data.ImageFolder(folder, (1, 28, 28), "train")
    assert [p.name for p in test_set.paths] == ["00003.png", "00005.png"]
    assert [p.name for p in train_set.paths] == ["00000.png", "00001.png", "00002.png", "00004.png",
                                                 "00006.png", "00007.png"]   # validation (1) trains
    assert f"2 images held out (partition 2 of {file_name})" in test_set.description


@pytest.mark.parametrize("lines, complaint", [
    (["image_id,partition", "00000.png,0", "00001.png,2"], "does not list 00002.png"),
    (["image_id,partition", "00000.png,0", "00001.png,7", "00002.png,2"], "line 3: expected"),
    (["image_id,partition", "00000.png,0", "00001.png,0", "00002.png,0"], "none of the 3 images"),
])
def test_a_partition_file_that_does_not_fit_is_one_line(tmp_path, lines, complaint):
    digit_folder(tmp_path / "folder", 3)
    (tmp_path / "folder" / "list_eval_partition.csv").write_text("\n".join(lines))
    with pytest.raises(data.DataError, match=complaint):
        data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")


def test_batches_are_the_images_in_the_order_batches_draws(tmp_path):
    digit_folder(tmp_path / "folder", 30)
    ds = data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")   # 27 images
    order = np.concatenate(list(data.batches(np.arange(len(ds)), 8, generator=np.random.default_rng(3))))
    got = list(ds.batches(8, generator=np.random.default_rng(3)))
    assert [len(x) for x in got] == [8, 8, 8, 3]
    np.testing.assert_array_equal(np.concatenate(got), ds.images(order))
    skipped = list(ds.batches(8, generator=np.random.default_rng(3), skip=2))
    np.testing.assert_array_equal(np.concatenate(skipped), ds.images(order[16:]))


# ---- the cache ----------------------------------------------------------------------------------

@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = images_module.decode

    def counted(path, image_shape):
        calls.append(path)
        return real(path, image_shape)
    monkeypatch.setattr(data, "decode", counted)
    return calls


def test_the_cache_is_built_once_and_reused(tmp_path, count_decodes):
    digit_folder(tmp_path / "folder", 20)
    first = data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")
    assert "decoded 20 images" in first.prepare(progress=False)
    assert len(count_decodes) == 20
    x = first.images(range(len(first)))
    second = data.ImageFolder(tmp_path / "folder", (1, 28, 28), "test")
    assert second.prepare(progress=False) is None     # there already
    assert len(count_decodes) == 20                    # not one image decoded again
    again = data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")
    np.testing.assert_array_equal(again.images(range(len(again))), x)
    assert len(count_decodes) == 20
    data.ImageFolder(tmp_path / "folder", (1, 14, 14), "train").prepare(progress=False)
    assert len(count_decodes) == 40                    # another size: a cache of its own


def test_a_changed_folder_gets_a_new_cache(tmp_path, count_decodes):
    pixels = digit_folder(tmp_path / "folder", 10)
    before = data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")
    before.prepare(progress=False)
    save(tmp_path / "folder" / "00003.png", 255 - pixels[3][..., None])   # one image replaced
    after = data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")
    assert after.listing.fingerprint != before.listing.fingerprint
    assert after.cache.path != before.cache.path and not after.cache.ready()
    np.testing.assert_array_equal(after.cache.read(np.array([2, 3]))[:, 0], [pixels[2], 255 - pixels[3]])
    assert before.cache.ready()   # the old one is left alone


def test_ctrl_c_while_the_cache_is_built_leaves_no_file(tmp_path, monkeypatch):
    digit_folder(tmp_path / "folder", 600)   # more than one chunk of CHUNK images
    real, calls = images_module.decode, []

    def interrupted(path, image_shape):
        calls.append(path)
        if len(calls) == 300:
            raise KeyboardInterrupt
        return real(path, image_shape)
    monkeypatch.setattr(data, "decode", interrupted)
    ds = data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")
    with pytest.raises(KeyboardInterrupt, match="nothing kept"):
        ds.prepare(progress=False)
    assert not ds.cache.ready()
    assert [p.name for p in ds.cache.path.parent.iterdir()] == []   # no temporary file either
    monkeypatch.setattr(data, "decode", real)
    ds = data.ImageFolder(tmp_path / "folder", (1, 28, 28), "train")
    assert "decoded 600 images" in ds.prepare(progress=False)


def test_memory_holds_a_batch_not_the_data_set(tmp_path):
    """Reading a batch allocates that batch: the per-batch peak is the same for 40 and 400 images."""
    import tracemalloc
    peaks = []
    for n in (40, 400):
        digit_folder(tmp_path / f"folder{n}", n)
        ds = data.ImageFolder(tmp_path / f"folder{n}", (1, 28, 28), "train")
        ds.prepare(progress=False)
        tracemalloc.start()
        for _ in ds.batches(16, generator=np.random.default_rng(0)):
            pass
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    batch = 16 * 28 * 28 * 4
    assert peaks[1] < 1.5 * peaks[0] + 64 * 1024 and peaks[1] < 8 * batch + 256 * 1024


def test_without_pillow_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError("No module named 'PIL'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_pil)
    digit_folder_made = tmp_path / "folder"
    digit_folder_made.mkdir()
    with pytest.raises(RuntimeError, match=r"need Pillow: pip install 'minivae\[images\]'"):
        data.ImageFolder(digit_folder_made, (1, 28, 28), "train")


# ---- MNIST from PNG files -----------------------------------------------------------------------

def write_pngs(folder, pixels):
    """uint8 (N, 28, 28) as N grayscale PNGs with zero-padded names, so sorted = original order."""
    folder.mkdir(parents=True)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return folder


def test_digits_read_from_png_files_are_the_idx_readers_arrays(tmp_path, monkeypatch):
    files = make_files(n_train=6, n_test=40)
    trust(monkeypatch, files)
    mnist = fill(tmp_path / "mnist", files)
    idx_images, _ = data.load_mnist("test", data_dir=mnist, quiet=True)
    folder = write_pngs(tmp_path / "pngs", data.read_idx(mnist / "t10k-images-idx3-ubyte"))
    ds = data.ImageFolder(folder, (1, 28, 28), "train")
    everything = ds.cache.read(np.arange(40)).astype(np.float32)
    everything /= 255
    assert np.array_equal(everything, idx_images)
    assert np.array_equal(ds.images(range(len(ds))), idx_images[ds.positions])


def real_mnist_folder():
    """The folder holding real MNIST's test images, if any: where $MINIVAE_DATA points (the folder
    or its mnist/), else the cache."""
    import os
    from pathlib import Path
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minivae" / "mnist"
    named = [Path(os.environ["MINIVAE_DATA"])] if os.environ.get("MINIVAE_DATA") else []
    folders = [folder for root in named for folder in (root / "mnist", root)] + [cache]
    return next((f for f in folders if (f / "t10k-images-idx3-ubyte").is_file()), None)


REAL_MNIST = real_mnist_folder()   # looked up before `isolated` moves the cache


@pytest.mark.skipif(REAL_MNIST is None, reason="real MNIST is neither in $MINIVAE_DATA nor in the cache")
def test_mnists_test_digits_from_png_files_are_exactly_the_idx_arrays(tmp_path):
    idx_images, _ = data.load_mnist("test", data_dir=REAL_MNIST, quiet=True)
    folder = write_pngs(tmp_path / "pngs", data.read_idx(REAL_MNIST / "t10k-images-idx3-ubyte"))
    ds = data.ImageFolder(folder, (1, 28, 28), "test")
    ds.prepare(progress=False)
    everything = ds.cache.read(np.arange(10_000)).astype(np.float32)
    everything /= 255
    assert np.array_equal(everything, idx_images)
    assert np.array_equal(ds.images(range(len(ds))), idx_images[ds.positions])


# ---- training on a folder -----------------------------------------------------------------------

def folder_config(folder, out, **kw):
    base = dict(model="foster", epochs=1, batch_size=8, seed=0, out=str(out), dataset=None,
                images=str(folder), limit_steps=3, progress=False)
    return train.TrainConfig(**{**base, **kw})


def quiet(config):
    return train.train(config, log=lambda line: None)


def same_metrics(a, b):
    timing = {"seconds", "images_per_s"}
    return [{k: v for k, v in m.items() if k not in timing} for m in a] == \
           [{k: v for k, v in m.items() if k not in timing} for m in b]


def test_training_on_a_folder_repeats_and_resumes_exactly(tmp_path):
    digit_folder(tmp_path / "folder", 40)
    straight = quiet(folder_config(tmp_path / "folder", tmp_path / "straight", epochs=2))
    assert same_metrics(straight, quiet(folder_config(tmp_path / "folder", tmp_path / "again", epochs=2)))
    quiet(folder_config(tmp_path / "folder", tmp_path / "split", epochs=1))
    resumed = quiet(folder_config(tmp_path / "folder", tmp_path / "split", epochs=2, extra={"resume": True}))
    assert same_metrics(straight, resumed)
    saved = train.load_checkpoint(tmp_path / "split" / "checkpoint.npz")[3]
    assert saved.images == str(tmp_path / "folder") and saved.images_fingerprint.startswith("40 images")


def test_resume_refuses_a_folder_that_changed(tmp_path):
    pixels = digit_folder(tmp_path / "folder", 40)
    quiet(folder_config(tmp_path / "folder", tmp_path / "run"))
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    save(tmp_path / "folder" / "00040.png", pixels[0][..., None])   # one image more
    with pytest.raises(train.TrainingError, match="has changed since the run began") as error:
        quiet(folder_config(tmp_path / "folder", tmp_path / "run", epochs=2, extra={"resume": True}))
    assert "\n" not in str(error.value)
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before


def test_the_command_line_trains_on_a_folder_and_refuses_mixing_it_with_mnist(tmp_path, capsys, monkeypatch):
    from minivae import cli
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    digit_folder(tmp_path / "folder", 40)
    common = ["train", "--images", str(tmp_path / "folder"), "--limit-steps", "2", "--batch-size", "8",
              "--no-progress"]
    assert cli.main(common + ["--out", str(tmp_path / "run")]) == 0
    said = capsys.readouterr().out
    assert f"data: 40 images in {tmp_path / 'folder'}, read at 28x28 grayscale" in said
    assert "test: 4 images held out (10%, fixed split)" in said and "cache: decoded 40 images" in said
    assert (tmp_path / "run" / "latent_scatter.png").is_file()
    (tmp_path / "run" / "latent_scatter.png").unlink()
    assert cli.main(["plot", str(tmp_path / "run")]) == 0 and (tmp_path / "run" / "latent_scatter.png").is_file()
    for other in (["--dataset", "mnist"], ["--data-dir", str(tmp_path)]):
        assert cli.main(common + other + ["--out", str(tmp_path / "other")]) == 1
        error = capsys.readouterr().err
        assert "give one or the other" in error and error.count("\n") == 1
    assert cli.main(common + ["--out", str(tmp_path / "run"), "--resume", "--epochs", "2"]) == 0
    assert "cache: decoded" not in capsys.readouterr().out   # the cache of the first run serves


def test_ctrl_c_mid_epoch_on_a_folder_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Pressed in the 3rd step of 4: the run saves after that step; --resume reads the rest of the
    epoch's batches (the first 3 passed over unread) and ends where the straight run does."""
    import signal

    from test_resume import press_on_call
    digit_folder(tmp_path / "folder", 40)
    straight = quiet(folder_config(tmp_path / "folder", tmp_path / "straight", limit_steps=4))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with monkeypatch.context() as patch, pytest.raises(train.Interrupted, match="step 3: saved"):
            patch.setattr(train, "to_tensor", press_on_call(train, "to_tensor", 3, 1))
            quiet(folder_config(tmp_path / "folder", tmp_path / "split", limit_steps=4))
    finally:
        signal.signal(signal.SIGINT, handler)
    resumed = quiet(folder_config(tmp_path / "folder", tmp_path / "split", limit_steps=4,
                                  extra={"resume": True}))
    assert same_metrics(straight, resumed)
    a, b = (train.load_checkpoint(tmp_path / run / "checkpoint.npz")[0] for run in ("straight", "split"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_open_dataset_reads_a_folder_at_the_models_size_leaving_the_generators_alone(tmp_path):
    digit_folder(tmp_path / "folder", 10)
    before = rng.get_state()
    ds = data.open_dataset(folder_config(tmp_path / "folder", tmp_path / "run"), "test")
    assert ds.image_shape == (1, 28, 28) and len(ds) == 1 and ds.labels is None
    assert rng.get_state() == before   # the model built to read its input shape drew nothing


def test_a_step_that_cannot_fit_is_refused_for_a_folder_without_counting_the_folder(tmp_path, capsys,
                                                                                     monkeypatch):
    """A folder is read a batch at a time: only the step is weighed against free memory."""
    from minivae import cli, memory
    digit_folder(tmp_path / "folder", 40)
    need = memory.step_bytes(*train.build(train.TrainConfig(batch_size=8))[::2], 8)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": need // 2)

    def train_with(batch_size):
        return cli.main(["train", "--images", str(tmp_path / "folder"), "--batch-size", str(batch_size),
                         "--out", str(tmp_path / "run")])
    assert train_with(8) == 1
    error = capsys.readouterr().err
    assert "--batch-size 8: a training step of foster needs about" in error and error.count("\n") == 1
    assert not (tmp_path / "run").exists()
    assert train_with(64) == 1
    assert "larger than the data set (36 training images)" in capsys.readouterr().err


def test_resume_refuses_to_switch_between_mnist_and_a_folder(tmp_path, monkeypatch):
    from test_train import config as mnist_config
    from test_train import tiny_mnist
    digit_folder(tmp_path / "folder", 40)
    mnist = tiny_mnist(tmp_path, monkeypatch)
    quiet(mnist_config(mnist, tmp_path / "mnist_run"))
    quiet(folder_config(tmp_path / "folder", tmp_path / "folder_run"))
    switches = [mnist_config(mnist, tmp_path / "mnist_run", epochs=2, images=str(tmp_path / "folder")),
                folder_config(tmp_path / "folder", tmp_path / "folder_run", epochs=2, images=None,
                              dataset="mnist", data_dir=str(mnist))]
    for switch in switches:
        switch.extra = {"resume": True}
        with pytest.raises(train.TrainingError, match="--images is"):
            quiet(switch)
