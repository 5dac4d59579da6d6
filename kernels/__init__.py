"""Hand-written CUDA kernels (Numba `@cuda.jit`) and the host functions that launch them.

The kernels, each a short function with one job that says what each thread computes:

    activations.py  relu_forward/_backward, leaky_relu_forward/_backward, sigmoid_forward/_backward
    sampling.py     reparameterize_forward, reparameterize_backward
    losses.py       bce_with_grad, mse_with_grad, gaussian_kl_with_grad: loss and gradient in one pass
    reduce.py       bias_grad: db[c] = Σ g[n, c, ...], the shared-memory tree reduction
    optim.py        adam_update, rmsprop_update: fused, in place
    patches.py      im2col, col2im: NCHW, stride, explicit top/left padding
    matmul.py       gemm: the tiled shared-memory matrix product

The functions below, named like the kernels they launch, take and return arrays. On a GPU they
are CuPy arrays, which Numba reads in place through `__cuda_array_interface__`; NumPy arrays also
work, and with NUMBA_ENABLE_CUDASIM=1 Numba's CUDA simulator runs the kernels on the CPU, which
is how tests/test_kernels.py checks each one against NumPy on a machine without a GPU.
Each launcher makes its inputs C-contiguous and of the first input's dtype (float32 or float64),
allocates its outputs with the inputs' array module, and launches; empty inputs launch nothing.
Kernels run on Numba's default stream, which is CuPy's default (null) stream too.

Numba is imported when a kernel first runs, not here, so `import minivae.kernels` never needs it.
"""
import importlib

import numpy as np

from minivae import backend

THREADS_PER_BLOCK = 256
MAX_BLOCKS = 1024  # plenty to fill a large GPU; the kernels' grid-stride loops cover any remainder


def _kernels(module):
    """The kernel module kernels/<module>.py, imported on first use (it imports numba)."""
    try:
        return importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        raise ImportError(
            f"{__name__}.{module} could not be imported ({exc}). The CUDA kernels need numba and "
            "numba-cuda: pip install 'minivae[gpu]' on a machine with an NVIDIA GPU, or "
            "'minivae[sim]' and set NUMBA_ENABLE_CUDASIM=1 to run them on the CPU in Numba's "
            "CUDA simulator.") from exc


def _launch_1d(kernel, n, *args):
    """kernel[blocks, THREADS_PER_BLOCK](*args): one thread per element of n, up to MAX_BLOCKS blocks."""
    if n > 0:
        blocks = min(MAX_BLOCKS, (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK)
        kernel[blocks, THREADS_PER_BLOCK](*args)


def _float_arrays(op, *arrays, same_shape=True):
    """(xp, arrays): on one device, C-contiguous, all of the first array's dtype, float32 or float64."""
    xp = backend.array_module(*arrays, op=op)
    dtype = xp.asarray(arrays[0]).dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: expected float32 or float64 arrays, got dtype {dtype}")
    arrays = tuple(xp.ascontiguousarray(a, dtype=dtype) for a in arrays)
    if same_shape and any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"{op}: the arrays must have one shape, got "
                         + ", ".join(str(tuple(a.shape)) for a in arrays))
    return xp, arrays


def _elementwise(op, module, inputs, numbers=(), outputs=1):
    """Run kernels/<module>.py's `op` as op(*inputs, *numbers, *outputs) on flat views, one
    thread per element; return the new output array(s), shaped like the inputs."""
    xp, inputs = _float_arrays(op, *inputs)
    outs = [xp.empty_like(inputs[0]) for _ in range(outputs)]
    args = ([a.reshape(-1) for a in inputs] + [float(v) for v in numbers]
            + [o.reshape(-1) for o in outs])
    _launch_1d(getattr(_kernels(module), op), inputs[0].size, *args)
    return outs[0] if outputs == 1 else tuple(outs)


# ---- activations ---------------------------------------------------------------------------

def relu_forward(x):
    """y = max(x, 0)."""
    return _elementwise("relu_forward", "activations", [x])


def relu_backward(x, g):
    """dL/dx = g where x > 0, else 0."""
    return _elementwise("relu_backward", "activations", [x, g])


def leaky_relu_forward(x, slope):
    """y = x where x > 0, else slope·x."""
    return _elementwise("leaky_relu_forward", "activations", [x], [slope])


def leaky_relu_backward(x, g, slope):
    """dL/dx = g where x > 0, else slope·g."""
    return _elementwise("leaky_relu_backward", "activations", [x, g], [slope])


def sigmoid_forward(x):
    """y = 1 / (1 + e^-x), computed without overflow."""
    return _elementwise("sigmoid_forward", "activations", [x])


def sigmoid_backward(y, g):
    """dL/dx = g·y·(1 − y), from the forward output y."""
    return _elementwise("sigmoid_backward", "activations", [y, g])


# ---- sampling ------------------------------------------------------------------------------

def reparameterize_forward(mu, log_var, eps):
    """z = mu + exp(½·log_var)·eps."""
    return _elementwise("reparameterize_forward", "sampling", [mu, log_var, eps])


def reparameterize_backward(log_var, eps, g):
    """(dL/dmu, dL/dlog_var) = (g, g·½·exp(½·log_var)·eps) for g = dL/dz."""
    return _elementwise("reparameterize_backward", "sampling", [log_var, eps, g], outputs=2)


# ---- losses: per-element loss and its gradient ---------------------------------------------

def bce_with_grad(p, t, eps=1e-7):
    """(loss, dloss/dp) per element for probabilities p (clamped to [eps, 1 − eps]) and targets t."""
    return _elementwise("bce_with_grad", "losses", [p, t], [eps], outputs=2)


def mse_with_grad(pred, t):
    """(loss, dloss/dpred) = ((pred − t)², 2·(pred − t)) per element."""
    return _elementwise("mse_with_grad", "losses", [pred, t], outputs=2)


def gaussian_kl_with_grad(mu, log_var):
    """(kl, dkl/dmu, dkl/dlog_var) per element, kl = −½·(1 + log_var − mu² − e^log_var)."""
    return _elementwise("gaussian_kl_with_grad", "losses", [mu, log_var], outputs=3)


# ---- optimizers: in place ------------------------------------------------------------------

def _in_place(op, g, *arrays):
    """Flat views of `arrays` (the parameter and its optimizer state) and of g, for an in-place update.

    The arrays must already be C-contiguous and of one float dtype: a converted copy would be
    updated instead of the caller's array. g is converted to match if needed.
    """
    xp, _ = _float_arrays(op, *arrays)
    p = arrays[0]
    for a in arrays:
        if a.dtype != p.dtype or a.shape != p.shape or not a.flags.c_contiguous:
            raise ValueError(f"{op}: the parameter and its state must be C-contiguous arrays of "
                             f"one shape and dtype, got {a.dtype} {tuple(a.shape)} for "
                             f"{p.dtype} {tuple(p.shape)}")
    g = xp.ascontiguousarray(g, dtype=p.dtype)
    if g.shape != p.shape:
        raise ValueError(f"{op}: gradient shape {tuple(g.shape)} differs from parameter shape "
                         f"{tuple(p.shape)}")
    return p.size, g.reshape(-1), [a.reshape(-1) for a in arrays]


def adam_update(p, g, m, v, lr_t, beta1, beta2, eps):
    """One Adam step in place on p, m, v; lr_t = lr·√(1 − β2^t) / (1 − β1^t) (see kernels/optim.py)."""
    n, g, (p, m, v) = _in_place("adam_update", g, p, m, v)
    _launch_1d(_kernels("optim").adam_update, n, p, g, m, v,
               float(lr_t), float(beta1), float(beta2), float(eps))


def rmsprop_update(p, g, s, lr, rho, eps):
    """One RMSprop step in place on p and s (see kernels/optim.py)."""
    n, g, (p, s) = _in_place("rmsprop_update", g, p, s)
    _launch_1d(_kernels("optim").rmsprop_update, n, p, g, s, float(lr), float(rho), float(eps))


# ---- reduction -----------------------------------------------------------------------------

def bias_grad(g, threads=None):
    """db[c] = Σ g[n, c, ...] for g (N, C) or (N, C, H, W): one block of `threads` per channel.

    threads: a power of two up to reduce.THREADS (256, the default); tests use fewer because
    the simulator runs each thread as a Python thread.
    """
    xp, (g,) = _float_arrays("bias_grad", g)
    if g.ndim < 2:
        raise ValueError(f"bias_grad: g must be (N, C, ...), got shape {tuple(g.shape)}")
    reduce = _kernels("reduce")
    threads = threads or reduce.THREADS
    if threads > reduce.THREADS or threads & (threads - 1):
        raise ValueError(f"bias_grad: threads must be a power of two up to {reduce.THREADS}, got {threads}")
    batch, channels = g.shape[:2]
    db = xp.empty(channels, dtype=g.dtype)
    if channels > 0:
        g = g.reshape(batch, channels, int(np.prod(g.shape[2:])))  # (N, C, S)
        reduce.bias_grad[channels, threads](g, db)
    return db


# ---- im2col / col2im -----------------------------------------------------------------------

def _conv_geometry(op, kh, kw, stride, pad_top, pad_left, out_h, out_w):
    """The ints (kh, kw, sh, sw, pad_top, pad_left, out_h, out_w), checked; stride is s or (sh, sw)."""
    sh, sw = (stride, stride) if np.isscalar(stride) else stride
    sizes = [int(v) for v in (kh, kw, sh, sw, out_h, out_w)]
    pads = [int(pad_top), int(pad_left)]
    if min(sizes) < 1 or min(pads) < 0:
        raise ValueError(f"{op}: kernel size, stride and output size must be >= 1 and padding >= 0, "
                         f"got kernel ({kh}, {kw}), stride {stride}, pad_top {pad_top}, "
                         f"pad_left {pad_left}, output ({out_h}, {out_w})")
    kh, kw, sh, sw, out_h, out_w = sizes
    return kh, kw, sh, sw, pads[0], pads[1], out_h, out_w


def im2col(x, kh, kw, stride, pad_top, pad_left, out_h, out_w):
    """x (N, C, H, W) -> cols (C·kh·kw, N·out_h·out_w); layout in kernels/patches.py."""
    xp, (x,) = _float_arrays("im2col", x)
    if x.ndim != 4:
        raise ValueError(f"im2col: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    geometry = _conv_geometry("im2col", kh, kw, stride, pad_top, pad_left, out_h, out_w)
    kh, kw, _, _, _, _, out_h, out_w = geometry
    n, c = x.shape[:2]
    cols = xp.empty((c * kh * kw, n * out_h * out_w), dtype=x.dtype)
    _launch_1d(_kernels("patches").im2col, cols.size, x, cols, *geometry)
    return cols


def col2im(cols, x_shape, kh, kw, stride, pad_top, pad_left, out_h, out_w):
    """cols (C·kh·kw, N·out_h·out_w) -> (N, C, H, W) = x_shape, summing what overlapping windows
    read: the adjoint of im2col."""
    xp, (cols,) = _float_arrays("col2im", cols)
    geometry = _conv_geometry("col2im", kh, kw, stride, pad_top, pad_left, out_h, out_w)
    kh, kw, _, _, _, _, out_h, out_w = geometry
    n, c, h, w = (int(v) for v in x_shape)
    if cols.shape != (c * kh * kw, n * out_h * out_w):
        raise ValueError(f"col2im: cols must be (C·kh·kw, N·out_h·out_w) = "
                         f"({c * kh * kw}, {n * out_h * out_w}), got {tuple(cols.shape)}")
    x = xp.empty((n, c, h, w), dtype=cols.dtype)
    _launch_1d(_kernels("patches").col2im, x.size, cols, x, *geometry)
    return x


# ---- matrix product ------------------------------------------------------------------------

def gemm(a, b):
    """a (M, K) @ b (K, N) with the tiled shared-memory kernel (the library's default is cuBLAS)."""
    xp, (a, b) = _float_arrays("gemm", a, b, same_shape=False)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm: expected a (M, K) and b (K, N), got {tuple(a.shape)} and {tuple(b.shape)}")
    matmul = _kernels("matmul")
    m, n = a.shape[0], b.shape[1]
    c = xp.empty((m, n), dtype=a.dtype)
    if m > 0 and n > 0:
        tiles = ((n + matmul.TILE - 1) // matmul.TILE, (m + matmul.TILE - 1) // matmul.TILE)  # (x: cols, y: rows)
        matmul.gemm[tiles, (matmul.TILE, matmul.TILE)](a, b, c)
    return c
