"""The Numba CPU kernels (minivae/cpu_kernels.py) give exactly the arrays of the NumPy reference
in functional/im2col.py: im2col copies, and col2im adds in the same order, so equal bits."""
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from minivae import Tensor, cpu_kernels, nn, optim, threads
from minivae import functional as F
from minivae.functional.activations import Fused
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


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"{n} threads")
def thread_count(request, monkeypatch):
    """Run the test with the work split into 1, 2 and 3 parts (minivae/threads.py), from 1,024
    elements up so that the test's arrays are split too."""
    previous = threads.count()
    threads.set_count(request.param)
    monkeypatch.setattr(threads, "MIN_PIECE", 1024)
    yield request.param
    threads.set_count(previous)


@pytest.mark.parametrize("col2im_walk", ["offset by offset", "pixel by pixel"])
@pytest.mark.parametrize("layout", ["NCHW", "CHWN view"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_im2col_and_col2im_equal_the_numpy_reference(case, layout, col2im_walk, thread_count, monkeypatch):
    if col2im_walk == "pixel by pixel":  # the walk of large batches, here at every batch size
        monkeypatch.setattr(cpu_kernels, "COL2IM_GATHER_FROM", 1)
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


@pytest.mark.parametrize("col2im_walk", ["offset by offset", "pixel by pixel"])
@pytest.mark.parametrize("activation", [None, Fused(), Fused(0.3)], ids=["bias only", "relu", "leaky_relu 0.3"])
def test_col2im_adds_the_bias_and_applies_the_activation_as_numpy_does(activation, col2im_walk, thread_count,
                                                                       monkeypatch):
    """conv_transpose2d's output: col2im, + bias, then the activation, each channel as soon as it is
    summed, gives the bits of NumPy's passes one after the other."""
    if col2im_walk == "pixel by pixel":
        monkeypatch.setattr(cpu_kernels, "COL2IM_GATHER_FROM", 1)
    shape, kernel, stride, pads = CASES["same, stride 2 (odd pad after)"]
    rng = np.random.default_rng(1)
    cols = rng.standard_normal((shape[1] * kernel[0] * kernel[1], 4 * 4 * shape[0]), dtype=np.float32)
    bias = rng.standard_normal(shape[1], dtype=np.float32)
    reference, fast = reference_and_fast(col2im, cols, shape, kernel, stride, pads, bias, activation)
    assert np.array_equal(fast.view(np.uint32), reference.view(np.uint32))


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


def relu_value_and_grad(x, g):
    t = Tensor(x, requires_grad=True)
    y = F.relu(t)
    y.backward(g)
    return np.stack([y.data, t.grad])


@pytest.mark.parametrize("layout", ["NCHW", "CHWN view", "sliced (not one run of memory)",
                                    "gradient in CHWN, x in NCHW", "2-D, gradient transposed"])
@pytest.mark.parametrize("size", ["small", "large (split over the threads)"])
def test_relu_equals_the_numpy_reference(layout, size, thread_count):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 6) if size == "small" else (8, 16, 28, 28), dtype=np.float32)
    x.flat[:4] = [0.0, -0.0, np.nan, -np.inf]  # max(-0, 0) is -0 in NumPy; the mask is 0 at 0 and NaN
    g = rng.standard_normal(x.shape, dtype=np.float32)
    if layout == "CHWN view":
        x, g = (np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2) for a in (x, g))
    elif layout.startswith("sliced"):
        x, g = x[:, :, ::2], g[:, :, ::2]
    elif layout.startswith("gradient in CHWN"):  # the backward's 4-D loops in x's memory order
        g = np.ascontiguousarray(g.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    elif layout.startswith("2-D"):               # as a dense layer's input gradient can come back
        x, g = x.reshape(x.shape[0], -1), np.ascontiguousarray(g.reshape(g.shape[0], -1).T).T
    reference, fast = reference_and_fast(relu_value_and_grad, x, g)
    assert np.array_equal(fast.view(np.uint32), reference.view(np.uint32))


def optimizer_steps(name, shapes, steps=3):
    """Parameters after `steps` updates of optimizer `name` with fixed random gradients."""
    rng = np.random.default_rng(1)
    params = [nn.Parameter(rng.standard_normal(shape, dtype=np.float32)) for shape in shapes]
    opt = optim.make_optimizer(name, params, lr=0.01)
    for _ in range(steps):
        for p in params:
            p.grad = rng.standard_normal(p.data.shape, dtype=np.float32)
        opt.step()
    return np.concatenate([p.data.ravel() for p in params] + [s.ravel() for k in opt.state_names
                                                                for s in opt.state[k]])


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_optimizer_updates_equal_the_numpy_reference(name, thread_count):
    shapes = [(3,), (64, 32, 3, 3), (12544, 32)]  # a bias, a kernel, a dense weight split over the threads
    reference, fast = reference_and_fast(optimizer_steps, name, shapes)
    assert np.array_equal(fast.view(np.uint32), reference.view(np.uint32))


def test_other_dtypes_take_the_numpy_path():
    assert cpu_kernels.use_for(np.zeros(2, np.float32)) == cpu_kernels.settings["enabled"]
    assert not cpu_kernels.use_for(np.zeros(2, np.float64))


def test_without_numba_the_numpy_path_runs():
    code = ("import sys; sys.modules['numba'] = None\n"
            "import numpy as np, minivae\n"
            "from minivae import cpu_kernels, functional as F\n"
            "assert cpu_kernels.describe() == 'numpy'\n"
            "y = F.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32), padding=1)\n"
            "assert y.data[0, 0, 1, 1] == 9\n"
            "from minivae import threads\n"
            "assert threads.count() == 1  # no pool without Numba: its threads wait in Numba loops\n"
            "done = []; threads.run(done.append, 3); assert done == [0, 1, 2]  # parts one by one\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_threads_asking_at_once_each_find_every_kernel(monkeypatch):
    """The first use may come from several of the pool's threads at once (an activation run on
    each part of a product): none may go on while another is still putting the kernels in place
    (each made slow here, so that the others ask in the middle of it)."""
    monkeypatch.setattr(cpu_kernels, "_compiled", {})   # as in a new process
    jit = cpu_kernels.jit
    monkeypatch.setattr(cpu_kernels, "jit", lambda kernel: (time.sleep(0.01), jit(kernel))[1])
    found = []

    def ask(delay):
        time.sleep(delay)
        found.append(cpu_kernels.available() and "activation_grad_flat" in cpu_kernels._compiled)
    askers = [threading.Thread(target=ask, args=(delay,)) for delay in (0, 0.03, 0.05, 0.07)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    assert found == [True] * 4


def sums_in_lanes(rows):
    """The order cpu_kernels.sum_rows adds a row's numbers in, in NumPy: number j of each whole
    group of SUM_LANES into running sum j % SUM_LANES (a sum down axis 1 of (C, groups, lanes) adds
    one group after another), those added up in order, then the numbers after the last group."""
    lanes = cpu_kernels.SUM_LANES
    whole = rows.shape[1] - rows.shape[1] % lanes
    running = np.add.reduce(rows[:, :whole].reshape(rows.shape[0], -1, lanes), axis=1)
    totals = running[:, 0].copy()
    for k in range(1, lanes):
        totals += running[:, k]
    for j in range(whole, rows.shape[1]):
        totals += rows[:, j]
    return totals


def sums_in_fours(rows):
    """The short rows' order (cpu_kernels._sum_short_rows): number j into running sum j % 4,
    then (s0 + s1) + (s2 + s3)."""
    running = [np.zeros(rows.shape[0], np.float32) for _ in range(4)]
    whole = rows.shape[1] - rows.shape[1] % 4
    for j in range(rows.shape[1]):
        running[j % 4 if j < whole else 0] += rows[:, j]
    return (running[0] + running[1]) + (running[2] + running[3])


@pytest.mark.parametrize("length", [16, 50, 64 * 7, 64 * 7 + 13], ids=["a dense layer's batch", "shorter than the lanes",
                                                                        "whole groups", "whole groups and a tail"])
@pytest.mark.parametrize("negative_slope", [None, 0.2], ids=["relu", "leaky_relu"])
def test_row_sums_and_the_fused_activation_gradient_add_in_lanes(length, negative_slope, thread_count, monkeypatch):
    """Rows of SUM_LANES numbers or more in SUM_LANES running sums, shorter ones (a dense layer's,
    a number per image) in 4; the same order fused with the activation's gradient or not."""
    assert cpu_kernels.available()
    monkeypatch.setattr(threads, "MIN_PIECE", 1)  # a row per piece: these few rows are split too
    rng = np.random.default_rng(0)
    g = rng.standard_normal((5, length), dtype=np.float32) * np.float32(1000)   # large: rounding shows
    y = np.maximum(rng.standard_normal((5, length), dtype=np.float32), 0 if negative_slope is None else -1)
    y[0, :3] = [0.0, np.nan, -0.0]
    sums, out, fused_sums = np.empty(5, np.float32), np.empty_like(g), np.empty(5, np.float32)
    cpu_kernels.row_sums(g, sums)
    cpu_kernels.activation_grad_rows(g, y, out, fused_sums, negative_slope)
    order = sums_in_lanes if length >= cpu_kernels.SUM_LANES else sums_in_fours
    assert np.array_equal(sums.view(np.uint32), order(g).view(np.uint32))
    assert np.array_equal(out.view(np.uint32), Fused(negative_slope).backward(g, y).view(np.uint32))
    assert np.array_equal(fused_sums.view(np.uint32), order(out).view(np.uint32))
    np.testing.assert_allclose(fused_sums, out.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("col2im_walk", ["offset by offset", "pixel by pixel"])
@pytest.mark.parametrize("activation", [None, Fused(), Fused(0.3)], ids=["bias only", "relu", "leaky_relu 0.3"])
def test_col2im_of_a_product_made_by_channel_groups_equals_col2im_of_the_whole_product(activation, col2im_walk,
                                                                                      thread_count, monkeypatch):
    """col2im(Wᵀ @ X) (conv_transpose2d's output, a stride-2 conv2d's dL/dx), its rows of the product
    made two channels at a time and added back while in the cache: the same bits as the whole
    product followed by col2im. Five channels: the last group has one."""
    if col2im_walk == "pixel by pixel":
        monkeypatch.setattr(cpu_kernels, "COL2IM_GATHER_FROM", 1)
    monkeypatch.setattr(cpu_kernels, "COL2IM_GROUP", 2)
    shape, kernel, stride, pads = CASES["same, stride 2 (odd pad after)"]
    (n, c, h, w), (top, bottom, left, right) = shape, pads
    out_hw = (4, 4)
    rng = np.random.default_rng(2)
    w_t = rng.standard_normal((6, c * 9), dtype=np.float32).T         # Wᵀ as the layers pass it: a view
    x = rng.standard_normal((6, out_hw[0] * out_hw[1] * n), dtype=np.float32)
    bias = rng.standard_normal(c, dtype=np.float32)
    with threads.one_blas_thread():
        whole = w_t @ x
    expected = col2im(whole, shape, kernel, stride, pads, bias, activation)
    out = np.full((c, h, w, n), np.nan, np.float32)
    cpu_kernels.col2im_product(w_t, x, out, kernel, out_hw, stride, top, left, bias, activation)
    assert np.array_equal(out.transpose(3, 0, 1, 2).view(np.uint32), np.array(expected).view(np.uint32))


@pytest.mark.parametrize("op", ["conv_transpose2d forward", "conv2d dL/dx"])
def test_the_layers_take_col2im_by_channel_groups_with_the_same_bits(op, thread_count, monkeypatch):
    """Where col2im_product pays (here: made to pay at these small sizes, on two threads or more),
    conv_transpose2d and a stride-2 conv2d's backward pass give the bits they give without it."""
    monkeypatch.setattr(cpu_kernels, "COL2IM_GROUP", 2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 7, 9, 8) if op == "conv2d dL/dx" else (4, 6, 5, 4), dtype=np.float32)
    w = rng.standard_normal((6, 7, 3, 3), dtype=np.float32)
    b = rng.standard_normal(6 if op == "conv2d dL/dx" else 7, dtype=np.float32)

    def run():
        t = Tensor(x, requires_grad=True)
        if op == "conv2d dL/dx":
            y = F.conv2d(t, w, b, stride=2, padding="same")
            y.backward(np.ones(y.shape, np.float32))
            return t.grad
        return F.conv_transpose2d(t, w, b, stride=2, padding="same", activation=Fused(0.2)).data

    monkeypatch.setattr(cpu_kernels, "COL2IM_GROUP_BYTES", 0)       # never pays: the whole product
    whole = np.array(run())
    monkeypatch.setattr(cpu_kernels, "COL2IM_GROUP_BYTES", 1 << 30)  # always pays: groups of 2 channels
    calls = []
    by_groups = cpu_kernels.col2im_product
    monkeypatch.setattr(cpu_kernels, "col2im_product", lambda *args: calls.append(1) or by_groups(*args))
    assert np.array_equal(np.array(run()), whole)
    assert calls == ([1] if thread_count > 1 else [])
