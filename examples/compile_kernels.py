"""Compile every CUDA kernel, with the signatures its launcher gives it, to PTX, without a GPU.

The simulator (NUMBA_ENABLE_CUDASIM=1, what CI runs) executes the kernels as Python: it does not
type them as Numba does for the GPU, so a kernel can pass every simulator test and still fail to
compile. This script runs each launcher in kernels/ on small NumPy arrays in float32 and float64,
with the compiler in place of the launch: `numba.cuda.compile_ptx` for sm_90 (an H100), which
needs NVVM and NVRTC but no GPU and no driver, e.g. from the wheels nvidia-cuda-nvcc-cu12 and
nvidia-cuda-nvrtc-cu12 (pip install --target DIR; then PYTHONPATH=DIR and
LD_LIBRARY_PATH=DIR/nvidia/cuda_nvrtc/lib). Nothing runs: it checks types and lowering only, and
that each kernel's PTX takes the parameters that kernels/launch.py passes when CuPy launches it.

    python examples/compile_kernels.py        # prints each kernel, its signature, PTX size
"""
import os
import sys
import time
import types

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
import numpy as np  # noqa: E402
import numba.cuda.dispatcher  # noqa: E402
from numba import cuda, types as numba_types  # noqa: E402
from numba.core import sigutils  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minivae import kernels  # noqa: E402
from minivae.kernels import launch  # noqa: E402

COMPUTE_CAPABILITY = (9, 0)
# Device functions ask the current GPU which code to make; with none, they are told sm_90.
numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=COMPUTE_CAPABILITY)


class CompiledOnly:
    """Stands in for a compiled kernel: `kernel[blocks, threads](*args)` launches nothing."""

    def __getitem__(self, configuration):
        return lambda *args: None


def compile_to_ptx(signature):
    def compile(py_func):
        start = time.perf_counter()
        ptx, _ = cuda.compile_ptx(py_func, signature, cc=COMPUTE_CAPABILITY)
        print(f"{py_func.__name__:<26} {time.perf_counter() - start:5.2f} s {len(ptx):>7} B  {signature}")
        check_parameters(py_func.__name__, ptx, signature)
        return CompiledOnly()
    return compile


def check_parameters(name, ptx, signature):
    """The PTX's parameters are those kernels/launch.py passes: 5 + 2·ndim for an array, 1 for a
    number, each of a type it knows."""
    arguments, _ = sigutils.normalize_signature(signature)
    expected = sum(5 + 2 * t.ndim if isinstance(t, numba_types.Array) else 1 for t in arguments)
    _, parameters = launch.entry_parameters(ptx)
    if len(parameters) != expected or not set(parameters) <= set(launch.PTX_TYPES):
        raise SystemExit(f"{name}: the PTX takes {len(parameters)} parameters {parameters}; "
                         f"kernels/launch.py would pass {expected}")


def every_launcher(dtype):
    a, b, state = np.ones((3, 5), dtype), np.ones((3, 5), dtype), lambda: np.ones((3, 5), dtype)
    for name in ("relu_forward", "sigmoid_forward"):
        getattr(kernels, name)(a)
    for name in ("relu_backward", "sigmoid_backward", "mse_with_grad", "gaussian_kl_with_grad", "bce_with_grad"):
        getattr(kernels, name)(a, b)
    kernels.leaky_relu_forward(a, 0.2)
    kernels.leaky_relu_backward(a, b, 0.2)
    kernels.reparameterize_forward(a, a, a)
    kernels.reparameterize_backward(a, a, a)
    kernels.adam_update(a, b, state(), state(), 0.1, 0.9, 0.999, 1e-7)
    kernels.rmsprop_update(a, b, state(), 0.1, 0.9, 1e-7, True)
    step, lr = np.ones(1, np.uint64), np.ones(1)
    kernels.adam_update_device_step(a, b, state(), state(), step, lr, 0.9, 0.999, 1e-7)
    kernels.rmsprop_update_device_lr(a, b, state(), lr, 0.9, 1e-7)
    kernels.bias_grad(np.ones((4, 5, 5, 1000), dtype).transpose(3, 0, 1, 2))   # channel_sums, two passes
    kernels.bias_grad(np.ones((1000, 7), dtype))                                # column_sums, two passes
    x = np.ones((4, 3, 7, 6), dtype)
    kernels.col2im(kernels.im2col(x, (3, 3), 2, (1, 1, 1, 1)), x.shape, (3, 3), 2, (1, 1, 1, 1))
    kernels.gemm(a, b.T)
    kernels.philox_normal(np.empty(10, dtype), step, kernels.philox_key(0))


def main():
    kernels._jit = compile_to_ptx
    for dtype in (np.float32, np.float64):
        every_launcher(dtype)
    kernels.advance(np.zeros(1, np.uint64))
    print(f"{len(kernels._compiled)} kernels compiled to PTX for sm_{COMPUTE_CAPABILITY[0]}{COMPUTE_CAPABILITY[1]}")


if __name__ == "__main__":
    main()
