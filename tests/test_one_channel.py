"""The first-layer convolution (minivae/functional/one_channel.py: one channel in, stride 1, x
needing no gradient) computes what im2col's path computes, which stays the reference: the same
numbers to rounding, forward and backward, with and without bias and fused activation; gradients
right by central differences; the same bits on any thread count. And it is taken exactly where it
should be. The same for the backward pass of a layer with one channel out, which takes this
module's kernels (dL/dx and dL/dw as well, against im2col's path and by central differences)."""
import numpy as np
import pytest
from helpers import (Case, assert_close_to_reference, assert_same_bits, conv_arrays, grads_with_path,
                     on_one_thread_and_on, path_switched, randn)

from minivae import functional as F
from minivae.functional import one_channel
from minivae.functional.activations import Fused
from minivae.tensor import Tensor

pytest.importorskip("numba")


def run(op, arrays, kwargs, g, on):
    """y, dL/dw, dL/db of op(x, w, b, **kwargs) for dL/dy = g, x needing no gradient, with the
    direct path on or off."""
    with path_switched(one_channel.settings, on):
        x = Tensor(arrays[0])
        w, b = (Tensor(a, requires_grad=True) for a in arrays[1:])
        y = op(x, w, b, **kwargs)
        y.backward(g)
        return [np.array(a) for a in (y.data, w.grad, b.grad)]


LAYERS = {  # name: (op, x shape, w shape, keyword arguments)
    "same, 3×3": (F.conv2d, (3, 1, 8, 6), (5, 1, 3, 3), {"padding": "same"}),
    # rows of whole vectors (OW·N a multiple of 16): in float32, the weight gradient by weights_3x3
    "same, 3×3, rows of whole vectors": (F.conv2d, (16, 1, 7, 5), (5, 1, 3, 3), {"padding": "same"}),
    "valid, 3×3, rows of whole vectors": (F.conv2d, (8, 1, 6, 6), (3, 1, 3, 3), {"padding": "valid"}),
    "padding 2, 3×3, rows of whole vectors": (F.conv2d, (8, 1, 5, 4), (3, 1, 3, 3), {"padding": 2}),
    "same, 4×4 (padding one more after)": (F.conv2d, (2, 1, 7, 5), (4, 1, 4, 4), {"padding": "same"}),
    "valid, 3×2": (F.conv2d, (2, 1, 6, 5), (3, 1, 3, 2), {"padding": "valid"}),
    "padding 2, wider than the kernel": (F.conv2d, (2, 1, 5, 4), (3, 1, 3, 3), {"padding": 2}),
    "a 1×1 image": (F.conv2d, (2, 1, 1, 1), (3, 1, 3, 3), {"padding": 1}),
    "transposed, one channel in (the turned kernel)": (F.conv_transpose2d, (2, 1, 6, 7), (1, 3, 3, 3),
                                                       {"padding": 1}),
}
ACTIVATIONS = {"none": None, "relu": Fused(), "leaky_relu 0.3": Fused(0.3)}


def outputs(op, arrays, kwargs, dtype):
    return randn(*op(*arrays, **kwargs).shape, seed=4).astype(dtype)


def assert_path_gives_im2cols_numbers(layer, activation, dtype, compute, names):
    """compute(op, arrays, kwargs, g, on) with this path on, against it with the path off."""
    op, x_shape, w_shape, kwargs = layer
    arrays = conv_arrays(op, x_shape, w_shape, dtype)
    kwargs = dict(kwargs, activation=activation)
    g = outputs(op, arrays, kwargs, dtype)
    assert_close_to_reference(names, compute(op, arrays, kwargs, g, True), compute(op, arrays, kwargs, g, False),
                              dtype)


@pytest.mark.parametrize("activation", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_direct_path_gives_the_numbers_of_im2col(layer, activation, dtype):
    assert_path_gives_im2cols_numbers(layer, activation, dtype, run, ["y", "dL/dw", "dL/db"])


def test_the_path_is_taken_and_differs_in_rounding_only():
    """A check that the test above compares two paths: in float32 they differ in the last bits."""
    op, x_shape, w_shape, kwargs = LAYERS["same, 3×3"]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = outputs(op, arrays, kwargs, np.float32)
    fast, reference = run(op, arrays, kwargs, g, True), run(op, arrays, kwargs, g, False)
    assert not all(np.array_equal(ours, theirs) for ours, theirs in zip(fast, reference))


X = Tensor(randn(2, 1, 5, 4, seed=1))  # the images: constant, so the direct path is the one checked

GRADCHECK_CASES = [  # float64 central differences through the direct path, for w and b
    Case(op="conv2d", id="one-channel-in-same", inputs=[randn(3, 1, 3, 3, seed=2), randn(3, seed=3)],
         fn=lambda w, b: F.conv2d(X, w, b, padding="same")),
    Case(op="conv2d", id="one-channel-in-valid-leaky", inputs=[randn(2, 1, 2, 3, seed=2), randn(2, seed=3)],
         fn=lambda w, b: F.conv2d(X, w, b, activation=Fused(0.2))),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_gradcheck(case):
    case.check()


WHOLE_VECTORS = ["same, 3×3", "same, 3×3, rows of whole vectors"]   # weights_rows, weights_3x3


@pytest.mark.parametrize("layer", WHOLE_VECTORS)
@pytest.mark.parametrize("count", [1, 2, 3])
def test_the_bits_do_not_depend_on_the_thread_count(count, layer):
    op, x_shape, w_shape, kwargs = LAYERS[layer]
    kwargs = dict(kwargs, activation=Fused(0.3))
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = outputs(op, arrays, kwargs, np.float32)
    assert_same_bits(*on_one_thread_and_on(count, lambda: run(op, arrays, kwargs, g, True)))


@pytest.mark.parametrize("layer", WHOLE_VECTORS)
@pytest.mark.parametrize("activation", [Fused(), Fused(0.3)], ids=["relu", "leaky_relu 0.3"])
def test_the_fused_activation_gives_the_bits_of_the_two_ops(activation, layer):
    """As for im2col's path (tests/test_fused.py): the activation applied in the output's pass
    equals the op followed by F.relu / F.leaky_relu, bit for bit, and so do the gradients."""
    op, x_shape, w_shape, kwargs = LAYERS[layer]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = outputs(op, arrays, kwargs, np.float32)
    separate = (lambda y: F.relu(y)) if activation.negative_slope is None else \
        (lambda y: F.leaky_relu(y, activation.negative_slope))
    fused = run(op, arrays, dict(kwargs, activation=activation), g, True)
    two_ops = run(lambda x, w, b, **kw: separate(op(x, w, b, **kw)), arrays, kwargs, g, True)
    assert_same_bits(fused, two_ops)


@pytest.mark.parametrize("dtype, taken", [(np.float32, True), (np.float64, False)])
def test_a_3x3_kernel_on_rows_of_whole_vectors_takes_weights_3x3(dtype, taken, monkeypatch):
    op, x_shape, w_shape, kwargs = LAYERS["same, 3×3, rows of whole vectors"]
    arrays = conv_arrays(op, x_shape, w_shape, dtype)
    g = outputs(op, arrays, kwargs, dtype)
    calls = []
    assert one_channel._compile()
    monkeypatch.setitem(one_channel._compiled, "weights_3x3",
                        lambda *a, _f=one_channel._compiled["weights_3x3"]: calls.append(1) or _f(*a))
    run(op, arrays, kwargs, g, True)
    assert bool(calls) == taken


def test_where_the_path_is_taken(monkeypatch):
    x, w = np.zeros((32, 1, 28, 28), np.float32), np.zeros((32, 1, 3, 3), np.float32)
    assert one_channel.suits(x, w, (1, 1), needs_grad=False)                        # a first layer
    assert not one_channel.suits(x, w, (1, 1), needs_grad=True)                     # dL/dx wanted
    assert not one_channel.suits(x, w, (2, 2), needs_grad=False)                    # stride 2
    assert not one_channel.suits(np.zeros((32, 3, 28, 28), np.float32), np.zeros((32, 3, 3, 3), np.float32),
                                 (1, 1), needs_grad=False)                         # three channels in
    assert not one_channel.suits(x.astype(np.float16), w.astype(np.float16), (1, 1), needs_grad=False)
    monkeypatch.setitem(one_channel.settings, "enabled", False)                     # MINIVAE_ONE_CHANNEL=never
    assert not one_channel.suits(x, w, (1, 1), needs_grad=False)


# ---- the backward pass of a layer with one channel out ------------------------------------------
#
# A stride-1 transposed convolution with one channel out (Foster's last layer; Chollet's last,
# 32 -> 1, a conv2d run as the transposed convolution of its turned kernel) has as dL/dx a
# convolution with one channel in, dL/dy by w, and as dL/dw that convolution's weight gradient
# with x in the place of dY: conv.py takes both from this module.

ONE_OUT = {  # name: (op, x shape, w shape, keyword arguments)
    "transposed, same, 3×3, rows of whole vectors": (F.conv_transpose2d, (16, 5, 7, 5), (5, 1, 3, 3),
                                                     {"padding": "same"}),
    "transposed, same, 3×3": (F.conv_transpose2d, (3, 4, 6, 5), (4, 1, 3, 3), {"padding": "same"}),
    "transposed, no padding (a larger output), 2×3": (F.conv_transpose2d, (2, 3, 5, 4), (3, 1, 2, 3), {}),
    "conv2d narrowing to one channel, same, 3×3": (F.conv2d, (16, 6, 5, 7), (1, 6, 3, 3), {"padding": "same"}),
}


@pytest.mark.parametrize("activation", [None, Fused(0.3)], ids=["none", "leaky_relu 0.3"])
@pytest.mark.parametrize("layer", ONE_OUT.values(), ids=ONE_OUT.keys())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_channel_out_gradients_are_those_of_im2col(layer, activation, dtype):
    assert_path_gives_im2cols_numbers(layer, activation, dtype, with_dx, ["y", "dL/dx", "dL/dw", "dL/db"])


def with_dx(op, arrays, kwargs, g, on):
    """y, dL/dx, dL/dw, dL/db, this path on or off."""
    return grads_with_path(one_channel.settings, on, op, arrays, kwargs, g)


@pytest.mark.parametrize("layer", ONE_OUT.keys())
def test_one_channel_out_takes_this_module_for_dx_and_dw(layer, monkeypatch):
    op, x_shape, w_shape, kwargs = ONE_OUT[layer]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = outputs(op, arrays, kwargs, np.float32)
    calls = []
    for name in ("spread", "weights"):
        monkeypatch.setattr(one_channel, name, lambda *a, _f=getattr(one_channel, name), _n=name, **k:
                            calls.append(_n) or _f(*a, **k))
    grads_with_path(one_channel.settings, True, op, arrays, kwargs, g)
    assert sorted(calls) == ["spread", "weights"]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_one_channel_out_bits_do_not_depend_on_the_thread_count(count):
    op, x_shape, w_shape, kwargs = ONE_OUT["transposed, same, 3×3, rows of whole vectors"]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = outputs(op, arrays, kwargs, np.float32)
    assert_same_bits(*on_one_thread_and_on(
        count, lambda: grads_with_path(one_channel.settings, True, op, arrays, kwargs, g)))


ONE_OUT_GRADCHECK_CASES = [  # float64 central differences through this path, for x, w and b
    Case(op="conv_transpose2d", id="one-channel-out-same", inputs=[randn(2, 3, 4, 5, seed=1),
                                                                   randn(3, 1, 3, 3, seed=2), randn(1, seed=3)],
         fn=lambda x, w, b: F.conv_transpose2d(x, w, b, padding="same")),
    Case(op="conv2d", id="narrowing-to-one-channel-leaky", inputs=[randn(2, 3, 5, 4, seed=1),
                                                                   randn(1, 3, 2, 3, seed=2), randn(1, seed=3)],
         fn=lambda x, w, b: F.conv2d(x, w, b, padding=1, activation=Fused(0.2))),
]


@pytest.mark.parametrize("case", ONE_OUT_GRADCHECK_CASES, ids=str)
def test_one_channel_out_gradcheck(case):
    case.check()
