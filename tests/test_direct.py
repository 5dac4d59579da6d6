"""The direct convolution (minivae/functional/direct.py) computes what im2col's path computes, which
stays the reference: W @ cols and dY @ colsᵀ with the columns read from the padded input itself.
The same numbers to rounding, forward and backward, for conv2d and conv_transpose2d (whose
backward is a convolution), with and without bias and fused activation; the same bits on any thread
count; and it is taken exactly where it should be."""
import numpy as np
import pytest
from helpers import (assert_close_to_reference, assert_same_bits, conv_arrays, grads_with_path,
                     on_one_thread_and_on, path_switched, randn)

from minivae import functional as F
from minivae import threads
from minivae.functional import direct, im2col
from minivae.functional._common import bias_grad
from minivae.functional.activations import Fused
from minivae.tensor import Tensor

pytest.importorskip("numba")
BATCH = 16   # a multiple of the vector width on every CPU (8 or 16 floats)


@pytest.fixture(autouse=True)
def compiled():
    """The kernels, for the tests that call the path's functions themselves (each test alone too)."""
    assert direct._compile()


def run(op, arrays, kwargs, g, on):
    """y, dL/dx, dL/dw, dL/db of op(x, w, b, **kwargs) for dL/dy = g, with the direct path on or off."""
    return grads_with_path(direct.settings, on, op, arrays, kwargs, g)


LAYERS = {  # name: (op, x shape, w shape, keyword arguments); fewer than 16 channels: not Winograd's
    "stride 2, same (padding below and right only)": (F.conv2d, (BATCH, 4, 8, 8), (8, 4, 3, 3),
                                                       {"stride": 2, "padding": "same"}),
    "stride 1, valid": (F.conv2d, (BATCH, 6, 6, 5), (8, 6, 3, 3), {}),
    "padding 2, an odd number of runs": (F.conv2d, (BATCH, 2, 3, 5), (16, 2, 3, 3), {"padding": 2}),
    "a 2×3 kernel, stride (2, 1)": (F.conv2d, (BATCH, 3, 7, 6), (8, 3, 2, 3), {"stride": (2, 1), "padding": 1}),
    "3 channels in: 27 k's, a last block of 3": (F.conv2d, (2 * BATCH, 3, 5, 5), (8, 3, 3, 3), {"padding": 1}),
    "a 1×1 image, one run": (F.conv2d, (BATCH, 3, 1, 1), (8, 3, 3, 3), {"padding": 1}),
    # 12 × 11 pixels, 132 runs: the weight gradient's tiles of RUN_TILE (64) runs and a short last one
    "tiles of runs": (F.conv2d, (BATCH, 3, 12, 11), (8, 3, 3, 3), {"padding": 1}),
    "transposed, stride 2 (its backward)": (F.conv_transpose2d, (BATCH, 8, 4, 4), (8, 4, 3, 3),
                                            {"stride": 2, "padding": "same"}),
}
ACTIVATIONS = {"none": None, "relu": Fused(), "leaky_relu 0.3": Fused(0.3)}


@pytest.mark.parametrize("activation", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
def test_direct_gives_the_numbers_of_im2col(layer, activation, monkeypatch):
    op, x_shape, w_shape, kwargs = layer
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    kwargs = dict(kwargs, activation=activation)
    g = randn(*op(*arrays, **kwargs).shape, seed=4).astype(np.float32)
    calls = []
    monkeypatch.setattr(direct, "weight_grad", lambda *a, _f=direct.weight_grad: calls.append(1) or _f(*a))
    fast = run(op, arrays, kwargs, g, True)
    assert calls, "the direct path was not taken"
    assert_close_to_reference(["y", "dL/dx", "dL/dw", "dL/db"], fast, run(op, arrays, kwargs, g, False), np.float32)


@pytest.mark.parametrize("layer", ["stride 2, same (padding below and right only)",
                                   "transposed, stride 2 (its backward)"])
def test_on_one_thread_too(layer, monkeypatch):
    """The forward pass (for a transposed convolution: its dL/dx, a convolution of dY) and the
    weight gradient read x in place on one thread as on more: the numbers of the path without it."""
    op, x_shape, w_shape, kwargs = LAYERS[layer]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = randn(*op(*arrays, **kwargs).shape, seed=4).astype(np.float32)
    calls = []
    for name in ("correlate", "weight_grad"):
        monkeypatch.setattr(direct, name, lambda *a, _f=getattr(direct, name), _n=name: calls.append(_n) or _f(*a))
    previous = threads.count()
    try:
        threads.set_count(1)
        fast = run(op, arrays, kwargs, g, True)
    finally:
        threads.set_count(previous)
    assert sorted(calls) == ["correlate", "weight_grad"]
    assert_close_to_reference(["y", "dL/dx", "dL/dw", "dL/db"], fast, run(op, arrays, kwargs, g, False), np.float32)


def test_the_forward_sums_each_output_in_k_order_as_a_product_does():
    """W @ cols with cols made by im2col, in float64 then rounded, against the direct path: each
    output is a sum of K terms in float32, so within K roundings of the exact sum."""
    x, w, b = conv_arrays(F.conv2d, (BATCH, 5, 9, 9), (8, 5, 3, 3), np.float32)
    patches = direct.Patches(x, (3, 3), (2, 2), (1, 1, 1, 1))
    ours = direct.correlate(patches, w)
    cols = im2col.im2col(x.astype(np.float64), (3, 3), (2, 2), (1, 1, 1, 1))
    exact = w.reshape(8, -1).astype(np.float64) @ cols
    bound = 45 * np.finfo(np.float32).eps * (np.abs(w.reshape(8, -1)).astype(np.float64) @ np.abs(cols))
    assert np.all(np.abs(ours - exact) <= bound)
    assert np.array_equal(ours, direct.correlate(patches, w))     # and the same numbers every time


def test_the_prefetch_changes_no_bit(monkeypatch):
    """The first block of output channels of each pair of runs also prefetches the runs
    FETCH_AHEAD on (the other blocks do not): the numbers are those made without it, bit for bit,
    with the bias and the activation too."""
    x, w, b = conv_arrays(F.conv2d, (BATCH, 5, 9, 9), (16, 5, 3, 3), np.float32)
    patches = direct.Patches(x, (3, 3), (1, 1), (1, 1, 1, 1))         # 81 runs, two blocks of 8 channels
    made = []
    for ahead in (0, direct.FETCH_AHEAD, 7):
        monkeypatch.setattr(direct, "FETCH_AHEAD", ahead)
        made.append(direct.correlate(patches, w, b, Fused(0.3)).copy())
    assert_same_bits(made[:1] * 2, made[1:])


def test_the_weight_gradient_is_the_product_with_the_patch_matrix():
    x, w, _ = conv_arrays(F.conv2d, (BATCH, 3, 14, 13), (8, 3, 3, 3), np.float32)
    patches = direct.Patches(x, (3, 3), (1, 2), (1, 0, 1, 1))            # 13 × 7 pixels: 91 runs, two tiles
    g = randn(8, patches.columns, seed=5).astype(np.float32)
    cols = im2col.im2col(x.astype(np.float64), (3, 3), (1, 2), (1, 0, 1, 1))
    exact = g.astype(np.float64) @ cols.T
    assert np.abs(direct.weight_grad(g, patches) - exact).max() <= 2e-6 * np.abs(exact).max()


def test_the_padded_input_is_x_inside_zeros():
    x = randn(BATCH, 3, 4, 5, seed=1).astype(np.float32)
    patches = direct.Patches(x, (3, 3), (1, 1), (2, 1, 0, 3))
    expected = np.pad(x.transpose(1, 2, 3, 0), ((0, 0), (2, 1), (0, 3), (0, 0)))
    assert np.array_equal(patches.x_pad, expected)


@pytest.mark.parametrize("layer", ["3 channels in: 27 k's, a last block of 3", "tiles of runs"])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_the_bits_do_not_depend_on_the_thread_count(count, layer, monkeypatch):
    op, x_shape, w_shape, kwargs = LAYERS[layer]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = randn(*op(*arrays, **kwargs).shape, seed=4).astype(np.float32)

    def split_more():
        monkeypatch.setattr(threads, "MIN_PIECE", 16)        # split the padding of these small arrays
        monkeypatch.setattr(threads, "MIN_SPLIT_FLOPS", 1)   # and the products
    assert_same_bits(*on_one_thread_and_on(count, lambda: run(op, arrays, kwargs, g, True), split_more))


@pytest.mark.parametrize("activation", [Fused(), Fused(0.3)], ids=["relu", "leaky_relu 0.3"])
def test_the_fused_activation_gives_the_bits_of_the_two_ops(activation):
    op, x_shape, w_shape, kwargs = LAYERS["stride 2, same (padding below and right only)"]
    x, w, b = (Tensor(a) for a in conv_arrays(op, x_shape, w_shape, np.float32))
    separate = (lambda y: F.relu(y)) if activation.negative_slope is None else \
        (lambda y: F.leaky_relu(y, activation.negative_slope))
    fused = F.conv2d(x, w, b, activation=activation, **kwargs).data
    assert_same_bits([fused], [separate(F.conv2d(x, w, b, **kwargs)).data])


def test_which_convolutions_take_the_path():
    x, w = randn(BATCH, 3, 5, 5).astype(np.float32), randn(8, 3, 3, 3).astype(np.float32)
    assert direct.suits(x, w)
    assert not direct.suits(x.astype(np.float64), w.astype(np.float64))   # float32 only
    assert not direct.suits(x[:12], w)                                     # the batch in whole vectors
    assert direct.suits(np.concatenate([x] * 8), w)                        # of any number (128)
    assert not direct.suits(x, w[:4])                                      # C_out in whole blocks of 8
    assert not direct.suits(x[:, :2], randn(8, 2, 2, 2).astype(np.float32))   # C_in·kH·kW = 8: no blocks of 3
    with path_switched(direct.settings, False):
        assert not direct.suits(x, w)


@pytest.mark.parametrize("ks", [64, 7, 5, 3, 1], ids=lambda k: f"{k} rows of B")
def test_the_planes_weight_gradient_is_a_times_b_transposed(ks):
    """products_t (Winograd's dM @ Vᵀ): out[p] = A_p @ B_pᵀ, the rows of B in blocks of 6, then 4,
    2 and 1 for what is left; each number within float32 roundings of the sum in float64."""
    planes, rows, length = 3, 8, 3 * 16
    rng = np.random.default_rng(5)
    a = rng.standard_normal((planes, rows * length + 5), dtype=np.float32)   # a plane's matrix, then more
    b = rng.standard_normal((planes, ks * length + 5), dtype=np.float32)
    out = np.full((planes, rows, ks), np.nan, np.float32)
    assert direct.products_t_suits(np.dtype(np.float32), rows, length)
    direct.products_t(a, b, length, out)
    a_mats = a[:, :rows * length].reshape(planes, rows, length).astype(np.float64)
    b_mats = b[:, :ks * length].reshape(planes, ks, length).astype(np.float64)
    exact = a_mats @ b_mats.transpose(0, 2, 1)
    bound = length * np.finfo(np.float32).eps * (np.abs(a_mats) @ np.abs(b_mats).transpose(0, 2, 1))
    assert np.all(np.abs(out - exact) <= bound)


@pytest.mark.parametrize("count", [2, 3])
def test_the_planes_weight_gradient_has_the_same_bits_on_any_thread_count(count, monkeypatch):
    rng = np.random.default_rng(6)
    a, b = (rng.standard_normal((5, 8 * 32), dtype=np.float32) for _ in range(2))

    def products():
        return direct.products_t(a, b, 32, np.empty((5, 8, 8), np.float32)).copy()
    def split_more():
        monkeypatch.setattr(threads, "MIN_SPLIT_FLOPS", 1)                  # these few planes split too
    assert_same_bits(*on_one_thread_and_on(count, lambda: [products()], split_more))


@pytest.mark.parametrize("activation", [Fused(), Fused(0.3)], ids=["relu", "leaky_relu 0.3"])
@pytest.mark.parametrize("pads", [(0, 1, 0, 1), (0, 0, 0, 0)], ids=["padded", "no padding"])
@pytest.mark.parametrize("with_sums", [True, False], ids=["with the bias sums", "without"])
def test_the_gradient_before_the_activation_is_made_in_the_padded_copy(activation, pads, with_sums):
    """Patches(dL/dy, before=(y, slope, sums)): the padded copy of dL/dy · slope(y), the numbers of
    the activation's own backward pass padded after it, bit for bit, and the bias gradient's sums
    those of bias_grad (cpu_kernels.sum_rows: each image row of 4·16 numbers, whole groups of 64)."""
    g, y = (im2col.from_chwn(randn(8, 5 * 4 * BATCH, seed=s).astype(np.float32), (BATCH, 8, 5, 4)) for s in (1, 2))
    y[..., 1, :] = np.maximum(y[..., 1, :], 0)                   # zeros and positives among them
    w = randn(8, 8, 3, 3).astype(np.float32)
    sums = np.full(8, np.nan, np.float32) if with_sums else None
    assert direct.gradient_suits(g, y, w, with_sums)
    fused = direct.Patches(g, (3, 3), (2, 2), pads, before=(y, activation.negative_slope, sums))
    before = activation.backward(g, y)
    assert_same_bits([fused.x_pad], [direct.Patches(before, (3, 3), (2, 2), pads).x_pad.copy()])
    if with_sums:
        assert_same_bits([sums], [bias_grad(before)])


def test_where_the_gradient_is_made_in_the_padded_copy():
    def made(width, seed):       # as the layers hand dL/dy and y on: views of CHWN memory
        return im2col.from_chwn(randn(8, 3 * width * BATCH, seed=seed).astype(np.float32), (BATCH, 8, 3, width))
    g, y, w = made(4, 1), made(4, 2), randn(8, 8, 3, 3).astype(np.float32)
    assert direct.gradient_suits(g, y, w, sums=False)
    assert direct.gradient_suits(g, y, w, sums=True)                             # image rows of 4·16 numbers
    assert not direct.gradient_suits(made(3, 1), made(3, 2), w, sums=True)       # of 3·16: not whole groups of 64
    assert direct.gradient_suits(made(3, 1), made(3, 2), w, sums=False)
    assert not direct.gradient_suits(np.ascontiguousarray(g), y, w, sums=False)  # g not laid out as CHWN
    assert not direct.gradient_suits(g, np.ascontiguousarray(y), w, sums=False)
    assert not direct.gradient_suits(g[:12], y[:12], w, sums=False)               # as suits: whole vectors


@pytest.mark.parametrize("activation", [Fused(), Fused(0.3)], ids=["relu", "leaky_relu 0.3"])
def test_a_transposed_layer_with_an_activation_gives_the_bits_of_the_separate_passes(activation, monkeypatch):
    """conv_transpose2d's backward with its activation's gradient made in the padded copy: the
    bits of the activation's own pass followed by the padded copy (gradient_suits off)."""
    op, x_shape, w_shape = F.conv_transpose2d, (BATCH, 8, 4, 8), (8, 8, 3, 3)    # 16·16 numbers a row: whole groups
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    kwargs = {"stride": 2, "padding": "same", "activation": activation}
    n, c, h, w = op(*arrays, **kwargs).shape
    g = im2col.from_chwn(randn(c, h * w * n, seed=4).astype(np.float32), (n, c, h, w))   # as the layers hand it on
    befores = []
    monkeypatch.setattr(direct, "_padded", lambda *a, _f=direct._padded: befores.append(a[5]) or _f(*a))
    fused = run(op, arrays, kwargs, g, True)
    assert [before is not None for before in befores] == [True]             # the backward's one padded copy
    monkeypatch.setattr(direct, "gradient_suits", lambda *a: False)
    assert_same_bits(fused, run(op, arrays, kwargs, g, True))
