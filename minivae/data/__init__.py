"""The data a VAE trains on, one file per job:

    mnist.py        MNIST and Fashion-MNIST: fetch the IDX files, check their SHA-256, parse them
    images.py       a folder of JPEG and PNG images (train --images DIR), read as Keras reads it
    image_cache.py  those images decoded once into one file, read a batch at a time
    dataset.py      what the training loop sees of either: len, image_shape, images(indices), batches

    train = data.open_dataset(config, "train")    # a run's data, whichever it is
    for x in train.batches(32): ...               # (32, C, H, W) float32 in [0, 1]

Every name the rest of minivae uses is here, as data.NAME. Setting one (data.MIRRORS = ..., as the
tests do) sets it in the file that defines it too, where the code reading it looks it up.
"""
import sys
import types

from .. import rng
from . import dataset, image_cache, images, mnist
from .dataset import ArrayDataset, DataError, Dataset, batches
from .images import ImageFolder, Listing, decode
from .mnist import (DATASETS, CLASS_NAMES, MIRRORS, MIRROR_TIMEOUT, SHA256, SPLITS, TOOL_TIMEOUT, WHAT,
                    cache_dir, describe, find_or_fetch, idx_shape, load_mnist, read_idx, verify)


def open_dataset(config, split, image_shape=None, quiet=False):
    """The `split` ("train" or "test") of a run's data, from its config (a TrainConfig): the image
    folder config.images at `image_shape` (C, H, W), by default the input shape of config.model;
    else config.dataset's arrays (MNIST, Fashion-MNIST) from config.data_dir or where
    find_or_fetch finds them, with their labels."""
    folder = getattr(config, "images", None)
    if folder:
        return ImageFolder(folder, image_shape or model_input_shape(config.model), split)
    pixels, labels = load_mnist(split, config.dataset, config.data_dir, quiet)
    if image_shape is not None and tuple(image_shape) != pixels.shape[1:]:
        raise DataError(f"--model {config.model} takes {_shape(image_shape)} images, but "
                        f"{DATASETS[config.dataset]}'s are {_shape(pixels.shape[1:])}: "
                        "train it on a folder of images with --images DIR")
    return ArrayDataset(pixels, labels, f"{DATASETS[config.dataset]} {split} images")


def model_input_shape(model_name):
    """(C, H, W) of a preset's input, read off a model built for the purpose (the random
    generators are put back as they were, so nothing after it draws other numbers)."""
    from ..models import get_preset
    saved = rng.get_state()
    try:
        return tuple(get_preset(model_name).build().input_shape)
    finally:
        rng.set_state(saved)


def _shape(shape):
    channels, height, width = shape
    return f"{height}x{width} {'RGB' if channels == 3 else 'grayscale' if channels == 1 else f'{channels}-channel'}"


class _Package(types.ModuleType):
    """minivae.data itself: setting data.NAME sets NAME in each of its files that has one."""

    def __setattr__(self, name, value):
        for module in (mnist, images, image_cache, dataset):
            if name in vars(module):
                setattr(module, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
