"""Activation kernels, forward and backward side by side: one thread per element.

Every kernel here reads and writes flat arrays of one length n, arguments in the order
(inputs..., numbers..., outputs...). A launch may have fewer threads than elements, so each
thread starts at its global index `cuda.grid(1)` and steps by the number of threads in the
grid, `cuda.gridsize(1)` (a grid-stride loop).
"""
import math

from numba import cuda


@cuda.jit
def relu_forward(x, y):
    """y = max(x, 0). Thread i computes y[i].

    Written as "0 where x <= 0" so that a NaN (for which every comparison is false) passes
    through, as it does through the op's xp.maximum, and detect_anomaly still sees it.
    """
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = 0.0 if x[i] <= 0 else x[i]


@cuda.jit
def relu_backward(x, g, dx):
    """dL/dx = dL/dy · [x > 0] (the slope at 0 is taken as 0). Thread i computes dx[i].

    A product, as in the op's xp path, so a NaN or inf in dL/dy is not silently dropped where x <= 0.
    """
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = g[i] * (1.0 if x[i] > 0 else 0.0)


@cuda.jit
def leaky_relu_forward(x, slope, y):
    """y = x where x > 0, else slope·x. Thread i computes y[i]."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] if x[i] > 0 else slope * x[i]


@cuda.jit
def leaky_relu_backward(x, g, slope, dx):
    """dL/dx = dL/dy where x > 0, else slope·dL/dy. Thread i computes dx[i]."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = g[i] if x[i] > 0 else slope * g[i]


@cuda.jit
def sigmoid_forward(x, y):
    """y = 1 / (1 + e^-x). Thread i computes y[i].

    e = exp(-|x|) lies in (0, 1], so nothing overflows: for x >= 0, y = 1 / (1 + e);
    for x < 0, y = e^x / (1 + e^x) = e / (1 + e).
    """
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        e = math.exp(-abs(x[i]))
        y[i] = 1.0 / (1.0 + e) if x[i] >= 0 else e / (1.0 + e)


@cuda.jit
def sigmoid_backward(y, g, dx):
    """dL/dx = dL/dy · y·(1 − y), from the forward output y. Thread i computes dx[i]."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = g[i] * y[i] * (1.0 - y[i])
