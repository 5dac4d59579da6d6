"""Seeded random generators, one per purpose, so that changing one use of randomness
(say, the batch order) never shifts another (say, the initial weights).

    minivae.manual_seed(0)
    generator("init").normal(...); generator("shuffle"); generator("sample"); generator("dropout")
"""
import zlib
from contextlib import contextmanager

import numpy as np

_seed = 0
_generators = {}
_part = []      # (start, stop, total) inside batch_part


def manual_seed(seed):
    """Reset every named generator from `seed`."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def generator(purpose="default"):
    """The numpy Generator for `purpose`, seeded from (seed, purpose); inside batch_part, the
    same generator's draws for that part of the batch."""
    if purpose not in _generators:
        stream = zlib.crc32(purpose.encode())  # a stable number per name (hash() is salted)
        _generators[purpose] = np.random.default_rng([_seed, stream])
    return _generators[purpose] if not _part else PartOfBatch(_generators[purpose], *_part[-1])


@contextmanager
def batch_part(start, stop, total):
    """Within it, a training step runs on images start..stop of a batch of `total` (one process's
    share, parallel.py), and draws what the whole batch's step would: see PartOfBatch."""
    _part.append((start, stop, total))
    try:
        yield
    finally:
        _part.pop()


class PartOfBatch:
    """A generator's draws for images start..stop of a batch of `total`: each draw of shape
    (stop - start, ...) is made as (total, ...), as a step on the whole batch makes it, and cut to
    those images. So every part of a batch gets the numbers a whole-batch step would give its
    images (ε, dropout masks), and every generator ends the step in the same state in each process."""

    def __init__(self, generator, start, stop, total):
        self.generator, self.start, self.stop, self.total = generator, start, stop, total

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return self._cut(self.generator.standard_normal(self._whole(size, out), dtype=dtype), out)

    def random(self, size=None, dtype=np.float64, out=None):
        return self._cut(self.generator.random(self._whole(size, out), dtype=dtype), out)

    def _whole(self, size, out):
        shape = tuple(np.shape(out) if out is not None else np.atleast_1d(size))
        if shape[0] != self.stop - self.start:
            raise ValueError(f"rng: a draw of shape {shape} inside batch_part({self.start}, {self.stop}, "
                             f"{self.total}) is not one per image of the part (its first axis must be "
                             f"{self.stop - self.start})")
        return (self.total,) + shape[1:]

    def _cut(self, whole, out):
        part = whole[self.start:self.stop]
        if out is None:
            return np.ascontiguousarray(part)
        out[...] = part
        return out

    def __getattr__(self, name):
        raise AttributeError(f"rng: {name} is not drawn per image inside batch_part (standard_normal and "
                             "random are)")


def get_state():
    """Every generator's state, for checkpoints."""
    return {"seed": _seed,
            "generators": {name: g.bit_generator.state for name, g in _generators.items()}}


def set_state(state):
    manual_seed(state["seed"])
    for name, bit_state in state["generators"].items():
        generator(name).bit_generator.state = bit_state
