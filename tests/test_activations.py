"""Activations: gradient checks away from the kinks, values against NumPy, and sigmoid's
stability at large |x|."""
import numpy as np
import pytest
from helpers import Case, away_from_zero, randn

import minivae
from minivae import functional as F

GRADCHECK_CASES = [
    Case(op="relu", fn=lambda x: F.relu(x), inputs=[away_from_zero(3, 5)], id="2d"),
    Case(op="relu", fn=lambda x: F.relu(x), inputs=[away_from_zero(2, 3, 2, 2)], id="4d"),
    Case(op="leaky_relu", fn=lambda x: F.leaky_relu(x), inputs=[away_from_zero(3, 5)], id="default-slope"),
    Case(op="leaky_relu", fn=lambda x: F.leaky_relu(x, 0.2), inputs=[away_from_zero(3, 5)], id="slope-0.2"),
    Case(op="sigmoid", fn=lambda x: F.sigmoid(x), inputs=[randn(3, 5)], id="small"),
    Case(op="sigmoid", fn=lambda x: F.sigmoid(x), inputs=[10 * randn(3, 5)], id="large"),
    Case(op="sigmoid", fn=lambda x: F.sigmoid(x) * x, inputs=[randn(4)], id="swish-reused"),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_gradcheck(case):
    case.check()


X = np.array([-3.0, -0.5, 0.0, 0.25, 2.0])

VALUE_CASES = [
    ("relu", F.relu, np.maximum(X, 0)),
    ("leaky_relu", F.leaky_relu, np.where(X > 0, X, 0.01 * X)),
    ("sigmoid", F.sigmoid, 1 / (1 + np.exp(-X))),
]


@pytest.mark.parametrize("activation,expected", [c[1:] for c in VALUE_CASES], ids=[c[0] for c in VALUE_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_and_dtype(activation, expected, dtype):
    y = activation(minivae.tensor(X, dtype=dtype))
    assert y.dtype == dtype
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("activation,slope", [(F.relu, 0.0), (lambda x: F.leaky_relu(x, 0.1), 0.1)],
                         ids=["relu", "leaky_relu"])
def test_gradient_is_one_or_the_slope(activation, slope):
    """At the kink x = 0 both take the left slope (0 for ReLU, a for leaky ReLU)."""
    x = minivae.tensor(X, requires_grad=True)
    activation(x).sum().backward()
    np.testing.assert_array_equal(x.grad, np.where(X > 0, 1.0, slope))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_for_large_inputs(dtype):
    """The naive 1/(1+e^-x) overflows e^-x at x = -500; the stable form only computes e^-|x|."""
    x = minivae.tensor(np.array([-500.0, -100.0, 100.0, 500.0]), dtype=dtype, requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = F.sigmoid(x)
        y.sum().backward()
    assert y.dtype == dtype
    np.testing.assert_allclose(y.numpy(), [0.0, 0.0, 1.0, 1.0], atol=1e-30)
    assert np.isfinite(x.grad).all()
    np.testing.assert_allclose(x.grad, 0.0, atol=1e-30)  # σ(1 - σ) vanishes far from 0


def test_sigmoid_symmetry():
    x = np.linspace(-40, 40, 81)
    np.testing.assert_allclose(F.sigmoid(-x).numpy(), 1 - F.sigmoid(x).numpy(), atol=1e-15)

