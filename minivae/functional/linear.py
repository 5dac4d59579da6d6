"""Matrix products: the dense layer and the bare `@`."""
from ..tensor import Tensor
from ._common import (before_activation, bias_grad, check_float, check_ndim, matmul_arrays, tensors,
                      weight_product, xp_of)
from . import narrow

__all__ = ["matmul", "linear"]


def matmul(a, b):
    """y = a @ b for 2-D a (n, k) and b (k, m);  dL/da = dL/dy @ bᵀ,  dL/db = aᵀ @ dL/dy."""
    a, b = tensors(a, b)
    xp_of("matmul", a, b)
    check_ndim("matmul", "a", a, 2)
    check_ndim("matmul", "b", b, 2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: inner sizes differ: a {tuple(a.shape)} @ b {tuple(b.shape)}")
    return Tensor.from_op(matmul_arrays(a.data, b.data), (a, b),
                          lambda g: (matmul_arrays(g, b.data.T), matmul_arrays(a.data.T, g)), "matmul")


def linear(x, w, b=None, activation=None):
    """Dense layer y = x @ w + b, x (N, in), w (in, out), b (out,); then `activation` (an
    activations.Fused: relu or leaky_relu) in the same op, where given.

    dL/dx = dL/dy @ wᵀ,  dL/dw = xᵀ @ dL/dy,  dL/db = Σ_batch dL/dy.

    Like the convolutions (functional/im2col.py), linear keeps the batch as the fastest-moving
    axis: it computes yᵀ = wᵀ @ xᵀ and dL/dxᵀ = w @ dL/dyᵀ, so y and dL/dx are (N, features)
    views of (features, N) memory. Flatten of a convolution's output gives x in that layout
    without a copy, and Reshape of y into images gives the layout the next convolution reads
    without one; so do their gradients on the way back.
    """
    x, w, b = tensors(x, w, b)
    xp_of("linear", x, w, b)
    check_float("linear", x=x, w=w, b=b)
    check_ndim("linear", "x", x, 2, "(N, in_features)")
    check_ndim("linear", "w", w, 2, "(in_features, out_features)")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"linear: x has {x.shape[1]} features but w expects {w.shape[0]}: "
                         f"x {tuple(x.shape)}, w {tuple(w.shape)}")
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"linear: b must have shape ({w.shape[1]},), got {tuple(b.shape)}")
    if narrow.suits(x.data, w.data):
        return _narrow(x, w, b, activation)
    y = matmul_arrays(w.data.T, x.data.T, None if b is None else b.data, activation).T  # (out, N) memory

    def backward(g):
        g, db = before_activation(activation, g, y, b)  # dL/dy before the activation (and dL/db)
        return (matmul_arrays(w.data, g.T).T if x.requires_grad else None,
                weight_product(x.data.T, g.T) if w.requires_grad else None,
                bias_grad(g) if db is None and b is not None and b.requires_grad else db)
    return Tensor.from_op(y, (x, w, b), backward, "linear")


def _narrow(x, w, b, activation):
    """linear for a narrow input (narrow.py: at most narrow.MAX_IN features in, as a 2-D latent):
    y made in one pass, and the three gradients in one pass over dL/dy and y, where the matrix
    products above, which stay the reference, go over them five times."""
    y = narrow.forward(x.data, w.data, None if b is None else b.data, activation).T   # (out, N) memory

    def backward(g):
        g_rows = g.T if g.T.flags.c_contiguous else g.T.copy()    # (out, N), laid out as y
        dx, dw, db = narrow.backward(g_rows, y.T, x.data, w.data, activation, need_dx=x.requires_grad)
        return (None if dx is None else dx.T, dw if w.requires_grad else None,
                db if b is not None and b.requires_grad else None)
    return Tensor.from_op(y, (x, w, b), backward, "linear")
