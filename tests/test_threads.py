"""The pool of minivae/threads.py: every part runs, exactly once, and at once; errors and NumPy's
errstate reach across; a split product equals the product of its parts, and the same thread count
gives the same bits."""
import os
import threading
import warnings

import numpy as np
import pytest

from minivae import threads
from minivae.functional.activations import Fused


@pytest.fixture
def parts(monkeypatch):
    """Three threads for the test, whatever this machine has, splitting work from 1,024 elements up
    (small test arrays); the settings are put back afterwards."""
    previous = threads.count()
    threads.set_count(3)
    monkeypatch.setattr(threads, "MIN_PIECE", 1024)
    yield 3
    threads.set_count(previous)


def test_bounds_cover_the_range_in_order_at_multiples():
    assert threads.bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert threads.bounds(100, 2, multiple=16) == [(0, 48), (48, 100)]
    assert threads.bounds(2, 3) == [(0, 0), (0, 1), (1, 2)]  # more parts than items: some empty


def test_every_part_runs_once_and_the_parts_run_at_once(parts):
    ran, names = [], set()
    all_started = threading.Barrier(parts, timeout=10)  # passes only if all parts wait at once

    def task(k):
        all_started.wait()
        ran.append(k)
        names.add(threading.get_ident())
    threads.run(task, parts)
    assert sorted(ran) == [0, 1, 2] and len(names) == 3


def test_a_pool_thread_reports_done_then_waits_for_the_next_ticket():
    loops = threads._spin()
    if loops is None:
        pytest.skip("no Numba: no pool")
    signals = np.array([7, 0, 0], np.int64)   # [0]: the latest ticket; [1], [2]: two threads' reports
    assert loops["done_then_wait"](signals, 2, 7, 50, 0) is False   # no new ticket in 50 rounds
    assert list(signals) == [7, 0, 7]                                # but the report is written
    signals[0] = 8                                                   # a new ticket: it returns at once
    assert loops["done_then_wait"](signals, 1, 7, 10**9, 3) is True
    assert list(signals) == [8, 7, 7]
    rounds = threads.grace_rounds()                                  # GIL_GRACE_SECONDS in rounds here
    assert isinstance(rounds, int) and 1 <= rounds <= 1000


def test_an_error_in_a_worker_reaches_the_caller_after_all_parts_ended(parts):
    ended = []

    def task(k):
        if k == 2:
            raise ValueError("part 2 failed")
        ended.append(k)
    with pytest.raises(ValueError, match="part 2 failed"):
        threads.run(task, parts)
    assert sorted(ended) == [0, 1]
    threads.run(lambda k: ended.append(k), parts)  # the pool still works
    assert len(ended) == 5


def test_numpy_errstate_holds_in_the_workers(parts):
    x = np.zeros(3, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(divide="ignore", invalid="ignore"):
            threads.run(lambda k: x / x, parts)  # 0/0 warns nowhere


@pytest.mark.parametrize("shape", [(64, 576, 3136), (3136, 64, 96), (32, 12544, 64)],
                         ids=["long columns", "long rows", "long sum"])
def test_a_split_product_is_the_product_and_has_the_same_bits_each_time(shape, parts):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    first = threads.matmul(a, b, np.empty((m, n), np.float32))
    np.testing.assert_allclose(first, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3 * np.sqrt(k))
    again = threads.matmul(a, b, np.empty((m, n), np.float32))
    assert np.array_equal(first, again)


@pytest.mark.parametrize("activation", [None, Fused(0.3)], ids=["bias alone", "bias in leaky_relu's pass"])
@pytest.mark.parametrize("shape", [(64, 576, 3136), (3136, 64, 96), (32, 12544, 64), (3, 4, 5)],
                         ids=["long columns", "long rows", "long sum", "whole"])
def test_a_row_bias_is_added_once_to_every_part(shape, activation, parts):
    """Each part gets its own rows' bias: added by the thread that made the part, or handed with
    the part to the activation (then(part, part_bias)), which adds it in its own pass."""
    m, k, n = shape
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    bias = rng.standard_normal(m, dtype=np.float32)
    expected = threads.matmul(a, b, np.empty((m, n), np.float32)) + bias[:, None]  # the same sums, in order
    if activation is not None:
        activation.apply(expected)
    with_bias = threads.matmul(a, b, np.empty((m, n), np.float32), row_bias=bias,
                               then=None if activation is None else activation.apply)
    assert np.array_equal(with_bias, expected)


def test_split_flat_refuses_arrays_laid_out_differently(parts):
    a = np.zeros((64, 1024), np.float32)
    assert not threads.split_flat(lambda *p: None, a, a.T.copy().T)   # same shape, other order
    assert not threads.split_flat(lambda *p: None, a[:, ::2])          # gaps
    seen = []
    assert threads.split_flat(lambda x, y: seen.append((x.size, y.dtype)), a, np.zeros(a.shape, bool))
    assert sum(n for n, _ in seen) == a.size and len(seen) == 3


def test_split_flat_takes_arrays_that_differ_only_in_the_strides_of_axes_of_length_1():
    """An axis of length 1 moves nothing, whatever stride NumPy gave it."""
    a = np.arange(6, dtype=np.float32).reshape(3, 2).T.reshape(2, 3, 1)          # (2, 3, 1), batch-first view
    b = np.lib.stride_tricks.as_strided(np.zeros(6, np.float32), (2, 3, 1), (4, 8, 400))
    seen = []
    assert threads.split_flat(lambda x, y: seen.append((x.copy(), y.size)), a, b)
    assert np.array_equal(seen[0][0], [0, 1, 2, 3, 4, 5]) and seen[0][1] == 6


def test_the_blas_thread_count_is_put_back(parts):
    before = threads.blas_threads()
    with threads.one_blas_thread():
        assert threads.blas_threads() in (None, 1)
    assert threads.blas_threads() == before


def test_set_count_refuses_nonsense():
    for bad in (0, -1, 1.5, True, threads.MAX_THREADS + 1):
        with pytest.raises(ValueError, match="threads.set_count"):
            threads.set_count(bad)


def test_a_forked_child_starts_its_own_workers(parts):
    threads.run(lambda k: None, parts)              # the parent's workers exist now
    pid = os.fork()
    if pid == 0:                                    # the child: the parent's threads are gone
        done = []
        threads.run(done.append, parts)
        os._exit(0 if sorted(done) == [0, 1, 2] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
