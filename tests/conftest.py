import os
import sys
import threading
import traceback
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so test files can `from helpers import Case`

from minivae import backend, rng  # noqa: E402

# The CUDA kernels' tests (test_kernels.py, test_kernel_dispatch.py) run in Numba's CUDA simulator
# when there is no GPU. Numba reads NUMBA_ENABLE_CUDASIM once, when it is first imported, so it is
# set here, before any test module can import numba.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not backend.cuda_available():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


def _simulator_shared_arrays_made_once_per_block():
    """The simulator runs a block's CUDA threads as Python threads, and each thread's
    `cuda.shared.array(...)` looks the block's array up by the calling line and makes it if it is
    not there yet: look-up then make, with no lock. Two threads that both look before either has
    made it get two arrays, and a reduction's partners then add from different ones (seen: a
    bias_grad test failing once in about eight runs, with one channel's sum wrong). The same
    look-up, under a lock. (A GPU's shared memory has no such race.)"""
    try:
        import numpy as np
        from numba import types
        from numba.cuda.simulator import kernelapi
        from numba.np import numpy_support
    except ImportError:
        return
    lock, original = threading.Lock(), kernelapi.FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory, or refused: no look-up
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]   # the kernel's line, as the original
        with lock:
            if caller not in self._allocations:
                self._allocations[caller] = np.empty(shape, dtype)
            return self._allocations[caller]
    kernelapi.FakeCUDAShared.array = array


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    _simulator_shared_arrays_made_once_per_block()


@pytest.fixture
def keep_global_rng_state():
    """For tests that reseed minivae's generators: puts them back as they were for the tests after."""
    state = rng.get_state()
    yield
    rng.set_state(state)
