"""Losses: gradient checks (the target is a constant, so it is closed over, not an input),
values against the textbook formulas, the BCE clip at p = 0 and 1, reductions, and errors."""
import numpy as np
import pytest
from helpers import Case, randn

import minivae
from minivae import functional as F

RNG = np.random.default_rng(0)
P = RNG.uniform(0.05, 0.95, size=(4, 3))   # probabilities away from the clip
T = RNG.uniform(0.0, 1.0, size=(4, 3))     # soft targets, as MNIST pixel intensities are
T_BINARY = (T > 0.5).astype(np.float64)

GRADCHECK_CASES = [
    Case(op="binary_cross_entropy", fn=lambda p: F.binary_cross_entropy(p, T), inputs=[P], id="mean"),
    Case(op="binary_cross_entropy", fn=lambda p: F.binary_cross_entropy(p, T_BINARY, "sum"),
         inputs=[P], id="sum-binary"),
    Case(op="binary_cross_entropy", fn=lambda p: F.binary_cross_entropy(p, T, reduction="none"),
         inputs=[P], id="none"),
    Case(op="binary_cross_entropy_with_logits", fn=lambda x: F.binary_cross_entropy_with_logits(x, T),
         inputs=[3 * randn(4, 3)], id="mean"),
    Case(op="binary_cross_entropy_with_logits", fn=lambda x: F.binary_cross_entropy_with_logits(x, T, "none"),
         inputs=[3 * randn(4, 3)], id="none"),
    Case(op="mse_loss", fn=lambda y: F.mse_loss(y, T), inputs=[randn(4, 3)], id="mean"),
    Case(op="mse_loss", fn=lambda y: F.mse_loss(y, T, "sum"), inputs=[randn(4, 3)], id="sum"),
    Case(op="mse_loss", fn=lambda y: F.mse_loss(y, T, "none"), inputs=[randn(4, 3)], id="none"),
    Case(op="gaussian_kl", fn=lambda mu, log_var: F.gaussian_kl(mu, log_var),
         inputs=[randn(4, 3), randn(4, 3, seed=1)]),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_gradcheck(case):
    case.check()


# ---- values against the formulas ---------------------------------------------------------------
def bce_reference(p, t):
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def sigmoid_reference(x):
    return 1 / (1 + np.exp(-x))


LOGITS = 3 * randn(4, 3)
REFERENCE_CASES = [  # (id, our loss with reduction="none", elementwise reference)
    ("bce", lambda r: F.binary_cross_entropy(P, T, reduction=r), bce_reference(P, T)),
    ("bce_with_logits", lambda r: F.binary_cross_entropy_with_logits(LOGITS, T, reduction=r),
     bce_reference(sigmoid_reference(LOGITS), T)),
    ("mse", lambda r: F.mse_loss(P, T, reduction=r), (P - T) ** 2),
]


@pytest.mark.parametrize("loss,elementwise", [c[1:] for c in REFERENCE_CASES],
                         ids=[c[0] for c in REFERENCE_CASES])
@pytest.mark.parametrize("reduction,reduce", [("none", lambda a: a), ("sum", np.sum), ("mean", np.mean)],
                         ids=["none", "sum", "mean"])
def test_values_and_reductions(loss, elementwise, reduction, reduce):
    out = loss(reduction)
    assert out.shape == np.shape(reduce(elementwise))  # "none" keeps (4, 3); "sum"/"mean" give ()
    np.testing.assert_allclose(out.numpy(), reduce(elementwise), rtol=1e-10)


def test_bce_with_logits_equals_bce_of_sigmoid():
    """Same loss, same gradient (σ(x) - t, times 1/n for the mean), two ways."""
    x1 = minivae.tensor(LOGITS, requires_grad=True)
    x2 = minivae.tensor(LOGITS, requires_grad=True)
    fused = F.binary_cross_entropy_with_logits(x1, T)
    composed = F.binary_cross_entropy(F.sigmoid(x2), T)
    fused.backward()
    composed.backward()
    np.testing.assert_allclose(fused.item(), composed.item(), rtol=1e-10)
    np.testing.assert_allclose(x1.grad, x2.grad, rtol=1e-8)
    np.testing.assert_allclose(x1.grad, (sigmoid_reference(LOGITS) - T) / T.size, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_at_p_zero_and_one_is_finite(dtype):
    """log 0 would be -inf; the clip to [1e-7, 1 - 1e-7] caps a confident miss at about -log(1e-7) ≈ 16.1.
    The clip is active there, and its gradient (zero) is what reaches p."""
    p = minivae.tensor([0.0, 1.0, 0.0, 1.0], dtype=dtype, requires_grad=True)
    t = np.array([1.0, 0.0, 0.0, 1.0])
    with np.errstate(all="raise"):
        loss = F.binary_cross_entropy(p, t, reduction="none")
        loss.sum().backward()
    assert loss.dtype == dtype and p.grad.dtype == dtype
    # (in float32, 1 - 1e-7 rounds to 1 - 2⁻²³, so the p = 1 miss costs -log(2⁻²³) ≈ 15.9)
    np.testing.assert_allclose(loss.numpy(), [-np.log(1e-7), -np.log(1e-7), 0, 0], rtol=0.02, atol=2e-7)
    np.testing.assert_array_equal(p.grad, 0.0)


def test_bce_with_logits_is_finite_for_huge_logits():
    x = minivae.tensor([-500.0, 500.0, -500.0, 500.0], requires_grad=True)
    t = np.array([1.0, 0.0, 0.0, 1.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        loss.sum().backward()
    np.testing.assert_allclose(loss.numpy(), [500, 500, 0, 0])  # a confident miss costs |x|
    np.testing.assert_allclose(x.grad, [-1, 1, 0, 0])           # σ(x) - t


def test_target_gets_no_gradient_even_if_it_asks_for_one():
    p = minivae.tensor(P, requires_grad=True)
    t = minivae.tensor(T, requires_grad=True)
    F.mse_loss(p, t).backward()
    assert p.grad is not None and t.grad is None


def test_target_takes_the_prediction_dtype():
    p = minivae.tensor(P, dtype=np.float32, requires_grad=True)
    loss = F.binary_cross_entropy(p, T)   # T is float64
    loss.backward()
    assert loss.dtype == np.float32 and p.grad.dtype == np.float32


# ---- the KL term ---------------------------------------------------------------------------------
def test_gaussian_kl_matches_the_formula_and_is_per_sample():
    mu, log_var = randn(5, 3), randn(5, 3, seed=1)
    expected = -0.5 * np.sum(1 + log_var - mu ** 2 - np.exp(log_var), axis=1)
    kl = F.gaussian_kl(mu, log_var)
    assert kl.shape == (5,)
    np.testing.assert_allclose(kl.numpy(), expected, rtol=1e-12)
    assert (kl.numpy() > 0).all()   # a KL divergence is never negative


def test_gaussian_kl_is_zero_for_the_prior_itself():
    kl = F.gaussian_kl(np.zeros((2, 4)), np.zeros((2, 4)))
    np.testing.assert_array_equal(kl.numpy(), 0.0)


def test_gaussian_kl_matches_the_closed_form_of_a_one_dimensional_case():
    """KL(N(μ, σ²) ‖ N(0, 1)) = log(1/σ) + (σ² + μ²)/2 - 1/2; here μ = 1, σ = 2."""
    kl = F.gaussian_kl(np.array([[1.0]]), np.array([[np.log(4.0)]]))
    np.testing.assert_allclose(kl.item(), np.log(1 / 2) + (4 + 1) / 2 - 0.5)


# ---- errors ----------------------------------------------------------------------------------
ERROR_CASES = [  # (id, call, error type, message pattern)
    ("bce-reduction", lambda: F.binary_cross_entropy(P, T, reduction="avg"), ValueError,
     r"binary_cross_entropy: unknown reduction 'avg'"),
    ("mse-reduction", lambda: F.mse_loss(P, T, reduction="batchmean"), ValueError,
     r"mse_loss: unknown reduction 'batchmean'"),
    ("bce-shapes", lambda: F.binary_cross_entropy(P, T[:, :2]), ValueError,
     r"binary_cross_entropy: prediction has shape \(4, 3\) but target has shape \(4, 2\)"),
    ("logits-shapes", lambda: F.binary_cross_entropy_with_logits(P, T.ravel()), ValueError,
     r"binary_cross_entropy_with_logits: prediction has shape \(4, 3\) but target has shape \(12,\)"),
    ("mse-shapes", lambda: F.mse_loss(P[:1], T), ValueError,
     r"mse_loss: prediction has shape \(1, 3\) but target has shape \(4, 3\)"),
    ("kl-shapes", lambda: F.gaussian_kl(randn(4, 3), randn(4, 2)), ValueError,
     r"gaussian_kl: mu has shape \(4, 3\) but log_var has shape \(4, 2\)"),
    ("kl-ndim", lambda: F.gaussian_kl(randn(3), randn(3)), ValueError,
     r"gaussian_kl: mu must have 2 dimensions \(N, latent_dim\), got shape \(3,\)"),
]


@pytest.mark.parametrize("call,error,match", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_errors_name_the_op_and_shapes(call, error, match):
    with pytest.raises(error, match=match):
        call()
