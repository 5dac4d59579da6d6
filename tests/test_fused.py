"""An activation fused into the layer before it (activations.Fused, which nn.Sequential hands a
conv or dense layer followed by ReLU or LeakyReLU) gives the numbers of the two ops run one after
the other, bit for bit, forward and backward: with the Numba kernels on 1, 2 and 3 threads, and on
the NumPy path. Then the whole training step of both book models, fused and not."""
import numpy as np
import pytest
from helpers import Case, away_from_zero

import minivae
from minivae import cpu_kernels, nn, threads
from minivae import functional as F
from minivae.functional.activations import Fused
from minivae.models import PRESETS
from minivae.tensor import Tensor

ACTIVATIONS = {  # name: (the fused one, the op it stands for)
    "relu": (Fused(), F.relu),
    "leaky_relu 0.3": (Fused(0.3), lambda y: F.leaky_relu(y, 0.3)),
    "leaky_relu 0": (Fused(0.0), lambda y: F.leaky_relu(y, 0.0)),
}
LAYERS = {  # name: (op, x shape, w shape, keyword arguments); both ways of each conv are taken
    "conv2d, stride 2": (F.conv2d, (3, 4, 9, 9), (6, 4, 3, 3), {"stride": 2, "padding": "same"}),
    "conv2d, stride 1, widening": (F.conv2d, (3, 4, 7, 7), (6, 4, 3, 3), {"padding": "same"}),
    "conv2d, stride 1, narrowing": (F.conv2d, (3, 6, 7, 7), (2, 6, 3, 3), {"padding": "same"}),
    "conv_transpose2d, stride 2": (F.conv_transpose2d, (3, 6, 5, 5), (6, 4, 3, 3), {"stride": 2, "padding": "same"}),
    "conv_transpose2d, stride 1": (F.conv_transpose2d, (3, 4, 6, 6), (4, 4, 3, 3), {"padding": "same"}),
    "linear": (F.linear, (5, 40), (40, 70), {}),
    "linear, a narrow input (narrow.py)": (F.linear, (16, 2), (2, 70), {}),
}


@pytest.fixture(params=["numba, 1 thread", "numba, 2 threads", "numba, 3 threads", "numpy"])
def path(request, monkeypatch):
    """The kernels on 1-3 threads (small products and pieces split too), or the NumPy path."""
    previous = threads.count(), cpu_kernels.settings["enabled"]
    if request.param == "numpy":
        cpu_kernels.settings["enabled"] = False
    else:
        pytest.importorskip("numba")
        threads.set_count(int(request.param.split(", ")[1][0]))
        monkeypatch.setattr(threads, "MIN_PIECE", 64)
        monkeypatch.setattr(threads, "MIN_SPLIT_FLOPS", 1)
        monkeypatch.setattr(threads, "MIN_SUM_SPLIT_FLOPS", 1)
    yield request.param
    threads.set_count(previous[0])
    cpu_kernels.settings["enabled"] = previous[1]


def value_and_grads(op, x, w, b, g, kwargs, activation):
    """y and dL/dx, dL/dw, dL/db for dL/dy = g: the op with `activation` fused, or followed by it."""
    x, w, b = (Tensor(a, requires_grad=True) for a in (x, w, b))
    fused, separate = activation
    y = op(x, w, b, activation=fused, **kwargs) if fused is not None else separate(op(x, w, b, **kwargs))
    y.backward(g)
    return [y.data, x.grad, w.grad, b.grad]


@pytest.mark.parametrize("activation", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
def test_the_fused_activation_gives_the_bits_of_the_two_ops(layer, activation, path):
    op, x_shape, w_shape, kwargs = layer
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape, dtype=np.float32), rng.standard_normal(w_shape, dtype=np.float32)
    b = rng.standard_normal(w_shape[1] if op is not F.conv2d else w_shape[0], dtype=np.float32)
    g = rng.standard_normal(op(x, w, b, **kwargs).shape, dtype=np.float32)
    fused = value_and_grads(op, x, w, b, g, kwargs, (activation[0], None))
    separate = value_and_grads(op, x, w, b, g, kwargs, (None, activation[1]))
    for ours, theirs in zip(fused, separate):
        assert np.array_equal(np.asarray(ours).view(np.uint32), np.asarray(theirs).view(np.uint32))


@pytest.mark.parametrize("negative_slope", [None, 0.0, 0.3, 1.0])
def test_the_backward_reads_the_slope_off_y_at_the_edges(negative_slope):
    """At x = ±0, ±inf and NaN the slope read off y is the one F.relu / F.leaky_relu take from x."""
    x = np.array([[0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 2.0, -3.0]], np.float32)
    g = np.array([[1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]], np.float32)
    separate = F.relu if negative_slope is None else (lambda t: F.leaky_relu(t, negative_slope))
    t = Tensor(x, requires_grad=True)
    separate(t).backward(g)
    y = x.copy()
    Fused(negative_slope).apply(y)
    np.testing.assert_array_equal(y, separate(Tensor(x)).data)
    np.testing.assert_array_equal(Fused(negative_slope).backward(g, y), t.grad)


@pytest.mark.parametrize("negative_slope", [None, 0.3])
def test_the_backward_holds_whatever_strides_the_axes_of_length_1_have(negative_slope):
    """NumPy may give an axis of length 1 any stride: y (N, C, 1, 1) laid out batch-last, with odd
    strides there, and g laid out otherwise, must still get the slope (once it came back as g)."""
    memory = np.array([0.5, -1.0, 2.0, -0.0, 3.0, -4.0], np.float32)
    y = np.lib.stride_tricks.as_strided(memory, shape=(2, 3, 1, 1), strides=(4, 8, 100, 100))
    g = np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3, 1, 1)
    slope = np.where(y > 0, np.float32(1), np.float32(negative_slope or 0))
    np.testing.assert_array_equal(Fused(negative_slope).backward(g, y), g * slope)


def test_a_negative_slope_is_not_fused():
    with pytest.raises(ValueError, match="slope must be at least 0"):
        Fused(-0.1)
    assert nn.LeakyReLU(-0.1).fused() is None and isinstance(nn.LeakyReLU(0.3).fused(), Fused)


@pytest.mark.parametrize("activation", [Fused(), Fused(0.3)], ids=["relu", "leaky_relu"])
def test_gradcheck_of_a_fused_conv(activation):
    Case(op="conv2d", fn=lambda x, w, b: F.conv2d(x, w, b, stride=2, padding="same", activation=activation),
         inputs=[away_from_zero(2, 3, 5, 5), away_from_zero(4, 3, 3, 3, seed=1), away_from_zero(4, seed=2)]).check()


@pytest.mark.parametrize("model", PRESETS)
def test_a_training_step_of_each_book_model_has_the_same_bits_fused_or_not(model, path, keep_global_rng_state,
                                                                          monkeypatch):
    x = Tensor(np.random.default_rng(1).random((3,) + PRESETS[model].build().input_shape, dtype=np.float32))
    results = []
    for fuse in (True, False):
        monkeypatch.setitem(nn.FUSE, "enabled", fuse)
        minivae.manual_seed(0)  # the same weights and the same ε both times
        net = PRESETS[model].build()
        loss = PRESETS[model].loss(x, *net(x))[0]
        loss.backward()
        results.append([loss.data] + [p.grad for p in net.parameters()])
    for fused, separate in zip(*results):
        assert np.array_equal(fused.view(np.uint32), separate.view(np.uint32))


@pytest.mark.parametrize("part", ["columns of a product (rows are runs of memory)", "every other column (NumPy's way)"])
def test_apply_on_a_part_changes_that_part_only(part):
    """What a product's thread hands `apply`: a column slice of the output. The numbers around it
    stay as they were."""
    y = np.random.default_rng(3).standard_normal((5, 40)).astype(np.float32)
    piece = (slice(None), slice(16, 32)) if part.startswith("columns") else (slice(None), slice(1, None, 2))
    expected = y.copy()
    expected[piece] = F.leaky_relu(Tensor(y[piece]), 0.3).data
    Fused(0.3).apply(y[piece])
    np.testing.assert_array_equal(y, expected)
