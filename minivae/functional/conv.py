"""Convolution and transposed convolution, NCHW, each the other's adjoint.

With the kH·kW patches of x laid out as columns (`im2col`), conv2d is one matrix product,
Y = W @ cols. Its input-gradient Wᵀ @ dY followed by `col2im` (the adjoint of im2col) is exactly
what a transposed convolution computes in its forward pass; and the transposed convolution's
input-gradient is a convolution. So the two array functions below, `_correlate` (conv2d) and
`_scatter` (conv_transpose2d), serve all four passes, as in DeZero's functions_conv.py.

With stride 1 there is a second way to each pass: a convolution is also the transposed
convolution of its kernel turned 180° (and the other way round). Of the two, minivae takes the one
with the smaller patch matrix, and on a tie `_correlate`, since im2col copies faster than col2im
adds: a narrowing conv2d (fewer channels out than in) runs as a transposed convolution, a widening
or same-width conv_transpose2d as a conv2d, and a same-width or narrowing conv2d's dL/dx as the
conv2d of dY by the turned kernel (`_correlated`).

Padding is resolved once into (top, bottom, left, right), because Keras' "same" can be asymmetric.
"""
import numbers

import numpy as np

from .. import backend, cpu_kernels
from ..tensor import Tensor
from ..workspace import workspace
from ._common import (before_activation, bias_grad, check_float, check_ndim, matmul_arrays, tensors,
                      weight_product, xp_of)
from . import direct, direct_transposed, one_channel, winograd
from .im2col import col2im, conv_output_size, from_chwn, im2col, to_chwn

__all__ = ["conv2d", "conv_transpose2d"]


def conv2d(x, w, b=None, stride=1, padding=0, activation=None):
    """2-D convolution (cross-correlation, as in PyTorch): x (N, C_in, H, W), w (C_out, C_in, kH, kW),
    b (C_out,) -> y (N, C_out, OH, OW).

    y[n, o, p, q] = b[o] + Σ_{c,i,j} w[o, c, i, j] · x_pad[n, c, p·sH + i, q·sW + j]
    As matrices: cols = im2col(x) (C_in·kH·kW, OH·OW·N) and Y = W @ cols, W = w.reshape(C_out, -1).
    dL/dx = conv_transpose2d(dL/dy, w) = col2im(Wᵀ @ dY),  dL/dw = dY @ colsᵀ,  dL/db = Σ_{n,p,q} dL/dy.

    stride: int or (sH, sW). padding: int or (pH, pW), zeros on both sides as in PyTorch; "valid" (0);
    or "same" as in Keras: OH = ceil(H / sH), the odd row/column of padding at the bottom/right.
    activation: an activations.Fused (relu or leaky_relu) applied to y in the same op.
    """
    x, w, b = tensors(x, w, b)
    xp_of("conv2d", x, w, b)
    _check_tensors("conv2d", x, w, b, "(C_out, C_in, kH, kW)", in_axis=1, out_axis=0)
    stride = _pair("conv2d", "stride", stride, minimum=1)
    kernel = w.shape[2:]
    n, _, h, wd = x.shape
    pads = _resolve_padding("conv2d", padding, (h, wd), kernel, stride)
    top, bottom, left, right = pads
    if h + top + bottom < kernel[0] or wd + left + right < kernel[1]:
        raise ValueError(f"conv2d: kernel {kernel[0]}×{kernel[1]} is larger than the padded input "
                         f"{h + top + bottom}×{wd + left + right}: x {tuple(x.shape)}, w {tuple(w.shape)}, "
                         f"padding {padding!r}")
    oh = conv_output_size(h, kernel[0], stride[0], top, bottom)
    ow = conv_output_size(wd, kernel[1], stride[1], left, right)
    if _turnable(stride, pads, kernel) and w.shape[0] < w.shape[1]:
        # With stride 1, conv2d is also the transposed convolution of its kernel turned 180° (in
        # and out channels swapped), padded by k - 1 - p instead of p. The numbers are the same,
        # but that way the patch matrix has kH·kW·C_out rows instead of kH·kW·C_in: C_in/C_out
        # times less memory to fill and read when a layer narrows (Chollet's last conv, 32 -> 1).
        return _transposed(x, w, b, _turned(w.data), (1, 1), _turned_pads(pads, kernel),
                           (n, w.shape[0], oh, ow), "conv2d", activation, weight_grad=_turned)
    return _correlated(x, w, b, w.data, stride, pads, (n, w.shape[0], oh, ow), "conv2d", activation)


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, activation=None):
    """Transposed convolution, the adjoint of conv2d: x (N, C_in, H, W), w (C_in, C_out, kH, kW)
    (PyTorch's layout), b (C_out,) -> y (N, C_out, OH, OW).

    Each input pixel x[n, c, p, q] adds x[n, c, p, q] · w[c, :, :, :] onto the output patch at
    (p·sH, q·sW); the padding is then cropped off. As matrices: Y = col2im(Wᵀ @ X) with
    X (C_in, H·W·N), W = w.reshape(C_in, -1). This is conv2d's dL/dx map, so:
    dL/dx = conv2d(dL/dy, w) = W @ im2col(dY),  dL/dw = X @ im2col(dY)ᵀ,  dL/db = Σ_{n,p,q} dL/dy.

    padding, output_padding: ints or pairs as in PyTorch, OH = (H - 1)·sH - 2·pH + kH + output_pH.
    padding="same" as in Keras' Conv2DTranspose: OH = H·sH, the exact adjoint of conv2d(padding="same").
    activation: an activations.Fused (relu or leaky_relu) applied to y in the same op.
    """
    x, w, b = tensors(x, w, b)
    xp_of("conv_transpose2d", x, w, b)
    _check_tensors("conv_transpose2d", x, w, b, "(C_in, C_out, kH, kW)", in_axis=0, out_axis=1)
    stride = _pair("conv_transpose2d", "stride", stride, minimum=1)
    extra = _pair("conv_transpose2d", "output_padding", output_padding, minimum=0)
    if extra[0] >= stride[0] or extra[1] >= stride[1]:
        raise ValueError(f"conv_transpose2d: output_padding {output_padding!r} must be smaller than "
                         f"the stride {stride}")
    kernel = w.shape[2:]
    n, _, h, wd = x.shape
    if padding == "same":
        if any(extra):
            raise ValueError("conv_transpose2d: output_padding must be 0 with padding='same'")
        out_hw = (h * stride[0], wd * stride[1])
        pads = _resolve_padding("conv_transpose2d", "same", out_hw, kernel, stride)
    else:
        pads = _resolve_padding("conv_transpose2d", padding, (h, wd), kernel, stride)
        out_hw = tuple((size - 1) * s - 2 * p + k + e for size, s, p, k, e
                       in zip((h, wd), stride, pads[::2], kernel, extra))
    if min(out_hw) < 1:
        raise ValueError(f"conv_transpose2d: padding {padding!r} crops the whole output "
                         f"(size {out_hw[0]}×{out_hw[1]}): x {tuple(x.shape)}, w {tuple(w.shape)}")
    out_shape = (n, w.shape[1]) + out_hw
    if _turnable(stride, pads, kernel) and w.shape[0] <= w.shape[1]:
        # The same identity the other way round: with stride 1 this is conv2d by the turned kernel,
        # whose patch matrix (kH·kW·C_in rows) is the smaller one when the layer widens or keeps
        # its width (Foster's first decoder layer, 64 -> 64); and im2col is the faster copy.
        return _correlated(x, w, b, _turned(w.data), (1, 1), _turned_pads(pads, kernel), out_shape,
                           "conv_transpose2d", activation, weight_grad=_turned)
    return _transposed(x, w, b, w.data, stride, pads, out_shape, "conv_transpose2d", activation)


def _correlated(x, w, b, w_data, stride, pads, out_shape, op, activation, weight_grad=lambda dw: dw):
    """The convolution of x by the kernel array w_data (C_out, C_in, kH, kW) as the op `op` with
    inputs (x, w, b), followed by `activation` where given; weight_grad maps the gradient for
    w_data to the one for w."""
    if winograd.suits(x.data, w_data, stride, pads):
        return _winograd(x, w, b, w_data, pads, out_shape, op, activation, weight_grad)
    if one_channel.suits(x.data, w_data, stride, x.requires_grad):
        return _one_channel_in(x, w, b, w_data, pads, out_shape, op, activation, weight_grad)
    cols, y = _correlate(x.data, w_data, stride, pads,        # (C_in·kH·kW, OH·OW·N), (C_out, OH·OW·N)
                         None if b is None else b.data, activation)
    y = from_chwn(y, out_shape)                               # an (N, C_out, OH, OW) view
    kernel = w_data.shape[2:]

    def backward(g):
        nonlocal cols
        g, db = before_activation(activation, g, y, b)        # dL/dy before the activation (and dL/db)
        g_mat = to_chwn(g)                                    # dY (C_out, OH·OW·N)
        dw = weight_grad(_weight_product(g_mat, cols).reshape(w_data.shape)) if w.requires_grad else None
        cols = None  # the patch matrix is no longer needed: the next one, of its size, may reuse its memory
        if not x.requires_grad:
            dx = None
        elif _turnable(stride, pads, kernel) and w_data.shape[0] <= w_data.shape[1]:
            # stride 1 and no wider out than in: dL/dx is the conv2d of dY by the turned kernel,
            # im2col(dY) no larger than Wᵀ @ dY, and copied faster than col2im adds
            dx = from_chwn(_correlate(g, _turned(w_data), (1, 1), _turned_pads(pads, kernel))[1], x.shape)
        else:
            dx = _scatter(g_mat, w_data, x.shape, stride, pads)
        if db is None and b is not None and b.requires_grad:
            db = bias_grad(g_mat[None])                       # dY as (1, C_out, ...)
        return dx, dw, db
    return Tensor.from_op(y, (x, w, b), backward, op)


def _winograd(x, w, b, w_data, pads, out_shape, op, activation, weight_grad):
    """_correlated for a 3×3 kernel at stride 1, by Winograd's F(2×2, 3×3) or F(4×4, 3×3)
    (winograd.py): the same convolution with 2.25× or 4× fewer multiply-adds than W @ im2col(x),
    which stays the reference."""
    kept, y = winograd.forward(x.data, w_data, pads, None if b is None else b.data, activation)
    y = from_chwn(y, out_shape)                               # an (N, C_out, OH, OW) view

    def backward(g):
        nonlocal kept
        g, db = before_activation(activation, g, y, b)        # dL/dy before the activation (and dL/db)
        dx, dw = winograd.backward(g, kept, x.requires_grad, w.requires_grad)
        kept = None  # the tiles are no longer needed: the next ones, of their size, may reuse their memory
        return (None if dx is None else dx.transpose(3, 0, 1, 2), None if dw is None else weight_grad(dw),
                bias_grad(g) if db is None and b is not None and b.requires_grad else db)
    return Tensor.from_op(y, (x, w, b), backward, op)


def _one_channel_in(x, w, b, w_data, pads, out_shape, op, activation, weight_grad):
    """_correlated for a first layer (one_channel.py): one channel in, w_data (C_out, 1, kH, kW),
    stride 1, x needing no gradient. Faster than im2col there: a pass per kernel tap over rows in
    the cache instead of a 9-row patch matrix and a thin product, with the bias and activation in
    the output's pass and the activation's gradient inside the weight-gradient pass."""
    n, kernel = x.shape[0], w_data.shape[2:]
    x_rows = one_channel.rows(x.data)                         # (1, H, W·N)
    y_rows = one_channel.spread(x_rows, w_data, n, out_shape[2:], pads, None if b is None else b.data,
                                activation)                   # (C_out, OH, OW·N)
    y = from_chwn(y_rows, out_shape)

    def backward(g):
        nonlocal x_rows
        dw, db = one_channel.weights(one_channel.rows(g), y_rows, x_rows, n, kernel, pads, activation)
        x_rows = None  # no longer needed: a later step may reuse its memory
        return None, weight_grad(dw) if w.requires_grad else None, db if b is not None and b.requires_grad else None
    return Tensor.from_op(y, (x, w, b), backward, op)


def _transposed(x, w, b, w_data, stride, pads, out_shape, op, activation, weight_grad=lambda dw: dw):
    """The transposed convolution of x by the kernel array w_data (C_in, C_out, kH, kW) as the op
    `op` with inputs (x, w, b), followed by `activation` where given; weight_grad maps the
    gradient for w_data to the one for w."""
    x_mat = to_chwn(x.data)                                   # X (C_in, H·W·N)
    y = _scatter(x_mat, w_data, out_shape, stride, pads,     # (N, C_out, OH, OW), a view of ours,
                 None if b is None else b.data, activation)   # + b, then the activation

    def backward(g):
        want_db = b is not None and b.requires_grad
        one_out = one_channel.suits(g, w_data, stride, needs_grad=False)   # (the activation keeps g's dtype)
        if activation is not None and not one_out and direct.gradient_suits(g, y, w_data, want_db):
            # dL/dy before the activation (and dL/db) made in the pass that pads it for the direct
            # path, where its own pass wrote it out and the padded copy read it back
            db = np.empty(w_data.shape[1], g.dtype) if want_db else None
            g_cols = direct.Patches(g, w_data.shape[2:], stride, pads, before=(y, activation.negative_slope, db))
            dx = direct.correlate(g_cols, w_data) if x.requires_grad else None
        else:
            g, db = before_activation(activation, g, y, b)    # dL/dy before the activation (and dL/db)
            if one_out:
                dx, dw = _one_channel_out_grads(g, x_mat, w_data, pads, x.shape, x.requires_grad, w.requires_grad)
                return dx, None if dw is None else weight_grad(dw), bias_grad(g) if db is None and want_db else db
            g_cols, dx = _correlate(g, w_data, stride, pads)  # im2col(dY), W @ im2col(dY)
            db = bias_grad(g) if db is None and want_db else db
        dx = from_chwn(dx, x.shape) if x.requires_grad else None
        dw = _weight_product(x_mat, g_cols).reshape(w_data.shape) if w.requires_grad else None
        return dx, None if dw is None else weight_grad(dw), db
    return Tensor.from_op(y, (x, w, b), backward, op)


def _one_channel_out_grads(g, x_mat, w_data, pads, x_shape, want_dx, want_dw):
    """dL/dx and dL/dw of a stride-1 transposed convolution with one channel out, w_data
    (C_in, 1, kH, kW) (Foster's last layer, Chollet's turned 32 -> 1), by one_channel.py's passes,
    where im2col's path made dY's kH·kW-row patch matrix for two thin products:
        dL/dx = conv2d(dY, w), a convolution of one channel in:              one_channel.spread
        dL/dw[c, 0, i, j] = Σ x[c] · dY shifted by (i, j): its weight gradient, x in dY's place:
                                                                             one_channel.weights
    (whose bias sums, of x, are not wanted here)."""
    n, _, h, wd = x_shape
    g_rows = one_channel.rows(g)                              # (1, OH, OW·N)
    dx = from_chwn(one_channel.spread(g_rows, w_data, n, (h, wd), pads), x_shape) if want_dx else None
    x_rows = x_mat.reshape(x_mat.shape[0], h, wd * n)         # (C_in, H, W·N)
    dw = one_channel.weights(x_rows, x_rows, g_rows, n, w_data.shape[2:], pads)[0] if want_dw else None
    return dx, dw


def _turnable(stride, pads, kernel):
    """Can a convolution with this stride and padding be written as the transposed convolution
    of its turned kernel (and back)? With stride 1, where no padding reaches a kernel's width."""
    top, bottom, left, right = pads
    return stride == (1, 1) and max(top, bottom) < kernel[0] and max(left, right) < kernel[1]


def _turned_pads(pads, kernel):
    """The padding k - 1 - p that goes with the turned kernel."""
    (kh, kw), (top, bottom, left, right) = kernel, pads
    return (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)


def _turned(w):
    """A kernel (A, B, kH, kW) turned 180° with its two channel axes swapped: (B, A, kH, kW).
    Turning twice gives w back."""
    xp = backend.array_module(w)
    return xp.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])


# ---- the two array maps, each the other's transpose ---------------------------------------------

def _correlate(x, w, stride, pads, bias=None, activation=None):
    """conv2d on arrays: cols = im2col(x) (C·kH·kW, OH·OW·N) and W @ cols (w.shape[0], OH·OW·N),
    plus the bias of each output channel where given, then the activation where given. On the CPU
    in float32 (direct.suits), cols is not made: direct.py reads its columns from x itself."""
    if direct.suits(x, w):
        cols = direct.Patches(x, w.shape[2:], stride, pads)
        return cols, direct.correlate(cols, w, bias, activation)
    cols = im2col(x, w.shape[2:], stride, pads)
    return cols, matmul_arrays(w.reshape(w.shape[0], -1), cols, bias, activation)


def _weight_product(g_mat, cols):
    """g_mat @ colsᵀ: a convolution's weight gradient, for cols made by _correlate."""
    if isinstance(cols, direct.Patches):
        return direct.weight_grad(g_mat, cols)
    return weight_product(g_mat, cols)


def _scatter(x_mat, w, shape, stride, pads, bias=None, activation=None):
    """conv_transpose2d on arrays: col2im(Wᵀ @ X) for X (w.shape[0], H·W·N), output `shape` (N, C, OH, OW),
    + bias and then the activation where given. On the CPU in float32 (direct_transposed.suits)
    Wᵀ @ X is not made: each output channel's sums are added where they land from registers; else,
    where it pays, a few channels at a time (cpu_kernels.col2im_product: each group's rows of
    Wᵀ @ X added back while in the cache)."""
    if direct_transposed.suits(x_mat, w, shape[0], bias):
        return direct_transposed.scatter(x_mat, w, shape, stride, pads, bias, activation)
    w_mat = w.reshape(w.shape[0], -1)
    # With one channel in (a conv2d with C_out = 1) Wᵀ @ X is an outer product: broadcasting does it
    # 3-4× faster than OpenBLAS, whose matrix product is unusually slow when the inner size is 1.
    if w_mat.shape[0] == 1:
        xp = backend.array_module(x_mat)
        cols = xp.multiply(w_mat.T, x_mat, out=workspace.empty((w_mat.shape[1], x_mat.shape[1]), x_mat.dtype, xp))
    elif (cpu_kernels.use_for(x_mat, w_mat) and (bias is None or cpu_kernels.use_for(bias))
          and cpu_kernels.col2im_pays(shape[1], w_mat.shape[1] // shape[1], x_mat.shape[1])):
        n, c, h, wd = shape
        (top, bottom, left, right), (kh, kw) = pads, w.shape[2:]
        out_hw = (conv_output_size(h, kh, stride[0], top, bottom), conv_output_size(wd, kw, stride[1], left, right))
        out = workspace.empty((c, h, wd, n), x_mat.dtype)
        cpu_kernels.col2im_product(w_mat.T, x_mat, out, (kh, kw), out_hw, stride, top, left, bias, activation)
        return out.transpose(3, 0, 1, 2)
    else:
        cols = matmul_arrays(w_mat.T, x_mat)
    return col2im(cols, shape, w.shape[2:], stride, pads, bias, activation)


# ---- argument checks and padding ----------------------------------------------------------------

def _check_tensors(op, x, w, b, w_layout, in_axis, out_axis):
    check_float(op, x=x, w=w, b=b)
    check_ndim(op, "x", x, 4, "(N, C, H, W)")
    check_ndim(op, "w", w, 4, w_layout)
    if x.shape[1] != w.shape[in_axis]:
        raise ValueError(f"{op}: x has {x.shape[1]} channels but w expects {w.shape[in_axis]}: "
                         f"x {tuple(x.shape)}, w {tuple(w.shape)} {w_layout}")
    if b is not None and tuple(b.shape) != (w.shape[out_axis],):
        raise ValueError(f"{op}: b must have shape ({w.shape[out_axis]},) for w {tuple(w.shape)}, "
                         f"got {tuple(b.shape)}")


def _pair(op, name, value, minimum):
    """An int or a pair of ints -> (along H, along W), each at least `minimum`."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be at least {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _resolve_padding(op, padding, in_hw, kernel, stride):
    """(top, bottom, left, right) zero padding of the convolution's input of size `in_hw`."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"{op}: padding must be an int, a pair of ints, 'same' or 'valid', "
                             f"got {padding!r}")
        pads = ()
        for size, k, s in zip(in_hw, kernel, stride):
            out = -(-size // s)                               # ceil(size / s)
            total = max((out - 1) * s + k - size, 0)
            pads += (total // 2, total - total // 2)          # Keras/TF: the odd one goes after
        return pads
    ph, pw = _pair(op, "padding", padding, minimum=0)
    return (ph, ph, pw, pw)
