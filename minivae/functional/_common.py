"""Small helpers shared by the ops: argument checks with readable errors, the xp lookup, and the
array computations several ops share (a matrix product, a weight gradient's product, a bias
gradient), each of which may run one of our CUDA kernels (see backend.use_kernels)."""
import numpy as np

from .. import backend, cpu_kernels, kernels, threads
from ..tensor import Tensor, as_tensor
from ..workspace import workspace


def tensors(*items, like=None):
    """Each item as a Tensor (None stays None); numbers take the dtype of the first tensor."""
    if like is None:
        like = next((t for t in items if isinstance(t, Tensor)), None)
    return tuple(None if t is None else as_tensor(t, like) for t in items)


def xp_of(op, *ts, same_dtype=True):
    """numpy or cupy for these tensors; raises if they sit on different devices, or if they mix
    floating-point dtypes (NumPy would quietly promote float32 to float64 and the whole step would
    run in float64 at half the speed; as in PyTorch, cast one with .astype first). same_dtype=False
    is for an op that converts an input itself (a loss's target takes the prediction's dtype)."""
    if same_dtype:
        check_same_float_dtype(op, *ts)
    return backend.array_module(*(t.data for t in ts if t is not None), op=op)


def check_same_float_dtype(op, *ts):
    """Raise TypeError naming the op and both dtypes if the floating-point tensors differ in dtype."""
    floats = [t.dtype for t in ts if t is not None and t.dtype.kind == "f"]
    for dtype in floats[1:]:
        if dtype != floats[0]:
            raise TypeError(f"{op}: mixed floating-point dtypes {floats[0]} and {dtype}; "
                            f"cast one with .astype(...) first")


def check_float(op, **named):
    """Raise TypeError naming the op and the argument if any tensor is not floating point."""
    for name, t in named.items():
        if t is not None and t.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {t.dtype}")


def check_ndim(op, name, t, ndim, layout=""):
    if t.ndim != ndim:
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{op}: {name} must have {ndim} dimensions{hint}, got shape {tuple(t.shape)}")


def matmul_arrays(a, b, row_bias=None, activation=None):
    """a @ b for 2-D arrays (+ row_bias[:, None], a bias per row, where given; then an
    activations.Fused, in place, where given): xp's `@` (cuBLAS on a GPU; on the CPU split over
    our threads, minivae/threads.py, which apply the bias and the activation to each part while it
    is in the cache), or our tiled GEMM kernel where backend.use_matmul("tiled") asks for it and
    kernels are on. The result is a workspace array."""
    if backend.tiled_matmul_for(a, b):
        out = kernels.gemm(a, b)
    else:
        xp = backend.array_module(a, b)
        out = workspace.empty((a.shape[0], b.shape[1]), xp.result_type(a, b), xp)
        if xp is np:  # split over our threads, one BLAS thread each
            return threads.matmul(a, b, out, row_bias, None if activation is None else activation.apply)
        xp.matmul(a, b, out=out)
    if activation is not None:
        activation.apply(out, row_bias)
    elif row_bias is not None:
        out += row_bias[:, None]
    return out


def weight_product(a, b):
    """a @ bᵀ for a (M, L) and b (K, L), L the batch (with every pixel, for a convolution): a
    weight gradient, M = C_out rows and K = C_in·kH·kW columns for conv2d, M = in and K = out
    features for a dense layer. Where K > M it is computed as (b @ aᵀ)ᵀ and the M·K numbers
    copied once into place: with the taller matrix first, OpenBLAS ran these products 15-20%
    faster (a 2-core Xeon, one thread; training steps 3% faster), Chollet's 2 -> 12544 dense
    layer's 1.7-1.9x (65 against 124 us at batch 16), and with a 9-row one first (one channel,
    3×3) 12% slower. On a GPU, a @ bᵀ as it is (cuBLAS)."""
    if backend.array_module(a, b) is not np or b.shape[0] <= a.shape[0]:
        return matmul_arrays(a, b.T)
    product = matmul_arrays(b, a.T)                     # (K, M)
    out = workspace.empty(product.shape[::-1], product.dtype)
    out[...] = product.T
    return out


def before_activation(activation, g, y, b):
    """(dL/dy before the op's fused activation, dL/db or None) for dL/dy = g after it, y the op's
    output and b its bias: both in one pass where b needs a gradient (Fused.backward_and_bias_grad);
    dL/db None where b needs none, or where there is no activation (g as it is: the caller sums it)."""
    if activation is None:
        return g, None
    if b is None or not b.requires_grad:
        return activation.backward(g, y), None
    return activation.backward_and_bias_grad(g, y)


def bias_grad(g):
    """dL/db for a bias added along axis 1 of y: dL/dy (N, C, ...) summed over every other axis,
    by the shared-memory reduction kernel when kernels are on.

    Otherwise, with G = dL/dy as a (C, everything else) matrix, free to make in the layout the
    convolutions and linear give their outputs (batch last in memory): on the CPU in float32 by
    cpu_kernels.row_sums (running sums, in SIMD lanes where the rows are long, as
    Fused.backward_and_bias_grad sums the gradient it makes: the same bits fused or not); elsewhere
    as the matrix-vector product G @ 1, 2-3x faster than NumPy's sum. A 2-D dL/dy in any other
    layout is summed as 1ᵀ @ dL/dy; anything else by NumPy's sum."""
    if backend.kernels_for(g):
        return kernels.bias_grad(g)
    xp = backend.array_module(g)
    channels = g.shape[1]
    rows = g.transpose(1, *range(2, g.ndim), 0)               # (C, ..., N)
    if channels and rows.flags.c_contiguous and cpu_kernels.use_for(g):
        sums = np.empty(channels, g.dtype)
        cpu_kernels.row_sums(rows.reshape(channels, -1), sums)
        return sums
    if channels and rows.flags.c_contiguous:
        ones = xp.ones((g.size // channels, 1), g.dtype)
        return matmul_arrays(rows.reshape(channels, -1), ones)[:, 0]
    if g.ndim == 2:
        return matmul_arrays(xp.ones((1, g.shape[0]), g.dtype), g)[0]
    return g.sum(axis=(0,) + tuple(range(2, g.ndim)))
