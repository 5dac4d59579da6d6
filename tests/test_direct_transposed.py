"""The direct transposed convolution (minivae/functional/direct_transposed.py) computes what conv.py's
col2im(Wᵀ @ X) computes, which stays the reference, without the product in memory: a transposed
convolution's output and a strided conv2d's dL/dx. The same numbers to rounding, through the layers
and for the kernel alone; the same bits on any thread count and however X is cut into stripes;
the output's rows zeroed and finished (bias, activation) exactly once; taken exactly where it should be."""
import numpy as np
import pytest
from helpers import (assert_close_to_reference, assert_same_bits, conv_arrays, grads_with_path,
                     on_one_thread_and_on, path_switched, randn)

from minivae import functional as F
from minivae import threads
from minivae.functional import direct, direct_transposed, im2col
from minivae.functional.activations import Fused
from minivae.tensor import Tensor

pytest.importorskip("numba")
BATCH = 16   # a multiple of the vector width on every CPU (8 or 16 floats)


@pytest.fixture(autouse=True)
def dirty_memory(monkeypatch):
    """The kernels compiled, and every array the path takes from the workspace filled with NaN
    first: an output row it forgot to zero would show."""
    assert direct_transposed._compile()
    monkeypatch.setattr(direct_transposed.workspace, "empty",
                        lambda shape, dtype, xp=np: np.full(shape, np.nan, dtype))


LAYERS = {  # name: (op, x shape, w shape, keyword arguments)
    "transposed, stride 2, same": (F.conv_transpose2d, (BATCH, 8, 4, 4), (8, 8, 3, 3),
                                   {"stride": 2, "padding": "same"}),
    "transposed, stride 2, padding 1, output_padding 1": (F.conv_transpose2d, (BATCH, 8, 4, 5), (8, 16, 3, 3),
                                                          {"stride": 2, "padding": 1, "output_padding": 1}),
    "transposed, stride 3: taps that do not overlap": (F.conv_transpose2d, (BATCH, 8, 3, 4), (8, 8, 3, 3),
                                                       {"stride": 3}),
    "transposed, stride 1, narrowing, 5 runs a row (a block of one run)": (F.conv_transpose2d, (BATCH, 16, 5, 5),
                                                                           (16, 8, 3, 3), {"padding": 1}),
    "transposed, one channel out (a last layer)": (F.conv_transpose2d, (BATCH, 8, 5, 6), (8, 1, 3, 3), {"padding": 1}),
    "conv2d narrowing 16 -> 8 (the turned kernel's transposed convolution)": (F.conv2d, (BATCH, 16, 5, 5),
                                                                              (8, 16, 3, 3), {"padding": 1}),
    "conv2d, stride 2, same (its dL/dx)": (F.conv2d, (BATCH, 8, 8, 7), (8, 8, 3, 3),
                                           {"stride": 2, "padding": "same"}),
}
ACTIVATIONS = {"none": None, "relu": Fused(), "leaky_relu 0.3": Fused(0.3)}


def calls_recorded(monkeypatch):
    calls = []
    monkeypatch.setattr(direct_transposed, "scatter",
                        lambda *a, _f=direct_transposed.scatter: calls.append(1) or _f(*a))
    return calls


@pytest.mark.parametrize("stripe_bytes", [1, direct_transposed.STRIPE_BYTES], ids=["stripes of one row", "one stripe"])
@pytest.mark.parametrize("activation", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
def test_the_path_gives_the_numbers_of_col2im_of_the_product(layer, activation, stripe_bytes, monkeypatch):
    op, x_shape, w_shape, kwargs = layer
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    kwargs = dict(kwargs, activation=activation)
    g = randn(*op(*arrays, **kwargs).shape, seed=4).astype(np.float32)
    monkeypatch.setattr(direct_transposed, "STRIPE_BYTES", stripe_bytes)
    calls = calls_recorded(monkeypatch)
    fast = grads_with_path(direct.settings, True, op, arrays, kwargs, g)
    assert calls, "the path was not taken"
    assert_close_to_reference(["y", "dL/dx", "dL/dw", "dL/db"], fast,
                              grads_with_path(direct.settings, False, op, arrays, kwargs, g), np.float32)


def exact_and_bound(x_mat, w, shape, stride, pads):
    """col2im(Wᵀ @ X) in float64, and how far float32 may stray from it: each number a sum of
    C_in·(terms landing on its pixel) products, each within that many roundings."""
    w_mat = w.reshape(w.shape[0], -1).astype(np.float64)
    exact = im2col.col2im(w_mat.T @ x_mat.astype(np.float64), shape, w.shape[2:], stride, pads)
    magnitude = im2col.col2im(np.abs(w_mat.T) @ np.abs(x_mat.astype(np.float64)), shape, w.shape[2:], stride, pads)
    return exact, (w.shape[0] + 9) * np.finfo(np.float32).eps * magnitude


@pytest.mark.parametrize("stride, pads, in_hw, out_hw", [((2, 2), (0, 1, 0, 1), (5, 4), (10, 8)),
                                                          ((1, 1), (1, 1, 1, 1), (5, 3), (5, 3)),
                                                          ((2, 3), (1, 0, 2, 1), (4, 3), (8, 7))])
def test_each_output_is_its_sums_within_float32_rounding(stride, pads, in_hw, out_hw):
    rng = np.random.default_rng(7)
    x_mat = rng.standard_normal((8, in_hw[0] * in_hw[1] * BATCH), dtype=np.float32)
    w = rng.standard_normal((8, 16, 3, 3), dtype=np.float32)
    shape = (BATCH, 16) + out_hw
    assert direct_transposed.suits(x_mat, w, BATCH)
    ours = direct_transposed.scatter(x_mat, w, shape, stride, pads)
    exact, bound = exact_and_bound(x_mat, w, shape, stride, pads)
    assert ours.shape == shape
    assert np.all(np.abs(ours - exact) <= bound)


def test_each_pixel_takes_its_terms_in_the_order_col2im_adds_them():
    """At stride 2 an output pixel can take the terms of taps (0, 0), (0, 2), (2, 0), (2, 2), from
    four input pixels. Made 2²⁴, 1, -2²⁴ and 0 (X all ones, one channel of W nonzero: every product
    exact), added in (i, j) order they give (2²⁴ + 1 -> 2²⁴) - 2²⁴ + 0 = 0; in the reverse order 1.
    The path adds them as col2im does, so its bits are those of col2im(Wᵀ @ X) wherever the
    product's sums are those of the path's (as OpenBLAS's are: the sums over k in order)."""
    x_mat = np.ones((8, 3 * 3 * BATCH), np.float32)
    w = np.zeros((8, 8, 3, 3), np.float32)
    w[0, :, 0, 0], w[0, :, 0, 2], w[0, :, 2, 0] = 2.0 ** 24, 1, -2.0 ** 24
    shape = (BATCH, 8, 6, 6)
    ours = direct_transposed.scatter(x_mat, w, shape, (2, 2), (0, 1, 0, 1))
    in_order = im2col.col2im(w.reshape(8, -1).T @ x_mat, shape, (3, 3), (2, 2), (0, 1, 0, 1))
    assert in_order[:, :, 2, 2].max() == 0 and np.array_equal(ours, in_order)


@pytest.mark.parametrize("count", [2, 3])
def test_the_bits_do_not_depend_on_the_thread_count(count, monkeypatch):
    op, x_shape, w_shape, kwargs = LAYERS["transposed, stride 2, padding 1, output_padding 1"]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    kwargs = dict(kwargs, activation=Fused(0.3))
    g = randn(*op(*arrays, **kwargs).shape, seed=4).astype(np.float32)
    monkeypatch.setattr(threads, "MIN_SPLIT_FLOPS", 1)
    assert_same_bits(*on_one_thread_and_on(count, lambda: grads_with_path(direct.settings, True, op, arrays,
                                                                           kwargs, g)))


def test_stripes_and_the_prefetch_change_no_bit(monkeypatch):
    """However X is cut into stripes of rows (each stripe's output rows zeroed when first reached and
    finished when complete), and whether each block prefetches the next one's runs or not: the
    same bits, with the bias and the activation."""
    x, w, b = conv_arrays(F.conv_transpose2d, (BATCH, 8, 7, 5), (8, 16, 3, 3), np.float32)
    x_mat = im2col.to_chwn(x)
    made = []
    for stripe_bytes, ahead in [(1 << 30, 0), (1, 2), (3 * 8 * 5 * BATCH * 4, 2), (1 << 30, 2)]:
        monkeypatch.setattr(direct_transposed, "STRIPE_BYTES", stripe_bytes)   # 1 row, 3 rows, all 7
        monkeypatch.setattr(direct_transposed, "FETCH_AHEAD", ahead)
        made.append(np.array(direct_transposed.scatter(x_mat, w, (BATCH, 16, 14, 10), (2, 2), (0, 1, 0, 1),
                                                       b, Fused(0.3))))
    assert_same_bits(made[:1] * 3, made[1:])


@pytest.mark.parametrize("activation", [Fused(), Fused(0.3)], ids=["relu", "leaky_relu 0.3"])
def test_the_fused_activation_gives_the_bits_of_the_two_ops(activation, monkeypatch):
    op, x_shape, w_shape, kwargs = LAYERS["transposed, stride 2, same"]
    x, w, b = (Tensor(a) for a in conv_arrays(op, x_shape, w_shape, np.float32))
    monkeypatch.setattr(direct_transposed, "STRIPE_BYTES", 1)
    separate = (lambda y: F.relu(y)) if activation.negative_slope is None else \
        (lambda y: F.leaky_relu(y, activation.negative_slope))
    calls = calls_recorded(monkeypatch)
    assert_same_bits([op(x, w, b, activation=activation, **kwargs).data], [separate(op(x, w, b, **kwargs)).data])
    assert len(calls) == 2


def test_which_products_take_the_path():
    x_mat, w = randn(8, 4 * BATCH).astype(np.float32), randn(8, 16, 3, 3).astype(np.float32)
    assert direct_transposed.suits(x_mat, w, BATCH)
    assert direct_transposed.suits(x_mat, w, BATCH, bias=np.zeros(16, np.float32))
    assert not direct_transposed.suits(x_mat, w, BATCH, bias=np.zeros(16))                 # float32 only
    assert not direct_transposed.suits(x_mat.astype(np.float64), w.astype(np.float64), BATCH)
    assert not direct_transposed.suits(x_mat, w, 12)                     # the batch in whole vectors
    assert not direct_transposed.suits(x_mat[:4], w[:4], BATCH)          # at least 8 channels in
    assert direct_transposed.suits(x_mat, w[:, :1], BATCH)               # and any number out
    assert not direct_transposed.suits(x_mat, w[:, :, :2], BATCH)        # a 3×3 kernel
    assert not direct_transposed.suits(np.asfortranarray(x_mat), w, BATCH)
    with path_switched(direct.settings, False):                          # MINIVAE_DIRECT=never
        assert not direct_transposed.suits(x_mat, w, BATCH)
