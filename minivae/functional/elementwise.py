"""Elementwise arithmetic. Broadcasting is allowed; Tensor.backward sums each gradient back
to its input's shape, so these closures return gradients of the output's shape."""
from ..tensor import Tensor
from ._common import check_float, tensors, xp_of

__all__ = ["add", "sub", "mul", "div", "neg", "power", "exp", "log"]


def _check_broadcast(op, a, b):
    xp = xp_of(op, a, b)
    try:
        xp.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from None


def add(a, b):
    """y = a + b;  dL/da = dL/dy,  dL/db = dL/dy."""
    a, b = tensors(a, b)
    _check_broadcast("add", a, b)
    return Tensor.from_op(a.data + b.data, (a, b), lambda g: (g, g), "add")


def sub(a, b):
    """y = a - b;  dL/da = dL/dy,  dL/db = -dL/dy."""
    a, b = tensors(a, b)
    _check_broadcast("sub", a, b)
    return Tensor.from_op(a.data - b.data, (a, b), lambda g: (g, -g), "sub")


def mul(a, b):
    """y = a · b;  dL/da = dL/dy · b,  dL/db = dL/dy · a."""
    a, b = tensors(a, b)
    _check_broadcast("mul", a, b)
    return Tensor.from_op(a.data * b.data, (a, b), lambda g: (g * b.data, g * a.data), "mul")


def div(a, b):
    """y = a / b;  dL/da = dL/dy / b,  dL/db = -dL/dy · a / b²."""
    a, b = tensors(a, b)
    _check_broadcast("div", a, b)
    y = a.data / b.data
    return Tensor.from_op(y, (a, b), lambda g: (g / b.data, -g * y / b.data), "div")


def neg(a):
    """y = -a;  dL/da = -dL/dy."""
    (a,) = tensors(a)
    return Tensor.from_op(-a.data, (a,), lambda g: (-g,), "neg")


def power(a, exponent):
    """y = a ** p for a constant number p;  dL/da = dL/dy · p · a^(p-1)."""
    (a,) = tensors(a)
    if isinstance(exponent, Tensor):
        raise TypeError("power: the exponent must be a Python number, not a Tensor")
    check_float("power", a=a)
    return Tensor.from_op(a.data ** exponent, (a,),
                          lambda g: (g * exponent * a.data ** (exponent - 1),), "power")


def exp(a):
    """y = eˣ;  dL/dx = dL/dy · y."""
    (a,) = tensors(a)
    check_float("exp", x=a)
    y = xp_of("exp", a).exp(a.data)
    return Tensor.from_op(y, (a,), lambda g: (g * y,), "exp")


def log(a):
    """y = ln x;  dL/dx = dL/dy / x."""
    (a,) = tensors(a)
    check_float("log", x=a)
    return Tensor.from_op(xp_of("log", a).log(a.data), (a,), lambda g: (g / a.data,), "log")
