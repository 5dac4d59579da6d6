"""The one array-module switch: NumPy on the CPU, CuPy on the GPU.

Every op asks `array_module(*arrays)` for `xp` and writes its math once with it, as DeZero's
`cuda.get_array_module` does. CuPy is imported lazily, so the CPU path never needs it.
"""
import numpy as np

DEFAULT_DTYPE = np.float32

_cupy = None          # the cupy module once imported; False if import failed
_cupy_error = None


def _import_cupy():
    global _cupy, _cupy_error
    if _cupy is None:
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()  # raises without a driver or a GPU
            _cupy = cupy
        except Exception as exc:  # ImportError, CUDARuntimeError, ...
            _cupy, _cupy_error = False, exc
    return _cupy or None


def cuda_available():
    """True when CuPy imports and sees at least one GPU."""
    return _import_cupy() is not None


def require_cuda():
    """Return the cupy module, or raise a RuntimeError that says what is missing and how to fix it."""
    cupy = _import_cupy()
    if cupy is None:
        raise RuntimeError(
            "device 'cuda' is not available: "
            + (f"{type(_cupy_error).__name__}: {_cupy_error}. " if _cupy_error else "")
            + "Install a GPU extra on a machine with an NVIDIA GPU and driver: pip install "
            "'minivae[gpu]' (CuPy and numba-cuda for CUDA 12) or 'minivae[gpu-cuda13]' (for CUDA 13; "
            "nvidia-smi shows the CUDA version the driver supports).")
    return cupy


def is_cupy_array(a):
    return _cupy and isinstance(a, _cupy.ndarray)


def device_of(a):
    """'cpu' for NumPy arrays and scalars, 'cuda:N' for CuPy arrays."""
    return f"cuda:{a.device.id}" if is_cupy_array(a) else "cpu"


def array_module(*arrays, op=None):
    """numpy or cupy, from the arrays given; a clear error if they live on different devices."""
    if all(type(a) is np.ndarray or a is None for a in arrays):  # the usual case, answered quickly
        return np
    devices = {device_of(a) for a in arrays if a is not None and not np.isscalar(a)}
    if len(devices) > 1:
        where = f"{op}: " if op else ""
        raise ValueError(f"{where}arrays on different devices: {', '.join(sorted(devices))}; "
                         "move them to one device with .to(...) first")
    if devices and devices.pop().startswith("cuda"):
        return _cupy
    return np


def parse_device(device):
    """Normalise 'cpu' / 'cuda' / 'cuda:1' / 'gpu'; raise ValueError on anything else."""
    name = str(device).lower()
    if name == "gpu":
        name = "cuda"
    if name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda' (or 'cuda:N')")


def to_device(a, device):
    """Copy an array to 'cpu' or 'cuda[:N]' (no copy when it is already there)."""
    device = parse_device(device)
    if device == "cpu":
        return a.get() if is_cupy_array(a) else np.asarray(a)
    cupy = require_cuda()
    index = int(device.split(":")[1]) if ":" in device else 0
    with cupy.cuda.Device(index):
        return cupy.asarray(a)


def to_numpy(a):
    return to_device(a, "cpu")


# ---- our CUDA kernels or the xp expressions ----------------------------------------------------
#
# The ops in minivae.functional and the optimizers are written once with `xp`. A few of them also
# have a hand-written CUDA kernel (kernels/, Numba) that does the same job in one pass; each such op
# asks `kernels_for(*its arrays)` and, when it says yes, calls the kernel's launcher instead of its
# xp expression. The xp expression stays the reference, and the CPU path.

KERNEL_MODES = ("auto", "always", "never")
MATMULS = ("cublas", "tiled")
_settings = {"kernels": "auto", "matmul": "cublas"}


class _Setting:
    """Sets one entry of `_settings` when made; as a `with` block, restores the old value at its end."""

    def __init__(self, name, value, choices):
        if value not in choices:
            raise ValueError(f"unknown {name} mode {value!r}: expected one of {', '.join(choices)}")
        self.name, self.previous = name, _settings[name]
        _settings[name] = value

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        _settings[self.name] = self.previous


def use_kernels(mode):
    """Choose where ops run their hand-written CUDA kernels, now or for a `with` block:

        backend.use_kernels("never")            # from here on
        with backend.use_kernels("always"):     # only inside the block
            ...

    "auto" (the default): the kernels for CuPy arrays, the xp expressions for NumPy arrays.
    "always": the kernels for NumPy arrays too. Numba then needs NUMBA_ENABLE_CUDASIM=1 (its CUDA
              simulator runs them on the CPU, slowly: this is how the tests check the wiring without
              a GPU); with a real GPU it would copy every array over and back.
    "never":  the xp expressions everywhere: CuPy's own kernels on a GPU, to compare against ours.
    """
    return _Setting("kernels", mode, KERNEL_MODES)


def use_matmul(kind):
    """Choose the matrix product of conv2d, conv_transpose2d, linear and matmul, now or for a `with` block.

    "cublas" (the default): xp's `@`, which CuPy hands to cuBLAS (and NumPy to its CPU BLAS).
    "tiled": kernels/matmul.py's tiled shared-memory GEMM, the teaching version; used only where
             `kernels_for` says yes, so on a GPU in the default "auto" mode.
    """
    return _Setting("matmul", kind, MATMULS)


def kernel_mode():
    """The mode `use_kernels` set last: "auto", "always" or "never"."""
    return _settings["kernels"]


def kernels_for(*arrays):
    """Should an op on these arrays run our CUDA kernels? See `use_kernels`. None entries are ignored."""
    mode = _settings["kernels"]
    if mode == "auto":
        return any(is_cupy_array(a) for a in arrays if a is not None)
    return mode == "always"


def tiled_matmul_for(*arrays):
    """Should a matrix product of these arrays use the tiled GEMM kernel? See `use_matmul`."""
    return _settings["matmul"] == "tiled" and kernels_for(*arrays)
