"""The autograd engine: how gradients flow, add up, reduce over broadcasting, and get released."""
import numpy as np
import pytest

import minivae
from minivae import Tensor, no_grad
from minivae import functional as F


def test_chain_rule_by_hand():
    # y = (a·b + a)²  ⇒  dy/da = 2(ab + a)(b + 1),  dy/db = 2(ab + a)·a
    a = Tensor(3.0, requires_grad=True)
    b = Tensor(-2.0, requires_grad=True)
    y = (a * b + a) ** 2
    y.backward()
    assert a.grad == pytest.approx(2 * (3 * -2 + 3) * (-2 + 1))
    assert b.grad == pytest.approx(2 * (3 * -2 + 3) * 3)


def test_a_node_used_twice_accumulates():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x + x).sum().backward()  # d/dx (x² + x) = 2x + 1
    np.testing.assert_allclose(x.grad, [3.0, 5.0])


def test_leaf_gradients_accumulate_across_backward_calls():
    x = Tensor(np.ones(3), requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0, 5.0])


def test_a_leaf_gradient_is_its_own_even_where_the_backward_shared_it():
    # F.add hands the same dL/dy to both inputs, and an upstream gradient stays the caller's:
    # each leaf's .grad must still be an array of its own (changing one changes no other)
    a, b = Tensor(np.ones(3), requires_grad=True), Tensor(np.ones(3), requires_grad=True)
    (a + b).sum().backward()
    a.grad *= 10
    np.testing.assert_array_equal(b.grad, [1.0, 1.0, 1.0])
    x = Tensor(np.zeros(2), requires_grad=True)
    upstream = np.array([1.0, 2.0])
    (x + 0.0).backward(upstream)
    upstream[...] = 0
    np.testing.assert_array_equal(x.grad, [1.0, 2.0])


@pytest.mark.parametrize("shape_a, shape_b", [((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1)), ((3,), ())])
def test_broadcast_gradients_are_summed_back(shape_a, shape_b):
    # d/da Σ(a·b) = b broadcast to the output, then summed over the axes a was stretched along
    a = Tensor(np.random.default_rng(0).standard_normal(shape_a), requires_grad=True)
    b = Tensor(np.random.default_rng(1).standard_normal(shape_b), requires_grad=True)
    (a * b).sum().backward()
    out_shape = np.broadcast_shapes(shape_a, shape_b)
    np.testing.assert_allclose(a.grad, sum_to(np.broadcast_to(b.data, out_shape), shape_a))
    np.testing.assert_allclose(b.grad, sum_to(np.broadcast_to(a.data, out_shape), shape_b))


def sum_to(g, shape):
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))  # axes broadcasting added in front
    return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True)  # stretched


def test_float32_stays_float32_and_float64_stays_float64():
    for dtype in (np.float32, np.float64):
        x = Tensor(np.ones((2, 2), dtype), requires_grad=True)
        y = (2 * x + 1.5).exp().mean()
        y.backward()
        assert y.dtype == dtype and x.grad.dtype == dtype


def test_python_numbers_become_float32():
    assert Tensor(3).dtype == np.float32 and Tensor([1, 2]).dtype == np.float32


def test_no_grad_records_nothing():
    x = Tensor(np.ones(2), requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf


def test_detach_cuts_the_graph():
    x = Tensor(np.ones(2), requires_grad=True)
    y = (x.detach() * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0, 1.0])  # only the second factor carries gradient


def test_graph_is_released_after_backward_and_a_second_backward_says_so():
    x = Tensor(np.ones(2), requires_grad=True)
    h = x * 2
    y = h.sum()
    y.backward()
    assert y._inputs == () and h._inputs == ()
    with pytest.raises(RuntimeError, match="graph was freed by an earlier backward"):
        y.backward()                 # the same loss twice
    with pytest.raises(RuntimeError, match="graph was freed by an earlier backward"):
        (h * 3).sum().backward()     # a new op on top of a used graph
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])   # only the first backward counted
    y = (x * 2).sum()                # a new forward pass: a new graph
    y.backward()
    np.testing.assert_array_equal(x.grad, [4.0, 4.0])


def test_backward_on_a_non_scalar_needs_an_upstream_gradient():
    y = Tensor(np.ones(3), requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"shape \(3,\).*upstream gradient"):
        y.backward()
    with pytest.raises(ValueError, match=r"upstream gradient has shape \(2,\)"):
        y.backward(np.ones(2))


def test_backward_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()


def test_integer_tensors_cannot_require_grad_and_ops_refuse_them():
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.array([1, 2]), requires_grad=True)
    with pytest.raises(TypeError, match="exp: x must be a floating-point tensor, got dtype int64"):
        F.exp(Tensor(np.array([1, 2])))


def f32(*shape):
    return Tensor(np.ones(shape, np.float32))


def f64(*shape):
    return Tensor(np.ones(shape, np.float64))


MIXED_DTYPES = {   # op: a call with one float32 and one float64 input
    "add": lambda: f32(2) + f64(2),
    "mul": lambda: f64(2) * f32(2),
    "div": lambda: F.div(f32(2), np.ones(2)),     # a NumPy array becomes a float64 tensor
    "matmul": lambda: f32(2, 3) @ f64(3, 2),
    "linear": lambda: F.linear(f64(4, 3), f32(3, 2), f32(2)),
    "conv2d": lambda: F.conv2d(f64(1, 1, 5, 5), f32(2, 1, 3, 3)),
    "conv_transpose2d": lambda: F.conv_transpose2d(f32(1, 2, 3, 3), f32(2, 1, 3, 3), f64(1)),
    "batch_norm": lambda: F.batch_norm(f64(2, 3, 4, 4), f32(3), f32(3), np.zeros(3), np.ones(3), True),
    "reparameterize": lambda: F.reparameterize(f32(2, 2), f32(2, 2), eps=f64(2, 2)),
    "gaussian_kl": lambda: F.gaussian_kl(f32(2, 2), f64(2, 2)),
}


@pytest.mark.parametrize("op", MIXED_DTYPES)
def test_ops_refuse_mixed_float_dtypes_naming_the_op_and_both(op):
    """NumPy would promote float32 to float64 without a word (and a float32 model would then run
    in float64 at half the speed); the ops refuse instead, as PyTorch does."""
    with pytest.raises(TypeError, match=rf"^{op}: mixed floating-point dtypes float(32|64) and float(32|64)"):
        MIXED_DTYPES[op]()


def test_a_float64_batch_into_a_float32_layer_is_refused_but_numbers_take_the_tensors_dtype():
    from minivae import nn
    layer = nn.Dense(3, 2)                        # float32 weights
    with pytest.raises(TypeError, match="linear: mixed floating-point dtypes float64 and float32"):
        layer(Tensor(np.ones((4, 3))))            # np.ones is float64
    assert layer(f32(4, 3)).dtype == np.float32
    assert (f32(2) * 2.5 + 1).dtype == np.float32 and (f64(2) * 2.5).dtype == np.float64
    assert F.mse_loss(f32(2), np.ones(2)).dtype == np.float32   # a loss's target takes pred's dtype


def test_shape_mismatch_names_the_op():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(2,\)"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(2))


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = Tensor(np.ones(1), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_trace_reports_every_node_in_backward_order():
    lines = []
    x = Tensor(np.array([[1.0, -2.0]]), requires_grad=True)
    w = Tensor(np.array([[0.5], [0.25]]), requires_grad=True)
    F.linear(x, w).exp().sum().backward(trace=lines.append)
    ops = [line.split()[1] for line in lines[1:]]
    assert ops[:3] == ["sum", "exp", "linear"] and sorted(ops[3:]) == ["leaf", "leaf"]
    assert all(line.rstrip().endswith("yes") for line in lines[1:])


def test_detect_anomaly_names_the_op():
    x = Tensor(np.array([1.0, 1000.0], np.float32), requires_grad=True)
    with minivae.detect_anomaly(), pytest.raises(FloatingPointError, match="op 'exp'"), \
            np.errstate(over="ignore"):
        F.exp(x * 1.0)


def test_gradcheck_reports_a_wrong_backward():
    def doubled_but_claims_triple(x):
        return Tensor.from_op(x.data * 2, (x,), lambda g: (g * 3,), "wrong")
    with pytest.raises(minivae.GradcheckError, match=r"input 0 \(shape \(3,\)\): 3 of 3 elements differ.*relative error 0.5"):
        minivae.gradcheck(doubled_but_claims_triple, [np.ones(3)])
