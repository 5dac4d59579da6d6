"""Activations: elementwise nonlinearities. Each backward multiplies the upstream gradient by
the activation's slope at x.

Each has a CUDA kernel pair in kernels/activations.py computing the same numbers; an op runs it
where `backend.kernels_for` says so (on the GPU by default), and its xp expression otherwise.
The xp expressions write into workspace arrays laid out as x is (`out=`), so a training step
reuses the same memory (minivae/workspace.py).
"""
import numpy as np

from .. import backend, cpu_kernels, kernels, threads
from ..tensor import Tensor
from ..workspace import workspace
from ._common import bias_grad, check_float, tensors, xp_of

__all__ = ["relu", "leaky_relu", "sigmoid"]


class Fused:
    """relu (negative_slope None) or leaky_relu with a slope a >= 0, applied by the op that makes
    its input x (conv2d, conv_transpose2d, linear: their `activation=`), to each part of that op's
    output while the part is still in the cache, instead of in a pass over memory of its own
    (nn.Sequential hands a layer the activation that follows it). The backward reads the slope off
    the output y: with a >= 0, y > 0 exactly where x > 0 and y is NaN exactly where x is, so
    nothing else is kept. The numbers are those of the op followed by F.relu or F.leaky_relu, bit
    for bit (tests/test_fused.py)."""

    def __init__(self, negative_slope=None):
        if negative_slope is not None and not negative_slope >= 0:
            raise ValueError(f"Fused: the slope must be at least 0 (read off y), got {negative_slope!r}")
        self.negative_slope = negative_slope

    def apply(self, y, row_bias=None):
        """y = activation(y), in place (on this thread: y is a part of a product); with row_bias
        (a bias per row of a 2-D y), y = activation(y + row_bias[:, None]), in one pass."""
        if cpu_kernels.use_for(y) and y.ndim == 2 and (row_bias is None or cpu_kernels.use_for(row_bias)) \
                and cpu_kernels.activate(y, self.negative_slope, row_bias):
            return
        if row_bias is not None:
            y += row_bias[:, None]
        if self.negative_slope is None:
            backend.array_module(y).maximum(y, 0, out=y)
        else:
            y *= self._slope(y)

    def apply_with_bias(self, y, bias=None):
        """y = activation(y + bias), in place, for a whole (N, C, H, W) output and its bias (C,)
        (or None): where y is a view of CHWN memory, as col2im makes it, in one pass over y split
        by channels over the threads, instead of a pass for the bias on one thread and another."""
        rows = y.transpose(1, 2, 3, 0)                        # (C, H, W, N)
        if cpu_kernels.use_for(y) and rows.flags.c_contiguous and (bias is None or cpu_kernels.use_for(bias)):
            cpu_kernels.activate_rows(rows.reshape(rows.shape[0], -1), self.negative_slope, bias)
            return
        if bias is not None:
            y += bias[:, None, None]
        self.apply(y)

    def backward(self, g, y):
        """dL/dx = dL/dy · slope, into a workspace array laid out as y."""
        out = workspace.like(y, g.dtype)
        if cpu_kernels.use_for(g, y, out) and threads.in_memory_order(y) is not None:
            if cpu_kernels.activation_grad(g, y, out, self.negative_slope):
                return out
            out[...] = g  # g laid out otherwise than y: into y's layout first, then the flat pass
            if cpu_kernels.activation_grad(out, y, out, self.negative_slope):
                return out
        return backend.array_module(g).multiply(g, self._slope(y), out=out)

    def backward_and_bias_grad(self, g, y):
        """(dL/dx, dL/db): backward's dL/dx, and bias_grad of it for a bias added along axis 1 of
        the op's output, y. Where the kernels can (float32, y a view of CHWN memory as the ops
        hand it on, g laid out alike), both in one pass over memory: each channel's sum taken
        while its numbers are made (cpu_kernels.sum_rows, which bias_grad also sums with)."""
        channels_first = (1, *range(2, y.ndim), 0)            # (C, ..., N): CHWN memory, in order
        rows, g_rows = y.transpose(channels_first), g.transpose(channels_first)
        if cpu_kernels.use_for(g, y) and rows.flags.c_contiguous and g_rows.flags.c_contiguous:
            out = workspace.like(y, g.dtype)
            sums = np.empty(y.shape[1], g.dtype)
            cpu_kernels.activation_grad_rows(*(a.reshape(y.shape[1], -1) for a in
                                               (g_rows, rows, out.transpose(channels_first))),
                                             sums, self.negative_slope)
            return out, sums
        g = self.backward(g, y)
        return g, bias_grad(g)

    def _slope(self, y):
        """1 where y > 0, a where y <= 0 (0 for relu), 0 where y is NaN; as leaky_relu builds it."""
        xp = backend.array_module(y)
        slope = xp.less_equal(y, 0, out=workspace.like(y))
        slope *= 0 if self.negative_slope is None else self.negative_slope
        slope += xp.greater(y, 0, out=workspace.like(y, bool))
        return slope


def relu(x):
    """y = max(x, 0);  dL/dx = dL/dy · [x > 0]  (the kink at 0 gets slope 0).

    On the CPU with Numba, cpu_kernels.relu makes y and the mask [x > 0] in one pass."""
    (x,) = tensors(x)
    xp = xp_of("relu", x)
    check_float("relu", x=x)
    if backend.kernels_for(x.data):
        y = kernels.relu_forward(x.data)
        return Tensor.from_op(y, (x,), lambda g: (kernels.relu_backward(x.data, g),), "relu")
    y, positive = workspace.like(x.data), workspace.like(x.data, bool)
    if not (cpu_kernels.use_for(x.data) and cpu_kernels.relu(x.data, y, positive)):
        xp.greater(x.data, 0, out=positive)
        xp.maximum(x.data, 0, out=y)
    return Tensor.from_op(y, (x,), lambda g: (times(g, positive),), "relu")


def leaky_relu(x, negative_slope=0.01):
    """y = x if x > 0 else a·x;  dL/dx = dL/dy · (1 if x > 0 else a).

    Both are a product with the slope s = 1 or a at each x, so s is computed once and kept:
    y = s·x, dL/dx = s·dL/dy. (Plain products also keep x's memory layout and run 10× faster
    than `where` on the transposed views that convolutions return.) On the CPU with Numba,
    cpu_kernels.leaky_relu makes s and y in one pass: the same float32 products.
    """
    (x,) = tensors(x)
    xp = xp_of("leaky_relu", x)
    check_float("leaky_relu", x=x)
    if backend.kernels_for(x.data):  # the kernels test x > 0 again in backward instead of keeping s
        y = kernels.leaky_relu_forward(x.data, negative_slope)
        return Tensor.from_op(y, (x,), lambda g: (kernels.leaky_relu_backward(x.data, g, negative_slope),),
                              "leaky_relu")
    y, slope = workspace.like(x.data), workspace.like(x.data)
    if not (cpu_kernels.use_for(x.data) and cpu_kernels.leaky_relu(x.data, y, slope, negative_slope)):
        positive = xp.greater(x.data, 0, out=workspace.like(x.data, bool))
        xp.less_equal(x.data, 0, out=slope)     # 1 where x <= 0, else 0 ...
        slope *= negative_slope                 # ... a where x <= 0 ...
        slope += positive                       # ... plus 1 where x > 0
        xp.multiply(x.data, slope, out=y)

    return Tensor.from_op(y, (x,), lambda g: (times(g, slope),), "leaky_relu")


def times(g, slope):
    """g · slope, elementwise, into a workspace array laid out as slope (which is laid out as x;
    with Numba, in one pass over every core)."""
    xp = backend.array_module(g)
    out = workspace.like(slope, g.dtype)  # x's layout: the op that made x takes its gradient back without a copy
    if cpu_kernels.use_for(g, out) and cpu_kernels.product(g, slope, out):
        return out
    return xp.multiply(g, slope, out=out)


def sigmoid_array(xp, a):
    """σ(a) = 1 / (1 + e⁻ᵃ) on a bare array, without overflow for any a.

    Only e^{-|a|} <= 1 is ever computed: σ(a) = 1 / (1 + e^{-a}) for a >= 0 and
    e^{a} / (1 + e^{a}) for a < 0. (The naive form overflows e^{-a} for a < -88 in float32.)
    Shared with binary_cross_entropy_with_logits.
    """
    e = xp.abs(a, out=workspace.like(a))
    xp.negative(e, out=e)
    xp.exp(e, out=e)                                   # e^{-|a|}, in (0, 1]
    d = xp.add(e, 1, out=workspace.like(a))            # 1 + e^{-|a|}
    # the numerator: 1 where a >= 0, else e^{-|a|}; as max(e^{-|a|}, [a >= 0]), since e^{-|a|} <= 1
    # (a NaN stays NaN): one pass, where a select (xp.where) took 5x as long as all the others
    xp.maximum(e, xp.greater_equal(a, 0, out=workspace.like(a, bool)), out=e)
    return xp.divide(e, d, out=d)


def sigmoid(x):
    """y = σ(x) = 1 / (1 + e⁻ˣ);  dL/dx = dL/dy · y (1 - y)."""
    (x,) = tensors(x)
    xp = xp_of("sigmoid", x)
    check_float("sigmoid", x=x)
    if backend.kernels_for(x.data):
        y = kernels.sigmoid_forward(x.data)
        return Tensor.from_op(y, (x,), lambda g: (kernels.sigmoid_backward(y, g),), "sigmoid")
    y = sigmoid_array(xp, x.data)

    def backward(g):
        dx = xp.multiply(g, y, out=workspace.like(y))
        return (xp.multiply(dx, xp.subtract(1, y, out=workspace.like(y)), out=dx),)   # g·y·(1 − y)
    return Tensor.from_op(y, (x,), backward, "sigmoid")
