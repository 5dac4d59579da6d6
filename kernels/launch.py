"""Launching a kernel that Numba compiled through CuPy: the same code, a fraction of the host time.

Numba's own launch, `kernel[blocks, threads](*args)`, wraps every CuPy array argument as a Numba
device array (through its __cuda_array_interface__) at every launch. On an H200 machine with
numba-cuda 0.30.4 a launcher call of minivae.kernels took 170-320 µs of host time so, and 60-200
µs launched by CuPy, checks and allocations included (docs/gpu.md); the GPU's own time averaged
6 µs a kernel in a foster step at batch 32. So, once per kernel and argument types, the PTX that
Numba compiled is loaded as a CuPy module, and each launch passes the parameters exactly as Numba
would have (numba-cuda's `_Kernel._prepare_args`): an array is passed as

    meminfo (0), parent (0), size, itemsize, data pointer, shape[0], ..., strides[0], ... (bytes)

and a number as one parameter. The PTX's own parameter list gives each parameter's type; their
count is checked against the arguments' once, when the kernel is loaded.

The driver compiles the PTX when CuPy loads it. A driver older than the compiler that made the
PTX refuses it; the machine code Numba linked for this GPU is then loaded instead, and where
neither loads, Numba launches the kernel itself, as before (with a warning): slower, never wrong.
"""
import re
import warnings

import numpy as np

# A PTX parameter's type -> the NumPy scalar type that CuPy passes with the same bits. Integers are
# signed where it matters: a stride may be negative.
PTX_TYPES = {"u64": np.int64, "s64": np.int64, "b64": np.int64, "f64": np.float64,
             "u32": np.uint32, "s32": np.int32, "b32": np.uint32, "f32": np.float32,
             "u16": np.uint16, "s16": np.int16, "b16": np.uint16,
             "u8": np.uint8, "s8": np.int8, "b8": np.uint8}


def entry_parameters(ptx):
    """(entry name, [PTX type of each parameter]) of the one kernel (`.entry`) in `ptx`."""
    entries = re.findall(r"\.entry\s+([\w$]+)\s*\(([^)]*)\)", ptx)
    if len(entries) != 1:
        raise ValueError(f"expected one .entry in the PTX, found {len(entries)}")
    name, parameters = entries[0]
    return name, re.findall(r"\.param\s+\.(\w+)\s+[\w$]+", parameters)


def parameter_count(kinds):
    """How many parameters Numba passes for arguments of these kinds (kernels._kind): 5 + 2·ndim
    for an array, 1 for a number."""
    return sum(1 if isinstance(kind, type) else 5 + 2 * kind[1] for kind in kinds)


def parameters(args):
    """The kernel's parameters for `args` (CuPy arrays and Python numbers), flattened as Numba does."""
    values = []
    for a in args:
        if isinstance(a, (bool, int, float)):
            values.append(a)
        else:
            values += (0, 0, a.size, a.itemsize, a.data.ptr, *a.shape, *a.strides)
    return values


class CupyLaunch:
    """A Numba kernel, loaded by CuPy, launched as `launch(blocks, threads, args)`.

    ptx: the kernel's PTX, which names its entry and parameters; images: functions that return
    what to load, tried in order (by default the PTX itself)."""

    def __init__(self, cupy, ptx, kinds, what, images=None):
        name, types = entry_parameters(ptx)
        if len(types) != parameter_count(kinds):
            raise RuntimeError(f"{what}: the compiled kernel takes {len(types)} parameters, but "
                               f"Numba's layout of its arguments gives {parameter_count(kinds)}")
        unknown = sorted(set(types) - set(PTX_TYPES))
        if unknown:
            raise RuntimeError(f"{what}: PTX parameter types {unknown} are not handled here")
        self.types = [PTX_TYPES[t] for t in types]
        refused = []
        for image in images or [ptx.encode]:
            module = cupy.cuda.function.Module()
            try:
                module.load(image())
                self.function = module.get_function(name)  # holds on to its module
                return
            except Exception as exc:  # CuPy's CUDADriverError, e.g. a PTX newer than the driver
                refused.append(f"{type(exc).__name__}: {exc}")
        raise RuntimeError(f"{what}: CuPy could not load the compiled kernel ({'; '.join(refused)})")

    def __call__(self, blocks, threads, args):
        grid = blocks if isinstance(blocks, tuple) else (blocks,)
        block = threads if isinstance(threads, tuple) else (threads,)
        self.function(grid, block, tuple(t(v) for t, v in zip(self.types, parameters(args))))


def through_cupy(cupy, kernel, kinds, what):
    """A CupyLaunch of `kernel` (Numba's, compiled for one signature), loading its PTX, else the
    machine code Numba linked; None, with a warning, where CuPy can load neither (Numba launches it)."""
    (signature, ptx), = kernel.inspect_asm().items()
    library = getattr(kernel.overloads[signature], "_codelibrary", None)  # numba-cuda's, not public
    images = [ptx.encode] + ([library.get_cubin] if hasattr(library, "get_cubin") else [])
    try:
        return CupyLaunch(cupy, ptx, kinds, what, images)
    except RuntimeError as exc:
        warnings.warn(f"minivae.kernels: {exc}. Numba launches it instead, at a higher host cost "
                      "per launch.", RuntimeWarning, stacklevel=3)
        return None
