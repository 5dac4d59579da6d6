"""The reparameterization trick: gradient checks with fixed noise, the derivative by hand,
reproducibility from the seed, and the statistics of the samples."""
import numpy as np
import pytest
from helpers import Case, randn

import minivae
from minivae import functional as F
from minivae import rng

EPS = randn(4, 3, seed=7)


pytestmark = pytest.mark.usefixtures("keep_global_rng_state")  # tests here reseed minivae's generators


def reparameterize_seeded(mu, log_var):
    """The default noise, drawn afresh from the same seed on every call (gradcheck calls often)."""
    minivae.manual_seed(0)
    return F.reparameterize(mu, log_var)


GRADCHECK_CASES = [
    Case(op="reparameterize", fn=lambda mu, log_var: F.reparameterize(mu, log_var, EPS),
         inputs=[randn(4, 3), randn(4, 3, seed=1)], id="fixed-eps"),
    Case(op="reparameterize", fn=reparameterize_seeded, inputs=[randn(4, 3), randn(4, 3, seed=1)],
         id="seeded-eps"),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_gradcheck(case):
    case.check()


def test_gradients_by_hand():
    """dz/dμ = 1 and dz/d(log σ²) = ½ σ ε, with σ = exp(½ log σ²)."""
    mu = minivae.tensor(randn(4, 3), requires_grad=True)
    log_var = minivae.tensor(randn(4, 3, seed=1), requires_grad=True)
    z = F.reparameterize(mu, log_var, EPS)
    z.sum().backward()
    sigma = np.exp(0.5 * log_var.data)
    np.testing.assert_allclose(z.numpy(), mu.data + sigma * EPS)
    np.testing.assert_array_equal(mu.grad, 1.0)
    np.testing.assert_allclose(log_var.grad, 0.5 * sigma * EPS)


def test_default_eps_comes_from_the_sample_generator():
    """With μ = 0 and log σ² = 0, z is ε itself: the next draw of generator("sample")."""
    minivae.manual_seed(3)
    expected = rng.generator("sample").standard_normal((5, 2), dtype=np.float32)
    minivae.manual_seed(3)
    z = F.reparameterize(np.zeros((5, 2), np.float32), np.zeros((5, 2), np.float32))
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z.numpy(), expected)


def test_same_seed_same_samples_and_other_streams_do_not_interfere():
    mu, log_var = randn(3, 2), randn(3, 2, seed=1)
    minivae.manual_seed(11)
    first = F.reparameterize(mu, log_var).numpy()
    minivae.manual_seed(11)
    rng.generator("dropout").random(100)  # drawing dropout masks must not shift the latent noise
    second = F.reparameterize(mu, log_var).numpy()
    third = F.reparameterize(mu, log_var).numpy()  # the stream moves on: fresh noise
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(second, third)


def test_samples_have_mean_mu_and_std_sigma():
    """z ~ N(μ, σ²): with μ = 2 and σ = 3, the mean and std of 200 000 samples are within a few
    standard errors (3/√n ≈ 0.007) of 2 and 3."""
    minivae.manual_seed(0)
    n = 200_000
    z = F.reparameterize(np.full((n, 1), 2.0), np.full((n, 1), np.log(9.0))).numpy()
    assert abs(z.mean() - 2.0) < 0.03
    assert abs(z.std() - 3.0) < 0.03


@pytest.mark.parametrize("log_var,eps,match", [
    (randn(4, 2), None, r"reparameterize: mu has shape \(4, 3\) but log_var has shape \(4, 2\)"),
    (randn(4, 3), randn(3), r"reparameterize: mu has shape \(4, 3\) but eps has shape \(3,\)"),
], ids=["log_var-shape", "eps-shape"])
def test_shape_errors(log_var, eps, match):
    with pytest.raises(ValueError, match=match):
        F.reparameterize(randn(4, 3), log_var, eps)
