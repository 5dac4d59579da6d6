"""The Numba CPU kernels (minivae/cpu_kernels.py) give exactly the arrays of the NumPy reference
in functional/im2col.py: im2col copies, and col2im adds in the same order, so equal bits."""
import subprocess
import sys

import numpy as np
import pytest

from minivae import Tensor, cpu_kernels
from minivae import functional as F
from minivae.functional.im2col import col2im, im2col

pytest.importorskip("numba")

CASES = {  # (N, C, H, W), kernel, stride, (top, bottom, left, right)
    "valid": ((3, 2, 7, 6), (3, 3), (1, 1), (0, 0, 0, 0)),
    "same, stride 1": ((4, 3, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1)),
    "same, stride 2 (odd pad after)": ((2, 5, 9, 8), (3, 3), (2, 2), (0, 1, 0, 1)),
    "wide pads, 2x4 kernel": ((2, 2, 5, 6), (2, 4), (1, 3), (2, 1, 3, 0)),
    "one channel": ((5, 1, 6, 6), (3, 3), (1, 1), (1, 1, 1, 1)),
}


def reference_and_fast(fn, *args):
    previous = cpu_kernels.settings["enabled"]
    try:
        cpu_kernels.settings["enabled"] = False
        reference = np.array(fn(*args))
        cpu_kernels.settings["enabled"] = True
        fast = np.array(fn(*args))
    finally:
        cpu_kernels.settings["enabled"] = previous
    return reference, fast


@pytest.mark.parametrize("layout", ["NCHW", "CHWN view"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_im2col_and_col2im_equal_the_numpy_reference(case, layout):
    shape, kernel, stride, pads = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    if layout == "CHWN view":  # how the convolutions hand on their outputs
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    reference, fast = reference_and_fast(im2col, x, kernel, stride, pads)
    assert np.array_equal(fast, reference)
    cols = rng.standard_normal(reference.shape, dtype=np.float32)
    reference, fast = reference_and_fast(col2im, cols, shape, kernel, stride, pads)
    assert np.array_equal(fast, reference)  # the same sums in the same order


def leaky_relu_value_and_grad(x, g):
    t = Tensor(x, requires_grad=True)
    y = F.leaky_relu(t, 0.3)
    y.backward(g)
    return np.stack([y.data, t.grad])


@pytest.mark.parametrize("layout", ["NCHW", "CHWN view", "sliced (not one run of memory)"])
def test_leaky_relu_equals_the_numpy_reference(layout):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 6), dtype=np.float32)
    x.flat[:4] = [0.0, -0.0, np.nan, -np.inf]  # the slope's edge cases: x = ±0 gets a, NaN gets 0
    g = rng.standard_normal(x.shape, dtype=np.float32)
    if layout == "CHWN view":
        x, g = (np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2) for a in (x, g))
    elif layout.startswith("sliced"):
        x, g = x[:, :, ::2], g[:, :, ::2]
    reference, fast = reference_and_fast(leaky_relu_value_and_grad, x, g)
    assert np.array_equal(fast.view(np.uint32), reference.view(np.uint32))  # bit for bit, signed zeros too


def test_other_dtypes_take_the_numpy_path():
    assert cpu_kernels.use_for(np.zeros(2, np.float32)) == cpu_kernels.settings["enabled"]
    assert not cpu_kernels.use_for(np.zeros(2, np.float64))


def test_without_numba_the_numpy_path_runs():
    code = ("import sys; sys.modules['numba'] = None\n"
            "import numpy as np, minivae\n"
            "from minivae import cpu_kernels, functional as F\n"
            "assert cpu_kernels.describe() == 'numpy'\n"
            "y = F.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32), padding=1)\n"
            "assert y.data[0, 0, 1, 1] == 9\n")
    subprocess.run([sys.executable, "-c", code], check=True)
