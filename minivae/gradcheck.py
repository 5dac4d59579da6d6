"""Numerical gradient checking: does an op's hand-written backward match its forward?

For a random direction v, the scalar s(x) = Σ fn(x) · v has the gradient ∂s/∂x that backward
computes from the upstream gradient v. Central differences estimate the same thing one element
at a time, (s(x + h·e_i) - s(x - h·e_i)) / 2h, with error O(h²). In float64 with h ≈ 1e-6 the
two agree to about 1e-8 unless the backward is wrong.
"""
import numpy as np

from . import backend
from .tensor import Tensor


class GradcheckError(AssertionError):
    pass


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, seed=0, raise_exception=True):
    """Compare analytic and numerical gradients of `fn(*inputs)` for every input.

    inputs: arrays or Tensors (converted to float64, requiring grad); `None` entries are passed
    through. fn may return any shape. Returns True, or raises GradcheckError (or returns False
    with raise_exception=False) with a report naming the input, the element, both values and
    the relative error.
    """
    xs = [None if x is None else Tensor(np.array(backend.to_numpy(x.data if isinstance(x, Tensor) else x),
                                                 dtype=np.float64), requires_grad=True) for x in inputs]
    out = fn(*xs)
    v = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(v)
    analytic = [None if x is None else (x.grad if x.grad is not None else np.zeros_like(x.data))
                for x in xs]

    def s(perturbed):
        return float((backend.to_numpy(fn(*perturbed).data) * v).sum())

    problems = []
    for i, x in enumerate(xs):
        if x is None:
            continue
        numeric = np.zeros_like(x.data)
        flat, num_flat = x.data.reshape(-1), numeric.reshape(-1)
        for j in range(flat.size):
            keep = flat[j]
            flat[j] = keep + eps
            plus = s([None if t is None else Tensor(t.data.copy()) for t in xs])
            flat[j] = keep - eps
            minus = s([None if t is None else Tensor(t.data.copy()) for t in xs])
            flat[j] = keep
            num_flat[j] = (plus - minus) / (2 * eps)
        a = backend.to_numpy(analytic[i])
        if a.shape != numeric.shape:
            problems.append(f"input {i}: analytic gradient has shape {a.shape}, input has {numeric.shape}")
            continue
        bad = np.abs(a - numeric) > atol + rtol * np.abs(numeric)
        if bad.any():
            k = np.unravel_index(np.argmax(np.abs(a - numeric) * bad), a.shape)
            rel = abs(a[k] - numeric[k]) / max(abs(numeric[k]), 1e-12)
            problems.append(f"input {i} (shape {x.shape}): {int(bad.sum())} of {a.size} elements differ; "
                            f"worst at index {tuple(int(n) for n in k)}: analytic {a[k]:.8g}, "
                            f"numeric {numeric[k]:.8g}, relative error {rel:.3g}")
    if problems:
        if raise_exception:
            name = getattr(fn, "__name__", "fn")
            raise GradcheckError(f"gradcheck of {name} failed:\n  " + "\n  ".join(problems))
        return False
    return True
