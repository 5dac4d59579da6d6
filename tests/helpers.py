"""What the test files share: a gradient-check case, and random inputs away from kinks."""
from dataclasses import dataclass, field

import numpy as np

import minivae


@dataclass
class Case:
    """One gradient check: `fn(*inputs)` for the functional op named `op`."""
    op: str
    fn: object
    inputs: list
    id: str = ""
    tol: dict = field(default_factory=dict)  # extra gradcheck tolerances, e.g. {"atol": 1e-5}

    def check(self):
        assert minivae.gradcheck(self.fn, self.inputs, **self.tol)

    def __str__(self):
        return f"{self.op}-{self.id}" if self.id else self.op


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def away_from_zero(*shape, seed=0, margin=0.1):
    """Normal numbers with |x| >= margin, so ReLU-like kinks sit outside the finite-difference step."""
    x = randn(*shape, seed=seed)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin, x)
