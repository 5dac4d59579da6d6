"""Batch normalization and dropout: gradient checks (training and evaluation), the statistics
they produce, the running-average update, and errors."""
import numpy as np
import pytest
from helpers import Case, randn

import minivae
from minivae import functional as F


pytestmark = pytest.mark.usefixtures("keep_global_rng_state")  # tests here reseed minivae's generators


def running_stats(channels):
    """Fresh running mean 0 and variance 1 (Keras's initial moving statistics)."""
    return np.zeros(channels), np.ones(channels)


def bn_train(x, gamma, beta):
    return F.batch_norm(x, gamma, beta, *running_stats(x.shape[1]), training=True)


def bn_eval(x, gamma, beta):
    running_mean, running_var = np.array([0.2, -0.1, 0.5]), np.array([0.8, 1.5, 2.0])
    return F.batch_norm(x, gamma, beta, running_mean, running_var, training=False)


GAMMA, BETA = randn(3, seed=1), randn(3, seed=2)

GRADCHECK_CASES = [
    Case(op="batch_norm", fn=bn_train, inputs=[randn(5, 3), GAMMA, BETA], id="train-2d"),
    Case(op="batch_norm", fn=bn_train, inputs=[randn(2, 3, 3, 2), GAMMA, BETA], id="train-4d"),
    Case(op="batch_norm", fn=bn_eval, inputs=[randn(5, 3), GAMMA, BETA], id="eval-2d"),
    Case(op="batch_norm", fn=bn_eval, inputs=[randn(2, 3, 2, 2), GAMMA, BETA], id="eval-4d"),
    Case(op="batch_norm", fn=lambda x, gamma, beta: F.batch_norm(x, gamma, beta, None, None, True),
         inputs=[randn(4, 3), GAMMA, BETA], id="train-no-running-stats"),
    Case(op="dropout", fn=lambda x: F.dropout(x, 0.3, rng=np.random.default_rng(0)),
         inputs=[randn(4, 5)], id="rate-0.3"),
    Case(op="dropout", fn=lambda x: F.dropout(x, 0.3, training=False), inputs=[randn(4, 5)], id="eval"),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_gradcheck(case):
    case.check()


# ---- batch norm -------------------------------------------------------------------------------
SHAPES = [(64, 3), (16, 3, 4, 5)]
AXES = {2: (0,), 4: (0, 2, 3)}  # every axis but the channel axis 1


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_training_output_is_standardized_per_channel(shape):
    """γ = 1, β = 0: every channel comes out with mean 0 and std sqrt(var / (var + eps)) ≈ 1."""
    x = 5 + 3 * randn(*shape)
    y = bn_train(x, np.ones(3), np.zeros(3)).numpy()
    axes = AXES[len(shape)]
    var = x.var(axis=axes)
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=axes), np.sqrt(var / (var + 1e-3)), rtol=1e-12)
    np.testing.assert_allclose(y.std(axis=axes), 1, atol=1e-3)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gamma_and_beta_set_the_output_std_and_mean(shape):
    gamma, beta = np.array([2.0, 0.5, 3.0]), np.array([-1.0, 0.0, 4.0])
    y = bn_train(randn(*shape), gamma, beta).numpy()
    axes = AXES[len(shape)]
    np.testing.assert_allclose(y.mean(axis=axes), beta, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=axes), gamma, rtol=1e-2)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_training_updates_running_statistics_in_place(shape):
    """Keras's rule: running = 0.99·running + 0.01·batch, with the biased batch variance."""
    x = 5 + 3 * randn(*shape)
    running_mean, running_var = running_stats(3)
    F.batch_norm(x, np.ones(3), np.zeros(3), running_mean, running_var, training=True)
    axes = AXES[len(shape)]
    np.testing.assert_allclose(running_mean, 0.99 * 0 + 0.01 * x.mean(axis=axes))
    np.testing.assert_allclose(running_var, 0.99 * 1 + 0.01 * x.var(axis=axes))  # ddof=0: biased


def test_running_statistics_converge_to_the_data_statistics():
    """Many steps of momentum 0.9 on batches of one distribution: running mean → 5, var → 9·(1 - 1/m)."""
    running_mean, running_var = running_stats(2)
    for step in range(100):
        x = 5 + 3 * randn(256, 2, seed=step)
        F.batch_norm(x, np.ones(2), np.zeros(2), running_mean, running_var, training=True, momentum=0.9)
    np.testing.assert_allclose(running_mean, 5, atol=0.2)
    np.testing.assert_allclose(running_var, 9, rtol=0.1)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_eval_uses_running_statistics_and_leaves_them_alone(shape):
    x = randn(*shape)
    gamma, beta = np.array([2.0, 0.5, 3.0]), np.array([-1.0, 0.0, 4.0])
    running_mean, running_var = np.array([0.2, -0.1, 0.5]), np.array([0.8, 1.5, 2.0])
    y = F.batch_norm(x, gamma, beta, running_mean, running_var, training=False).numpy()
    per_channel = (1, 3) + (1,) * (len(shape) - 2)
    expected = ((x - running_mean.reshape(per_channel)) / np.sqrt(running_var.reshape(per_channel) + 1e-3)
                * gamma.reshape(per_channel) + beta.reshape(per_channel))
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    np.testing.assert_array_equal(running_mean, [0.2, -0.1, 0.5])
    np.testing.assert_array_equal(running_var, [0.8, 1.5, 2.0])


def reference_batch_norm(x, gamma, beta, eps=1e-3):
    """The same forward pass written with primitive ops, so autograd derives its backward."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    centered = x - mean
    var = (centered ** 2).mean(axis=(0, 2, 3), keepdims=True)
    return centered * (var + eps) ** -0.5 * gamma.reshape(1, 3, 1, 1) + beta.reshape(1, 3, 1, 1)


def test_hand_written_backward_matches_autograd_through_primitive_ops():
    """The compact formula dx = (1/m)·γ/σ·(m·g - Σg - x̂·Σ(g·x̂)) is the chain rule through the
    mean and the variance, collapsed."""
    inputs = [randn(4, 3, 2, 2), randn(3, seed=1), randn(3, seed=2)]
    g = randn(4, 3, 2, 2, seed=3)
    grads = []
    for forward in (bn_train, reference_batch_norm):
        tensors = [minivae.tensor(a, requires_grad=True) for a in inputs]
        y = forward(*tensors)
        y.backward(g)
        grads.append((y.numpy(), *(t.grad for t in tensors)))
    for ours, reference in zip(*grads):
        np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)


def test_float32_input_with_float64_running_statistics_stays_float32():
    x = minivae.tensor(randn(8, 3), dtype=np.float32)
    gamma, beta = minivae.tensor(np.ones(3), dtype=np.float32), minivae.tensor(np.zeros(3), dtype=np.float32)
    assert F.batch_norm(x, gamma, beta, *running_stats(3), training=False).dtype == np.float32
    assert F.batch_norm(x, gamma, beta, *running_stats(3), training=True).dtype == np.float32


BN_ERRORS = [  # (id, keyword arguments that differ from a valid call, error type, message pattern)
    ("x-ndim", {"x": randn(2, 3, 4)}, ValueError,
     r"batch_norm: x must have shape \(N, C\) or \(N, C, H, W\), got \(2, 3, 4\)"),
    ("gamma-shape", {"gamma": np.ones(4)}, ValueError,
     r"batch_norm: gamma must have shape \(3,\) for x of shape \(5, 3\), got \(4,\)"),
    ("running-shape", {"running_var": np.ones(2)}, ValueError,
     r"batch_norm: running_var must have shape \(3,\) for x of shape \(5, 3\), got \(2,\)"),
    ("running-tensor", {"running_mean": minivae.tensor(np.zeros(3))}, TypeError,
     r"batch_norm: running_mean and running_var must be plain arrays"),
    ("eval-without-running", {"running_mean": None, "training": False}, ValueError,
     r"batch_norm: evaluation \(training=False\) needs running_mean and running_var"),
]


@pytest.mark.parametrize("changes,error,match", [c[1:] for c in BN_ERRORS], ids=[c[0] for c in BN_ERRORS])
def test_batch_norm_errors(changes, error, match):
    arguments = dict(x=randn(5, 3), gamma=np.ones(3), beta=np.zeros(3), running_mean=np.zeros(3),
                     running_var=np.ones(3), training=True)
    with pytest.raises(error, match=match):
        F.batch_norm(**{**arguments, **changes})


# ---- dropout ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_drops_a_fraction_rate_and_scales_the_rest(rate):
    x = np.ones((200, 500))
    y = F.dropout(x, rate, rng=np.random.default_rng(0)).numpy()
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < 0.01                 # 100 000 draws: std error ≈ 0.0016
    np.testing.assert_allclose(y[kept], 1 / (1 - rate))         # inverted dropout: E[y] = x
    assert abs(y.mean() - 1) < 0.03


def test_dropout_gradient_is_the_scaled_mask():
    x = minivae.tensor(randn(6, 7) + 10, requires_grad=True)   # nonzero, so y/x recovers the mask
    y = F.dropout(x, 0.4, rng=np.random.default_rng(1))
    y.sum().backward()
    np.testing.assert_allclose(x.grad, y.numpy() / x.data)
    assert set(np.round(np.unique(x.grad), 12)) == {0.0, round(1 / 0.6, 12)}


@pytest.mark.parametrize("kwargs", [{"rate": 0.5, "training": False}, {"rate": 0.0}], ids=["eval", "rate-0"])
def test_dropout_is_the_identity_in_eval_or_at_rate_zero(kwargs):
    x = minivae.tensor(randn(3, 4))
    assert F.dropout(x, **kwargs) is x


def test_dropout_default_rng_follows_the_seed():
    x = np.ones((4, 6), np.float32)
    minivae.manual_seed(5)
    first = F.dropout(x, 0.5).numpy()
    minivae.manual_seed(5)
    second = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rate_out_of_range(rate):
    with pytest.raises(ValueError, match=rf"dropout: rate must be in \[0, 1\), got {rate}"):
        F.dropout(np.ones(3), rate)
