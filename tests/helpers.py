"""What the test files share: a gradient-check case, random inputs away from kinks, tiny
stand-ins for the MNIST files, and the sections and code blocks of a Markdown page."""
import contextlib
import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

import minivae
from minivae import threads


@dataclass
class Case:
    """One gradient check: `fn(*inputs)` for the functional op named `op`."""
    op: str
    fn: object
    inputs: list
    id: str = ""
    tol: dict = field(default_factory=dict)  # extra gradcheck tolerances, e.g. {"atol": 1e-5}

    def check(self):
        assert minivae.gradcheck(self.fn, self.inputs, **self.tol)

    def __str__(self):
        return f"{self.op}-{self.id}" if self.id else self.op


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def away_from_zero(*shape, seed=0, margin=0.1):
    """Normal numbers with |x| >= margin, so ReLU-like kinks sit outside the finite-difference step."""
    x = randn(*shape, seed=seed)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin, x)


def idx_bytes(array):
    """`array` as an IDX file: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian uint32 dims, the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes() + array.tobytes()


def make_files(n_train=6, n_test=4, n_train_labels=None):
    """Stand-ins for the four files, {name: content}: a few random 28 x 28 images and their labels."""
    g = np.random.default_rng(0)
    return {"train-images-idx3-ubyte": idx_bytes(g.integers(0, 256, (n_train, 28, 28))),
            "train-labels-idx1-ubyte": idx_bytes(g.integers(0, 10, n_train_labels or n_train)),
            "t10k-images-idx3-ubyte": idx_bytes(g.integers(0, 256, (n_test, 28, 28))),
            "t10k-labels-idx1-ubyte": idx_bytes(g.integers(0, 10, n_test))}


def trust(monkeypatch, files, dataset="mnist"):
    """Make `files` the ones minivae.data.SHA256 expects for `dataset`."""
    from minivae import data
    monkeypatch.setitem(data.SHA256, dataset, {name: hashlib.sha256(content).hexdigest()
                                               for name, content in files.items()})


def fill(folder, files):
    """Write `files` ({name: content}) into `folder`, made if need be; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


# ---- Markdown pages (README.md, docs/) ----------------------------------------------------------

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def sections(text):
    """[(heading, body)] for each `## ` section of a page."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def blocks(body):
    """The fenced blocks of a section in order, as (language, code, the text between it and the next block)."""
    found = list(FENCE.finditer(body))
    return [(m.group(1), m.group(2), body[m.end():found[k + 1].start()] if k + 1 < len(found) else "")
            for k, m in enumerate(found)]


ATTRIBUTE_NAMES = ["Smiling", "Eyeglasses", "Young"]


def faces_folder(folder, n, channels=3, size=16, layout="csv", seed=0):
    """A folder of n small PNG 'faces' (a disc on a random background, colour or grey) named
    000001.png, ..., with CelebA's attribute file for them (list_attr_celeba.csv or .txt); the
    first attribute, Smiling, is the brightness of the disc, so it has a direction in latent space.
    Returns the attribute values (n, 3), 1 or -1."""
    from PIL import Image
    g = np.random.default_rng(seed)
    values = np.where(g.random((n, len(ATTRIBUTE_NAMES))) < 0.5, 1, -1)
    values[:2, 0] = (1, -1)   # both sides present, whatever the draw
    rows, cols = np.mgrid[0:size, 0:size] - (size - 1) / 2
    disc = np.hypot(rows, cols) < size / 3
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, smiling in enumerate(values[:, 0]):
        pixels = np.broadcast_to(g.integers(0, 256, (1, 1, channels)), (size, size, channels)).copy()
        pixels[disc] = 230 if smiling > 0 else 90
        names.append(f"{k + 1:06d}.png")
        pixels = pixels.astype(np.uint8)
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(folder / names[-1])
    write_attributes(folder / f"list_attr_celeba.{layout}", names, values)
    return values


def write_attributes(path, names, values, attributes=ATTRIBUTE_NAMES):
    """CelebA's attribute file for `names`: .csv (image_id,A,B,...) or .txt (count, names, rows)."""
    if path.suffix == ".csv":
        lines = [",".join(["image_id"] + list(attributes))]
        lines += [",".join([name] + [str(v) for v in row]) for name, row in zip(names, values)]
    else:
        lines = [str(len(names)), " ".join(attributes)]
        lines += [f"{name} " + "  ".join(f"{v:2d}" for v in row) for name, row in zip(names, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def on_one_thread_and_on(count, compute, split_more=lambda: None):
    """compute() with the ops' work on one thread, then (after split_more(), which may lower the
    sizes from which work is split) on `count` threads; the thread count is put back after."""
    previous = threads.count()
    try:
        threads.set_count(1)
        alone = compute()
        split_more()
        threads.set_count(count)
        return alone, compute()
    finally:
        threads.set_count(previous)


def assert_same_bits(ours, theirs):
    """Each pair of float arrays equal bit for bit (signed zeros and NaNs too)."""
    for a, b in zip(ours, theirs):
        assert np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


@contextlib.contextmanager
def path_switched(settings, on, key="enabled"):
    """Within: a faster path on or off by its module's settings (the {"enabled": ...} that an
    environment variable such as MINIVAE_WINOGRAD=never sets, or another switch there); as it was
    after."""
    previous = settings[key]
    settings[key] = on
    try:
        yield
    finally:
        settings[key] = previous


def address(a):
    """Where an array's numbers start in memory."""
    return a.__array_interface__["data"][0]


def grads_with_path(settings, on, op, arrays, kwargs, g):
    """y, dL/dx, dL/dw, dL/db of op(x, w, b, **kwargs) for dL/dy = g, with a faster path on or off
    (path_switched)."""
    from minivae.tensor import Tensor
    with path_switched(settings, on):
        x, w, b = (Tensor(a, requires_grad=True) for a in arrays)
        y = op(x, w, b, **kwargs)
        y.backward(g)
        return [np.array(a) for a in (y.data, x.grad, w.grad, b.grad)]


def conv_arrays(op, x_shape, w_shape, dtype):
    """x, w and a bias for F.conv2d or F.conv_transpose2d (whose w is (C_in, C_out, kH, kW))."""
    from minivae import functional as F
    b_size = w_shape[0] if op is F.conv2d else w_shape[1]
    return [randn(*x_shape, seed=1).astype(dtype), randn(*w_shape, seed=2).astype(dtype),
            randn(b_size, seed=3).astype(dtype)]


def assert_close_to_reference(names, fast, reference, dtype, loosen=1):
    """A faster path's arrays against the reference path's: the same dtype, equal to float rounding
    (1e-12 of the largest value in float64, 2e-6 in float32; `loosen` times that where a path's own
    arithmetic rounds more)."""
    tolerance = loosen * (1e-12 if dtype == np.float64 else 2e-6)
    for name, ours, theirs in zip(names, fast, reference):
        assert ours.dtype == dtype
        assert np.abs(ours - theirs).max() <= tolerance * np.abs(theirs).max(), name
