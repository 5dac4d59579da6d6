"""Small helpers shared by the ops: argument checks with readable errors, and the xp lookup."""
from .. import backend
from ..tensor import Tensor, as_tensor


def tensors(*items, like=None):
    """Each item as a Tensor (None stays None); numbers take the dtype of the first tensor."""
    if like is None:
        like = next((t for t in items if isinstance(t, Tensor)), None)
    return tuple(None if t is None else as_tensor(t, like) for t in items)


def xp_of(op, *ts):
    """numpy or cupy for these tensors; raises if they sit on different devices."""
    return backend.array_module(*(t.data for t in ts if t is not None), op=op)


def check_float(op, **named):
    """Raise TypeError naming the op and the argument if any tensor is not floating point."""
    for name, t in named.items():
        if t is not None and t.dtype.kind != "f":
            raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {t.dtype}")


def check_ndim(op, name, t, ndim, layout=""):
    if t.ndim != ndim:
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{op}: {name} must have {ndim} dimensions{hint}, got shape {tuple(t.shape)}")
