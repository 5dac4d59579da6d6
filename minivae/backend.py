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
            + "Install the GPU extra (pip install 'minivae[gpu]', which brings CuPy for CUDA 12 "
            "and numba-cuda) on a machine with an NVIDIA GPU and driver.")
    return cupy


def is_cupy_array(a):
    return _cupy and isinstance(a, _cupy.ndarray)


def device_of(a):
    """'cpu' for NumPy arrays and scalars, 'cuda:N' for CuPy arrays."""
    return f"cuda:{a.device.id}" if is_cupy_array(a) else "cpu"


def array_module(*arrays, op=None):
    """numpy or cupy, from the arrays given; a clear error if they live on different devices."""
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
