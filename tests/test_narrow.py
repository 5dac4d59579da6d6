"""The dense layer with a narrow input (minivae/functional/narrow.py: a decoder's first layer, the
2-D latent in) computes what linear's matrix products compute, which stay the reference: the same
numbers to rounding, forward and backward, for 1-4 features in, with and without a bias and a
fused activation; the slope read off y at ±0, ±inf and NaN as the activations read it; the same
bits of y, dw and db on any thread count; and it is taken exactly where it should be."""
import numpy as np
import pytest
from helpers import assert_close_to_reference, assert_same_bits, grads_with_path, on_one_thread_and_on, randn

import minivae
from minivae import functional as F
from minivae import threads
from minivae.functional import narrow
from minivae.functional.activations import Fused
from minivae.models import PRESETS
from minivae.tensor import Tensor

pytest.importorskip("numba")
BATCH = 32   # two vectors of 16 floats, or four of 8
ACTIVATIONS = {"none": None, "relu": Fused(), "leaky_relu 0.3": Fused(0.3)}


def arrays(k, width, batch=BATCH):
    return [randn(batch, k, seed=1).astype(np.float32), randn(k, width, seed=2).astype(np.float32),
            randn(width, seed=3).astype(np.float32)]


def run(xwb, g, on, activation=None):
    """y, dL/dx, dL/dw, dL/db of F.linear for dL/dy = g, the narrow path on or off."""
    return grads_with_path(narrow.settings, on, F.linear, xwb, {"activation": activation}, g)


@pytest.mark.parametrize("activation", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_narrow_gives_the_numbers_of_the_products(k, activation, monkeypatch):
    xwb = arrays(k, 70)
    g = randn(BATCH, 70, seed=4).astype(np.float32)
    calls = []
    monkeypatch.setattr(narrow, "backward", lambda *a, _f=narrow.backward, **kw: calls.append(1) or _f(*a, **kw))
    fast = run(xwb, g, True, activation)
    assert calls, "the narrow path was not taken"
    assert_close_to_reference(["y", "dL/dx", "dL/dw", "dL/db"], fast, run(xwb, g, False, activation), np.float32)


def test_without_a_bias_and_with_what_needs_no_gradient():
    x, w, _ = arrays(2, 40)
    g = randn(BATCH, 40, seed=4).astype(np.float32)
    results = []
    for on in (True, False):
        with_grad = Tensor(w, requires_grad=True)
        narrow.settings["enabled"] = on
        try:
            y = F.linear(Tensor(x), with_grad, None, activation=Fused())
            y.backward(g)
        finally:
            narrow.settings["enabled"] = True
        results.append([y.data, with_grad.grad])
    assert_close_to_reference(["y", "dL/dw"], *results, np.float32)


@pytest.mark.parametrize("negative_slope", [None, 0.3])
def test_the_slope_is_read_off_y_as_the_activations_read_it(negative_slope):
    """Each row of g has one number: db[f] is then g times the slope at that y, exactly."""
    y_values = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 2.0, -3.0], np.float32)
    lanes = narrow._lanes()
    y = np.ones((y_values.size, lanes), np.float32)
    g = np.zeros_like(y)
    y[:, 3], g[:, 3] = y_values, np.arange(1, y_values.size + 1, dtype=np.float32)
    w = np.ones((1, y_values.size), np.float32)
    _, _, db = narrow.backward(g, y, np.ones((lanes, 1), np.float32), w, Fused(negative_slope))
    np.testing.assert_array_equal(db, Fused(negative_slope).backward(g, y)[:, 3])


@pytest.mark.parametrize("count", [2, 3])
def test_the_bits_of_y_dw_and_db_do_not_depend_on_the_thread_count(count, monkeypatch):
    xwb = arrays(2, 300)
    g = randn(BATCH, 300, seed=4).astype(np.float32)

    def split_more():
        monkeypatch.setattr(threads, "MIN_PIECE", 64)     # these small arrays split too
    alone, split = on_one_thread_and_on(count, lambda: run(xwb, g, True, Fused(0.3)), split_more)
    assert_same_bits([alone[0], alone[2], alone[3]], [split[0], split[2], split[3]])
    assert_close_to_reference(["dL/dx"], [split[1]], [alone[1]], np.float32)   # summed in the threads' parts


def test_the_forward_sums_as_a_product_does():
    """One multiply, then fused multiply-adds in k order, then the bias: within 3 roundings of the
    exact sum in float64, and the same numbers every time."""
    x, w, b = arrays(3, 50)
    ours = narrow.forward(x, w, b)
    exact = w.T.astype(np.float64) @ x.T.astype(np.float64) + b[:, None]
    bound = 3 * np.finfo(np.float32).eps * (np.abs(w.T).astype(np.float64) @ np.abs(x.T) + np.abs(b)[:, None])
    assert np.all(np.abs(ours - exact) <= bound)
    assert np.array_equal(ours, narrow.forward(x, w, b))


def test_a_training_step_of_a_model_with_a_2d_latent(keep_global_rng_state):
    """Chollet's model at batch 16: its decoder input takes the path, with dL/dy arriving laid out
    as y (from the reshape behind it); the loss and every gradient as on the reference path."""
    x = Tensor(np.random.default_rng(1).random((16, 1, 28, 28), dtype=np.float32))
    results = []
    for on in (True, False):
        narrow.settings["enabled"] = on
        try:
            minivae.manual_seed(0)
            net = PRESETS["chollet"].build()
            loss = PRESETS["chollet"].loss(x, *net(x))[0]
            loss.backward()
        finally:
            narrow.settings["enabled"] = True
        results.append([loss.data] + [p.grad for p in net.parameters()])
    for ours, theirs in zip(*results):
        assert np.abs(ours - theirs).max() <= 1e-4 * max(np.abs(theirs).max(), 1e-30)


def test_which_layers_take_the_path():
    x, w = randn(BATCH, 2).astype(np.float32), randn(2, 10).astype(np.float32)
    assert narrow.suits(x, w)
    assert not narrow.suits(x.astype(np.float64), w.astype(np.float64))          # float32 only
    assert not narrow.suits(x[:BATCH - 4], w)                                      # the batch in whole vectors
    assert not narrow.suits(randn(BATCH, 5).astype(np.float32),
                            randn(5, 10).astype(np.float32))                       # at most MAX_IN features in
    assert not narrow.suits(x, np.asfortranarray(w))                               # w as a parameter is laid out
    narrow.settings["enabled"] = False
    try:
        assert not narrow.suits(x, w)
    finally:
        narrow.settings["enabled"] = True
