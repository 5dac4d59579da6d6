"""CuPy launches the code Numba compiled (kernels/launch.py): the parameters it passes.

Numba passes an array argument to a kernel as meminfo, parent, size, itemsize, data pointer,
shape and strides, and a number as one parameter; CuPy must pass exactly those, with the widths
the PTX declares. Without a GPU these tests check that layout on a stand-in for CuPy and on the
entry of a PTX that Numba (numba-cuda 0.30.4) compiled for kernels/philox.py's `advance`; on a
GPU, the last test runs every kind of kernel both ways and asks for the same bits.
"""
import os
import warnings

import numpy as np
import pytest

from minivae import backend
from minivae.kernels import launch

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

# The head of the PTX numba-cuda 0.30.4 compiled for philox.advance(uint64[::1]) (sm_90), names shortened.
ADVANCE_PTX = """
.version 9.5
.target sm_90
.address_size 64
.common .global .align 8 .u64 _ZN08NumbaEnv7advance;

.visible .entry _ZN7advance(
	.param .u64 _ZN7advance_param_0,
	.param .u64 _ZN7advance_param_1,
	.param .u64 _ZN7advance_param_2,
	.param .u64 _ZN7advance_param_3,
	.param .u64 _ZN7advance_param_4,
	.param .u64 _ZN7advance_param_5,
	.param .u64 _ZN7advance_param_6
)
{
	ld.param.u64 	%rd1, [_ZN7advance_param_4];
	ret;
}
"""


class DeviceArray:
    """What kernels/launch.py reads of a CuPy array: size, itemsize, data.ptr, shape, strides."""

    def __init__(self, shape, dtype, ptr, strides=None):
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)
        self.size, self.itemsize = int(np.prod(shape)), self.dtype.itemsize
        self.strides = strides or tuple(int(s) for s in np.empty(shape, dtype).strides)
        self.data = type("Memory", (), {"ptr": ptr})()
        self.flags = type("Flags", (), {"c_contiguous": self.strides == np.empty(shape, dtype).strides})()


class FakeCupy:
    """cupy.cuda.function.Module, recording what is loaded and launched; it refuses the images
    in `refuses`, as CuPy raises CUDADriverError for a PTX newer than the driver."""

    def __init__(self, refuses=()):
        self.loaded, self.launched = [], []
        fake = self

        class Module:
            def load(self, image):
                if image in refuses:
                    raise RuntimeError("CUDA_ERROR_UNSUPPORTED_PTX_VERSION: the provided PTX was "
                                       "compiled with an unsupported toolchain.")
                fake.loaded.append(image)

            def get_function(self, name):
                return lambda grid, block, args: fake.launched.append((name, grid, block, args))

        self.cuda = type("cuda", (), {"function": type("function", (), {"Module": Module}),
                                      "runtime": type("runtime", (), {"getDevice": staticmethod(lambda: 0)})})


def test_the_entry_and_its_parameter_types_are_read_from_the_ptx():
    assert launch.entry_parameters(ADVANCE_PTX) == ("_ZN7advance", ["u64"] * 7)
    with pytest.raises(ValueError, match="one .entry"):
        launch.entry_parameters(ADVANCE_PTX + ADVANCE_PTX.split(".address_size 64")[1])


def test_an_array_is_passed_as_numba_lays_it_out():
    x = DeviceArray((2, 3), np.float32, ptr=4096)
    view = DeviceArray((3, 2), np.float32, ptr=4100, strides=(4, -12))  # a transposed, flipped view
    assert launch.parameters([x, 0.5, 7, True, view]) == [
        0, 0, 6, 4, 4096, 2, 3, 12, 4,          # meminfo, parent, size, itemsize, data, shape, strides
        0.5, 7, True,
        0, 0, 6, 4, 4100, 3, 2, 4, -12]
    assert launch.parameter_count([(np.float32, 2, True), float, int, bool, (np.float32, 2, False)]) == 21


def test_a_launch_passes_each_parameter_with_the_ptx_width():
    cupy = FakeCupy()
    counter = DeviceArray((1,), np.uint64, ptr=2 ** 40)
    advance = launch.CupyLaunch(cupy, ADVANCE_PTX, [(np.uint64, 1, True)], "philox.advance")
    advance(1, 1, [counter])
    assert cupy.loaded == [ADVANCE_PTX.encode()]
    (name, grid, block, args), = cupy.launched
    assert (name, grid, block) == ("_ZN7advance", (1,), (1,))
    assert args == (0, 0, 1, 8, 2 ** 40, 1, 8)
    assert all(type(a) is np.int64 for a in args)


def test_numbers_take_the_ptx_types_and_grids_stay_tuples():
    ptx = ADVANCE_PTX.replace(".param .u64 _ZN7advance_param_5,", ".param .f64 _ZN7advance_param_5,")
    ptx = ptx.replace(".param .u64 _ZN7advance_param_6", ".param .u8 _ZN7advance_param_6")
    cupy = FakeCupy()
    launched = launch.CupyLaunch(cupy, ptx, [(np.float32, 0, True), float, bool], "test.kernel")
    launched((3, 2), (32, 8), [DeviceArray((), np.float32, ptr=64), 0.25, True])
    (_, grid, block, args), = cupy.launched
    assert (grid, block) == ((3, 2), (32, 8))
    assert [type(a) for a in args[5:]] == [np.float64, np.uint8] and args[5:] == (0.25, 1)


def test_a_layout_that_does_not_match_the_compiled_kernel_is_refused():
    with pytest.raises(RuntimeError, match=r"philox.advance: the compiled kernel takes 7 parameters, "
                                           r"but Numba's layout of its arguments gives 9"):
        launch.CupyLaunch(FakeCupy(), ADVANCE_PTX, [(np.uint64, 2, True)], "philox.advance")
    with pytest.raises(RuntimeError, match=r"types \['v2'\] are not handled"):
        launch.CupyLaunch(FakeCupy(), ADVANCE_PTX.replace(".param .u64 _ZN7advance_param_6",
                                                          ".param .v2 _ZN7advance_param_6"),
                          [(np.uint64, 1, True)], "philox.advance")


class Compiled:
    """What numba.cuda.jit(signature)(kernel) gives: its PTX and linked code (one signature), and
    Numba's launcher, which records its launches in `by_numba`."""

    def __init__(self, by_numba):
        self.by_numba, self.inspected = by_numba, 0
        library = type("Library", (), {"get_cubin": staticmethod(lambda: b"CUBIN")})()
        self.overloads = {("uint64[::1]",): type("Overload", (), {"_codelibrary": library})()}

    def inspect_asm(self):
        self.inspected += 1
        return {("uint64[::1]",): ADVANCE_PTX}

    def __getitem__(self, grid):
        return lambda *args: self.by_numba.append((grid, args))


@pytest.fixture
def stand_ins(monkeypatch):
    """kernels with a stand-in compiler (Compiled) and arrays (DeviceArray) taken for CuPy's."""
    pytest.importorskip("numba")
    from minivae import kernels
    by_numba = []
    for cache in ("_compiled", "_configured", "_through_cupy"):
        monkeypatch.setattr(kernels, cache, {})
    monkeypatch.setattr(kernels, "_compile", lambda module, name, signature: Compiled(by_numba))
    monkeypatch.setattr(backend, "is_cupy_array", lambda a: isinstance(a, DeviceArray))
    return kernels, by_numba


def test_kernels_of_cupy_arrays_are_launched_by_cupy_and_others_by_numba(stand_ins, monkeypatch):
    """kernels._launch: CuPy arrays go to CuPy, loaded once per kernel and argument types; with
    LAUNCH_THROUGH_CUPY off, to Numba's launcher of the compiled kernel."""
    kernels, by_numba = stand_ins
    cupy = FakeCupy()
    monkeypatch.setattr(backend, "require_cuda", lambda: cupy)
    counter = DeviceArray((1,), np.uint64, ptr=8192)
    kernels.advance(counter)
    kernels.advance(counter)
    assert [args for *_, args in cupy.launched] == [(0, 0, 1, 8, 8192, 1, 8)] * 2
    assert cupy.loaded == [ADVANCE_PTX.encode()] and by_numba == []
    monkeypatch.setattr(kernels, "LAUNCH_THROUGH_CUPY", False)
    kernels.advance(counter)
    assert by_numba == [((1, 1), (counter,))] and len(cupy.launched) == 2


def test_a_ptx_the_driver_refuses_is_replaced_by_the_code_numba_linked(stand_ins, monkeypatch):
    kernels, by_numba = stand_ins
    cupy = FakeCupy(refuses={ADVANCE_PTX.encode()})
    monkeypatch.setattr(backend, "require_cuda", lambda: cupy)
    kernels.advance(DeviceArray((1,), np.uint64, ptr=8192))
    assert cupy.loaded == [b"CUBIN"] and len(cupy.launched) == 1 and by_numba == []


def test_a_kernel_cupy_cannot_load_is_launched_by_numba_with_one_warning(stand_ins, monkeypatch):
    kernels, by_numba = stand_ins
    cupy = FakeCupy(refuses={ADVANCE_PTX.encode(), b"CUBIN"})
    monkeypatch.setattr(backend, "require_cuda", lambda: cupy)
    counter = DeviceArray((1,), np.uint64, ptr=8192)
    with pytest.warns(RuntimeWarning, match=r"philox.advance: CuPy could not load the compiled "
                                            r"kernel \(RuntimeError: CUDA_ERROR_UNSUPPORTED_PTX.*"
                                            r"Numba launches it instead"):
        kernels.advance(counter)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # remembered: no second try, no second warning
        kernels.advance(counter)
    assert by_numba == [((1, 1), (counter,))] * 2 and cupy.launched == []


@pytest.mark.skipif(SIMULATED or not backend.cuda_available(), reason="needs CuPy and a GPU")
@pytest.mark.parametrize("case", ["leaky_relu", "rmsprop", "adam_device_step", "philox", "bias_grad",
                                  "im2col", "col2im", "gemm"])
def test_cupy_and_numba_launch_the_same_kernel_to_the_same_bits(case, monkeypatch):
    """Each kind of argument (1-D to 4-D arrays, C-contiguous or not, float, int and bool numbers,
    (1,) device scalars, 1-D and 2-D grids), launched by CuPy and by Numba."""
    from minivae import kernels
    cupy = backend.require_cuda()
    r = np.random.default_rng(0)

    def run():
        a = cupy.asarray(r.standard_normal((4, 3, 9, 7)).astype(np.float32))
        p, g, s = (cupy.asarray(r.standard_normal(1000).astype(np.float32)) for _ in range(3))
        if case == "leaky_relu":
            return [kernels.leaky_relu_forward(a[:, :, ::2], 0.2)]
        if case == "rmsprop":
            kernels.rmsprop_update(p, g, s * s, 1e-3, 0.9, 1e-7, True)
            return [p]
        if case == "adam_device_step":
            m, v = cupy.zeros_like(p), cupy.zeros_like(p)
            step, lr = cupy.ones(1, cupy.uint64), cupy.full(1, 5e-4)
            kernels.adam_update_device_step(p, g, m, v, step, lr, 0.9, 0.999, 1e-7)
            return [p, m, v]
        if case == "philox":
            out, counter = cupy.empty(1001, cupy.float32), cupy.full(1, 3, cupy.uint64)
            kernels.philox_normal(out, counter, kernels.philox_key(5))
            kernels.advance(counter)
            return [out, counter]
        if case == "bias_grad":
            return [kernels.bias_grad(a), kernels.bias_grad(a.reshape(12, 63))]
        if case == "im2col":
            return [kernels.im2col(a, (3, 3), 2, (1, 1, 1, 1))]
        if case == "col2im":
            cols = cupy.asarray(r.standard_normal((27, 5 * 4 * 4)).astype(np.float32))
            return [kernels.col2im(cols, (4, 3, 9, 7), (3, 3), 2, (1, 1, 1, 1))]
        return [kernels.gemm(a.reshape(36, 21), a.reshape(21, 36))]

    results = {}
    for through_cupy in (True, False):
        monkeypatch.setattr(kernels, "LAUNCH_THROUGH_CUPY", through_cupy)
        monkeypatch.setattr(kernels, "_through_cupy", {})
        r = np.random.default_rng(0)
        results[through_cupy] = [cupy.asnumpy(x) for x in run()]
        if through_cupy:  # CuPy loaded every kernel it was given (None: it fell back to Numba)
            assert kernels._through_cupy and None not in kernels._through_cupy.values()
    for by_cupy, by_numba in zip(results[True], results[False]):
        np.testing.assert_array_equal(by_cupy, by_numba)
