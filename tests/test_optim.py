"""Optimizers: each rule against its formula worked by hand, then convergence, saving and loading.

The parameters are `minivae.Tensor`s with `.grad` set by hand (the optimizer reads only `.data`
and `.grad`), in float64 so that the hand-computed numbers can be compared closely.
"""
import math

import numpy as np
import pytest

import minivae
from minivae.optim import SGD, Adam, RMSprop, StepDecay, make_optimizer


def param(values):
    return minivae.Tensor(np.array(values, dtype=np.float64), requires_grad=True)


# ---- 1. a few steps on f(p) = ½p², whose gradient is p, written out number by number ------------

def run_on_half_square(optimizer, p, steps):
    """Take `steps` steps on f(p) = ½p² (gradient g = p); return p after each step."""
    values = []
    for _ in range(steps):
        p.grad = p.data.copy()
        optimizer.step()
        values.append(p.data.item())
    return values


@pytest.mark.parametrize("kwargs, expected", [
    # p = p − 0.1·p
    ({}, [0.9, 0.81, 0.729]),
    # v1 = −0.1·1 = −0.1,            p1 = 1 − 0.1 = 0.9
    # v2 = 0.9·(−0.1) − 0.1·0.9 = −0.18,   p2 = 0.9 − 0.18 = 0.72
    # v3 = 0.9·(−0.18) − 0.1·0.72 = −0.234, p3 = 0.72 − 0.234 = 0.486
    ({"momentum": 0.9}, [0.9, 0.72, 0.486]),
    # v1 = −0.1,   p1 = 1 + 0.9·(−0.1) − 0.1·1 = 0.81
    # v2 = 0.9·(−0.1) − 0.1·0.81 = −0.171,   p2 = 0.81 + 0.9·(−0.171) − 0.1·0.81 = 0.5751
    ({"momentum": 0.9, "nesterov": True}, [0.81, 0.5751]),
], ids=["plain", "momentum", "nesterov"])
def test_sgd_by_hand(kwargs, expected):
    p = param([1.0])
    values = run_on_half_square(SGD([p], lr=0.1, **kwargs), p, len(expected))
    np.testing.assert_allclose(values, expected, rtol=1e-12)


@pytest.mark.parametrize("inside, expected", [
    (False, 2 - 0.01 * 2 / (math.sqrt(0.4) + 1e-7)),   # Keras 2, PyTorch: √s + eps
    (True, 2 - 0.01 * 2 / math.sqrt(0.4 + 1e-7)),      # tf.keras 2, Keras 3: √(s + eps)
], ids=["eps-outside", "eps-inside"])
def test_rmsprop_first_step_by_hand(inside, expected):
    # s1 = 0.1·g² = 0.1·4 = 0.4
    p = param([2.0])
    values = run_on_half_square(RMSprop([p], lr=0.01, eps_inside_root=inside), p, 1)
    np.testing.assert_allclose(values, [expected], rtol=1e-12)


def test_rmsprop_eps_inside_the_root_caps_small_gradients():
    """With g tiny, s ≈ 0.1·g²: √s + eps ≈ 0.32·|g| gives a step of ~3·lr, √(s + eps) one of
    ~lr·|g|/√eps, far smaller."""
    steps = {}
    for inside in (False, True):
        p = param([0.0])
        p.grad = np.array([1e-6])
        RMSprop([p], lr=0.01, eps_inside_root=inside).step()
        steps[inside] = -p.data[0]
    np.testing.assert_allclose(steps[False], 0.01 * 1e-6 / (math.sqrt(0.1) * 1e-6 + 1e-7), rtol=1e-12)
    np.testing.assert_allclose(steps[True], 0.01 * 1e-6 / math.sqrt(0.1 * 1e-12 + 1e-7), rtol=1e-12)
    assert steps[False] > 100 * steps[True]


def test_adam_first_step_is_lr_times_sign_of_gradient():
    # m1 = 0.1·g, v1 = 0.001·g², lr_1 = lr·√0.001/0.1, so the step is lr·g/(|g| + eps/√0.001):
    # whatever the gradient's scale, Adam's first step has length about lr.
    g = np.array([400.0, -0.01, 1e-3])
    p = param([3.0, -0.002, 500.0])
    p.grad = g
    Adam([p], lr=0.1).step()
    step = np.array([3.0, -0.002, 500.0]) - p.data
    np.testing.assert_allclose(step, 0.1 * g / (np.abs(g) + 1e-7 / math.sqrt(0.001)), rtol=1e-10)
    np.testing.assert_allclose(step, 0.1 * np.sign(g), rtol=5e-3)


# ---- 2. several steps on f(p) = ½‖A p − b‖², against the formulas in plain NumPy ---------------

A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, -1.0], [0.5, 0.0, 1.0], [0.0, -1.0, 2.0]])
b = np.array([1.0, -2.0, 0.5, 3.0])


def quadratic_grad(p):
    """∇ ½‖A p − b‖² = Aᵀ(A p − b)."""
    return A.T @ (A @ p - b)


def reference_sgd(p, steps, lr, momentum=0.0, nesterov=False):
    v = np.zeros_like(p)
    for _ in range(steps):
        g = quadratic_grad(p)
        v = momentum * v - lr * g
        p = p + (momentum * v - lr * g if nesterov else v)
    return p


def reference_rmsprop(p, steps, lr, rho=0.9, eps=1e-7):
    s = np.zeros_like(p)
    for _ in range(steps):
        g = quadratic_grad(p)
        s = rho * s + (1 - rho) * g ** 2
        p = p - lr * g / (np.sqrt(s) + eps)
    return p


def reference_adam(p, steps, lr, beta1=0.9, beta2=0.999, eps=1e-7):
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t in range(1, steps + 1):
        g = quadratic_grad(p)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        lr_t = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        p = p - lr_t * m / (np.sqrt(v) + eps)
    return p


@pytest.mark.parametrize("cls, kwargs, reference", [
    (SGD, {"lr": 0.02}, reference_sgd),
    (SGD, {"lr": 0.02, "momentum": 0.8}, reference_sgd),
    (SGD, {"lr": 0.02, "momentum": 0.8, "nesterov": True}, reference_sgd),
    (RMSprop, {"lr": 0.01, "rho": 0.8}, reference_rmsprop),
    (Adam, {"lr": 0.05, "beta1": 0.8, "beta2": 0.99}, reference_adam),
], ids=["sgd", "sgd-momentum", "sgd-nesterov", "rmsprop", "adam"])
def test_steps_follow_the_formula(cls, kwargs, reference):
    start = np.array([0.5, -1.0, 2.0])
    p = param(start)
    optimizer = cls([p], **kwargs)
    for _ in range(7):
        p.grad = quadratic_grad(p.data)
        optimizer.step()
    np.testing.assert_allclose(p.data, reference(start, 7, **kwargs), rtol=1e-12, atol=1e-14)


# ---- 3. Adam finds the minimum of Rosenbrock's banana valley -----------------------------------

def test_adam_minimizes_rosenbrock():
    """f(x, y) = (1 − x)² + 100·(y − x²)², minimum 0 at (1, 1), from the classic start (−1.5, 2)."""
    p = param([-1.5, 2.0])
    optimizer = Adam([p], lr=0.02)
    for _ in range(3000):
        x, y = p.data
        p.grad = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        optimizer.step()
    np.testing.assert_allclose(p.data, [1.0, 1.0], atol=1e-3)


# ---- 4. the update is in place; zero_grad; parameters without a gradient are skipped -----------

@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_step_updates_in_place_and_keeps_dtype(name):
    p = minivae.Tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    array = p.data
    p.grad = np.full((2, 3), 0.5, dtype=np.float32)
    make_optimizer(name, [p]).step()
    assert p.data is array and p.data.dtype == np.float32
    assert (p.data < 1).all()


def test_zero_grad_clears_every_gradient():
    params = [param([1.0, 2.0]), param([[3.0]])]
    for p in params:
        p.grad = np.ones_like(p.data)
    Adam(params).zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_parameter_without_gradient_is_skipped(name):
    with_grad, without_grad = param([1.0, 1.0]), param([5.0])
    optimizer = make_optimizer(name, [with_grad, without_grad], lr=0.1)
    with_grad.grad = np.array([1.0, -1.0])
    optimizer.step()
    assert without_grad.data.tolist() == [5.0]
    assert with_grad.data.tolist() != [1.0, 1.0]
    for slots in optimizer.state.values():  # its state was never created
        assert slots[1] is None


# ---- 5. state_dict: save, load into a fresh optimizer, and both go on identically --------------

def two_params(seed=0):
    rng = np.random.default_rng(seed)
    return [param(rng.standard_normal((3, 2))), param(rng.standard_normal(4))]


def set_grads(params, step):
    """A gradient that depends on the parameters and the step: ∇ of Σ ½(p − step/10)²·(index + 1)."""
    for index, p in enumerate(params):
        p.grad = (p.data - step / 10) * (index + 1)


@pytest.mark.parametrize("cls, kwargs", [
    (SGD, {"momentum": 0.9, "nesterov": True}), (RMSprop, {}), (Adam, {})],
    ids=["sgd", "rmsprop", "adam"])
def test_state_dict_round_trip_continues_bit_for_bit(cls, kwargs):
    params_a = two_params()
    a = cls(params_a, lr=0.05, **kwargs)
    for step in range(5):
        set_grads(params_a, step)
        a.step()
    saved = a.state_dict()
    assert saved["iterations"] == 5 and saved["lr"] == 0.05
    assert all(isinstance(s, np.ndarray) for name in cls.state_names for s in saved[name])

    params_b = [param(p.data.copy()) for p in params_a]
    b = cls(params_b, lr=1.0, **kwargs)  # the lr comes from the state
    b.load_state_dict(saved)
    for step in range(5, 10):
        set_grads(params_a, step)
        set_grads(params_b, step)
        a.step()
        b.step()
    for pa, pb in zip(params_a, params_b):
        np.testing.assert_array_equal(pa.data, pb.data)
    assert b.iterations == a.iterations == 10


def test_state_dict_is_a_copy():
    params = two_params()
    optimizer = Adam(params)
    set_grads(params, 0)
    optimizer.step()
    saved = optimizer.state_dict()
    before = saved["m"][0].copy()
    optimizer.step()                       # the optimizer goes on: the saved state must not move
    np.testing.assert_array_equal(saved["m"][0], before)
    Adam(params).load_state_dict(saved)    # nor may a loaded optimizer write into it later
    np.testing.assert_array_equal(saved["m"][0], before)


def test_load_state_dict_refuses_a_state_that_does_not_fit():
    saved = Adam(two_params()).state_dict()
    with pytest.raises(ValueError, match="for 2 parameters, this Adam has 1"):
        Adam(two_params()[:1]).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"parameter 1 has shape \(4,\) in the state"):
        Adam([param(np.zeros((3, 2))), param(np.zeros(5))]).load_state_dict(saved)
    with pytest.raises(ValueError, match="from 'Adam', this optimizer is 'RMSprop'"):
        RMSprop(two_params()).load_state_dict(saved)


# ---- 6. the step-decay schedule and the name -> optimizer helper --------------------------------

def test_step_decay_halves_every_step_size_epochs():
    schedule = StepDecay(1e-3, decay=0.5, step_size=2)
    assert [schedule(epoch) for epoch in range(6)] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4]
    optimizer = SGD([param([0.0])], lr=1.0)
    assert schedule.apply(optimizer, 4) == optimizer.lr == 2.5e-4


def test_make_optimizer_names_and_errors():
    p = [param([0.0])]
    assert type(make_optimizer("Adam", p)) is Adam and make_optimizer("adam", p).lr == 1e-3
    assert type(make_optimizer("rmsprop", p, lr=0.5)) is RMSprop
    assert make_optimizer("sgd", p, lr=0.5).lr == 0.5
    with pytest.raises(ValueError, match="unknown optimizer 'adamw': choose one of adam, rmsprop, sgd"):
        make_optimizer("adamw", p)
    with pytest.raises(ValueError, match="empty list of parameters"):
        make_optimizer("adam", [])


# ---- 7. on the GPU, the same numbers (where CuPy and a GPU are present) ------------------------

@pytest.mark.skipif(not minivae.cuda_available(), reason="needs CuPy and a GPU")
@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_gpu_matches_cpu(name):
    from minivae import backend
    cpu, gpu = two_params(), [p.to("cuda") for p in two_params()]
    opt_cpu, opt_gpu = make_optimizer(name, cpu, lr=0.05), make_optimizer(name, gpu, lr=0.05)
    for step in range(5):
        set_grads(cpu, step)
        set_grads(gpu, step)
        opt_cpu.step()
        opt_gpu.step()
    for pc, pg in zip(cpu, gpu):
        np.testing.assert_allclose(backend.to_numpy(pg.data), pc.data, rtol=1e-10)
    resumed = make_optimizer(name, [p.to("cuda") for p in gpu], lr=0.05)
    resumed.load_state_dict(opt_cpu.state_dict())  # CPU arrays land on the parameters' GPU
    assert all(backend.device_of(s) == "cuda:0" for slots in resumed.state.values() for s in slots)
