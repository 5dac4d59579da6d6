"""Seeded random generators, one per purpose, so that changing one use of randomness
(say, the batch order) never shifts another (say, the initial weights).

    minivae.manual_seed(0)
    generator("init").normal(...); generator("shuffle"); generator("sample"); generator("dropout")
"""
import zlib

import numpy as np

_seed = 0
_generators = {}


def manual_seed(seed):
    """Reset every named generator from `seed`."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def generator(purpose="default"):
    """The numpy Generator for `purpose`, seeded from (seed, purpose)."""
    if purpose not in _generators:
        stream = zlib.crc32(purpose.encode())  # a stable number per name (hash() is salted)
        _generators[purpose] = np.random.default_rng([_seed, stream])
    return _generators[purpose]


def get_state():
    """Every generator's state, for checkpoints."""
    return {"seed": _seed,
            "generators": {name: g.bit_generator.state for name, g in _generators.items()}}


def set_state(state):
    manual_seed(state["seed"])
    for name, bit_state in state["generators"].items():
        generator(name).bit_generator.state = bit_state
