"""Many small matrix products at once (minivae/functional/small_products.py, Winograd's products on
the CPU) compute what NumPy's matmul computes, which stays the reference: for every way the columns
split into blocks (whole blocks, and the last 1-5 vectors), for A read along its rows or its
columns, for planes and rows with gaps between them as Winograd's arrays have; they write nothing
outside C; the bits do not depend on the thread count; and Winograd's layers take them where they
should, with the numbers of the path they replace."""
import numpy as np
import pytest
from helpers import address, assert_close_to_reference, assert_same_bits, on_one_thread_and_on, path_switched, randn

from minivae import functional as F
from minivae import threads
from minivae.functional import small_products, winograd
from minivae.tensor import Tensor
from minivae.workspace import workspace

pytest.importorskip("numba")


@pytest.fixture(autouse=True)
def compiled():
    assert small_products._compile()
    return small_products._compiled["lanes"]


def planes(shape, seed, gap=0):
    """A float32 array of `shape` (P, rows, columns) whose rows lie `gap` floats apart beyond their
    length and whose planes one row more apart: the layout of Winograd's _matrices. Returns (the
    array, the whole buffer it is a view of)."""
    p, rows, columns = shape
    buffer = randn(p, (rows + 1) * (columns + gap), seed=seed).astype(np.float32)
    view = buffer[:, :rows * (columns + gap)].reshape(p, rows, columns + gap)[:, :, :columns]
    return view, buffer


def product(a, b, out):
    assert small_products.suits(a, b, out)
    return small_products.products(a, b, out)


@pytest.mark.parametrize("vectors", [1, 2, 3, 4, 5, 6, 7, 13, 49])
@pytest.mark.parametrize("m, k", [(4, 1), (8, 5), (64, 64), (12, 256)])
def test_the_products_are_those_of_matmul(m, k, vectors, compiled):
    n = vectors * compiled
    a = randn(3, m, k, seed=1).astype(np.float32)
    b, _ = planes((3, k, n), seed=2, gap=compiled)
    out, _ = planes((3, m, n), seed=3, gap=compiled)
    assert_close_to_reference(["C"], [product(a, b, out)], [np.matmul(a, b)], np.float32)


def test_a_read_along_its_columns_and_c_written_only_where_it_lies(compiled):
    """A as the transposed view of an array (Winograd's Uᵀ in its backward pass), and around C
    every number left as it was."""
    a = randn(2, 32, 16, seed=1).astype(np.float32).transpose(0, 2, 1)    # (2, 16, 32), along its columns
    assert not a.flags.c_contiguous
    b, _ = planes((2, 32, 5 * compiled), seed=2, gap=3 * compiled)
    out, buffer = planes((2, 16, 5 * compiled), seed=3, gap=3 * compiled)
    before = buffer.copy()
    product(a, b, out)
    assert_close_to_reference(["C"], [out], [np.matmul(a, b)], np.float32)
    outside = np.ones(buffer.shape, bool)
    outside[:, :out.shape[1] * out.strides[1] // 4].reshape(out.shape[0], out.shape[1], -1)[:, :, :out.shape[2]] = False
    assert np.array_equal(buffer[outside], before[outside])


@pytest.mark.parametrize("count", [2, 3])
def test_the_bits_do_not_depend_on_the_thread_count(count, monkeypatch, compiled):
    a = randn(5, 8, 24, seed=1).astype(np.float32)
    b, _ = planes((5, 24, 7 * compiled), seed=2)
    out = np.empty((5, 8, 7 * compiled), np.float32)
    split = lambda: monkeypatch.setattr(threads, "MIN_SPLIT_FLOPS", 1)   # noqa: E731 - these small planes too
    assert_same_bits(*on_one_thread_and_on(count, lambda: product(a, b, out).copy(), split))


@pytest.mark.parametrize("vectors", [6, 7, 13, 49])
def test_stored_past_the_cache_the_numbers_are_the_same(vectors, monkeypatch, compiled):
    """The wide blocks' non-temporal stores (taken here however small C is): the same bits as the
    ordinary stores, on one thread and on two, and nothing written outside C."""
    monkeypatch.setattr(small_products, "STREAM_FROM", 0)
    monkeypatch.setattr(threads, "MIN_SPLIT_FLOPS", 1)
    a = randn(3, 8, 64, seed=1).astype(np.float32)
    b, _ = planes((3, 64, vectors * compiled), seed=2, gap=compiled)
    out = workspace.empty((3, 9, (vectors + 1) * compiled), np.float32)   # rows and planes apart by whole vectors
    out.fill(7)
    c = out[:, :8, :vectors * compiled]
    assert small_products.streams(c, 1)
    streamed = on_one_thread_and_on(2, lambda: product(a, b, c).copy())
    assert np.all(out[:, 8] == 7) and np.all(out[:, :, vectors * compiled:] == 7)
    with path_switched(small_products.settings, False, key="stream"):
        assert not small_products.streams(c, 1)
        stored = product(a, b, c).copy()
    assert_same_bits(streamed, [stored, stored])


def test_it_stores_past_the_cache_only_where_c_is_large_and_its_vectors_start_on_their_boundaries(compiled):
    out = workspace.empty((16, 64, 1568), np.float32)      # Chollet's 14×14 layers at batch 32: 6.4 MB
    assert address(out) % 64 == 0
    assert not small_products.streams(out, 1)
    large = workspace.empty((16, 64, 6272), np.float32)    # at batch 128: 25.7 MB, 12.8 a thread on two
    assert small_products.streams(large, 1) and small_products.streams(large, 2)
    assert not small_products.streams(large, 4)
    assert not small_products.streams(large[:, :, 1:6257], 1)                # a vector off its boundary
    rows_apart = workspace.empty((16, 64, 6272 + 4), np.float32)[:, :, :6272]
    assert not small_products.streams(rows_apart, 1)                        # rows 4 floats past whole vectors
    with path_switched(small_products.settings, False, key="stream"):
        assert not small_products.streams(large, 1)


def test_which_products_it_takes(compiled):
    def arrays(m=8, k=16, n=compiled, dtype=np.float32):
        return np.ones((2, m, k), dtype), np.ones((2, k, n), dtype), np.empty((2, m, n), dtype)
    assert small_products.suits(*arrays())
    assert not small_products.suits(*arrays(m=6))                            # rows not a multiple of ROWS
    assert not small_products.suits(*arrays(n=compiled + 4))                 # columns not whole vectors
    assert not small_products.suits(*arrays(k=small_products.MAX_K + 1))     # K too long for the cache
    assert not small_products.suits(*arrays(dtype=np.float64))
    a, b, out = arrays()
    assert not small_products.suits(a, np.ones((2, 2 * compiled, 16), np.float32).transpose(0, 2, 1), out)
    with path_switched(small_products.settings, False):
        assert not small_products.suits(*arrays())


def test_winograd_takes_them_with_the_numbers_of_openblas(monkeypatch, compiled):
    """A conv2d of 8 channels in and out at a batch of whole vectors: its forward pass's products
    U @ V and its backward pass's Uᵀ @ dM both taken here, the results those of OpenBLAS's products
    to rounding."""
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 8)
    monkeypatch.setattr(winograd, "MIN_COLUMNS", {2: 1, 4: 1})
    monkeypatch.setattr(winograd, "MIN_COLUMNS_BESIDE_DIRECT", {2: 1, 4: 1})
    x = randn(compiled, 8, 6, 6, seed=1).astype(np.float32)
    w, b = randn(8, 8, 3, 3, seed=2).astype(np.float32), randn(8, seed=3).astype(np.float32)
    g = randn(compiled, 8, 6, 6, seed=4).astype(np.float32)
    calls = []
    monkeypatch.setattr(small_products, "products", lambda *a, _f=small_products.products: calls.append(1) or _f(*a))

    def run(on):
        tensors = [Tensor(t, requires_grad=True) for t in (x, w, b)]
        with path_switched(small_products.settings, on):
            y = F.conv2d(*tensors, padding=1)
            y.backward(g)
        return [y.data] + [t.grad for t in tensors]
    assert winograd.suits(x, w, (1, 1), (1, 1, 1, 1))
    fast = run(True)
    assert len(calls) == 2, "U @ V and Uᵀ @ dM"
    assert_close_to_reference(["y", "dL/dx", "dL/dw", "dL/db"], fast, run(False), np.float32)
