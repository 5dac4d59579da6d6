import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so test files can `from helpers import Case`

from minivae import backend, rng  # noqa: E402

# The CUDA kernels' tests (test_kernels.py, test_kernel_dispatch.py) run in Numba's CUDA simulator
# when there is no GPU. Numba reads NUMBA_ENABLE_CUDASIM once, when it is first imported, so it is
# set here, before any test module can import numba.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not backend.cuda_available():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


@pytest.fixture
def keep_global_rng_state():
    """For tests that reseed minivae's generators: puts them back as they were for the tests after."""
    state = rng.get_state()
    yield
    rng.set_state(state)
