"""The CUDA kernels in kernels/, each checked against a NumPy reference written here.

Without a GPU the kernels run in Numba's CUDA simulator, which executes every CUDA thread as a
Python thread: slow, so the shapes are small, but odd-sized, so that partial blocks, partial
tiles and out-of-range threads are all exercised. On a GPU the same tests run on CuPy arrays.
float64 results must match to ~1e-12, float32 ones to ~1e-5.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from minivae import backend

# conftest.py has set NUMBA_ENABLE_CUDASIM=1 when there is no GPU, before anything imported numba.
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

pytest.importorskip("numba", reason="the CUDA kernels need numba and numba-cuda: "
                                    "pip install 'minivae[sim]' (CPU simulator) or 'minivae[gpu]'")
from minivae import kernels  # noqa: E402

TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.fixture(scope="module")
def xp():
    """The array module the kernels get: NumPy in the simulator, CuPy on a GPU."""
    return np if SIMULATED else backend.require_cuda()


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def assert_close(actual, expected, dtype):
    actual = backend.to_numpy(actual)
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    np.testing.assert_allclose(actual, expected, **TOLERANCE[dtype])


def rng(seed=0):
    return np.random.default_rng(seed)


# ---- elementwise kernels: activations, sampling, fused losses --------------------------------
# Each case: launcher, its array inputs (NumPy, float64), its numbers, and the NumPy reference
# (run in float64 on the inputs rounded to the dtype under test) returning the output(s).

def sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))  # 1 / (1 + e^-x) without overflow


def bce_reference(p, t, low=1e-7, high=1 - 1e-7):
    pc = np.clip(p, low, high)
    loss = -(t * np.log(pc) + (1 - t) * np.log(1 - pc))
    grad = np.where((p < low) | (p > high), 0.0, (pc - t) / (pc * (1 - pc)))  # the clamp's slope is 0
    return loss, grad


SHAPE = (3, 37)                                  # 111 elements: one partial block
normal = rng(1).standard_normal(SHAPE)
upstream = rng(2).standard_normal(SHAPE)         # a gradient dL/dy
wide = 10 * rng(3).standard_normal(SHAPE)
wide[0, :3] = -800, -80, 80                      # e^800 overflows even float64: exp(-|x|) must be used
probs = rng(4).uniform(0.01, 0.99, SHAPE)       # (saturated ones: test_bce_clamps_as_xp_clip_does)
unit = rng(5).uniform(0, 1, SHAPE)               # targets, or the noise eps

ELEMENTWISE = [
    ("relu_forward", [normal], [], lambda x: np.maximum(x, 0)),
    ("relu_backward", [normal, upstream], [], lambda x, g: np.where(x > 0, g, 0)),
    ("leaky_relu_forward", [normal], [0.2], lambda x, s: np.where(x > 0, x, s * x)),
    ("leaky_relu_backward", [normal, upstream], [0.2], lambda x, g, s: np.where(x > 0, g, s * g)),
    ("sigmoid_forward", [wide], [], sigmoid),
    ("sigmoid_backward", [sigmoid(normal), upstream], [], lambda y, g: g * y * (1 - y)),
    ("reparameterize_forward", [normal, upstream, unit], [],
     lambda mu, lv, eps: mu + np.exp(lv / 2) * eps),
    ("reparameterize_backward", [normal, unit, upstream], [],
     lambda lv, eps, g: (g, g * 0.5 * np.exp(lv / 2) * eps)),
    ("bce_with_grad", [probs, unit], [], bce_reference),
    ("mse_with_grad", [normal, upstream], [], lambda y, t: ((y - t) ** 2, 2 * (y - t))),
    ("gaussian_kl_with_grad", [normal, upstream], [],
     lambda mu, lv: (-0.5 * (1 + lv - mu ** 2 - np.exp(lv)), mu, 0.5 * (np.exp(lv) - 1))),
]


@pytest.mark.parametrize("name, inputs, numbers, reference", ELEMENTWISE, ids=[c[0] for c in ELEMENTWISE])
def test_elementwise_matches_numpy(name, inputs, numbers, reference, xp, dtype):
    inputs = [a.astype(dtype) for a in inputs]
    outputs = getattr(kernels, name)(*(xp.asarray(a) for a in inputs), *numbers)
    expected = reference(*(a.astype(np.float64) for a in inputs), *numbers)
    if not isinstance(expected, tuple):
        outputs, expected = (outputs,), (expected,)
    assert len(outputs) == len(expected)
    for out, want in zip(outputs, expected):
        assert out.shape == SHAPE
        assert_close(out, want, dtype)


@pytest.mark.parametrize("p, clamped_to", [(0.0, "low"), (1.0, "high"), (5e-8, "low"), (1 - 5e-8, "high")])
def test_bce_clamps_as_xp_clip_does(p, clamped_to, xp, dtype):
    """The clip bounds 1e-7 and 1 − 1e-7 are rounded to p's dtype, as xp.clip(p, 1e-7, 1 − 1e-7)
    rounds them. In float32, 1 − 1e-7 is 1 − 2⁻²³, so a p of 1 loses −ln(2⁻²³) ≈ 15.9, not −ln(1e-7) ≈ 16.1."""
    p_and_t = np.array([p, 0.5 * (p < 0.5)], dtype)                         # target 0 for p near 1
    bound = np.clip(p_and_t[:1], 1e-7, 1 - 1e-7)[0]                         # NumPy's rounding
    assert bound == dtype(1e-7 if clamped_to == "low" else 1 - 1e-7)
    loss, grad = kernels.bce_with_grad(xp.asarray(p_and_t[:1]), xp.asarray(p_and_t[1:]))
    want_loss, want_grad = bce_reference(p_and_t[:1].astype(np.float64), p_and_t[1:].astype(np.float64),
                                         float(dtype(1e-7)), float(dtype(1 - 1e-7)))
    assert_close(loss, want_loss, dtype)
    assert_close(grad, want_grad, dtype)
    assert backend.to_numpy(grad)[0] == 0                                    # the clip's slope


def test_grid_stride_loop_covers_more_elements_than_threads(xp, monkeypatch):
    """With the grid capped at one block of 256 threads, each thread must loop to cover 600 elements."""
    monkeypatch.setattr(kernels, "MAX_BLOCKS", 1)
    a = rng(6).standard_normal(600)
    assert_close(kernels.relu_forward(xp.asarray(a)), np.maximum(a, 0), np.float64)


# ---- optimizers: fused, in place -------------------------------------------------------------

def adam_reference(p, g, m, v, lr_t, b1, b2, eps):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return p - lr_t * m / (np.sqrt(v) + eps), m, v


def rmsprop_reference(p, g, s, lr, rho, eps, eps_inside_root):
    s = rho * s + (1 - rho) * g * g
    return p - lr * g / (np.sqrt(s + eps) if eps_inside_root else np.sqrt(s) + eps), s


OPTIMIZERS = [
    ("adam_update", 2, (1e-3 * np.sqrt(1 - 0.999 ** 3) / (1 - 0.9 ** 3), 0.9, 0.999, 1e-7), adam_reference),
    # an eps large enough for its place to matter
    ("rmsprop_update", 1, (1e-3, 0.9, 1e-3, False), rmsprop_reference),
    ("rmsprop_update", 1, (1e-3, 0.9, 1e-3, True), rmsprop_reference),
]


@pytest.mark.parametrize("name, n_state, numbers, reference", OPTIMIZERS,
                         ids=["adam", "rmsprop", "rmsprop-eps-inside-root"])
def test_optimizer_updates_in_place(name, n_state, numbers, reference, xp, dtype):
    shape = (7, 13)
    p, g = (rng(i).standard_normal(shape).astype(dtype) for i in (7, 8))
    state = [rng(9 + i).uniform(0, 1, shape).astype(dtype) for i in range(n_state)]  # m, v or s
    expected = reference(*(a.astype(np.float64) for a in (p, g, *state)), *numbers)
    on_device = [xp.asarray(a) for a in (p, *state)]
    assert getattr(kernels, name)(on_device[0], xp.asarray(g), *on_device[1:], *numbers) is None
    for updated, want in zip(on_device, expected):  # the caller's own arrays have changed
        assert_close(updated, want, dtype)


def test_optimizer_refuses_a_state_it_could_not_update_in_place(xp):
    p = xp.zeros((4, 3))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.rmsprop_update(p, xp.zeros((4, 3)), xp.zeros((3, 4)).T, 0.1, 0.9, 1e-7)


# ---- bias gradient: two passes, each a coalesced reduction -----------------------------------
# The layouts the ops pass (functional/conv.py, linear.py) and the kernel each must go to.

def chwn_view(a):
    """An (N, C, H, W) array as a view of CHWN memory, as a convolution returns it."""
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


BIAS_LAYOUTS = [  # id, shape, layout, the reduction kernel
    ("dense-(N,C)", (37, 5), np.ascontiguousarray, "column_sums"),
    ("dense-(N,C)-fortran", (37, 5), np.asfortranarray, "channel_sums"),
    ("conv-dY-(1,C,OH·OW·N)", (1, 3, 70), np.ascontiguousarray, "channel_sums"),
    ("nchw", (5, 3, 4, 7), np.ascontiguousarray, "channel_sums"),
    ("chwn-view", (5, 3, 4, 7), chwn_view, "channel_sums"),
]


@pytest.fixture
def launched(monkeypatch):
    """The names of the kernels launched, in order."""
    names = []
    launch = kernels._launch
    def spy(module, name, *args):
        names.append(name)
        return launch(module, name, *args)
    monkeypatch.setattr(kernels, "_launch", spy)
    return names


@pytest.mark.parametrize("shape, layout, reduction", [c[1:] for c in BIAS_LAYOUTS], ids=[c[0] for c in BIAS_LAYOUTS])
@pytest.mark.parametrize("passes", [1, 2])
def test_bias_grad_sums_all_but_the_channel_axis(shape, layout, reduction, passes, xp, dtype, launched,
                                                 monkeypatch):
    """Each channel's 35-185 values: with ONE_PASS_PER_THREAD = 4, more than 4 per thread of a block
    of 8, so they are split among blocks (ELEMENTS_PER_THREAD = 2 each, at most MAX_BLOCKS = 16 in
    all), and a second pass adds the partial sums; with the default 64, one block per channel
    adds them all in one pass."""
    if passes == 2:
        monkeypatch.setattr(kernels, "ONE_PASS_PER_THREAD", 4)
        monkeypatch.setattr(kernels, "ELEMENTS_PER_THREAD", 2)
        monkeypatch.setattr(kernels, "MAX_BLOCKS", 16)
    g = layout(rng(10).standard_normal(shape).astype(dtype))
    expected = g.astype(np.float64).sum(axis=(0,) + tuple(range(2, len(shape))))
    assert_close(kernels.bias_grad(xp.asarray(g), threads=8), expected, dtype)
    assert launched == [reduction] * passes


def test_bias_grad_default_block_of_256_threads(xp):
    g = rng(10).standard_normal((2, 3, 5, 7))
    assert_close(kernels.bias_grad(xp.asarray(g)), g.sum(axis=(0, 2, 3)), np.float64)


def test_bias_grad_checks_the_block_size(xp):
    with pytest.raises(ValueError, match="power of two"):
        kernels.bias_grad(xp.zeros((2, 3)), threads=48)


# ---- im2col / col2im -------------------------------------------------------------------------
# The batch-innermost (CHWN) column layout of functional/im2col.py; geometry as it passes it:
# kernel (kH, kW), stride, pads (top, bottom, left, right).

def im2col_reference(x, kernel, stride, pads):
    """The definition, one loop: cols[(c, i, j), (oy, ox, n)] = x[n, c, oy·sh − top + i, ox·sw − left + j]."""
    (n, c, h, w), (kh, kw), (sh, sw), (top, bottom, left, right) = x.shape, kernel, stride, pads
    out_h, out_w = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    cols = np.zeros((c, kh, kw, out_h, out_w, n))
    for ci, i, j, oy, ox, ni in np.ndindex(cols.shape):
        y, xx = oy * sh - top + i, ox * sw - left + j
        if 0 <= y < h and 0 <= xx < w:
            cols[ci, i, j, oy, ox, ni] = x[ni, ci, y, xx]
    return cols.reshape(c * kh * kw, out_h * out_w * n)


def col2im_reference(cols, x_shape, kernel, stride, pads):
    """Every column entry added back onto the pixel im2col read it from."""
    (n, c, h, w), (kh, kw), (sh, sw), (top, bottom, left, right) = x_shape, kernel, stride, pads
    out_h, out_w = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    cols = cols.reshape(c, kh, kw, out_h, out_w, n)
    x = np.zeros(x_shape)
    for ci, i, j, oy, ox, ni in np.ndindex(cols.shape):
        y, xx = oy * sh - top + i, ox * sw - left + j
        if 0 <= y < h and 0 <= xx < w:
            x[ni, ci, y, xx] += cols[ci, i, j, oy, ox, ni]
    return x


def n_cols(x_shape, kernel, stride, pads):
    """The shape (C·kH·kW, OH·OW·N) of x's columns."""
    (n, c, h, w), (kh, kw), (sh, sw), (top, bottom, left, right) = x_shape, kernel, stride, pads
    return c * kh * kw, ((h + top + bottom - kh) // sh + 1) * ((w + left + right - kw) // sw + 1) * n


GEOMETRIES = [  # x shape, (kernel, stride, pads)
    pytest.param((2, 3, 7, 6), ((3, 3), (2, 2), (1, 1, 1, 1)), id="symmetric-pad1-stride2"),
    # Keras "same", kernel 4, stride 2 on 6×5: pads (1, 1) on H but (1, 2) on W
    pytest.param((2, 2, 6, 5), ((4, 4), (2, 2), (1, 1, 1, 2)), id="keras-same-asymmetric"),
    pytest.param((3, 1, 5, 4), ((2, 3), (2, 1), (0, 0, 0, 0)), id="rect-kernel-stride2x1-valid"),
]


@pytest.mark.parametrize("x_shape, geometry", GEOMETRIES)
def test_im2col_matches_the_loop_definition(x_shape, geometry, xp, dtype):
    x = rng(11).standard_normal(x_shape).astype(dtype)
    cols = kernels.im2col(xp.asarray(x), *geometry)
    assert_close(cols, im2col_reference(x.astype(np.float64), *geometry), dtype)


@pytest.mark.parametrize("x_shape, geometry", GEOMETRIES)
def test_col2im_matches_the_loop_definition(x_shape, geometry, xp, dtype):
    cols = rng(12).standard_normal(n_cols(x_shape, *geometry)).astype(dtype)
    x = kernels.col2im(xp.asarray(cols), x_shape, *geometry)
    assert_close(x, col2im_reference(cols.astype(np.float64), x_shape, *geometry), dtype)


@pytest.mark.parametrize("x_shape, geometry", GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(x_shape, geometry, xp):
    """<im2col(x), c> = <x, col2im(c)> for every x and c: col2im is im2col's transpose."""
    x = rng(13).standard_normal(x_shape)
    c = rng(14).standard_normal(n_cols(x_shape, *geometry))
    lhs = np.sum(backend.to_numpy(kernels.im2col(xp.asarray(x), *geometry)) * c)
    rhs = np.sum(x * backend.to_numpy(kernels.col2im(xp.asarray(c), x_shape, *geometry)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("x_shape, geometry", GEOMETRIES[:2])
def test_patch_loops_cover_everything_from_a_tiny_grid(x_shape, geometry, xp, monkeypatch):
    """Blocks of 2 threads (over the batch of 2-3, so each thread also loops) and one block per
    grid axis: the loops over the batch, the windows/pixels and the rows must reach every element."""
    monkeypatch.setattr(kernels, "THREADS_PER_BLOCK", 2)
    monkeypatch.setattr(kernels, "MAX_BLOCKS", 1)
    x = rng(11).standard_normal(x_shape[:1] + (3,) + x_shape[2:])
    assert_close(kernels.im2col(xp.asarray(x), *geometry), im2col_reference(x, *geometry), np.float64)
    cols = rng(12).standard_normal(n_cols(x.shape, *geometry))
    assert_close(kernels.col2im(xp.asarray(cols), x.shape, *geometry),
                 col2im_reference(cols, x.shape, *geometry), np.float64)


def test_patches_use_chwn_memory_as_functional_im2col_does(xp):
    """im2col reads x in any layout (here NCHW, and a CHWN view); col2im returns an (N, C, H, W)
    view of a CHWN buffer, as functional/im2col.py's col2im does."""
    x_shape, geometry = (2, 3, 7, 6), ((3, 3), (2, 2), (1, 1, 1, 1))
    x = rng(15).standard_normal(x_shape)
    chwn_view = xp.ascontiguousarray(xp.asarray(x).transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    expected = im2col_reference(x, *geometry)
    for layout in (xp.asarray(x), chwn_view):
        assert_close(kernels.im2col(layout, *geometry), expected, np.float64)
    y = kernels.col2im(xp.asarray(expected), x_shape, *geometry)
    assert y.transpose(1, 2, 3, 0).flags.c_contiguous


def test_col2im_checks_the_column_shape(xp):
    with pytest.raises(ValueError, match=r"\(27, 24\)"):
        kernels.col2im(xp.zeros((27, 25)), (2, 3, 7, 6), (3, 3), 2, (1, 1, 1, 1))


# ---- tiled GEMM ------------------------------------------------------------------------------

@pytest.mark.parametrize("m, k, n", [(19, 21, 17), (5, 33, 3)], ids=["2x2-tiles", "3-strips-of-K"])
def test_gemm_matches_numpy(m, k, n, xp, dtype):
    a = rng(15).standard_normal((m, k)).astype(dtype)
    b = rng(16).standard_normal((k, n)).astype(dtype)
    assert_close(kernels.gemm(xp.asarray(a), xp.asarray(b)), a.astype(np.float64) @ b.astype(np.float64), dtype)


def test_gemm_checks_the_inner_sizes(xp):
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        kernels.gemm(xp.zeros((2, 3)), xp.zeros((4, 5)))


# ---- the optimizers with the step count and the rate on the device (for CUDA graphs) -----------

@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_device_step_optimizers_equal_minivae_optim(name, xp, dtype):
    """Four steps with fresh gradients, the rate halved before the third (as StepDecay would do it,
    by writing lr[0]): the kernels that read t and lr on the GPU give minivae.optim's numbers."""
    from minivae import optim
    from minivae.tensor import Tensor
    shape = (7, 13)
    start = rng(20).standard_normal(shape).astype(dtype)
    reference = Tensor(start.copy(), requires_grad=True)
    rule = optim.Adam([reference], lr=0.01) if name == "adam" else optim.RMSprop([reference], lr=0.01)
    p = xp.asarray(start.copy())
    state = [xp.zeros(shape, dtype) for _ in range(2 if name == "adam" else 1)]
    step, lr = xp.zeros(1, np.uint64), xp.full(1, 0.01)
    for k in range(4):
        if k == 2:
            rule.lr, lr[0] = 0.005, 0.005
        g = rng(21 + k).standard_normal(shape).astype(dtype)
        reference.grad = g.copy()
        rule.step()
        if name == "adam":
            kernels.advance(step)
            kernels.adam_update_device_step(p, xp.asarray(g), *state, step, lr, rule.beta1, rule.beta2, rule.eps)
        else:
            kernels.rmsprop_update_device_lr(p, xp.asarray(g), *state, lr, rule.rho, rule.eps)
    assert_close(p, reference.data, dtype)
    for s_kernel, s_rule in zip(state, (rule.state[n][0] for n in rule.state_names)):
        assert_close(s_kernel, s_rule, dtype)
    assert int(backend.to_numpy(step)[0]) == (4 if name == "adam" else 0)


def test_device_scalars_are_checked(xp):
    p = xp.zeros(3)
    with pytest.raises(ValueError, match=r"step must be a \(1,\) uint64 array"):
        kernels.adam_update_device_step(p, p, p.copy(), p.copy(), xp.zeros(1), xp.ones(1), 0.9, 0.999, 1e-7)


# ---- counter-based noise: Philox4x32-10 and Box-Muller ----------------------------------------
# Known answers from the Random123 distribution's kat_vectors: (counter, key) -> output.
PHILOX_KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.fixture(scope="module")
def philox_functions():
    """philox4x32 as plain Python (what the simulator runs) and compiled by Numba for the CPU, which
    types the arithmetic as it does for the GPU: a constant that turned a uint64 into a float
    would show there."""
    import numba
    from minivae.kernels import philox
    return philox.philox4x32, numba.njit(philox.philox4x32)


@pytest.mark.parametrize("counter, key, answer", PHILOX_KNOWN_ANSWERS, ids=["zeros", "ones", "pi"])
def test_philox_gives_the_known_answers(counter, key, answer, philox_functions):
    words = [np.uint64(w) for w in counter + key]
    for philox4x32 in philox_functions:
        assert tuple(int(w) for w in philox4x32(*words)) == answer


def philox_normal_reference(n, draw, key):
    """The same noise, vectorised in NumPy from the paper's definition: numbers 4q .. 4q + 3 are the
    Box-Muller pairs of Philox4x32-10 of counter (q mod 2^32, q div 2^32, draw mod 2^32, draw div 2^32)."""
    mask = np.uint64(0xFFFFFFFF)
    q = np.arange((n + 3) // 4, dtype=np.uint64)
    c = [q & mask, q >> np.uint64(32), np.full_like(q, draw & 0xFFFFFFFF), np.full_like(q, draw >> 32)]
    k = [np.uint64(key[0]), np.uint64(key[1])]
    for r in range(10):
        if r:
            k = [(k[0] + np.uint64(0x9E3779B9)) & mask, (k[1] + np.uint64(0xBB67AE85)) & mask]
        hi_lo_0, hi_lo_1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        c = [(hi_lo_1 >> np.uint64(32)) ^ c[1] ^ k[0], hi_lo_1 & mask,
             (hi_lo_0 >> np.uint64(32)) ^ c[3] ^ k[1], hi_lo_0 & mask]
    u = [w.astype(np.float64) / 2.0 ** 32 for w in c]
    r01, r23 = np.sqrt(-2 * np.log(u[0] + 2.0 ** -32)), np.sqrt(-2 * np.log(u[2] + 2.0 ** -32))
    z = np.stack([r01 * np.cos(2 * np.pi * u[1]), r01 * np.sin(2 * np.pi * u[1]),
                  r23 * np.cos(2 * np.pi * u[3]), r23 * np.sin(2 * np.pi * u[3])], axis=1)
    return z.reshape(-1)[:n]


@pytest.mark.parametrize("shape", [(1,), (3, 5), (2, 2, 4)], ids=["1", "15", "16"])
def test_philox_normal_equals_the_numpy_reference(shape, xp, dtype):
    key = kernels.philox_key(7)
    counter = xp.asarray(np.array([5], np.uint64))
    out = xp.empty(shape, dtype)
    kernels.philox_normal(out, counter, key)
    n = int(np.prod(shape))
    assert_close(out, philox_normal_reference(n, 5, key).reshape(shape), dtype)


def test_philox_counter_on_the_device_gives_new_noise_reproducibly(xp):
    """advance(counter) makes the next draw differ; the same seed and counter give the same noise."""
    key, counter = kernels.philox_key(0), xp.zeros(1, np.uint64)
    draws = []
    for _ in range(2):
        out = xp.empty(8)
        kernels.philox_normal(out, counter, key)
        kernels.advance(counter)
        draws.append(backend.to_numpy(out))
    assert int(backend.to_numpy(counter)[0]) == 2
    assert not np.any(draws[0] == draws[1])
    again = xp.empty(8)
    kernels.philox_normal(again, xp.zeros(1, np.uint64), kernels.philox_key(0))
    np.testing.assert_array_equal(backend.to_numpy(again), draws[0])
    other_seed = xp.empty(8)
    kernels.philox_normal(other_seed, xp.zeros(1, np.uint64), kernels.philox_key(1))
    assert not np.any(backend.to_numpy(other_seed) == draws[0])


def test_philox_normal_is_standard_normal(xp):
    """4096 numbers: mean, variance, skew, kurtosis and the share within one σ, each within about
    4 standard errors of N(0, 1)'s values."""
    out = xp.empty(4096)
    kernels.philox_normal(out, xp.asarray(np.array([3], np.uint64)), kernels.philox_key(123))
    z = backend.to_numpy(out)
    n = z.size
    assert abs(z.mean()) < 4 / np.sqrt(n)
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / n)
    assert abs(np.mean(z ** 3)) < 4 * np.sqrt(15 / n)
    assert abs(np.mean(z ** 4) - 3) < 4 * np.sqrt(96 / n)
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 4 * np.sqrt(0.6827 * 0.3173 / n)


# ---- compiling: once per argument types; a clear line for a numpy numba-cuda cannot use --------

def no_kernel_compiled_yet(monkeypatch):
    """As in a new process: no kernel compiled, configured or loaded by CuPy (kernels/launch.py)."""
    for cache in ("_compiled", "_configured", "_through_cupy"):
        monkeypatch.setattr(kernels, cache, {})


def test_each_kernel_is_compiled_once_per_argument_types(xp, monkeypatch):
    compiled = []
    jit = kernels._jit
    no_kernel_compiled_yet(monkeypatch)
    monkeypatch.setattr(kernels, "_jit", lambda signature: compiled.append(signature) or jit(signature))
    for dtype in (np.float32, np.float32, np.float64):
        kernels.relu_forward(xp.zeros(5, dtype))
    assert compiled == ["void(float32[::1], float32[::1])", "void(float64[::1], float64[::1])"]
    kernels.im2col(xp.zeros((2, 1, 4, 4)), (3, 3), 1, (1, 1, 1, 1))
    assert compiled[-1] == ("void(float64[:, :, :, ::1], float64[:, ::1], "
                            "int64, int64, int64, int64, int64, int64, int64, int64)")


def test_a_configured_launch_is_kept_per_grid(monkeypatch):
    """As numba-cuda does, `kernel[blocks, threads]` here makes a new launcher; it is made once per
    kernel, argument types and grid. (The simulator reconfigures the kernel itself instead, so
    there nothing is kept: the launches above are that case.)"""
    configured, launched = [], []

    class Kernel:
        def __getitem__(self, config):
            configured.append(config)
            return lambda *args: launched.append(config)
    no_kernel_compiled_yet(monkeypatch)
    monkeypatch.setattr(kernels, "_jit", lambda signature: lambda py_func: Kernel())
    for size in (300, 300, 100, 300):
        kernels.relu_forward(np.zeros(size))
    assert configured == [(2, 256), (1, 256)]
    assert launched == [(2, 256), (2, 256), (1, 256), (2, 256)]


def test_a_numpy_that_numba_cuda_cannot_compile_with_is_named_in_one_line(xp, monkeypatch):
    """numba-cuda 0.30.4 with numpy 2.5 fails inside the compiler on np.row_stack (an H100 run met
    it); here the compiler stands in, raising what it raised there."""
    def numba_cuda_on_numpy_2_5(signature):
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")
    no_kernel_compiled_yet(monkeypatch)
    monkeypatch.setattr(kernels, "_jit", numba_cuda_on_numpy_2_5)
    monkeypatch.setattr(kernels.np, "__version__", "2.5.2")
    with pytest.raises(RuntimeError) as error:
        kernels.relu_forward(xp.zeros(3))
    message = str(error.value)
    assert "\n" not in message
    assert "numpy 2.5.2" in message and "pip install 'numpy<2.5'" in message
    assert "minivae[gpu]" in message and "minivae[gpu-cuda13]" in message


def test_another_attribute_error_while_compiling_is_not_disguised(xp, monkeypatch):
    def broken(signature):
        raise AttributeError("module 'numba' has no attribute 'something_else'")
    no_kernel_compiled_yet(monkeypatch)
    monkeypatch.setattr(kernels, "_jit", broken)
    with pytest.raises(AttributeError, match="something_else"):
        kernels.relu_forward(xp.zeros(3))


# ---- launchers: what they accept -------------------------------------------------------------

EMPTY_CALLS = [
    ("relu_forward", lambda K, z: K.relu_forward(z((0, 3))), [(0, 3)]),
    ("bce_with_grad", lambda K, z: K.bce_with_grad(z((4, 0)), z((4, 0))), [(4, 0), (4, 0)]),
    ("adam_update", lambda K, z: K.adam_update(z(0), z(0), z(0), z(0), 0.1, 0.9, 0.999, 1e-7), None),
    ("bias_grad", lambda K, z: K.bias_grad(z((0, 3, 2, 2)), threads=4), [(3,)]),
    ("im2col", lambda K, z: K.im2col(z((0, 2, 5, 5)), (3, 3), 2, (1, 1, 1, 1)), [(18, 0)]),
    ("col2im", lambda K, z: K.col2im(z((18, 0)), (0, 2, 5, 5), (3, 3), 2, (1, 1, 1, 1)), [(0, 2, 5, 5)]),
    ("gemm-no-rows", lambda K, z: K.gemm(z((0, 3)), z((3, 4))), [(0, 4)]),
    ("gemm-no-inner", lambda K, z: K.gemm(z((2, 0)), z((0, 3))), [(2, 3)]),
]


@pytest.mark.parametrize("call, shapes", [c[1:] for c in EMPTY_CALLS], ids=[c[0] for c in EMPTY_CALLS])
def test_empty_arrays(call, shapes, xp):
    result = call(kernels, lambda shape: xp.zeros(shape))
    if shapes is None:
        return
    results = result if isinstance(result, tuple) else (result,)
    assert [r.shape for r in results] == shapes
    for r in results:  # sums over nothing are 0
        assert not backend.to_numpy(r).any()


def test_elementwise_outputs_keep_the_first_inputs_memory_layout(xp):
    """A dense transposed view (as convolutions return) is read in place and its layout kept; an
    input laid out otherwise is copied into that layout; a strided slice falls back to C order."""
    a, b = rng(17).standard_normal((5, 4, 3)), rng(18).standard_normal((5, 4, 3))
    chwn = xp.ascontiguousarray(xp.asarray(a).transpose(1, 2, 0)).transpose(2, 0, 1)  # (5, 4, 3) view
    y = kernels.relu_forward(chwn)
    assert_close(y, np.maximum(a, 0), np.float64)
    assert y.strides == chwn.strides
    dx = kernels.relu_backward(chwn, xp.asarray(b))                          # g in C order
    assert_close(dx, b * (a > 0), np.float64)
    assert dx.strides == chwn.strides
    sliced = xp.asarray(rng(19).standard_normal((5, 8, 3)))[:, ::2]          # not dense
    assert_close(kernels.relu_forward(sliced), np.maximum(backend.to_numpy(sliced), 0), np.float64)
    assert kernels.relu_forward(sliced).flags.c_contiguous


def test_inputs_are_converted_to_the_first_inputs_dtype(xp):
    p32, t64 = np.full(6, 0.25, np.float32), np.ones(6)
    loss, grad = kernels.bce_with_grad(xp.asarray(p32), xp.asarray(t64))
    assert_close(loss, np.full(6, np.log(4)), np.float32)


@pytest.mark.parametrize("call, error, match", [
    (lambda K, xp: K.relu_forward(xp.arange(3)), TypeError, "float32 or float64"),
    (lambda K, xp: K.relu_backward(xp.zeros(3), xp.zeros(4)), ValueError, "one shape"),
    (lambda K, xp: K.im2col(xp.zeros((1, 1, 4, 4)), (3, 3), 0, (1, 1, 1, 1)), ValueError, ">= 1"),
    (lambda K, xp: K.im2col(xp.zeros((1, 1, 2, 2)), (3, 3), 1, (0, 0, 0, 0)), ValueError, "larger"),
], ids=["integers", "shape-mismatch", "zero-stride", "kernel-larger-than-image"])
def test_bad_arguments_raise_clear_errors(call, error, match, xp):
    with pytest.raises(error, match=match):
        call(kernels, xp)


def test_import_needs_no_numba_and_a_launch_without_it_says_what_to_install():
    script = (
        "import sys\n"
        "sys.modules['numba'] = None  # as if numba were not installed\n"
        "import numpy as np, minivae.kernels as K\n"
        "try:\n"
        "    K.relu_forward(np.zeros(3))\n"
        "except ImportError as exc:\n"
        "    print(exc)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, run.stderr
    assert "minivae[gpu]" in run.stdout and "minivae[sim]" in run.stdout
