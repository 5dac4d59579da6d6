"""Every core on a CPU training step: the ops split their work over a small pool of our own threads.

Left to itself, only the matrix products would use more than one core (OpenBLAS runs them on its
own threads); the patch copies, the activations and their gradients would run on one. So each of
those ops cuts its work into `count()` parts (channels of a patch matrix, columns of a product,
stretches of an activation's memory), runs part 0 on the calling thread and the others on the
pool's threads, and waits for all of them. The parts really run at once because NumPy's loops and
matrix products and our Numba kernels (compiled with nogil) let go of Python's GIL while they work.

One pool, not two. After each product OpenBLAS's threads spin-wait on the cores for more work, and
a second pool's threads (Numba's `prange`, for one) wait for them to give a core up: on 2 cores
that made a training step 5x slower. So the products are split too: while `matmul` runs, OpenBLAS
is asked for one thread, and each part is a one-thread product of its own.

The GIL. A thread that asks for the GIL while another holds it sleeps until it is let go, and
waking a sleeping thread took about 40 us on a 2-core virtual machine, more than many a task. So the
hand-overs are arranged for the GIL to be free when asked for. A pool thread reports a task done
from its compiled wait loop, after it has let go of the GIL, not before; and on seeing a new task
it waits a few microseconds more (GIL_GRACE_SECONDS) before taking the GIL, while the posting
thread goes on into its own part's GIL-free work (a matrix product, a Numba kernel). On a 2-core
Xeon VM that took an empty hand-over from 75 to 11 us (median) and a training step 7-10% faster.

The parts depend only on the shapes and on `count()`, so the same seed and the same thread count
give the same bits. Another thread count may change the last bits of a product (its columns are
summed in other blocks).

`count()` is OpenBLAS's thread count when minivae first asks (OMP_NUM_THREADS or
OPENBLAS_NUM_THREADS where set, else one per usable core), at most one per usable core, and 1 (no
pool) where NumPy uses another BLAS or Numba is missing; `set_count(n)` changes it.
"""
import contextvars
import ctypes
import os
import queue
import threading
import time

import numpy as np

from .workspace import workspace

MIN_SPLIT_FLOPS = 1 << 20     # a smaller product runs whole, on one thread: split, it ran slower
MIN_SUM_SPLIT_FLOPS = 1 << 23  # the same where the summed side is the longest (its split adds partial sums;
                              # chollet's dense forward, 12.8 MFLOP, 0.40 -> 0.27 ms in a step split)
MAX_THREADS = 64              # the pool's threads at most (one done-signal slot each)
SPIN_ROUNDS = 20000           # a pool thread's spinning between tasks: 4-15 ms (a round is a sched_yield)
GIL_GRACE_SECONDS = 8e-6      # how long a pool thread waits, on seeing a task, before asking for the GIL
MIN_PIECE = 1 << 16           # elements (256 kB of float32): a smaller op runs whole, as splitting it cost more
COLUMN_MULTIPLE = 16          # parts of a product start at a multiple of 16 columns (whole SIMD blocks)

_pool = {"count": None, "workers": [], "ticket": 0}
_pool_lock = threading.Lock()   # one run at a time on the pool's threads


def count():
    """How many parts the ops split their work into (1: everything runs on the calling thread, as
    it does without Numba, which the pool's threads wait in)."""
    if _pool["count"] is None:
        _pool["count"] = _default_count() if _spin() is not None else 1
    return _pool["count"]


def set_count(n):
    """Split the ops' work into n parts from now on (n = 1 turns the pool off; without Numba the
    parts run one after the other)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"threads.set_count: n must be a whole number from 1 to {MAX_THREADS}, got {n!r}")
    _pool["count"] = n


def bounds(size, parts, multiple=1):
    """[start, stop) of `parts` nearly equal consecutive pieces of range(size), each start a
    multiple of `multiple` (the last piece takes what is left)."""
    cuts = [min(size, (size * k // parts) // multiple * multiple) for k in range(parts)] + [size]
    return list(zip(cuts[:-1], cuts[1:]))


def run(task, parts):
    """task(0), ..., task(parts - 1) at once: task(0) on this thread, the others on the pool's.
    Returns when all have finished; raises the first exception any of them raised."""
    if parts <= 1 or _spin() is None or not _pool_lock.acquire(blocking=False):
        for k in range(parts):  # one part, or another thread is using the pool: all parts here
            task(k)
        return
    try:
        _run_on_pool(task, parts)
    finally:
        _pool_lock.release()


def _run_on_pool(task, parts):
    workers = _workers(parts - 1)
    _pool["ticket"] += 1
    ticket = _pool["ticket"]
    for k, worker in enumerate(workers, start=1):
        # in a copy of this thread's context, so that NumPy's errstate (a context variable) holds there too
        worker.inbox.put((contextvars.copy_context(), task, k, ticket))
    _signals[0] = ticket                            # wakes the workers that are spinning
    error = None
    try:
        task(0)
    except BaseException as e:  # noqa: B902 - waited for the others first, then raised
        error = e
    for worker in workers:
        _spin()["until_equal"](_signals, worker.slot, ticket)
        error, worker.error = error or worker.error, None
    if error is not None:
        raise error


def split_flat(task, *arrays):
    """For elementwise work: task(*pieces) at once on count() consecutive stretches of the arrays'
    memory, each a 1-D view, the k-th piece of every array holding the same elements. Only where
    the arrays are laid out alike (same shape, same order in memory, no gaps; dtypes may differ);
    returns False, having done nothing, where they are not."""
    if all(a.flags.c_contiguous and a.shape == arrays[0].shape for a in arrays):  # the quick, usual case
        flats = [a.reshape(-1) for a in arrays]
    else:
        flats = [in_memory_order(a) for a in arrays]
        if any(f is None for f in flats) or len({_element_strides(a) for a in arrays}) != 1:
            return False
    parts = min(count(), flats[0].size // MIN_PIECE)
    if parts <= 1:
        task(*flats)
        return True
    pieces = bounds(flats[0].size, parts, 64)
    run(lambda k: task(*(f[slice(*pieces[k])] for f in flats)), parts)
    return True


def in_memory_order(a):
    """a's elements as a 1-D view in the order they sit in memory, or None where they have gaps."""
    order = sorted(range(a.ndim), key=lambda axis: -a.strides[axis])
    walked = a.transpose(order)
    return walked.reshape(-1) if walked.flags.c_contiguous else None


def _element_strides(a):
    """a's shape and strides in elements, an axis of length 1 given stride 0: its stride moves
    nothing (NumPy leaves any number there), so arrays that differ only in such strides are laid
    out alike."""
    return a.shape, tuple(s // a.itemsize if n > 1 else 0 for n, s in zip(a.shape, a.strides))


def matmul(a, b, out, row_bias=None, then=None):
    """out = a @ b for 2-D NumPy arrays, split into count() parts along the longest of its three
    sides, each part a one-thread BLAS product: by columns or rows of out, or along the summed side
    (the parts' products then added up, in order); a small product runs whole. With row_bias
    (length a.shape[0]), out = a @ b + row_bias[:, None], each part's bias added by the thread
    that made the part, while it is still in the cache. Where then is given (an activation), it
    is called as then(part, part_bias) instead, and adds the bias in its own pass over the part
    (one pass, not two)."""
    (m, k), n = a.shape, b.shape[1]
    longest = max(m, n, k)
    smallest = MIN_SUM_SPLIT_FLOPS if longest == k else MIN_SPLIT_FLOPS
    parts = count() if 2 * m * n * k >= smallest else 1
    with one_blas_thread():
        if parts == 1:
            _product(a, b, out, row_bias, then)
        # (each part's arrays are sliced out before the parts start: a thread running Python holds
        # the GIL, and the other thread's part would wait for it)
        elif longest == n:
            pieces = [slice(*p) for p in bounds(n, parts, COLUMN_MULTIPLE)]
            work = [(a, b[:, piece], out[:, piece], row_bias) for piece in pieces]
            run(lambda p: _product(*work[p], then), parts)
        elif longest == m:
            pieces = [slice(*p) for p in bounds(m, parts, COLUMN_MULTIPLE)]
            work = [(a[piece], b, out[piece], None if row_bias is None else row_bias[piece]) for piece in pieces]
            run(lambda p: _product(*work[p], then), parts)
        else:  # a long sum (a weight gradient): each part sums a stretch of it
            pieces = [slice(*p) for p in bounds(k, parts, COLUMN_MULTIPLE)]
            sums = [out] + [workspace.empty(out.shape, out.dtype) for _ in range(parts - 1)]
            work = [(a[:, piece], b[piece], partial) for piece, partial in zip(pieces, sums)]
            run(lambda p: np.matmul(work[p][0], work[p][1], out=work[p][2]), parts)
            for partial in sums[1:]:
                out += partial
            _finish(out, row_bias, then)
    return out


def _product(a, b, out, bias, then):
    """out = a @ b, then its bias and activation (_finish)."""
    np.matmul(a, b, out=out)
    _finish(out, bias, then)


def _finish(out, bias, then):
    """out += bias[:, None] (one bias per row, or None), or then(out, bias), which adds it in the
    same pass as its own work."""
    if then is not None:
        then(out, bias)
    elif bias is not None:
        out += bias[:, None]


class one_blas_thread:
    """Within it, OpenBLAS (where NumPy uses it) runs each product on the calling thread only,
    and its own threads stay asleep; on leaving, its thread count is what it was."""

    def __enter__(self):
        self.previous = None
        blas = _blas()
        if blas is not None and count() > 1:
            self.previous = blas.get()
            if self.previous != 1:
                blas.set(1)
        return self

    def __exit__(self, *exc):
        if self.previous not in (None, 1):
            _blas().set(self.previous)


class one_thread:
    """Within it, every op runs whole on the calling thread (count() is 1) and OpenBLAS on that
    thread only: for a process that has one core to itself (parallel.py). On leaving, both
    counts are what they were."""

    def __enter__(self):
        self.previous, self.blas = count(), blas_threads()
        _pool["count"] = 1
        if self.blas not in (None, 1):
            _blas().set(1)
        return self

    def __exit__(self, *exc):
        _pool["count"] = self.previous
        if self.blas not in (None, 1):
            _blas().set(self.blas)


# ---- the pool's threads and the BLAS's thread count ----------------------------------------------

class _Worker:
    """A pool thread. Between tasks it spins for a while (SPIN_ROUNDS) without the GIL, watching
    _signals[0] for the next ticket, as OpenBLAS's threads do: an idle thread put to sleep takes
    0.1-0.3 ms to wake on a virtual machine, longer than many a task. Then it sleeps on its inbox."""

    def __init__(self, slot):
        self.slot, self.inbox, self.error = slot, queue.SimpleQueue(), None
        threading.Thread(target=self.serve, name="minivae-worker", daemon=True).start()

    def serve(self):
        spin, served, grace = _spin(), 0, grace_rounds()
        while True:
            # reports `served` done only once the GIL is let go, so that the waiting thread finds
            # the GIL free (see "The GIL" in the module's docstring)
            spin["done_then_wait"](_signals, self.slot, served, SPIN_ROUNDS, grace)
            context, task, k, served = self.inbox.get()
            try:
                context.run(task, k)
                self.error = None
            except BaseException as e:  # noqa: B902 - handed to the waiting thread, which raises it
                self.error = e
            # let go of the task before saying done: its arrays (views of workspace buffers) would
            # otherwise stay held until the next task, and the workspace could not hand them out again
            context = task = None


def grace_rounds():
    """GIL_GRACE_SECONDS as a number of the wait loop's rounds (each a sched_yield, whose cost
    depends on the machine: about 0.2 us on a 2-core Xeon VM), measured once: the best of three
    timings of 2,000 rounds."""
    if "grace" not in _pool:
        idle = np.zeros(2, np.int64)          # a ticket that never changes: the loop runs every round
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            _spin()["done_then_wait"](idle, 1, 0, 2000, 0)
            seconds.append((time.perf_counter() - start) / 2000)
        _pool["grace"] = max(1, min(1000, round(GIL_GRACE_SECONDS / max(min(seconds), 1e-9))))
    return _pool["grace"]


def _workers(n):
    workers = _pool["workers"]
    while len(workers) < n:
        workers.append(_Worker(slot=len(workers) + 1))
    return workers[:n]


_signals = np.zeros(MAX_THREADS + 1, np.int64)   # [0]: the latest ticket posted; [w]: worker w's last done


def _spin():
    """The waiting loops and counters below, compiled by Numba to run without the GIL (and cached on disk);
    None where Numba is missing."""
    if "spin" not in _pool:
        try:
            import numba
            from numba.core import cgutils
        except ImportError:
            _pool["spin"] = None
            return None
        global sched_yield, load_acquire, store_release

        # the C library's sched_yield, called by name (so the compiled loops can be cached on disk)
        sched_yield = numba.types.ExternalFunction("sched_yield", numba.types.int32())

        @numba.extending.intrinsic
        def load_acquire(typingctx, array, index):
            """array[index] read with an atomic (acquire) load: the compiler must read memory each
            time, where it would otherwise read a[i] once, before the loop, since nothing in the
            loop writes it (another thread does)."""
            def codegen(context, builder, signature, args):
                array_type = signature.args[0]
                data = context.make_array(array_type)(context, builder, args[0])
                pointer = cgutils.get_item_pointer(context, builder, array_type, data, [args[1]])
                return builder.load_atomic(pointer, "acquire", array_type.dtype.bitwidth // 8)
            return array.dtype(array, index), codegen

        @numba.extending.intrinsic
        def store_release(typingctx, array, index, value):
            """array[index] = value with an atomic (release) store: written to memory at once, and
            only after everything written before it (the task's results)."""
            def codegen(context, builder, signature, args):
                array_type = signature.args[0]
                data = context.make_array(array_type)(context, builder, args[0])
                pointer = cgutils.get_item_pointer(context, builder, array_type, data, [args[1]])
                value = context.cast(builder, args[2], signature.args[2], array_type.dtype)
                builder.store_atomic(value, pointer, "release", array_type.dtype.bitwidth // 8)
                return context.get_dummy_value()
            return numba.types.none(array, index, value), codegen

        _pool["spin"] = {loop.__name__: numba.njit(cache=True, nogil=True)(loop)
                         for loop in (done_then_wait, until_equal, publish, at_least)}
    return _pool["spin"]


def done_then_wait(a, slot, done, rounds, grace):
    """A pool thread's report and wait, in one call without the GIL: a[slot] = done (the task of
    ticket `done` is finished); then wait, yielding the core between looks, for a[0] to change (a
    new ticket), and once it has, `grace` more rounds, in which the posting thread gets from Python
    into its own part's GIL-free work. Returns True once a[0] has changed, or False after `rounds`
    rounds without a change."""
    store_release(a, slot, done)
    for _ in range(rounds):
        if load_acquire(a, 0) != done:
            for _ in range(grace):
                sched_yield()
            return True
        sched_yield()
    return load_acquire(a, 0) != done


def until_equal(a, i, value):
    """Return once a[i] == value, yielding the core between looks."""
    while load_acquire(a, i) != value:
        sched_yield()


def publish(a, i, value):
    """a[i] = value, seen by other threads (and processes sharing a's memory) only after
    everything written before it: for parallel.py's counters."""
    store_release(a, i, value)


def at_least(a, start, stop, value, rounds):
    """Wait, yielding the core between looks, until a[i] >= value for every start <= i < stop:
    True once they are, False after `rounds` rounds without."""
    for _ in range(rounds):
        i = start
        while i < stop and load_acquire(a, i) >= value:
            i += 1
        if i == stop:
            return True
        sched_yield()
    return False


def _forget_workers():
    """In a forked child the pool's threads do not exist: start new ones when needed."""
    _pool["workers"] = []


os.register_at_fork(after_in_child=_forget_workers)


class _OpenBLAS:
    """OpenBLAS's get/set thread-count functions, in whichever OpenBLAS library NumPy loaded."""
    NAMES = ("scipy_openblas{}_num_threads64_", "scipy_openblas{}_num_threads",
             "openblas{}_num_threads64_", "openblas{}_num_threads")

    def __init__(self, library):
        for name in self.NAMES:
            if hasattr(library, name.format("_get")):
                self.get = getattr(library, name.format("_get"))
                self._set = getattr(library, name.format("_set"))
                self._set.argtypes = [ctypes.c_int]
                return
        raise LookupError("no OpenBLAS thread-count functions")

    def set(self, n):
        self._set(int(n))


def _blas():
    """The _OpenBLAS of NumPy's BLAS, or None where NumPy uses another BLAS (looked up once)."""
    if "blas" not in _pool:
        _pool["blas"] = None
        try:
            with open("/proc/self/maps") as maps:
                paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line}
        except OSError:
            paths = set()
        for path in sorted(paths):
            try:
                _pool["blas"] = _OpenBLAS(ctypes.CDLL(path))
                break
            except (OSError, LookupError):
                continue
    return _pool["blas"]


def blas_threads():
    """OpenBLAS's own thread count (None where NumPy uses another BLAS)."""
    blas = _blas()
    return None if blas is None else int(blas.get())


def usable_cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _default_count():
    """OpenBLAS's thread count, at most one per usable core; 1 where NumPy's BLAS is not an
    OpenBLAS whose threads we can ask to step aside (its threads and ours would fight)."""
    return max(1, min(blas_threads() or 1, usable_cores(), MAX_THREADS))
