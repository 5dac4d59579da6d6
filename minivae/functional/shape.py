"""Reductions and reshapes: they move or sum numbers, so their backward moves or spreads
the gradient the other way."""
from ..tensor import Tensor
from ._common import tensors, xp_of

__all__ = ["sum", "mean", "reshape", "transpose", "getitem"]


def _expand_back(g, x_shape, axis, keepdims):
    """Put back the axes a reduction removed so g broadcasts against the input."""
    if axis is None or keepdims:
        return g.reshape([1] * len(x_shape)) if axis is None and not keepdims else g
    axes = (axis,) if isinstance(axis, int) else axis
    for ax in sorted(a % len(x_shape) for a in axes):
        g = g.reshape(g.shape[:ax] + (1,) + g.shape[ax:])
    return g


def sum(x, axis=None, keepdims=False):  # noqa: A001  (mirrors numpy's name)
    """y = Σ x over `axis`;  dL/dx = dL/dy, broadcast back over the summed axes."""
    (x,) = tensors(x)
    xp = xp_of("sum", x)
    y = x.data.sum(axis=axis, keepdims=keepdims)

    def backward(g):
        return (xp.broadcast_to(_expand_back(g, x.shape, axis, keepdims), x.shape),)
    return Tensor.from_op(xp.asarray(y), (x,), backward, "sum")


def mean(x, axis=None, keepdims=False):
    """y = Σ x / n over `axis`;  dL/dx = dL/dy / n, broadcast back."""
    (x,) = tensors(x)
    xp = xp_of("mean", x)
    y = x.data.mean(axis=axis, keepdims=keepdims)
    n = x.data.size // max(y.size, 1)

    def backward(g):
        return (xp.broadcast_to(_expand_back(g, x.shape, axis, keepdims) / n, x.shape),)
    return Tensor.from_op(xp.asarray(y), (x,), backward, "mean")


def reshape(x, shape):
    """Same numbers, new shape;  dL/dx = dL/dy reshaped to x's shape."""
    (x,) = tensors(x)
    try:
        y = x.data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape {tuple(x.shape)} ({x.size} values) "
                         f"into {tuple(shape) if not isinstance(shape, int) else (shape,)}") from None
    return Tensor.from_op(y, (x,), lambda g: (g.reshape(x.shape),), "reshape")


def transpose(x, axes=None):
    """Permute axes (reverse them if None);  dL/dx = dL/dy permuted back."""
    (x,) = tensors(x)
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(axes)
    inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
    return Tensor.from_op(x.data.transpose(axes), (x,), lambda g: (g.transpose(inverse),), "transpose")


def getitem(x, index):
    """y = x[index] (basic slicing or an integer index array);
    dL/dx is zero except where y was read, which receives dL/dy."""
    (x,) = tensors(x)
    xp = xp_of("getitem", x)
    if isinstance(index, Tensor):
        index = index.data

    def backward(g):
        dx = xp.zeros_like(x.data)
        if _has_index_array(index):
            xp.add.at(dx, index, g)  # an index array may repeat an entry: each read adds its dL/dy
        else:
            dx[index] = g            # slices and ints read each entry at most once
        return (dx,)
    return Tensor.from_op(x.data[index], (x,), backward, "getitem")


def _has_index_array(index):
    """Does `index` hold an integer/boolean array (advanced indexing), not just slices and ints?"""
    parts = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(part, (slice, int, type(None), type(Ellipsis))) for part in parts)
