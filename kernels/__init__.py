"""Hand-written CUDA kernels (Numba `@cuda.jit`) and the host functions that launch them.

The kernels, each a short function with one job that says what each thread computes:

    activations.py  relu_forward/_backward, leaky_relu_forward/_backward, sigmoid_forward/_backward
    sampling.py     reparameterize_forward, reparameterize_backward
    losses.py       bce_with_grad, mse_with_grad, gaussian_kl_with_grad: loss and gradient in one pass
    reduce.py       channel_sums, column_sums: db[c] = Σ g[n, c, ...] in two coalesced passes
    optim.py        adam_update, rmsprop_update: fused, in place; and their versions that read
                    the step count and the rate from the GPU (for a captured CUDA graph)
    patches.py      im2col, col2im: the batch-innermost (CHWN) columns of functional/im2col.py
    matmul.py       gemm: the tiled shared-memory matrix product
    philox.py       normal: N(0, 1) noise from Philox4x32-10 with its counter on the GPU; advance

and launch.py, which has CuPy launch the code Numba compiled (far less host time than Numba's own
launch) wherever the arguments are CuPy arrays.

The functions below, named like the kernels they launch, take and return arrays. The ops in
minivae.functional and minivae.optim call them where `backend.kernels_for` says so (on CuPy arrays,
by default; see `backend.use_kernels`). On a GPU the arrays are CuPy arrays, which Numba reads in
place through `__cuda_array_interface__`; NumPy arrays also work, and with NUMBA_ENABLE_CUDASIM=1
Numba's CUDA simulator runs the kernels on the CPU, which is how tests/test_kernels.py checks each
one against NumPy, and tests/test_kernel_dispatch.py the ops that call them, without a GPU.
Each launcher converts its inputs to the first input's dtype (float32 or float64), hands the
kernel arrays laid out as it needs (see `_elementwise` on memory layout), allocates its outputs with
the inputs' array module, and launches; empty inputs launch nothing.
Kernels run on CuPy's current stream when CuPy launches them, on Numba's default stream otherwise:
minivae leaves CuPy on its default (null) stream, which is Numba's default too. Each kernel is
compiled on first use for the exact types of its arguments (see `_launch`).

Numba is imported when a kernel first runs, not here, so `import minivae.kernels` never needs it.
"""
import importlib
import os
import zlib

import numpy as np

from minivae import backend

from . import launch

THREADS_PER_BLOCK = 256  # a power of two, at most reduce.THREADS (bias_grad uses it as its block size)
MAX_BLOCKS = 1024  # plenty to fill a large GPU; the kernels' grid-stride loops cover any remainder


def _kernels(module):
    """The kernel module kernels/<module>.py, imported on first use (it imports numba)."""
    try:
        return importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        raise ImportError(
            f"{__name__}.{module} could not be imported ({exc}). The CUDA kernels need numba and "
            "numba-cuda: pip install 'minivae[gpu]' (CUDA 12) or 'minivae[gpu-cuda13]' (CUDA 13) on "
            "a machine with an NVIDIA GPU, or 'minivae[sim]' and set NUMBA_ENABLE_CUDASIM=1 to run "
            "them on the CPU in Numba's CUDA simulator. To run without them: "
            "minivae.backend.use_kernels('never').") from exc


# ---- launching: each kernel compiled once per argument types --------------------------------
#
# A kernel decorated with a bare `@cuda.jit` works out its argument types at every launch and looks
# its compiled version up by them, which costs a Numba launch with CuPy arrays about twice the host
# time of one compiled for a single explicit signature (123 µs against 65 µs on an H100, see
# docs/gpu.md). So each kernel is compiled here, on first use, for exactly the types of
# the arguments it is given (`cuda.jit("void(float32[::1], ...)")`), and launched through that
# single-signature version. The configured launcher `kernel[blocks, threads]` is kept too: making
# one converts the stream and, for a grid under 128 blocks, issues Numba's low-occupancy warning,
# at every launch otherwise. (Numba's simulator returns the kernel itself, reconfigured by each
# `[...]`: there nothing is kept.)

_compiled = {}    # (module, name, argument kinds) -> the kernel compiled for just those types
_configured = {}  # (that key, blocks, threads) -> kernel[blocks, threads]
_through_cupy = {}  # (that key, GPU) -> launch.CupyLaunch of the kernel, or None: Numba launches it

# CuPy arrays' kernels are launched by CuPy (kernels/launch.py), for a fraction of the host time;
# False (or MINIVAE_CUPY_LAUNCH=0): by Numba's own launcher, as NumPy arrays' always are.
LAUNCH_THROUGH_CUPY = os.environ.get("MINIVAE_CUPY_LAUNCH", "1") != "0"


def _kind(value):
    """What a launch argument's compiled code depends on, cheaply: a Python number's type, or an
    array's (dtype, dimensions, C-contiguous?)."""
    if isinstance(value, (bool, int, float)):
        return type(value)
    return value.dtype, value.ndim, value.flags.c_contiguous


def _numba_type(kind):
    """A `_kind` as Numba signature text: "float64", or "float32[:, ::1]" (C-contiguous) /
    "float32[:, :]" (any layout) for an array."""
    if isinstance(kind, type):
        return {bool: "boolean", int: "int64", float: "float64"}[kind]
    dtype, ndim, c_contiguous = kind
    axes = [":"] * ndim
    if c_contiguous and ndim:
        axes[-1] = "::1"
    return f"{np.dtype(dtype).name}[{', '.join(axes)}]"


def _jit(signature):
    """numba.cuda.jit(signature): its own function so that a test can stand in for the compiler."""
    from numba import cuda
    return cuda.jit(signature)


def _compile(module, name, signature):
    """kernels/<module>.py's kernel `name` compiled for `signature` ("void(float32[::1], ...)").

    numba-cuda up to at least 0.30.4 registers an overload of np.row_stack while it compiles, and
    NumPy 2.5 removed np.row_stack: that pairing fails here, so it is turned into one line that
    says what to install.
    """
    kernel = getattr(_kernels(module), name)
    try:
        return _jit(signature)(kernel.py_func)
    except AttributeError as exc:
        if "row_stack" not in str(exc):
            raise
        raise RuntimeError(_NUMPY_PAIRING_ERROR.format(numba_cuda=_version("numba-cuda"),
                                                       numpy=np.__version__)) from exc


_NUMPY_PAIRING_ERROR = (
    "minivae.kernels: numba-cuda {numba_cuda} cannot compile kernels with numpy {numpy} (it still "
    "refers to np.row_stack, which numpy 2.5 removed): pip install 'numpy<2.5', as the extras "
    "'minivae[gpu]' and 'minivae[gpu-cuda13]' do, or run without our kernels "
    "(--kernels never, backend.use_kernels('never')).")


def _version(distribution):
    """The installed version of a distribution, or "(not installed)"."""
    from importlib import metadata
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _launch(module, name, blocks, threads, *args):
    """kernels/<module>.py's `name`[blocks, threads](*args), through the version compiled for
    exactly these argument types (compiled on the first launch that has them). With CuPy arrays
    (and LAUNCH_THROUGH_CUPY), CuPy launches that compiled code: see kernels/launch.py."""
    key = (module, name, tuple(map(_kind, args)))
    if LAUNCH_THROUGH_CUPY and _all_cupy(args):
        cupy = backend.require_cuda()
        device_key = (key, cupy.cuda.runtime.getDevice())
        if device_key not in _through_cupy:  # None: CuPy could not load it, Numba launches it
            _through_cupy[device_key] = launch.through_cupy(cupy, _compiled_kernel(key), key[2],
                                                            f"{module}.{name}")
        cupy_launch = _through_cupy[device_key]
        if cupy_launch is not None:
            cupy_launch(blocks, threads, args)
            return
    launcher = _configured.get((key, blocks, threads))
    if launcher is None:
        kernel = _compiled_kernel(key)
        launcher = kernel[blocks, threads]
        if launcher is not kernel:
            _configured[(key, blocks, threads)] = launcher
    launcher(*args)


def _compiled_kernel(key):
    """The kernel of `key` (module, name, argument kinds), compiled for just those types once."""
    kernel = _compiled.get(key)
    if kernel is None:
        module, name, kinds = key
        kernel = _compiled[key] = _compile(module, name, f"void({', '.join(map(_numba_type, kinds))})")
    return kernel


def _all_cupy(args):
    """Are all the array arguments CuPy arrays (the numbers being Python numbers)?"""
    return all(isinstance(a, (bool, int, float)) or backend.is_cupy_array(a) for a in args)


def _blocks_for(n, threads=None):
    """Blocks of `threads` (THREADS_PER_BLOCK) to give one thread to each of n items, at most MAX_BLOCKS."""
    threads = threads or THREADS_PER_BLOCK
    return max(1, min(MAX_BLOCKS, (n + threads - 1) // threads))


def _launch_1d(module, name, n, *args):
    """One thread per element of n (a grid-stride loop covers the rest past MAX_BLOCKS blocks)."""
    if n > 0:
        _launch(module, name, _blocks_for(n), THREADS_PER_BLOCK, *args)


def _checked(op, *arrays, same_shape=True):
    """(xp, arrays): on one device, all of the first array's dtype, float32 or float64.

    A conversion (`astype`) keeps each array's memory layout; nothing is made contiguous here.
    """
    xp = backend.array_module(*arrays, op=op)
    dtype = xp.asarray(arrays[0]).dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: expected float32 or float64 arrays, got dtype {dtype}")
    arrays = tuple(xp.asarray(a).astype(dtype, copy=False) for a in arrays)
    if same_shape and any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"{op}: the arrays must have one shape, got "
                         + ", ".join(str(tuple(a.shape)) for a in arrays))
    return xp, arrays


def _contiguous(op, *arrays, same_shape=True):
    """(xp, arrays) as `_checked` gives them, each made C-contiguous (a copy only where it is not)."""
    xp, arrays = _checked(op, *arrays, same_shape=same_shape)
    return xp, tuple(xp.ascontiguousarray(a) for a in arrays)


# ---- memory layout -------------------------------------------------------------------------

def _memory_order(a):
    """The axes of `a` from slowest- to fastest-moving in memory, when `a` is dense (its elements
    fill one block of memory without gaps, as any transpose of a C-contiguous array does); else None."""
    order = tuple(sorted(range(a.ndim), key=lambda axis: -a.strides[axis]))
    return order if a.transpose(order).flags.c_contiguous else None


def _elementwise(op, module, inputs, numbers=(), outputs=1):
    """Run kernels/<module>.py's `op` as op(*inputs, *numbers, *outputs) on flat 1-D arrays, one
    thread per element; return the new output array(s), shaped like the inputs.

    Memory layout. The convolutions return (N, C, H, W) arrays that are transposed views of
    batch-innermost CHWN memory (functional/im2col.py), and the next convolution reads that memory
    back without a copy. Making such an input C-contiguous here would copy it into NCHW order (and
    the next convolution would copy it back). So, like `xp.empty_like`, the outputs keep the first
    input's layout: when it is dense, in memory order `order` (slowest axis first), each array is
    walked in that order, which for the first input is its own flat memory buffer, a view, and the
    outputs are allocated in that order too. Another input laid out differently is copied into
    that order first; a first input with gaps (say, a strided slice) is copied to C order.
    """
    xp, inputs = _checked(op, *inputs)
    order = _memory_order(inputs[0]) or tuple(range(inputs[0].ndim))
    back = tuple(sorted(range(len(order)), key=order.__getitem__))  # the inverse permutation
    flat_inputs = [xp.ascontiguousarray(a.transpose(order)).reshape(-1) for a in inputs]
    outs, flat_outs = [], []
    for _ in range(outputs):
        memory = xp.empty(inputs[0].transpose(order).shape, dtype=inputs[0].dtype)  # C order
        outs.append(memory.transpose(back))     # the inputs' axes, over memory laid out in `order`
        flat_outs.append(memory.reshape(-1))
    _launch_1d(module, op, inputs[0].size, *flat_inputs, *(float(v) for v in numbers), *flat_outs)
    return outs[0] if outputs == 1 else tuple(outs)


# ---- activations ---------------------------------------------------------------------------

def relu_forward(x):
    """y = max(x, 0), NaN kept."""
    return _elementwise("relu_forward", "activations", [x])


def relu_backward(x, g):
    """dL/dx = g·[x > 0]."""
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
    """(loss, dloss/dp) per element for probabilities p (clamped to [eps, 1 − eps]) and targets t.

    The bounds are rounded to p's dtype first, as `xp.clip(p, eps, 1 - eps)` rounds them: in
    float32, 1 − 1e-7 becomes 1 − 2^-23, and a p of 1 must be clamped to that, not to 1 − 1e-7.
    """
    dtype = np.dtype(p.dtype)
    low, high = float(dtype.type(eps)), float(dtype.type(1 - eps))
    return _elementwise("bce_with_grad", "losses", [p, t], [low, high], outputs=2)


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
    xp, _ = _checked(op, *arrays)
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
    _launch_1d("optim", "adam_update", n, p, g, m, v, float(lr_t), float(beta1), float(beta2), float(eps))


def rmsprop_update(p, g, s, lr, rho, eps, eps_inside_root=False):
    """One RMSprop step in place on p and s; eps added to √s, or inside the root (see kernels/optim.py)."""
    n, g, (p, s) = _in_place("rmsprop_update", g, p, s)
    _launch_1d("optim", "rmsprop_update", n, p, g, s, float(lr), float(rho), float(eps), bool(eps_inside_root))


def _device_scalar(op, name, a, dtype):
    """a, checked to be a one-element array of `dtype` (a counter or a rate that lives on the device)."""
    if a.shape != (1,) or a.dtype != dtype:
        raise ValueError(f"{op}: {name} must be a ({1},) {np.dtype(dtype).name} array, got "
                         f"{a.dtype} {tuple(a.shape)}")
    return a


def adam_update_device_step(p, g, m, v, step, lr, beta1, beta2, eps):
    """One Adam step in place on p, m, v, with t = step[0] and the rate lr[0] read on the GPU.

    step: a (1,) uint64 array, advanced once per optimizer step by `advance(step)` before the
    updates (so it reads 1 at the first step); lr: a (1,) float64 array. Nothing here depends on a
    number the host passes per step, so a captured CUDA graph can replay it (kernels/optim.py).
    """
    n, g, (p, m, v) = _in_place("adam_update_device_step", g, p, m, v)
    step = _device_scalar("adam_update_device_step", "step", step, np.uint64)
    lr = _device_scalar("adam_update_device_step", "lr", lr, np.float64)
    _launch_1d("optim", "adam_update_device_step", n, p, g, m, v, step, lr,
               float(beta1), float(beta2), float(eps))


def rmsprop_update_device_lr(p, g, s, lr, rho, eps, eps_inside_root=False):
    """One RMSprop step in place on p and s, with the rate lr[0] read on the GPU (a (1,) float64 array)."""
    n, g, (p, s) = _in_place("rmsprop_update_device_lr", g, p, s)
    lr = _device_scalar("rmsprop_update_device_lr", "lr", lr, np.float64)
    _launch_1d("optim", "rmsprop_update_device_lr", n, p, g, s, lr, float(rho), float(eps),
               bool(eps_inside_root))


# ---- counter-based noise -------------------------------------------------------------------

def philox_key(seed, purpose="sample"):
    """The Philox key (two 32-bit words) for `seed` and a purpose, as rng.generator names them:
    the seed's low 32 bits, and a stable number for the purpose xor its high bits."""
    seed = int(seed)
    return seed & 0xFFFFFFFF, (zlib.crc32(purpose.encode()) ^ (seed >> 32)) & 0xFFFFFFFF


def philox_normal(out, counter, key):
    """Fill `out` (a C-contiguous float32/float64 array) in place with N(0, 1) noise: draw number
    counter[0] of the Philox4x32-10 stream of `key` (see kernels/philox.py). counter: a (1,) uint64
    array, read only: call `advance(counter)` for the next draw. The same key and counter give the
    same numbers, on the GPU and in the simulator alike."""
    xp, (out,) = _checked("philox_normal", out)
    if not out.flags.c_contiguous:
        raise ValueError("philox_normal: out must be C-contiguous (it is filled in place)")
    counter = _device_scalar("philox_normal", "counter", counter, np.uint64)
    key0, key1 = (int(k) for k in key)
    if not (0 <= key0 < 2 ** 32 and 0 <= key1 < 2 ** 32):
        raise ValueError(f"philox_normal: the key must be two 32-bit words, got {tuple(key)}")
    flat = out.reshape(-1)
    _launch_1d("philox", "normal", (flat.size + 3) // 4, counter, key0, key1, flat)


def advance(counter):
    """counter[0] += 1 on the GPU, for a (1,) uint64 array: the next Philox draw, or Adam's next step."""
    counter = _device_scalar("advance", "counter", counter, np.uint64)
    _launch("philox", "advance", 1, 1, counter)


# ---- reduction -----------------------------------------------------------------------------

ELEMENTS_PER_THREAD = 8  # bias_grad's first pass gives each thread at least about this many values
ONE_PASS_PER_THREAD = 64  # ... unless each thread of one block per channel would add at most this many:
                          # then one launch does it all (a launch's host time outweighs such a sum)


def bias_grad(g, threads=None):
    """db[c] = Σ g[n, c, ...] for g (N, C) or (N, C, H, W), in any memory layout.

    Two passes (kernels/reduce.py): many blocks per channel each write a partial sum, then the
    same kernel adds each channel's partial sums; one pass, one block per channel, when the sums
    are short (ONE_PASS_PER_THREAD). A g whose channel axis is its slowest in memory
    (the CHWN views that convolutions return, dY as conv2d passes it) is read as
    (1, C, everything else) in place, and summed by `channel_sums`; a C-ordered (N, C) (a dense
    layer's) by `column_sums`, one thread per column; any other is made C-contiguous, (N, C, H·W).
    threads: a power of two up to reduce.THREADS (256); by default THREADS_PER_BLOCK.
    """
    xp, (g,) = _checked("bias_grad", g)
    if g.ndim < 2:
        raise ValueError(f"bias_grad: g must be (N, C, ...), got shape {tuple(g.shape)}")
    threads = threads or THREADS_PER_BLOCK
    if threads > _kernels("reduce").THREADS or threads & (threads - 1):
        raise ValueError(f"bias_grad: threads must be a power of two up to "
                         f"{_kernels('reduce').THREADS}, got {threads}")
    batch, channels = g.shape[:2]
    size = int(np.prod(g.shape[2:]))
    if batch * size == 0 or channels == 0:
        return xp.zeros(channels, dtype=g.dtype)
    order = _memory_order(g)
    if order is not None and order[0] == 1:                   # channel-major: each channel one run
        return _channel_sums(xp, g.transpose(order).reshape(1, channels, batch * size), threads)
    g = xp.ascontiguousarray(g)
    if size == 1:
        return _column_sums(xp, g.reshape(batch, channels), threads)
    return _channel_sums(xp, g.reshape(batch, channels, size), threads)


def _channel_sums(xp, g, threads):
    """Σ over axes 0 and 2 of g (B, C, S): pass 1 into (C, chunks) partial sums, pass 2 into (C, 1)."""
    _, channels, _ = g.shape
    values = g.shape[0] * g.shape[2]
    chunks = 1 if values <= threads * ONE_PASS_PER_THREAD else \
        max(1, min(-(-values // (threads * ELEMENTS_PER_THREAD)), MAX_BLOCKS // channels))
    partial = xp.empty((channels, chunks), dtype=g.dtype)
    _launch("reduce", "channel_sums", (chunks, min(channels, MAX_BLOCKS)), threads, g, partial)
    if chunks > 1:
        total = xp.empty((channels, 1), dtype=g.dtype)
        _launch("reduce", "channel_sums", (1, min(channels, MAX_BLOCKS)), threads, partial[None], total)
        partial = total
    return partial.reshape(channels)


def _column_sums(xp, g, threads):
    """Σ over the rows of g (R, C), C-contiguous: pass 1 into (chunks, C) partial sums, pass 2 into (1, C)."""
    rows, columns = g.shape
    column_blocks = _blocks_for(columns, threads)
    chunks = 1 if rows <= ONE_PASS_PER_THREAD else \
        max(1, min(-(-rows // ELEMENTS_PER_THREAD), MAX_BLOCKS // column_blocks))
    partial = xp.empty((chunks, columns), dtype=g.dtype)
    _launch("reduce", "column_sums", (column_blocks, chunks), threads, g, partial)
    if chunks > 1:
        total = xp.empty((1, columns), dtype=g.dtype)
        _launch("reduce", "column_sums", (column_blocks, 1), threads, partial, total)
        partial = total
    return partial.reshape(columns)


# ---- im2col / col2im -----------------------------------------------------------------------

def _conv_geometry(op, image_hw, kernel, stride, pads):
    """The ints (kh, kw, sh, sw, pad_top, pad_left, out_h, out_w) the patch kernels take, checked.

    kernel (kh, kw); stride s or (sh, sw); pads (top, bottom, left, right) as functional/im2col.py
    has them. The output size (a window position every s pixels, as functional/im2col.py's
    conv_output_size counts them) tells the kernels how far the windows reach, so they need only
    the top and left padding.
    """
    (kh, kw), (sh, sw) = kernel, ((stride, stride) if np.isscalar(stride) else stride)
    top, bottom, left, right = pads
    h, w = image_hw
    sizes = [int(v) for v in (kh, kw, sh, sw)]
    padding = [int(v) for v in (top, bottom, left, right)]
    if min(sizes) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: kernel size and stride must be >= 1 and padding >= 0, got "
                         f"kernel {tuple(kernel)}, stride {stride}, pads {tuple(pads)}")
    kh, kw, sh, sw = sizes
    top, bottom, left, right = padding
    out_h, out_w = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{op}: kernel {kh}×{kw} is larger than the padded image "
                         f"{h + top + bottom}×{w + left + right}")
    return kh, kw, sh, sw, top, left, out_h, out_w


def _launch_patches(name, batch, spots, rows, source, target, geometry):
    """Launch kernels/patches.py's `name` with blocks of (threads over the batch) × (threads over
    the `spots`, windows or pixels), a grid of (spot blocks, `rows`), each capped at MAX_BLOCKS.
    The batch gets a power of two of the THREADS_PER_BLOCK threads, as many as it fills (a warp
    or more, once N >= 32); the spots get the rest."""
    across_batch = min(THREADS_PER_BLOCK, 1 << (batch - 1).bit_length())
    across_spots = min(THREADS_PER_BLOCK // across_batch, 1 << (spots - 1).bit_length())
    blocks = (_blocks_for(spots, across_spots), min(rows, MAX_BLOCKS))
    _launch("patches", name, blocks, (across_batch, across_spots), source, target, *geometry)


def im2col(x, kernel, stride, pads):
    """x (N, C, H, W) -> cols (C·kh·kw, out_h·out_w·N), batch innermost: the matrix that
    functional/im2col.py's `im2col` makes, element for element (layout in kernels/patches.py).

    x may have any strides. The kernel reads its CHWN view x.transpose(1, 2, 3, 0), made contiguous:
    free when x is a convolution's output (a view of CHWN memory), one copy otherwise.
    """
    xp, (x,) = _checked("im2col", x)
    if x.ndim != 4:
        raise ValueError(f"im2col: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    geometry = _conv_geometry("im2col", x.shape[2:], kernel, stride, pads)
    kh, kw, _, _, _, _, out_h, out_w = geometry
    n, c = x.shape[:2]
    x_chwn = xp.ascontiguousarray(x.transpose(1, 2, 3, 0))              # (C, H, W, N)
    cols = xp.empty((c * kh * kw, out_h * out_w * n), dtype=x.dtype)
    if cols.size:
        _launch_patches("im2col", n, out_h * out_w, cols.shape[0], x_chwn, cols, geometry)
    return cols


def col2im(cols, x_shape, kernel, stride, pads):
    """cols (C·kh·kw, out_h·out_w·N) -> (N, C, H, W) = x_shape, summing what overlapping windows
    read: the adjoint of im2col. As functional/im2col.py's `col2im`, the result is an (N, C, H, W)
    view of a CHWN buffer."""
    xp, (cols,) = _contiguous("col2im", cols)
    n, c, h, w = (int(v) for v in x_shape)
    geometry = _conv_geometry("col2im", (h, w), kernel, stride, pads)
    kh, kw, _, _, _, _, out_h, out_w = geometry
    if cols.shape != (c * kh * kw, out_h * out_w * n):
        raise ValueError(f"col2im: cols must be (C·kh·kw, out_h·out_w·N) = "
                         f"({c * kh * kw}, {out_h * out_w * n}), got {tuple(cols.shape)}")
    x_chwn = xp.empty((c, h, w, n), dtype=cols.dtype)
    if x_chwn.size:
        _launch_patches("col2im", n, h * w, c, cols, x_chwn, geometry)
    return x_chwn.transpose(3, 0, 1, 2)


# ---- matrix product ------------------------------------------------------------------------

def gemm(a, b):
    """a (M, K) @ b (K, N) with the tiled shared-memory kernel (the library's default is cuBLAS,
    see backend.use_matmul). a and b are made C-contiguous first (a copy for a transposed view)."""
    xp, (a, b) = _contiguous("gemm", a, b, same_shape=False)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm: expected a (M, K) and b (K, N), got {tuple(a.shape)} and {tuple(b.shape)}")
    tile = _kernels("matmul").TILE
    m, n = a.shape[0], b.shape[1]
    c = xp.empty((m, n), dtype=a.dtype)
    if m > 0 and n > 0:
        tiles = ((n + tile - 1) // tile, (m + tile - 1) // tile)  # (x: cols, y: rows)
        _launch("matmul", "gemm", tiles, (tile, tile), a, b, c)
    return c
