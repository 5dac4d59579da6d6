"""Decode once, read fast: every image of a folder, decoded at the model's size, in one uint8 file.

Decoding a JPEG costs more than a small model's share of a training step, so the first use
decodes each image once into

    cache_dir()/images/<key>/images.uint8     N x C x H x W bytes, in the listing's order

and every later read (this epoch's batches, the next epochs', the next runs') copies the rows it
needs from that file into a batch array. Memory holds a batch, never the data set: the file is
read with readinto rather than mapped, as a memory map counts every page it has touched in the
process's resident memory.

Where: under the user's cache (~/.cache/minivae, see mnist.cache_dir) rather than beside the
images or the run, because the image folder may be read-only or shared, and every run on the same
folder at the same size then shares one cache. The key is the SHA-256 of the listing's
fingerprint (relative paths, sizes, modification times), the size (C, H, W) and FORMAT, so a
changed folder gets a cache of its own; old ones stay until removed (rm -r ~/.cache/minivae/images).

Written atomically: decoded into a temporary file in the same folder, fsync, then os.replace. An
error or Ctrl-C during the build removes the temporary file, so a file under the real name is
always whole; one of the wrong size (altered by hand) is built again.
"""
import hashlib
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .mnist import cache_dir

FORMAT = 1      # the layout of images.uint8; a new layout changes every key
CHUNK = 256     # images handed to the decoding threads at a time (bounded memory, prompt Ctrl-C)


class DecodedImages:
    """The pixels of a Listing's images at `image_shape` (C, H, W), decoded by `decode(path, shape)`."""

    def __init__(self, listing, image_shape, decode):
        self.listing, self.image_shape, self.decode = listing, tuple(image_shape), decode
        key = hashlib.sha256(f"{FORMAT}\n{self.image_shape}\n{listing.fingerprint}".encode()).hexdigest()
        self.path = cache_dir() / "images" / key[:32] / "images.uint8"
        self.row_bytes = int(np.prod(self.image_shape))

    def ready(self):
        return self.path.is_file() and self.path.stat().st_size == len(self.listing) * self.row_bytes

    def build(self, progress=True):
        """Decode every image into the cache file unless it is there already; returns a line saying
        what was built (None if nothing was). Decoding runs on one thread per core (Pillow lets go
        of the GIL while it decodes and resizes)."""
        if self.ready():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        names = self.listing.names
        bar = _progress_bar(len(names)) if progress else None
        start = time.perf_counter()
        try:
            with open(temporary, "wb") as out, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                for first in range(0, len(names), CHUNK):
                    chunk = [self.listing.root / name for name in names[first:first + CHUNK]]
                    for pixels in pool.map(self.decode, chunk, itertools.repeat(self.image_shape)):
                        out.write(np.ascontiguousarray(pixels).data)
                    if bar is not None:
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except KeyboardInterrupt:
            raise KeyboardInterrupt("interrupted while decoding the images into the cache: nothing "
                                    "kept; run the same command again") from None
        finally:
            temporary.unlink(missing_ok=True)   # gone already after os.replace
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        return (f"cache: decoded {len(names):,} images in {seconds:.1f} s into {self.path} "
                f"({self.path.stat().st_size / 2**20:,.0f} MB)")

    def read(self, positions):
        """The rows at `positions` (an int array), as uint8 (n, C, H, W); builds the cache first
        if need be."""
        if not self.ready():
            self.build()
        rows = np.empty((len(positions),) + self.image_shape, np.uint8)
        with open(self.path, "rb", buffering=0) as f:   # a file object of its own: safe on any thread
            for row, position in zip(rows, positions):
                f.seek(int(position) * self.row_bytes)
                f.readinto(row.data)
        return rows


def _progress_bar(total):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="decoding images into the cache", unit="image", dynamic_ncols=True)
