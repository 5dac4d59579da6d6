"""The ops run our CUDA kernels where `backend.kernels_for` says so: each checked against its own xp path.

Every wired op runs twice on the same inputs, once with `use_kernels("never")` (its xp expression,
the reference) and once with `use_kernels("always")` (its kernels). Its output and every gradient
must agree: float64 to ~1e-12, float32 to ~1e-5. A spy records which kernels ran, so a test cannot
pass by running the xp path twice. Then one training step of two tiny VAEs, the optimizers, and
what the modes themselves promise.

Without a GPU the kernels run in Numba's CUDA simulator (conftest.py sets NUMBA_ENABLE_CUDASIM=1),
on NumPy arrays; on a GPU the same tests compare our kernels with CuPy's expressions.
"""
import os
import sys
from collections import Counter

import numpy as np
import pytest

import minivae
import minivae.functional as F
from minivae import backend, models, nn, optim
from minivae.tensor import Tensor

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
pytest.importorskip("numba", reason="the CUDA kernels need numba and numba-cuda: "
                                    "pip install 'minivae[sim]' (CPU simulator) or 'minivae[gpu]'")
from minivae import kernels  # noqa: E402

TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
LAUNCHERS = ("relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
             "sigmoid_forward", "sigmoid_backward", "reparameterize_forward", "reparameterize_backward",
             "bce_with_grad", "mse_with_grad", "gaussian_kl_with_grad", "adam_update", "rmsprop_update",
             "bias_grad", "im2col", "col2im", "gemm")


@pytest.fixture(scope="module")
def device():
    return "cpu" if SIMULATED else "cuda"


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(autouse=True)
def as_on_a_gpu(monkeypatch):
    """In the simulator the arrays are NumPy's, so the CPU's own path for a convolution with one
    channel in (functional/one_channel.py, also a one-channel-out layer's backward) would take the
    place of the kernels these tests are about: off, as it is for CuPy arrays on a GPU."""
    if SIMULATED:
        from minivae.functional import one_channel
        monkeypatch.setitem(one_channel.settings, "enabled", False)


@pytest.fixture(autouse=True)
def small_grid(monkeypatch):
    """In the simulator, which runs every CUDA thread as a Python thread, launch 2 blocks of 8
    threads: the grid-stride loops then cover the rest, and bias_grad's tree has 3 levels. The
    simulator's block manager busy-polls its threads, so a short GIL switch interval speeds it up."""
    if SIMULATED:
        monkeypatch.setattr(kernels, "THREADS_PER_BLOCK", 8)
        monkeypatch.setattr(kernels, "MAX_BLOCKS", 2)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(2e-4)
        yield
        sys.setswitchinterval(interval)
    else:
        yield


@pytest.fixture
def launches(monkeypatch):
    """A Counter of kernel launches by launcher name: every launcher in `kernels` is wrapped."""
    counts = Counter()
    for name in LAUNCHERS:
        def spy(*args, _launcher=getattr(kernels, name), _name=name, **kwargs):
            counts[_name] += 1
            return _launcher(*args, **kwargs)
        monkeypatch.setattr(kernels, name, spy)
    return counts


def rng(seed):
    return np.random.default_rng(seed)


def assert_close(actual, expected, dtype, what=""):
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {np.dtype(dtype)}"
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOLERANCE[dtype])


def forward_backward(fn, arrays, device, mode):
    """fn(*Tensors made from `arrays`) under use_kernels(mode), then backward from a fixed random dL/dy.
    Returns the output and the inputs' gradients as NumPy arrays."""
    with backend.use_kernels(mode):
        minivae.manual_seed(0)                            # the same noise wherever an op draws some
        inputs = [Tensor(a, requires_grad=True, device=device) for a in arrays]
        y = fn(*inputs)
        y.backward(rng(99).standard_normal(y.shape))
    return backend.to_numpy(y.data), [backend.to_numpy(t.grad) for t in inputs]


# ---- 1. each op: kernels against xp -----------------------------------------------------------
# (id, fn, input arrays (float64; cast to the dtype under test), the launchers it must use)

def with_zeros(*shape, seed):
    """Normal numbers with some exact zeros, where ReLU-like slopes are decided by convention."""
    x = rng(seed).standard_normal(shape)
    x.reshape(-1)[::7] = 0.0
    return x


PROBS = rng(3).uniform(0.01, 0.99, (3, 7))
PROBS[0, :4] = 0.0, 1.0, 1e-9, 1 - 1e-9            # saturated: BCE clips them and passes no gradient
TARGETS = rng(4).uniform(0, 1, (3, 7))
NOISE = rng(5).standard_normal((3, 5))


def constant(array, like):
    """A target or noise array as a Tensor of `like`'s dtype and device (it gets no gradient)."""
    return Tensor(array.astype(like.dtype), device=like.device)


OPS = [
    ("relu", F.relu, [with_zeros(2, 3, 5, seed=1)], {"relu_forward", "relu_backward"}),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.3), [with_zeros(2, 3, 5, seed=1)],
     {"leaky_relu_forward", "leaky_relu_backward"}),
    ("sigmoid", F.sigmoid, [10 * rng(2).standard_normal((3, 7))], {"sigmoid_forward", "sigmoid_backward"}),
    ("reparameterize", lambda mu, lv: F.reparameterize(mu, lv, constant(NOISE, mu)),
     [rng(6).standard_normal((3, 5)), rng(7).standard_normal((3, 5))],
     {"reparameterize_forward", "reparameterize_backward"}),
    ("reparameterize-drawn-noise", F.reparameterize,
     [rng(6).standard_normal((3, 5)), rng(7).standard_normal((3, 5))],
     {"reparameterize_forward", "reparameterize_backward"}),
    *[(f"bce-{reduction}", lambda p, r=reduction: F.binary_cross_entropy(p, constant(TARGETS, p), r),
       [PROBS], {"bce_with_grad"}) for reduction in ("mean", "sum", "none")],
    *[(f"mse-{reduction}", lambda y, r=reduction: F.mse_loss(y, constant(TARGETS, y), r),
       [rng(8).standard_normal((3, 7))], {"mse_with_grad"}) for reduction in ("mean", "sum", "none")],
    ("gaussian_kl", F.gaussian_kl, [rng(9).standard_normal((3, 5)), rng(10).standard_normal((3, 5))],
     {"gaussian_kl_with_grad"}),
    ("linear", F.linear, [rng(11).standard_normal((3, 5)), rng(12).standard_normal((5, 4)),
                          rng(13).standard_normal(4)], {"bias_grad"}),
    # Keras "same" with stride 2 on 7×6: pads (1, 1) rows, (0, 1) columns
    ("conv2d-same-stride2", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding="same"),
     [rng(14).standard_normal((3, 2, 7, 6)), rng(15).standard_normal((4, 2, 3, 3)), rng(16).standard_normal(4)],
     {"im2col", "col2im", "bias_grad"}),
    ("conv2d-pad1-stride2x1", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1),
     [rng(17).standard_normal((1, 3, 5, 5)), rng(18).standard_normal((2, 3, 2, 3)), rng(19).standard_normal(2)],
     {"im2col", "col2im", "bias_grad"}),
    ("conv2d-one-channel-out", lambda x, w, b: F.conv2d(x, w, b),            # _scatter's outer product
     [rng(20).standard_normal((2, 2, 5, 4)), rng(21).standard_normal((1, 2, 3, 3)), rng(22).standard_normal(1)],
     {"im2col", "col2im", "bias_grad"}),
    ("conv_transpose2d-stride2-output_padding",
     lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1),
     [rng(23).standard_normal((3, 2, 3, 4)), rng(24).standard_normal((2, 3, 3, 3)), rng(25).standard_normal(3)],
     {"im2col", "col2im", "bias_grad"}),
    ("conv_transpose2d-same-stride2", lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding="same"),
     [rng(26).standard_normal((2, 3, 3, 3)), rng(27).standard_normal((3, 2, 4, 4)), rng(28).standard_normal(2)],
     {"im2col", "col2im", "bias_grad"}),
    # a conv's (N, C, H, W) output is a view of CHWN memory: the kernels must read it in place
    ("conv2d-leaky_relu-conv2d",
     lambda x, w1, w2: F.conv2d(F.leaky_relu(F.conv2d(x, w1, stride=2, padding="same"), 0.3), w2, padding=1),
     [rng(29).standard_normal((3, 2, 7, 5)), rng(30).standard_normal((4, 2, 3, 3)),
      rng(31).standard_normal((2, 4, 3, 3))],
     {"im2col", "col2im", "leaky_relu_forward", "leaky_relu_backward"}),
]


@pytest.mark.parametrize("fn, arrays, used", [case[1:] for case in OPS], ids=[case[0] for case in OPS])
def test_op_with_kernels_equals_its_xp_path(fn, arrays, used, dtype, device, launches):
    arrays = [a.astype(dtype) for a in arrays]
    y_xp, grads_xp = forward_backward(fn, arrays, device, "never")
    assert not launches
    y, grads = forward_backward(fn, arrays, device, "always")
    assert set(launches) == used
    assert_close(y, y_xp, dtype, "output")
    for i, (g, g_xp) in enumerate(zip(grads, grads_xp)):
        assert_close(g, g_xp, dtype, f"gradient of input {i}")


def test_leaky_relu_kernel_gives_the_slope_a_at_zero(device):
    """The convention the xp path follows (x <= 0 gets slope a), checked directly, not only by parity."""
    x = np.array([-2.0, 0.0, 3.0])
    with backend.use_kernels("always"):
        t = Tensor(x, requires_grad=True, device=device)
        F.leaky_relu(t, 0.25).sum().backward()
    np.testing.assert_array_equal(backend.to_numpy(t.grad), [0.25, 0.25, 1.0])


def test_elementwise_kernels_keep_the_convolutions_chwn_layout(device):
    """leaky_relu of a conv output is laid out as the conv output (a CHWN view), not copied to NCHW."""
    x = Tensor(rng(32).standard_normal((3, 2, 7, 5)), device=device)
    w = Tensor(rng(33).standard_normal((4, 2, 3, 3)), device=device)
    with backend.use_kernels("always"):
        conv = F.conv2d(x, w, stride=2, padding="same")
        activated = F.leaky_relu(conv, 0.3)
    assert conv.data.transpose(1, 2, 3, 0).flags.c_contiguous      # CHWN memory
    assert activated.data.strides == conv.data.strides


# ---- 2. the tiled GEMM, by choice ---------------------------------------------------------------

def test_tiled_matmul_runs_only_when_chosen_and_equals_blas(device, launches):
    """linear and conv2d with backend.use_matmul("tiled"): forward and both matrix-product gradients."""
    cases = [(F.linear, [rng(34).standard_normal((3, 5)), rng(35).standard_normal((5, 4))]),
             (lambda x, w: F.conv2d(x, w, stride=2, padding="same"),
              [rng(36).standard_normal((2, 1, 4, 3)), rng(37).standard_normal((2, 1, 3, 3))])]
    for fn, arrays in cases:
        y_xp, grads_xp = forward_backward(fn, arrays, device, "never")
        with backend.use_matmul("tiled"):
            forward_backward(fn, arrays, device, "never")            # tiled, but kernels off
            assert launches["gemm"] == 0
            y, grads = forward_backward(fn, arrays, device, "always")
        assert launches["gemm"] == 3                                 # y, dL/dx, dL/dw
        launches.clear()
        assert_close(y, y_xp, np.float64, "output")
        for g, g_xp in zip(grads, grads_xp):
            assert_close(g, g_xp, np.float64, "gradient")


# ---- 3. one training step of a tiny VAE ---------------------------------------------------------

def tiny_foster():
    """Foster's architecture on 6×6 images: "same" convs with LeakyReLU, transposed convs, sigmoid."""
    return models.foster_vae(input_shape=(1, 6, 6), encoder_conv_filters=(3, 4),
                             encoder_conv_kernel_size=(3, 3), encoder_conv_strides=(1, 2),
                             decoder_conv_filters=(3, 1), decoder_conv_kernel_size=(3, 3),
                             decoder_conv_strides=(2, 1), z_dim=2)


def tiny_chollet():
    """Chollet's layer kinds on 6×6 images: ReLU convs, a Dense bottleneck, ConvTranspose + Conv, sigmoid."""
    encoder = nn.Sequential(conv_0=nn.Conv2d(1, 3, 3, 1), relu_0=nn.ReLU(),
                            conv_1=nn.Conv2d(3, 4, 3, 2), relu_1=nn.ReLU(),
                            flatten=nn.Flatten(), dense=nn.Dense(4 * 3 * 3, 5), relu_dense=nn.ReLU())
    decoder = nn.Sequential(decoder_input=nn.Dense(2, 4 * 3 * 3), relu_input=nn.ReLU(),
                            reshape=nn.Reshape(4, 3, 3), conv_t=nn.ConvTranspose2d(4, 3, 3, 2),
                            relu_t=nn.ReLU(), conv_out=nn.Conv2d(3, 1, 3, 1), sigmoid=nn.Sigmoid())
    return models.VAE(encoder, 5, 2, decoder)


STEPS = [  # id, model, loss, optimizer, lr, the launchers it must use
    ("foster", tiny_foster, models.foster_loss, "adam", 5e-4,
     {"im2col", "col2im", "bias_grad", "leaky_relu_forward", "leaky_relu_backward", "sigmoid_forward",
      "sigmoid_backward", "reparameterize_forward", "reparameterize_backward", "mse_with_grad",
      "gaussian_kl_with_grad", "adam_update"}),
    ("chollet", tiny_chollet, models.chollet_loss, "rmsprop", 1e-3,
     {"im2col", "col2im", "bias_grad", "relu_forward", "relu_backward", "sigmoid_forward",
      "sigmoid_backward", "reparameterize_forward", "reparameterize_backward", "bce_with_grad",
      "gaussian_kl_with_grad", "rmsprop_update"}),
]


def one_step(build, loss_fn, optimizer, lr, images, device, mode):
    """Build the model from seed 0, take one optimizer step on `images`; return the loss and the
    parameters after the step, as NumPy arrays."""
    with backend.use_kernels(mode):
        minivae.manual_seed(0)
        model = build()
        for p in model.parameters():
            p.data = p.data.astype(images.dtype)
        model.to(device)
        opt = optim.make_optimizer(optimizer, model.parameters(), lr)
        x = Tensor(images, device=device)
        loss = loss_fn(x, *model(x))[0]
        loss.backward()
        opt.step()
    return loss.item(), {name: p.numpy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("build, loss_fn, optimizer, lr, used", [s[1:] for s in STEPS], ids=[s[0] for s in STEPS])
def test_a_training_step_with_kernels_equals_one_without(build, loss_fn, optimizer, lr, used, device, launches):
    """float64, so that the comparison is tight: the step moves each weight by about lr."""
    images = rng(40).uniform(0, 1, (3, 1, 6, 6))
    loss_xp, params_xp = one_step(build, loss_fn, optimizer, lr, images, device, "never")
    loss, params = one_step(build, loss_fn, optimizer, lr, images, device, "always")
    assert set(launches) == used
    assert launches[f"{optimizer}_update"] == len(params)            # one fused update per parameter
    assert loss == pytest.approx(loss_xp, rel=1e-12)
    for name in params:
        np.testing.assert_allclose(params[name], params_xp[name], rtol=1e-12, atol=1e-15, err_msg=name)


# ---- 4. the optimizers' fused updates -----------------------------------------------------------

@pytest.mark.parametrize("name, settings", [
    ("adam", {}),
    ("rmsprop", {"eps": 1e-3}),                              # an eps large enough for its place to matter
    ("rmsprop", {"eps": 1e-3, "eps_inside_root": True}),
], ids=["adam", "rmsprop", "rmsprop-eps-inside-root"])
def test_fused_optimizer_update_equals_the_python_rule(name, settings, dtype, device, launches):
    """Three steps on two parameters, a fresh random gradient each step; the state must match too."""
    def run(mode):
        with backend.use_kernels(mode):
            params = [Tensor(rng(41).standard_normal((7, 13)).astype(dtype), requires_grad=True, device=device),
                      Tensor(rng(42).standard_normal(5).astype(dtype), requires_grad=True, device=device)]
            opt = optim.OPTIMIZERS[name](params, lr=0.01, **settings)
            for step in range(3):
                for i, p in enumerate(params):
                    p.grad = backend.to_device(rng(43 + 2 * step + i).standard_normal(p.shape).astype(dtype), device)
                opt.step()
        return [p.numpy() for p in params], opt.state_dict()
    params_xp, state_xp = run("never")
    params, state = run("always")
    assert launches[f"{name}_update"] == 3 * 2
    for p, p_xp in zip(params, params_xp):
        assert_close(p, p_xp, dtype, "parameter")
    for key in optim.OPTIMIZERS[name].state_names:
        for s, s_xp in zip(state[key], state_xp[key]):
            assert_close(s, s_xp, dtype, key)


def test_a_parameter_that_is_not_c_contiguous_takes_the_xp_rule(device, launches):
    """The fused kernel updates flat views in place, so a Fortran-ordered parameter (and its state,
    made by zeros_like in its layout) is updated by the xp lines instead: same numbers, no launch."""
    def run(mode):
        with backend.use_kernels(mode):
            p = Tensor(rng(44).standard_normal((4, 6)), requires_grad=True, device=device)
            p.data = backend.array_module(p.data).asfortranarray(p.data)
            p.grad = backend.to_device(rng(45).standard_normal((4, 6)), device)
            optim.Adam([p], lr=0.1).step()
        return p.numpy()
    fortran_xp = run("never")
    np.testing.assert_array_equal(run("always"), fortran_xp)
    assert launches["adam_update"] == 0


# ---- 5. the switch itself -------------------------------------------------------------------------

def test_auto_means_kernels_exactly_for_cupy_arrays(device, launches):
    """The default mode: a training step on NumPy arrays launches nothing; on CuPy arrays, kernels."""
    images = rng(46).uniform(0, 1, (2, 1, 6, 6))
    one_step(tiny_foster, models.foster_loss, "adam", 5e-4, images, device, "auto")
    assert bool(launches) == (device == "cuda")
    assert backend.kernels_for(np.zeros(3)) is False
    assert backend.kernels_for(None, np.zeros(3)) is False


def test_never_launches_nothing(device, launches):
    images = rng(46).uniform(0, 1, (2, 1, 6, 6))
    one_step(tiny_chollet, models.chollet_loss, "rmsprop", 1e-3, images, device, "never")
    assert not launches


def test_use_kernels_is_a_setter_and_a_context_manager():
    assert backend.kernels_for(np.zeros(1)) is False                # "auto", the default
    with backend.use_kernels("always"):
        assert backend.kernels_for(np.zeros(1))
        with backend.use_kernels("never"):
            assert not backend.kernels_for(np.zeros(1))
        assert backend.kernels_for(np.zeros(1))                    # the inner block restored "always"
    assert backend.kernels_for(np.zeros(1)) is False
    backend.use_kernels("always")                                   # a plain call sets it until changed
    try:
        assert backend.kernels_for(np.zeros(1))
    finally:
        backend.use_kernels("auto")
    with backend.use_kernels("always"), backend.use_matmul("tiled"):
        assert backend.tiled_matmul_for(np.zeros((2, 2)))
    assert not backend.tiled_matmul_for(np.zeros((2, 2)))


@pytest.mark.parametrize("call", [lambda: backend.use_kernels("gpu"), lambda: backend.use_matmul("cutlass")],
                         ids=["use_kernels", "use_matmul"])
def test_an_unknown_mode_is_refused_and_changes_nothing(call):
    with pytest.raises(ValueError, match="expected one of"):
        call()
    assert backend.kernels_for(np.zeros(1)) is False
    with backend.use_kernels("always"):
        assert not backend.tiled_matmul_for(np.zeros(1))


def test_cli_kernels_option_sets_the_mode(monkeypatch, capsys):
    """`--kernels never` on train or bench is the fallback to CuPy's own expressions on a GPU."""
    from minivae import cli
    monkeypatch.setitem(backend._settings, "kernels", "auto")      # restored after the test
    assert cli.main(["bench", "--synthetic", "--steps", "1", "--batch-size", "2", "--kernels", "never"]) == 0
    assert backend.kernel_mode() == "never"
    assert '"images_per_s"' in capsys.readouterr().out.splitlines()[-1]
    with pytest.raises(SystemExit):
        cli.main(["train", "--kernels", "sometimes"])
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_without_cupy_device_cuda_names_both_gpu_extras(monkeypatch):
    """As on a machine without CuPy: the error names the extra for each CUDA major version."""
    monkeypatch.setattr(backend, "_cupy", False)
    monkeypatch.setattr(backend, "_cupy_error", ImportError("No module named 'cupy'"))
    with pytest.raises(RuntimeError) as error:
        backend.require_cuda()
    message = str(error.value)
    assert "ImportError: No module named 'cupy'" in message
    assert "'minivae[gpu]'" in message and "'minivae[gpu-cuda13]'" in message and "\n" not in message
