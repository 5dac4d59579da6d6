"""A folder of JPEG and PNG images as a data set (`train --images DIR`), read as Keras'
`flow_from_directory(DIR, target_size=(H, W))` reads it, for a model whose input is (C, H, W).

    ds = ImageFolder("celeba/", (3, 128, 128), "train")
    len(ds), ds.paths[0]              # 182,637, Path("celeba/img_align_celeba/000001.jpg")
    x = ds.images([0, 1])             # (2, 3, 128, 128) float32 in [0, 1]

- The images: every *.jpg, *.jpeg and *.png (any case) under DIR, subfolders too, sorted by their
  path relative to DIR (so zero-padded names keep their order).
- Each image as Keras' `load_img(path, color_mode, target_size=(H, W), interpolation="nearest")`
  gives it: decoded by Pillow, converted to "RGB" (C = 3) or "L" (C = 1) when it is not already,
  resized to W x H by nearest neighbour when it is not already that size; then uint8 / 255.
- The test split: CelebA's own list_eval_partition.csv (or .txt) in DIR when there is one
  (partition 2 is the test set; 0 and 1, train and validation, both train), else a fixed share of
  TEST_SHARE drawn with the constant SPLIT_SEED, the same for every run on the same listing.
- The pixels come from a cache that decodes each image once (see image_cache.py).
"""
import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset
from .image_cache import DecodedImages

SUFFIXES = {".jpg", ".jpeg", ".png"}
PARTITION_FILES = ("list_eval_partition.csv", "list_eval_partition.txt")   # CelebA's split
TEST_PARTITION = 2          # CelebA: 0 train, 1 validation, 2 test
TEST_SHARE = 0.1            # without a partition file: the share held out for testing
SPLIT_SEED = 19             # ... drawn with this seed, never the run's, so every run holds out the same
MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode
PILLOW_EXTRA = "pip install 'minivae[images]'"


def pillow():
    """PIL.Image, or a one-line error saying how to install Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise RuntimeError(f"image folders need Pillow: {PILLOW_EXTRA}") from None
    return Image


def decode(path, image_shape):
    """One image file as uint8 (C, H, W), read as Keras' load_img reads it (see the module docstring).
    A corrupt or truncated file is a DataError naming it."""
    Image = pillow()
    channels, height, width = image_shape
    try:
        with Image.open(path) as image:
            image.load()   # decode now: a damaged file raises here (Pillow pads nothing unless told to)
            if image.mode != MODES[channels]:
                image = image.convert(MODES[channels])
            if image.size != (width, height):
                image = image.resize((width, height), Image.NEAREST)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path} cannot be read as an image ({exc}): replace or remove it") from None
    return pixels.reshape(height, width, channels).transpose(2, 0, 1)


class Listing:
    """The image files under a folder: their paths relative to it, sorted, and a fingerprint of
    the listing (paths, sizes, modification times) that changes when any file does."""

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"--images {root}: {'not a folder' if self.root.exists() else 'no such folder'}")
        self.names = []   # strings rather than Path objects, which take several times the memory
        for folder, _, files in os.walk(self.root):
            relative = Path(folder).relative_to(self.root).as_posix()
            self.names += [name if relative == "." else f"{relative}/{name}"
                           for name in files if os.path.splitext(name)[1].lower() in SUFFIXES]
        self.names.sort()
        digest = hashlib.sha256()
        for name in self.names:
            stat = os.stat(self.root / name)
            digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        if not self.names:
            raise DataError(f"--images {root}: no JPEG or PNG images in it or its subfolders")
        self.fingerprint = f"{len(self.names)} images, sha256 {digest.hexdigest()}"

    def __len__(self):
        return len(self.names)


def split_indices(listing):
    """(train, test, how): the positions in the listing of each split's images, and one line
    saying how the test images were chosen."""
    for file_name in PARTITION_FILES:
        if (listing.root / file_name).is_file():
            return _partition_file_split(listing, listing.root / file_name)
    n = len(listing)
    if n < 2:
        raise DataError(f"--images {listing.root}: one image only; training and testing need at least two")
    n_test = max(1, round(n * TEST_SHARE))
    test = np.sort(np.random.default_rng(SPLIT_SEED).permutation(n)[:n_test])
    train = np.setdiff1d(np.arange(n), test)
    return train, test, f"{n_test:,} images held out ({TEST_SHARE:.0%}, fixed split)"


def _partition_file_split(listing, path):
    """CelebA's list_eval_partition: `image_id,partition` lines after a header (.csv) or
    `image_id partition` lines (.txt); the images are matched by file name."""
    partition = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields or (number == 1 and path.suffix == ".csv"):
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(f"{path}, line {number}: expected an image name and its partition "
                            f"(0, 1 or 2), not {line.strip()!r}")
        partition[fields[0]] = int(fields[1])
    names = [name.rsplit("/", 1)[-1] for name in listing.names]
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise DataError(f"{path} names images by file name, but {listing.root} holds more than "
                        f"one {twice[0]}")
    unlisted = [name for name in names if name not in partition]
    if unlisted:
        raise DataError(f"{path} does not list {unlisted[0]} ({len(unlisted):,} images of "
                        f"{listing.root} are not in it)")
    test_mask = np.array([partition[name] == TEST_PARTITION for name in names])
    if not test_mask.any() or test_mask.all():
        raise DataError(f"{path} puts {'all' if test_mask.all() else 'none'} of the {len(names):,} "
                        f"images of {listing.root} in the test partition ({TEST_PARTITION})")
    return (np.flatnonzero(~test_mask), np.flatnonzero(test_mask),
            f"{test_mask.sum():,} images held out (partition {TEST_PARTITION} of {path.name})")


class ImageFolder(Dataset):
    """One split ("train" or "test") of a folder of images, at the size a model takes: (C, H, W)."""
    read_ahead = True

    def __init__(self, root, image_shape, split="train"):
        if split not in ("train", "test"):
            raise ValueError(f"split must be train or test, not {split!r}")
        channels = image_shape[0]
        if channels not in MODES:
            raise DataError(f"--images: a folder gives 1 (grayscale) or 3 (RGB) channels, but the "
                            f"model takes {channels}")
        pillow()   # now, not at the first image: a missing Pillow is one line before anything runs
        self.listing = Listing(root)
        self.root, self.image_shape, self.split = self.listing.root, tuple(image_shape), split
        train, test, self.how_split = split_indices(self.listing)
        self.positions = train if split == "train" else test   # in the listing
        self.cache = DecodedImages(self.listing, self.image_shape, decode)
        channels, height, width = self.image_shape
        self.description = (f"{len(self.listing):,} images in {self.root}, read at {height}x{width} "
                            f"{'RGB' if channels == 3 else 'grayscale'}; test: {self.how_split}")
        self._index = None

    def __len__(self):
        return len(self.positions)

    @property
    def paths(self):
        """The image files of this split, in its order."""
        return [self.root / self.listing.names[i] for i in self.positions]

    def index_of(self, path):
        """The index in this split of an image file (a path under the folder, or relative to it)."""
        path = Path(path)
        try:
            name = path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:   # not under the folder as given: then it is relative to the folder
            name = path.as_posix()
        if self._index is None:
            self._index = {self.listing.names[i]: k for k, i in enumerate(self.positions)}
        if name not in self._index:
            raise DataError(f"{path} is not one of the {len(self):,} {self.split} images of {self.root}")
        return self._index[name]

    def prepare(self, progress=True):
        return self.cache.build(progress)

    def images(self, indices):
        pixels = self.cache.read(self.positions[np.asarray(indices, dtype=np.intp)])   # uint8 (n, C, H, W)
        images = pixels.astype(np.float32)
        images /= 255   # as MNIST's loader does, so the same bytes give the same floats
        return images
