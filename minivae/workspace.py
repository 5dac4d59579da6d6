"""Arrays reused from one training step to the next, so that a step allocates (almost) nothing.

A training step makes the same arrays every time: patch matrices, matrix products, activations,
gradients, all of the same shapes. Allocated afresh, the large ones are handed back to the
operating system when freed and mapped again at the next step, and every page of them is then
touched for the first time again (a "minor page fault", zeroed by the kernel): on a 2-core machine
that cost as much time as the arithmetic. The workspace keeps them instead.

`empty(shape, dtype, xp)` hands back an array that nobody else holds: a view of a buffer it made
before, of that many bytes, if one is free, else of a new one that it keeps. "Free" is read off
the buffer's reference count: only the workspace holds the buffer, so neither a Tensor, nor a backward closure,
nor a view (a view holds its base) can still need its numbers. That is what makes reuse safe however
the graph is built and whenever it is released; an array still in use is never handed out twice.

Each array starts on a 64-byte boundary, a cache line (`_aligned`). The contents of a handed-out
array are garbage: every caller writes all of it (`out=`, `[...] =`) or asks for `zeros`. Which
free array a call gets changes nothing in the results, so the same seed still gives the same
numbers bit for bit. The same code serves CuPy arrays (where fixed buffers are
what a CUDA graph needs). Under `no_grad()` (evaluation, sampling) ops allocate as usual, so an
evaluation at another batch size keeps no second set; and free buffers of sizes not asked for
lately are dropped once the kept ones pass `limit_bytes`.
"""
import collections
import math
import sys

import numpy as np

from . import backend


def _references_when_free():
    """sys.getrefcount of an array that only a workspace list holds, as seen from the loops in
    Workspace (calibrated rather than assumed: the count depends on the Python version)."""
    for array in [np.empty(0)]:  # the same pattern as the loops below: a list and a loop name
        return _count(array)


def _count(array):
    return sys.getrefcount(array)


def _references_when_sole():
    """sys.getrefcount(a) within Workspace.owned for an array a that only its caller's one name
    holds (calibrated, as _FREE is)."""
    def owned(a):   # as Workspace.owned receives it: an argument, counted in the call's own frame
        return sys.getrefcount(a)
    array = np.empty(0)
    return owned(array)


class Workspace:
    """Byte buffers kept by (array module, size in bytes), each handed out again, viewed with the
    shape and dtype asked for, once nobody else holds it. Keyed by size rather than by shape, one
    buffer serves every array of its size: a (C, H, W, N) activation, the (C, H·W·N) matrix the next
    product reads, their gradients (a third fewer buffers in a Chollet step).
    (One GPU per process is assumed: CuPy arrays on two devices would share a key.)"""

    def __init__(self, limit_bytes=1 << 30):
        self.limit_bytes = limit_bytes
        self.kept = collections.OrderedDict()  # key -> list of arrays, the least recently used first
        self.kept_bytes = 0
        self.enabled = True
        self.offsets = {}  # id of a kept NumPy buffer -> where in it its first cache line starts

    def empty(self, shape, dtype, xp=np):
        """An array of `shape` and `dtype` that no one else holds; its contents are garbage."""
        shape, dtype = tuple(shape), np.dtype(dtype)   # (NumPy's ints hash and compare as ints do)
        if not self.enabled:
            return xp.empty(shape, dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        key = (xp.__name__, nbytes)
        buffers = self.kept.get(key)
        if buffers is None:
            buffers = self.kept[key] = []
        else:
            self.kept.move_to_end(key)
            for buffer in buffers:
                if _count(buffer) == _FREE:
                    return self._aligned(buffer, nbytes, xp).view(dtype).reshape(shape)  # the view holds the buffer
        buffer = xp.empty(nbytes + ALIGN, np.uint8)
        buffers.append(buffer)
        self.kept_bytes += nbytes
        if self.kept_bytes > self.limit_bytes:
            self._drop_old_free_arrays()
        return self._aligned(buffer, nbytes, xp).view(dtype).reshape(shape)

    def zeros(self, shape, dtype, xp=np):
        out = self.empty(shape, dtype, xp)
        out.fill(0)
        return out

    def like(self, a, dtype=None):
        """An array of a's shape and dtype (or `dtype`) laid out in memory as a is (so elementwise ops writing
        into it keep the layout the convolutions return), contents garbage."""
        xp = backend.array_module(a)
        dtype = a.dtype if dtype is None else dtype
        if a.flags.c_contiguous or a.ndim < 2:
            return self.empty(a.shape, dtype, xp)
        # its axes from the slowest in memory to the fastest, and the permutation back: worked out once
        # per layout (a step asks for the same few again and again; Python's time counts here)
        layout = _LAYOUTS.get((a.shape, a.strides))
        if layout is None:
            if len(_LAYOUTS) > 4096:
                _LAYOUTS.clear()
            order = sorted(range(a.ndim), key=lambda axis: -abs(a.strides[axis]))  # slowest axis first
            back = [0] * a.ndim                     # the inverse permutation of `order`
            for position, axis in enumerate(order):
                back[axis] = position
            layout = _LAYOUTS[a.shape, a.strides] = (tuple(a.shape[axis] for axis in order), tuple(back))
        return self.empty(layout[0], dtype, xp).transpose(layout[1])

    def owned(self, a):
        """a itself where only the caller's one name holds it, and only a holds its memory (or a
        and the workspace): then nothing else can change its numbers, and keeping it costs no pass
        over memory. Else a copy of a, in a workspace array laid out as a is. For a leaf's
        gradient: most are made by an op for this one use (a weight gradient's product), some are
        shared (the dL/dy that F.add hands both its inputs, a view of another tensor's memory)."""
        if sys.getrefcount(a) == _SOLE and (a.base is None or self._keeps(a.base) and _count(a.base) == _FREE):
            return a
        out = self.like(a)
        out[...] = a
        return out

    def _keeps(self, buffer):
        """Is buffer one of the workspace's own NumPy buffers? (A CuPy one is not looked for: its
        gradient is copied.)"""
        kept = self.kept.get((np.__name__, buffer.nbytes - ALIGN), ())
        return isinstance(buffer, np.ndarray) and any(b is buffer for b in kept)

    def _aligned(self, buffer, nbytes, xp):
        """The nbytes of buffer from its first ALIGN-byte boundary on: every array starts on a cache
        line. NumPy's large arrays start 16 bytes into a page (the allocator's header), so every
        64-byte vector the kernels load or store along a row (AVX-512: 16 floats) lay across two
        cache lines; from a line's start, a row of whole vectors lies in whole lines, and
        small_products.py can store lines whole without reading them first. Whole training steps,
        the same code otherwise (2-core Xeon VM, in-process A/Bs): foster 32 0.896, chollet 16 0.946,
        chollet 32 on one thread 0.919 (docs/performance.md). CuPy's buffers start on 256 bytes."""
        if xp is not np:
            return buffer[:nbytes]
        offset = self.offsets.get(id(buffer))   # (an id is this buffer's while it is kept: see clear)
        if offset is None:
            offset = self.offsets[id(buffer)] = -buffer.ctypes.data % ALIGN
        return buffer[offset:offset + nbytes]

    def clear(self):
        """Forget every kept buffer (those still in use live on with their users)."""
        self.kept.clear()
        self.kept_bytes = 0
        self.offsets.clear()

    def _drop_old_free_arrays(self):
        for key in list(self.kept)[:-1]:  # never the key just asked for
            buffers = self.kept[key]
            in_use = []
            for buffer in buffers:
                if _count(buffer) == _FREE:
                    self.kept_bytes -= buffer.nbytes - ALIGN
                    self.offsets.pop(id(buffer), None)
                else:
                    in_use.append(buffer)
            buffers[:] = in_use
            if not buffers:
                del self.kept[key]
            if self.kept_bytes <= self.limit_bytes:
                return


ALIGN = 64       # bytes: a cache line, where each array starts (Workspace._aligned)
_LAYOUTS = {}    # (shape, strides) -> (the shape in memory order, the permutation back): Workspace.like
_FREE = _references_when_free()
_SOLE = _references_when_sole()

workspace = Workspace()  # the one the ops use
