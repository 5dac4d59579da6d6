"""What every data set offers the training loop, whatever holds its images: its length, the shape of
one image, its labels (or None), the images at some indices, and one epoch of batches.

    ds = data.open_dataset(config, "train")   # MNIST's arrays, or a folder of images (--images)
    len(ds), ds.image_shape                   # 60000, (1, 28, 28): (C, H, W)
    x = ds.images([0, 5, 7])                  # (3, 1, 28, 28) float32 in [0, 1], in that order
    for x in ds.batches(32, shuffle=True): ...   # one epoch, (n, C, H, W) float32 each

The batch order is the one `batches` draws for the indices 0..N-1, so a data set in memory and a
folder read from disk go through the same permutation for the same generator state.
"""
import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import rng


class DataError(Exception):
    """A data file is missing, corrupt or could not be fetched; the message says which and what to do."""


def batches(images, batch_size, shuffle=True, generator=None, drop_last=False, labels=None):
    """One epoch of minibatches: images[index], or (images[index], labels[index]) when labels are given.

    The indices run through 0..N-1 once, in order or, with shuffle, in a permutation drawn from
    `generator` (default minivae.rng.generator("shuffle"), so minivae.manual_seed fixes the order).
    The permutation is drawn when batches() is called, so the same generator state gives the same
    order. Each batch is one fancy-index copy; the dataset as a whole is never copied. The last batch
    is smaller when batch_size does not divide N, unless drop_last drops it. Call once per epoch.
    """
    n = len(images)
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if shuffle:
        order = (rng.generator("shuffle") if generator is None else generator).permutation(n)
    else:
        order = np.arange(n)
    end = n - n % batch_size if drop_last else n

    def one_epoch():
        for start in range(0, end, batch_size):
            index = order[start:start + batch_size]
            yield images[index] if labels is None else (images[index], labels[index])

    return one_epoch()


class Dataset:
    """The interface. A subclass sets `image_shape` (C, H, W) and `description` (one line for
    people), and gives __len__ and images(indices); `labels` is an int array, or None."""
    labels = None
    read_ahead = False   # read the next batch on a thread while the caller uses this one

    def images(self, indices):
        raise NotImplementedError

    def prepare(self, progress=True):
        """Whatever must happen once before the images are read quickly (a folder's cache);
        returns a line saying what it did, or None."""

    def batches(self, batch_size, shuffle=True, generator=None, drop_last=False, skip=0):
        """One epoch of (n, C, H, W) float32 batches, in the order `batches` draws; the first
        `skip` batches are passed over without being read (a run resumed mid-epoch)."""
        order = batches(np.arange(len(self)), batch_size, shuffle, generator, drop_last)
        order = itertools.islice(order, skip, None)
        if self.read_ahead:
            return _read_ahead(self.images, order)
        return (self.images(index) for index in order)


def _read_ahead(read, indices):
    """read(index) for each index in turn, the next one already under way on a worker thread
    while the caller works on this one, so reading does not hold up the step."""
    with ThreadPoolExecutor(1, thread_name_prefix="minivae-read") as pool:
        pending = None
        for index in indices:
            following = pool.submit(read, index)
            if pending is not None:
                yield pending.result()
            pending = following
        if pending is not None:
            yield pending.result()


class ArrayDataset(Dataset):
    """Images held in memory as one float32 array (N, C, H, W), such as MNIST's, with their labels."""

    def __init__(self, pixels, labels=None, description="images in memory"):
        self.pixels, self.labels, self.description = pixels, labels, description
        self.image_shape = tuple(pixels.shape[1:])

    def __len__(self):
        return len(self.pixels)

    def images(self, indices):
        return self.pixels[np.asarray(indices, dtype=np.intp)]
