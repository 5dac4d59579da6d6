"""The workspace hands an array out again only once nobody holds it, and a training step at the
steady state takes every array it needs from it (so it allocates, and faults in, nothing new)."""
import tracemalloc

import numpy as np
import pytest
from helpers import address

from minivae import Tensor, functional as F
from minivae.train import TrainConfig, build
from minivae.workspace import Workspace, workspace


def test_a_free_array_is_handed_out_again():
    ws = Workspace()
    first = address(ws.empty((3, 4), np.float32))   # dropped at once: free
    assert address(ws.empty((3, 4), np.float32)) == first


def test_arrays_of_the_same_size_share_one_buffer_whatever_their_shape_and_dtype():
    ws = Workspace()
    first = address(ws.empty((3, 4), np.float32))   # 48 bytes, dropped at once: free
    again = ws.empty((2, 3, 2), np.int32)              # 48 bytes too
    assert address(again) == first and again.shape == (2, 3, 2) and again.dtype == np.int32
    other = ws.empty((4, 3), np.float64)              # 96 bytes: another buffer
    assert address(other) != first and ws.kept_bytes == 48 + 96


def test_every_array_starts_on_a_cache_line():
    """(So that a row whose length is a multiple of 16 floats lies in whole cache lines, which a
    kernel may store without reading them first: small_products.py.) NumPy's own buffers start 16
    bytes past a page, or anywhere for small ones."""
    ws = Workspace()
    held = [ws.empty(shape, dtype) for shape, dtype in [((3,), np.float32), ((5, 7), np.float64),
                                                      ((64, 1568), np.float32), ((1 << 20,), np.float32)]]
    held.append(ws.empty((3,), np.float32))            # the first one's size again, while it is held
    first = address(held.pop(0))                       # free again: handed out again
    held.append(ws.empty((12,), np.uint8))
    assert address(held[-1]) == first
    assert all(address(a) % 64 == 0 for a in held)


@pytest.mark.parametrize("hold", [lambda a: a, lambda a: a.reshape(-1), lambda a: a.T[1:],
                                  lambda a: Tensor(a)],
                         ids=["itself", "a reshape", "a sliced view", "a Tensor"])
def test_an_array_still_held_is_never_handed_out(hold):
    ws = Workspace()
    a = ws.empty((3, 4), np.float32)
    a[...] = 7
    holder = hold(a)
    del a
    b = ws.empty((3, 4), np.float32)
    b[...] = 0
    assert np.all(np.asarray(holder.data if isinstance(holder, Tensor) else holder) == 7)
    del holder
    assert ws.empty((3, 4), np.float32) is not b   # b is still held here; the first is free again


def test_like_keeps_the_memory_layout():
    chwn = np.zeros((2, 3, 4, 5), np.float32).transpose(3, 0, 1, 2)  # an (N, C, H, W) view of CHWN
    out = Workspace().like(chwn)
    assert out.shape == chwn.shape and out.strides == chwn.strides
    assert Workspace().like(chwn, bool).dtype == bool


def test_owned_keeps_an_array_nothing_else_holds_and_copies_a_shared_one():
    ws = Workspace()
    fresh = np.full((2, 3), 5.0)                         # a plain array, held by this name only
    assert ws.owned(fresh) is fresh
    lent = ws.empty((2, 3), np.float64)                   # a workspace array, held by this name only
    lent[...] = 1
    assert ws.owned(lent) is lent
    held_twice = fresh
    copy = ws.owned(fresh)                                # another name holds it: a copy
    assert copy is not fresh and np.shares_memory(copy, fresh) is False and np.array_equal(copy, fresh)
    del held_twice
    view = lent.reshape(3, 2)                             # another array on lent's memory: a copy of each
    assert ws.owned(lent) is not lent and ws.owned(view) is not view
    del view
    part = np.arange(4.0)[1:]                             # a view of memory nothing else can reach...
    assert ws.owned(part) is not part                      # ...but not the workspace's: copied, to be sure
    np.testing.assert_array_equal(ws.owned(part), [1, 2, 3])


def test_free_arrays_of_old_shapes_are_dropped_past_the_limit():
    ws = Workspace(limit_bytes=1000)
    held = ws.empty((100,), np.float32)                  # 400 bytes, held
    for n in (101, 102, 103):                            # 404, 408, 412 bytes, each dropped at once
        ws.empty((n,), np.float32)
    assert ws.kept_bytes <= 1000 and held.nbytes == 400
    assert any(buffers and np.shares_memory(buffers[0], held) for buffers in ws.kept.values())


def test_workspace_arrays_do_not_leak_between_forward_passes():
    """Two outputs of the same layer at once: the first is not overwritten by the second."""
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((4, 3, 3, 3), dtype=np.float32))
    x1, x2 = (Tensor(rng.standard_normal((2, 3, 8, 8), dtype=np.float32)) for _ in range(2))
    y1 = F.leaky_relu(F.conv2d(x1, w, padding=1), 0.3)
    expected = y1.data.copy()
    F.leaky_relu(F.conv2d(x2, w, padding=1), 0.3)
    assert np.array_equal(y1.data, expected)


def test_no_grad_takes_nothing_from_the_workspace():
    from minivae import no_grad
    before = workspace.kept_bytes
    x = Tensor(np.ones((7, 3, 9, 9), np.float32))
    with no_grad():
        F.leaky_relu(F.conv2d(x, np.ones((2, 3, 3, 3), np.float32), padding=1))
    assert workspace.kept_bytes == before and workspace.enabled


@pytest.mark.parametrize("model", ["foster", "chollet"])
def test_a_steady_training_step_takes_no_new_arrays(model):
    """After two steps the workspace holds all a step needs: a third adds no array to it, and
    allocates under 1 MB of its own (tracemalloc sees NumPy's allocations; without the workspace
    a foster step at batch 32 allocated 60 MB)."""
    net, optimizer, loss_fn = build(TrainConfig(model=model, batch_size=32).resolved())
    images = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)

    def step():
        x = Tensor(images)
        loss, _, _ = loss_fn(x, *net(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    step()
    step()
    kept = {key: len(arrays) for key, arrays in workspace.kept.items()}
    tracemalloc.start()
    try:
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    assert kept and {key: len(arrays) for key, arrays in workspace.kept.items()} == kept


def test_bench_reports_few_page_faults_per_step():
    """`minivae bench` at the steady state: under 500 minor page faults per step (issue 9's bar;
    before the workspace a foster step at batch 32 took about 9,900), and which BLAS ran."""
    from minivae import bench
    result = bench.run("foster", batch_size=16, steps=3, synthetic=True, warmup=3, repeats=2)
    assert result["minor_faults_per_step"] < 500
    assert result["images_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["blas"] and "openblas_env" in result
