"""Tensor and reverse-mode automatic differentiation.

A Tensor wraps an array (`.data`, NumPy or CuPy). Every op in `minivae.functional` computes its
output array and, right beside it, a `backward(grad_out)` closure that returns the gradient for
each input; `Tensor.from_op` records that closure and the inputs as graph edges.

`loss.backward()` then walks the graph once, from the loss to the leaves, in reverse topological
order, applying the chain rule: each node's closure turns dL/d(output) into dL/d(input) for each
input, and gradients arriving at one node along several paths are added.
"""
import contextlib

import numpy as np

from . import backend
from .workspace import workspace

_state = {"grad_enabled": True, "detect_anomaly": False, "backward_hook": None}
_scope = []  # names of the layers being called, outermost first (see `layer_scope`)


@contextlib.contextmanager
def no_grad():
    """Inside this block ops record no graph (evaluation, optimizer updates), and take no arrays
    from the workspace: evaluation at another batch size would otherwise keep a second set."""
    previous = _state["grad_enabled"], workspace.enabled
    _state["grad_enabled"], workspace.enabled = False, False
    try:
        yield
    finally:
        _state["grad_enabled"], workspace.enabled = previous


def is_grad_enabled():
    return _state["grad_enabled"]


@contextlib.contextmanager
def detect_anomaly():
    """Check every op's output as it is made; the first non-finite one raises FloatingPointError
    naming the op and the layer it ran in. Slow: meant for finding where a NaN was born."""
    previous = _state["detect_anomaly"]
    _state["detect_anomaly"] = True
    try:
        yield
    finally:
        _state["detect_anomaly"] = previous


@contextlib.contextmanager
def backward_hook(hook):
    """Inside this block Tensor.backward calls `hook(node, grad_out)` in place of each node's
    closure `node._backward(grad_out)`, and the hook must return what the closure returns
    (minivae.profile times each node this way). Off by default: then backward pays one test."""
    previous = _state["backward_hook"]
    _state["backward_hook"] = hook
    try:
        yield
    finally:
        _state["backward_hook"] = previous


@contextlib.contextmanager
def layer_scope(name):
    """Tag the tensors made inside with a layer name (nn.Module calls this), for traces and errors."""
    _scope.append(name)
    try:
        yield
    finally:
        _scope.pop()


def _as_array(data, dtype=None):
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_cupy_array(data):
        return data if dtype is None else data.astype(dtype, copy=False)
    if dtype is None and not isinstance(data, (np.ndarray, np.generic)):
        dtype = backend.DEFAULT_DTYPE  # Python numbers and lists -> float32; arrays keep their dtype
    return np.asarray(data, dtype=dtype)


class Tensor:
    """An array plus what is needed to differentiate through it."""

    __array_priority__ = 1000  # so `ndarray * Tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None, device=None, name=None):
        data = _as_array(data, dtype)
        if device is not None:
            data = backend.to_device(data, device)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self.op = None          # the op that made this tensor (None for a leaf)
        self.layer = None       # the layer it was made in, if any
        self._inputs = ()       # the tensors the op read
        self._backward = None   # grad_out -> one gradient (or None) per input

    @classmethod
    def from_op(cls, data, inputs, backward, op):
        """The output of op `op`: `data` computed from `inputs`, differentiated by `backward`.

        `backward(grad_out)` must return a tuple with one entry per input: dL/d(input), or None
        where that input needs no gradient. Broadcast inputs may get gradients of the output's
        shape; they are summed back to the input's shape here.
        """
        out = cls.__new__(cls)
        out.data, out.grad, out.name, out.op = data, None, None, op
        out.layer = ".".join(_scope) if _scope else None
        out.requires_grad = _state["grad_enabled"] and any(
            t is not None and t.requires_grad for t in inputs)
        out._inputs = tuple(inputs) if out.requires_grad else ()
        out._backward = backward if out.requires_grad else None
        if _state["detect_anomaly"]:
            xp = backend.array_module(data)
            if not bool(xp.isfinite(data).all()):
                where = f" in layer '{out.layer}'" if out.layer else ""
                raise FloatingPointError(f"op '{op}'{where} produced a non-finite value "
                                         f"(output shape {tuple(data.shape)})")
        return out

    # ---- array-like basics --------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._backward is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        extra = f", op={self.op}" if self.op else (", requires_grad=True" if self.requires_grad else "")
        dev = "" if self.device == "cpu" else f", device={self.device}"
        return f"Tensor(shape={tuple(self.shape)}, dtype={self.dtype}{dev}{extra})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device):
        """A copy on `device` ('cpu' or 'cuda'); a leaf that required grad still does."""
        return Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad and self.is_leaf)

    def astype(self, dtype):
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad and self.is_leaf)

    def zero_grad(self):
        self.grad = None

    # ---- operators: each is an op in minivae.functional --------------------------------
    def __add__(self, other): return F.add(self, other)
    def __radd__(self, other): return F.add(other, self)
    def __sub__(self, other): return F.sub(self, other)
    def __rsub__(self, other): return F.sub(other, self)
    def __mul__(self, other): return F.mul(self, other)
    def __rmul__(self, other): return F.mul(other, self)
    def __truediv__(self, other): return F.div(self, other)
    def __rtruediv__(self, other): return F.div(other, self)
    def __pow__(self, exponent): return F.power(self, exponent)
    def __neg__(self): return F.neg(self)
    def __matmul__(self, other): return F.matmul(self, other)
    def __rmatmul__(self, other): return F.matmul(other, self)
    def __getitem__(self, index): return F.getitem(self, index)

    def sum(self, axis=None, keepdims=False): return F.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return F.mean(self, axis, keepdims)
    def reshape(self, *shape): return F.reshape(self, shape[0] if len(shape) == 1 else shape)
    def transpose(self, *axes): return F.transpose(self, (axes[0] if len(axes) == 1 else axes) or None)
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)

    @property
    def T(self):
        return F.transpose(self)

    # ---- reverse mode --------------------------------------------------------------------
    def backward(self, grad=None, trace=False):
        """Accumulate dL/dx into `.grad` of every leaf x that requires grad (L is this tensor).

        grad:  dL/d(self), of self's shape; may be omitted only when self holds one number.
        trace: True (print) or a callable taking one line: report each node of the backward
               sweep, in the order it runs, with its gradient's norm and whether it is finite.
        The graph is released as it is walked: call backward once per forward pass.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input needed a "
                               "gradient, or it was made under no_grad())")
        if self._backward is _freed:
            _freed(None)
        xp = backend.array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward: the output has shape {tuple(self.shape)}, not a single "
                                 "number; pass the upstream gradient dL/d(output) of that shape")
            grad = xp.ones_like(self.data)
        else:
            grad = backend.to_device(_as_array(grad, self.dtype), self.device)
            if grad.shape != self.shape:
                raise ValueError(f"backward: upstream gradient has shape {tuple(grad.shape)}, "
                                 f"the output has shape {tuple(self.shape)}")
        report = (print if trace is True else trace) or None
        if report:
            report(f"{'step':>4}  {'op':<24} {'layer':<22} {'shape':<18} {'|grad|':>10} "
                   f"{'max|grad|':>10}  finite")

        pending = {id(self): grad}  # gradients that have reached a node but not gone past it
        hook = _state["backward_hook"]
        for step, node in enumerate(_reverse_topological_order(self)):
            g = pending.pop(id(node), None)
            if g is None:  # every path to this node carried no gradient
                continue
            if report:
                finite = bool(xp.isfinite(g).all())
                norm, peak = float(xp.linalg.norm(g.ravel())), float(abs(g).max()) if g.size else 0.0
                report(f"{step:>4}  {node.op or 'leaf':<24} {node.layer or node.name or '-':<22} "
                       f"{str(tuple(g.shape)):<18} {norm:>10.3e} {peak:>10.3e}  {'yes' if finite else 'NO'}")
            if node._backward is None:  # a leaf: keep the gradient (a copy, where g is shared: workspace.owned)
                node.grad = workspace.owned(g) if node.grad is None else node.grad + g
                continue
            grads_in = node._backward(g) if hook is None else hook(node, g)
            for inp, g_in in zip(node._inputs, grads_in):
                if inp is None or g_in is None or not inp.requires_grad:
                    continue
                g_in = _sum_to_shape(g_in, inp.shape)
                key = id(inp)
                pending[key] = _added(pending[key], g_in, xp) if key in pending else g_in  # used twice
            node._inputs, node._backward = (), _freed  # release the graph as we go
            grads_in = g_in = g = None  # pending alone holds the gradients now (see workspace.owned)


def _freed(grad_out):
    """The backward of a node whose graph an earlier backward() released (as PyTorch, refuse
    rather than silently give no gradient)."""
    raise RuntimeError("backward: the graph was freed by an earlier backward() through it; run the "
                       "forward pass again to get a new graph (one backward per forward)")


def _added(a, b, xp):
    """a + b into a workspace array (neither a nor b is changed: either may be shared)."""
    return xp.add(a, b, out=workspace.like(a, xp.result_type(a, b)))


def _reverse_topological_order(root):
    """Nodes reachable from root, each after every node that uses it (iterative DFS)."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for inp in node._inputs:
            if inp is not None and inp.requires_grad and id(inp) not in visited:
                stack.append((inp, False))
    return reversed(order)


def _sum_to_shape(g, shape):
    """Undo broadcasting: sum g over the axes that broadcasting added or stretched from 1."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and g.shape[extra + i] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def as_tensor(x, like=None):
    """x as a Tensor; a Python number takes the dtype of `like` (so 2 * float64 stays float64)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and np.isscalar(x):
        xp = backend.array_module(like.data)
        return Tensor(xp.asarray(x, dtype=like.dtype))
    return Tensor(x)


def tensor(data, requires_grad=False, dtype=None, device=None):
    """Make a Tensor: `minivae.tensor([[1., 2.]], requires_grad=True)`."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


from . import functional as F  # noqa: E402  (functional builds on Tensor; the operators call it)
