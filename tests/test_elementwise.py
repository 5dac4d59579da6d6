"""Elementwise arithmetic, reductions, reshapes and matrix products: gradient checks (with
broadcasting and a node used twice), then values, the gradients of broadcasting, and errors."""
import numpy as np
import pytest
from helpers import Case, randn

import minivae
from minivae import functional as F


def positive(*shape, seed=0):
    """Inputs for log, division and fractional powers: in [0.5, 2.5)."""
    return 0.5 + 2 * np.random.default_rng(seed).random(shape)


GRADCHECK_CASES = [
    Case(op="add", fn=lambda a, b: F.add(a, b), inputs=[randn(3, 4), randn(3, 4, seed=1)], id="same-shape"),
    Case(op="add", fn=lambda a, b: a + b, inputs=[randn(3, 4), randn(4, seed=1)], id="broadcast-row"),
    Case(op="add", fn=lambda a: a + 2.5, inputs=[randn(2, 3)], id="number"),
    Case(op="sub", fn=lambda a, b: F.sub(a, b), inputs=[randn(3, 1), randn(1, 4, seed=1)],
         id="broadcast-outer"),
    Case(op="sub", fn=lambda a: 1 - a, inputs=[randn(2, 3)], id="rsub-number"),
    Case(op="mul", fn=lambda a, b: F.mul(a, b), inputs=[randn(3, 1), randn(1, 4, seed=1)],
         id="broadcast-outer"),
    Case(op="mul", fn=lambda a, b: a * b, inputs=[randn(2, 3, 4), randn(4, seed=1)], id="broadcast-3d"),
    Case(op="mul", fn=lambda x: x * x + x, inputs=[randn(3, 4)], id="node-reused"),
    Case(op="div", fn=lambda a, b: F.div(a, b), inputs=[randn(3, 4), positive(3, 4, seed=1)],
         id="same-shape"),
    Case(op="div", fn=lambda a, b: a / b, inputs=[randn(3, 4), positive(3, 1, seed=1)], id="broadcast-col"),
    Case(op="div", fn=lambda b: 1 / b, inputs=[positive(5)], id="rdiv-number"),
    Case(op="neg", fn=lambda a: F.neg(a), inputs=[randn(3, 4)]),
    Case(op="power", fn=lambda a: F.power(a, 3), inputs=[randn(3, 4)], id="cube"),
    Case(op="power", fn=lambda a: a ** 0.5, inputs=[positive(3, 4)], id="sqrt"),
    Case(op="power", fn=lambda a: a ** -2, inputs=[positive(3, 4)], id="negative"),
    Case(op="exp", fn=lambda a: F.exp(a), inputs=[randn(3, 4)]),
    Case(op="log", fn=lambda a: F.log(a), inputs=[positive(3, 4)]),
    Case(op="sum", fn=lambda a: F.sum(a), inputs=[randn(3, 4)], id="all"),
    Case(op="sum", fn=lambda a: F.sum(a, axis=1), inputs=[randn(3, 4)], id="axis1"),
    Case(op="sum", fn=lambda a: a.sum(axis=(0, 2), keepdims=True), inputs=[randn(2, 3, 4)],
         id="axes-keepdims"),
    Case(op="sum", fn=lambda a: a.sum(axis=-1), inputs=[randn(2, 3, 4)], id="negative-axis"),
    Case(op="mean", fn=lambda a: F.mean(a), inputs=[randn(3, 4)], id="all"),
    Case(op="mean", fn=lambda a: F.mean(a, axis=0), inputs=[randn(3, 4)], id="axis0"),
    Case(op="mean", fn=lambda a: a.mean(axis=(1, 2), keepdims=True), inputs=[randn(2, 3, 4)],
         id="axes-keepdims"),
    Case(op="reshape", fn=lambda a: F.reshape(a, (4, 3)), inputs=[randn(3, 4)]),
    Case(op="reshape", fn=lambda a: a.reshape(2, -1), inputs=[randn(2, 3, 2)], id="method-minus-one"),
    Case(op="transpose", fn=lambda a: F.transpose(a), inputs=[randn(3, 4)], id="reverse"),
    Case(op="transpose", fn=lambda a: a.transpose(2, 0, 1), inputs=[randn(2, 3, 4)], id="permute"),
    Case(op="getitem", fn=lambda a: a[1:, ::2], inputs=[randn(3, 4)], id="slice"),
    Case(op="getitem", fn=lambda a: a[np.array([0, 2, 0])], inputs=[randn(3, 4)], id="repeated-index"),
    Case(op="getitem", fn=lambda a: F.getitem(a, (slice(None), 1)), inputs=[randn(3, 4)], id="column"),
    Case(op="matmul", fn=lambda a, b: F.matmul(a, b), inputs=[randn(3, 4), randn(4, 2, seed=1)]),
    Case(op="matmul", fn=lambda a: a @ a.T, inputs=[randn(3, 4)], id="gram-reused"),
    Case(op="linear", fn=lambda x, w, b: F.linear(x, w, b),
         inputs=[randn(5, 3), randn(3, 2, seed=1), randn(2, seed=2)], id="bias"),
    Case(op="linear", fn=lambda x, w: F.linear(x, w), inputs=[randn(5, 3), randn(3, 2, seed=1)],
         id="no-bias"),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_gradcheck(case):
    case.check()


# ---- values: each op against NumPy ------------------------------------------------------------
A, B = randn(3, 4), positive(3, 4, seed=1)

VALUE_CASES = [
    ("add", lambda a, b: a + b, np.add),
    ("sub", lambda a, b: a - b, np.subtract),
    ("mul", lambda a, b: a * b, np.multiply),
    ("div", lambda a, b: a / b, np.divide),
    ("power", lambda a, b: b ** 1.5, lambda a, b: b ** 1.5),
    ("exp-log", lambda a, b: F.exp(a) + F.log(b), lambda a, b: np.exp(a) + np.log(b)),
    ("matmul", lambda a, b: a @ b.T, lambda a, b: a @ b.T),
    ("sum-mean", lambda a, b: a.sum(axis=0) - b.mean(axis=0), lambda a, b: a.sum(0) - b.mean(0)),
]


@pytest.mark.parametrize("ours,reference", [c[1:] for c in VALUE_CASES], ids=[c[0] for c in VALUE_CASES])
def test_values_match_numpy(ours, reference):
    out = ours(minivae.tensor(A), minivae.tensor(B))
    np.testing.assert_allclose(out.numpy(), reference(A, B), rtol=1e-12)


def test_broadcast_gradient_is_summed_back_to_the_input_shape():
    """(3, 1) * (1, 4) -> (3, 4): each input's gradient is the output gradient summed over the
    axes it was stretched along."""
    a = minivae.tensor(randn(3, 1), requires_grad=True)
    b = minivae.tensor(randn(1, 4, seed=1), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (1, 4)
    np.testing.assert_allclose(a.grad, np.full((3, 1), b.data.sum()))
    np.testing.assert_allclose(b.grad, np.full((1, 4), a.data.sum()))


def test_row_vector_added_to_a_matrix_gets_the_column_sums():
    x = minivae.tensor(randn(3, 4), requires_grad=True)
    bias = minivae.tensor(randn(4, seed=1), requires_grad=True)
    g = randn(3, 4, seed=2)
    (x + bias).backward(g)
    np.testing.assert_allclose(bias.grad, g.sum(axis=0))
    np.testing.assert_allclose(x.grad, g)


def test_node_used_twice_adds_both_gradients():
    """y = x·x + x reads x three times; dy/dx = 2x + 1 only if every path is added."""
    x = minivae.tensor(randn(5), requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)


def test_getitem_with_repeated_indices_accumulates():
    x = minivae.tensor(randn(3, 2), requires_grad=True)
    x[np.array([0, 0, 2])].sum().backward()
    np.testing.assert_allclose(x.grad, [[2, 2], [0, 0], [1, 1]])


def test_python_number_takes_the_tensor_dtype():
    x = minivae.tensor(randn(2, 2), dtype=np.float64)
    assert (2 * x).dtype == np.float64 and (x + 1).dtype == np.float64
    assert (2 * minivae.tensor([1.0, 2.0])).dtype == np.float32  # the default dtype


def test_linear_is_matmul_plus_bias():
    x, w, b = randn(5, 3), randn(3, 2, seed=1), randn(2, seed=2)
    np.testing.assert_allclose(F.linear(x, w, b).numpy(), (F.matmul(x, w) + b).numpy(), rtol=1e-12)


ERROR_CASES = [  # (id, call, error type, message pattern)
    ("add-broadcast", lambda: F.add(np.ones((3, 4)), np.ones(3)), ValueError,
     r"add: shapes \(3, 4\) and \(3,\) do not broadcast"),
    ("mul-broadcast", lambda: F.mul(np.ones((2, 3)), np.ones((3, 2))), ValueError,
     r"mul: shapes \(2, 3\) and \(3, 2\)"),
    ("matmul-inner", lambda: F.matmul(np.ones((2, 3)), np.ones((2, 3))), ValueError,
     r"matmul: inner sizes differ: a \(2, 3\) @ b \(2, 3\)"),
    ("matmul-ndim", lambda: F.matmul(np.ones(3), np.ones((3, 2))), ValueError,
     r"matmul: a must have 2 dimensions, got shape \(3,\)"),
    ("linear-features", lambda: F.linear(np.ones((5, 3)), np.ones((4, 2))), ValueError,
     r"linear: x has 3 features but w expects 4"),
    ("linear-bias", lambda: F.linear(np.ones((5, 3)), np.ones((3, 2)), np.ones(3)), ValueError,
     r"linear: b must have shape \(2,\), got \(3,\)"),
    ("reshape", lambda: F.reshape(np.ones((3, 4)), (5, 2)), ValueError,
     r"reshape: cannot reshape \(3, 4\) \(12 values\) into \(5, 2\)"),
    ("power-tensor-exponent", lambda: F.power(np.ones(3), minivae.tensor(2.0)), TypeError,
     r"power: the exponent must be a Python number"),
]


@pytest.mark.parametrize("call,error,match", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_errors_name_the_op_and_shapes(call, error, match):
    with pytest.raises(error, match=match):
        call()
