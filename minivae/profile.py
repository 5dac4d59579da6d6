"""Where one training step spends its time, op by op (`python -m minivae profile`).

The profiler times the ops training runs, not copies of them. While it runs, each public function
of `minivae.functional` is replaced by a wrapper that times the call, and `Tensor.backward` hands
each node's backward closure to a hook that times it (`tensor.backward_hook`). On a GPU each timed
region starts and ends with a device synchronization, so that it holds that op's kernels and no
others. Rows are grouped by the layer an op ran in (`Tensor.layer`) and the op's name. A ReLU or
LeakyReLU that follows a conv or dense layer runs inside it (nn.Sequential fuses the two) and is
timed in its row.

Work and rate. The matrix-product ops (conv2d, conv_transpose2d, linear, matmul) are counted in
FLOPs (a multiply-add is 2) by the small functions below, and their rate is compared with the
machine's peak: a large float32 matrix product. The other ops are limited by memory, not
arithmetic: their work is the bytes they must at least move (forward: read the inputs, write the
output; backward: read dL/dy, write each input's gradient), their rate is in GB/s, and their peak is
a large float32 `a + b`. Reshapes and transposes are mostly views: they get no rate.

The matrix-product floor is the time the step's products (their FLOPs, forward and backward)
would take at that peak: no step can run faster without doing less arithmetic, and the step's
time over it says how far from the machine's limit the whole step runs. The peak is the best of
ten products, five before the steps and five after: on a machine shared with others the best of a
few taken at one moment came out anywhere from 121 to 172 GFLOP/s within two minutes (a 2-core
VM, docs/performance.md), and a low peak would flatter the step.

The same run also times steps with the profiler off (every other step), so the table can say how
much of a step its rows cover; what they leave out is the Python between the ops.

    report = profile.run("foster", steps=10)
    print(profile.format_report(report))
"""
import contextlib
import functools
import inspect
import os
import statistics
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from . import backend, threads
from . import functional as F
from .tensor import Tensor, backward_hook

MATRIX_OPS = ("conv2d", "conv_transpose2d", "linear", "matmul")
VIEW_OPS = ("reshape", "transpose")
# arrays read + written per parameter element by one optimizer step: Adam reads p, g, m, v and
# writes p, m, v; RMSprop reads p, g, s and writes p, s; SGD reads p, g, v and writes p, v
OPTIMIZER_ARRAYS_MOVED = {"Adam": 7, "RMSprop": 5, "SGD": 5}


# ---- FLOP counts: (forward, backward) for one call -----------------------------------------------
# `grads` names the inputs that need a gradient; the backward does only their products.

def conv2d_flops(x_shape, w_shape, y_shape, bias=True, grads=("x", "w", "b")):
    """x (N, C_in, H, W), w (C_out, C_in, kH, kW), y (N, C_out, OH, OW):
    forward  Y = W @ cols: 2·N·C_out·OH·OW·C_in·kH·kW, plus N·C_out·OH·OW bias adds;
    backward dL/dx = Wᵀ @ dY and dL/dw = dY @ colsᵀ, the same product count each;
             dL/db: N·C_out·OH·OW adds. (col2im's adds of overlapping patches are not counted.)"""
    n, c_in = x_shape[:2]
    c_out, _, kh, kw = w_shape
    outputs = n * c_out * y_shape[2] * y_shape[3]
    product = 2 * outputs * c_in * kh * kw
    forward = product + (outputs if bias else 0)
    backward = product * (("x" in grads) + ("w" in grads)) + (outputs if bias and "b" in grads else 0)
    return forward, backward


def conv_transpose2d_flops(x_shape, w_shape, y_shape, bias=True, grads=("x", "w", "b")):
    """x (N, C_in, H, W), w (C_in, C_out, kH, kW), y (N, C_out, OH, OW):
    forward  Y = col2im(Wᵀ @ X): 2·N·C_in·H·W·C_out·kH·kW, plus N·C_out·OH·OW bias adds;
    backward dL/dx = W @ im2col(dY) and dL/dw = X @ im2col(dY)ᵀ, the same product count each;
             dL/db: N·C_out·OH·OW adds."""
    n, c_in, h, w = x_shape
    _, c_out, kh, kw = w_shape
    product = 2 * n * c_in * h * w * c_out * kh * kw
    outputs = n * c_out * y_shape[2] * y_shape[3]
    forward = product + (outputs if bias else 0)
    backward = product * (("x" in grads) + ("w" in grads)) + (outputs if bias and "b" in grads else 0)
    return forward, backward


def linear_flops(x_shape, w_shape, bias=True, grads=("x", "w", "b")):
    """x (N, in), w (in, out): forward x @ w: 2·N·in·out, plus N·out bias adds;
    backward dL/dx = dY @ wᵀ and dL/dw = xᵀ @ dY, 2·N·in·out each; dL/db: N·out adds."""
    (n, fan_in), fan_out = x_shape, w_shape[1]
    product = 2 * n * fan_in * fan_out
    forward = product + (n * fan_out if bias else 0)
    backward = product * (("x" in grads) + ("w" in grads)) + (n * fan_out if bias and "b" in grads else 0)
    return forward, backward


def matmul_flops(a_shape, b_shape, grads=("a", "b")):
    """a (n, k) @ b (k, m): 2·n·k·m forward; the same again for each of dL/da and dL/db."""
    product = 2 * a_shape[0] * a_shape[1] * b_shape[1]
    return product, product * (("a" in grads) + ("b" in grads))


def _flops(op, args, out):
    """(forward, backward) FLOPs of one call of a matrix op, from its bound arguments."""
    def shape(name):
        return tuple(args[name].shape)

    def needing_grad(*names):
        return tuple(n for n in names if isinstance(args.get(n), Tensor) and args[n].requires_grad)
    if op == "matmul":
        return matmul_flops(shape("a"), shape("b"), needing_grad("a", "b"))
    bias = args.get("b") is not None
    if op == "linear":
        return linear_flops(shape("x"), shape("w"), bias, needing_grad("x", "w", "b"))
    count = conv2d_flops if op == "conv2d" else conv_transpose2d_flops
    return count(shape("x"), shape("w"), tuple(out.shape), bias, needing_grad("x", "w", "b"))


def _bytes_moved(args, out):
    """(forward, backward) bytes an op must at least move: forward reads its array inputs and writes
    its output; backward reads dL/dy and writes a gradient for each input that needs one."""
    tensors = [a for a in args.values() if isinstance(a, Tensor)]
    arrays = [a for a in args.values() if hasattr(a, "nbytes")]  # NumPy or CuPy arrays passed as such
    forward = sum(t.data.nbytes for t in tensors) + sum(a.nbytes for a in arrays) + out.data.nbytes
    backward = out.data.nbytes + sum(t.data.nbytes for t in tensors if t.requires_grad)
    return forward, backward


# ---- the machine's peak ---------------------------------------------------------------------------

def _sync(xp):
    if xp is not np:
        xp.cuda.Device().synchronize()


def _best_seconds(xp, fn, repeats):
    fn()  # warm-up (and, on a GPU, the first launch's compilation)
    times = []
    for _ in range(repeats):
        _sync(xp)
        start = time.perf_counter()
        fn()
        _sync(xp)
        times.append(time.perf_counter() - start)
    return min(times)


PEAK_REPEATS = 5   # products timed for the peak before the steps, and as many after


def peak_gflops(device="cpu", size=2048, repeats=3):
    """GFLOP/s of a float32 matrix product (size × size) @ (size × size): 2·size³ FLOPs, best of repeats."""
    xp = np if device == "cpu" else backend.require_cuda()
    generator = np.random.default_rng(0)
    a, b = (backend.to_device(generator.random((size, size), dtype=np.float32), device) for _ in range(2))
    return 2 * size ** 3 / _best_seconds(xp, lambda: a @ b, repeats) / 1e9


def peak_gbps(device="cpu", megabytes=64, repeats=10):
    """GB/s of a float32 c = a + b over `megabytes` per array: reads two arrays, writes one."""
    xp = np if device == "cpu" else backend.require_cuda()
    n = megabytes * 2 ** 20 // 4
    a, b, c = (xp.ones(n, dtype=np.float32) for _ in range(3))
    return 3 * 4 * n / _best_seconds(xp, lambda: xp.add(a, b, out=c), repeats) / 1e9


# ---- timing the ops -------------------------------------------------------------------------------

@dataclass
class Row:
    """One (layer, op): its per-step forward and backward seconds, and the work of one step."""
    layer: str
    op: str
    forward_s: list = field(default_factory=list)   # one total per profiled step
    backward_s: list = field(default_factory=list)
    work: list = field(default_factory=lambda: [0, 0])  # (forward, backward) FLOPs or bytes, one step
    unit: str = None                                # "FLOP", "B" or None (views, no rate)

    @property
    def forward_ms(self):
        return 1000 * statistics.median(self.forward_s) if self.forward_s else 0.0

    @property
    def backward_ms(self):
        return 1000 * statistics.median(self.backward_s) if self.backward_s else 0.0


class Profiler:
    """Times every op of the steps run inside `with profiler.recording():`, per (layer, op)."""

    def __init__(self, xp=np):
        self.xp = xp
        self.rows = {}                    # (layer, op) -> Row, in the order first seen
        self._step = {}                   # (layer, op) -> [forward s, backward s] of this step
        self._work = {}                   # (layer, op) -> [forward, backward] work of this step
        self._backward_work = weakref.WeakKeyDictionary()  # output Tensor -> (key, backward work)
        self._depth = 0                   # > 0 inside a timed op: ops it calls are part of it

    @contextlib.contextmanager
    def recording(self):
        """Time each op called in this block, as one step; the step's totals are added to the rows."""
        originals = {name: getattr(F, name) for name in F.__all__}
        for name, fn in originals.items():
            setattr(F, name, self._timed(name, fn))
        self._step, self._work = {}, {}
        try:
            with backward_hook(self._timed_backward):
                yield
        finally:
            for name, fn in originals.items():
                setattr(F, name, fn)
        for key, row in self.rows.items():
            seconds = self._step.get(key, (0.0, 0.0))
            row.forward_s.append(seconds[0])
            row.backward_s.append(seconds[1])
            row.work = self._work.get(key, [0, 0])

    def time_region(self, layer, op, unit=None, work=0):
        """A `with` block timed as a row of its own (the optimizer step), in the forward column."""
        return self._region((layer, op), 0, unit, work)

    @contextlib.contextmanager
    def _region(self, key, which, unit=None, work=0):
        if key not in self.rows:
            self.rows[key] = Row(*key, unit=unit)
        _sync(self.xp)
        start = time.perf_counter()
        yield
        _sync(self.xp)
        self._step.setdefault(key, [0.0, 0.0])[which] += time.perf_counter() - start
        self._work.setdefault(key, [0, 0])[which] += work

    def _timed(self, name, fn):
        parameters = list(inspect.signature(fn).parameters)  # to name the positional arguments

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            try:
                _sync(self.xp)
                start = time.perf_counter()
                out = fn(*args, **kwargs)
                _sync(self.xp)
                seconds = time.perf_counter() - start
            finally:
                self._depth -= 1
            if isinstance(out, Tensor):
                self._record_forward(name, {**dict(zip(parameters, args)), **kwargs}, out, seconds)
            return out
        return timed

    def _record_forward(self, name, args, out, seconds):
        op = out.op or name
        key = (out.layer or "-", op)
        if op in MATRIX_OPS:
            unit, (forward, backward) = "FLOP", _flops(op, args, out)
        elif op in VIEW_OPS:
            unit, forward, backward = None, 0, 0
        else:
            unit, (forward, backward) = "B", _bytes_moved(args, out)
        if key not in self.rows:
            self.rows[key] = Row(*key, unit=unit)
        self._step.setdefault(key, [0.0, 0.0])[0] += seconds
        self._work.setdefault(key, [0, 0])[0] += forward
        if out.requires_grad:  # counted when (and if) its backward runs
            self._backward_work[out] = (key, backward)

    def _timed_backward(self, node, grad_out):
        key, work = self._backward_work.get(node, ((node.layer or "-", node.op), 0))
        with self._region(key, 1, work=work):
            return node._backward(grad_out)


# ---- profiling training steps ---------------------------------------------------------------------

@dataclass
class Report:
    model: str
    device: str
    batch_size: int
    steps: int
    warmup: int
    peak_gflops: float
    peak_gbps: float
    peak_size: int
    peak_megabytes: int
    rows: list
    step_ms: float             # median step with the profiler off (as training takes it: in `processes`)
    profiled_step_ms: float    # median step with it on (its timers and synchronizations included)
    forward_ms: float          # medians, profiler on: the forward pass (model and loss) as a whole,
    backward_ms: float         # and loss.backward() as a whole
    kernels: str = "auto"      # backend.kernel_mode() (on a GPU: our CUDA kernels, or CuPy's own)
    cpu: str = ""              # the CPU's model name (bench.cpu_model)
    processes: int = 1         # processes sharing each step's images (parallel.py)
    one_process_step_ms: float = 0.0   # median step with the profiler off in this process alone

    @property
    def rows_ms(self):
        return sum(r.forward_ms + r.backward_ms for r in self.rows)

    @property
    def matrix_flops(self):
        """The FLOPs of one step's matrix products (forward and backward)."""
        return sum(sum(r.work) for r in self.rows if r.unit == "FLOP")

    @property
    def floor_ms(self):
        """The matrix-product floor: the time the step's products would take at the measured peak.
        No step can be faster on this machine without doing less arithmetic."""
        return 1000 * self.matrix_flops / (self.peak_gflops * 1e9)


def run(model="foster", device="cpu", batch_size=0, steps=10, warmup=3, data_dir=None,
        synthetic=False, peak_size=2048, peak_megabytes=64, processes=0):
    """Profile `steps` training steps after `warmup` untimed ones. The steps alternate, one with the
    profiler off and one with it on, so that both meet the machine in the same mood. Where training
    shares a step's images among processes (parallel.py; `processes` as TrainConfig's), `steps`
    steps taken that way are timed first, back to back as training takes them; the ops are timed
    in this process. Returns a Report."""
    from . import bench, parallel
    from .train import TrainConfig, build, to_tensor
    if steps < 1 or warmup < 0:
        raise ValueError(f"profile: --steps must be at least 1 and --warmup at least 0, got {steps} and {warmup}")
    config = TrainConfig(model=model, batch_size=batch_size, device=device, processes=processes).resolved()
    net, optimizer, loss_fn = build(config)
    processes = parallel.processes_for(config, net)
    xp = np if device == "cpu" else backend.require_cuda()
    images = bench.training_images(config.batch_size, data_dir, synthetic, net.input_shape)
    batches = bench.endless_batches(images, config.batch_size)
    profiler = Profiler(xp)
    step_name = f"{type(optimizer).__name__}.step"
    arrays_moved = OPTIMIZER_ARRAYS_MOVED.get(type(optimizer).__name__, 0)
    passes = {"forward": [], "backward": []}

    def step(profiling):
        x = to_tensor(next(batches), device)
        start = time.perf_counter()
        loss, _, _ = loss_fn(x, *net(x))
        optimizer.zero_grad()
        _sync(xp)
        middle = time.perf_counter()
        loss.backward()
        _sync(xp)
        if profiling:
            passes["forward"].append(middle - start)
            passes["backward"].append(time.perf_counter() - middle)
            work = arrays_moved * sum(p.data.nbytes for p in optimizer.params if p.grad is not None)
            with profiler.time_region("optimizer", step_name, "B", work):
                optimizer.step()
        else:
            optimizer.step()
        return loss.item()  # waits for the GPU

    # half of the peak's products (see the module's docstring) before the warm-up steps, which also
    # wait out OpenBLAS's threads: they spin on after a product, and slowed the next step 3x
    peak_before = peak_gflops(device, peak_size, PEAK_REPEATS)
    plain, alone, profiled = [], [], []
    if processes > 1:   # the step as training takes it, back to back (the other processes' caches warm)
        with parallel.DataParallel(net, optimizer, loss_fn, config.batch_size, net.input_shape,
                                   processes) as shared:
            for k in range(warmup + steps):
                start = time.perf_counter()
                shared.step(next(batches))
                if k >= warmup:
                    plain.append(time.perf_counter() - start)
            shared.gather()   # the whole optimizer state here, for the steps below
    for _ in range(warmup):
        step(False)
    for _ in range(steps):
        start = time.perf_counter()
        step(False)
        alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        with profiler.recording():
            step(True)
        profiled.append(time.perf_counter() - start)

    def median_ms(seconds):
        return 1000 * statistics.median(seconds)
    peak = max(peak_before, peak_gflops(device, peak_size, PEAK_REPEATS))
    return Report(model, device, config.batch_size, steps, warmup, peak,
                  peak_gbps(device, peak_megabytes), peak_size, peak_megabytes, list(profiler.rows.values()),
                  median_ms(plain or alone), median_ms(profiled), median_ms(passes["forward"]),
                  median_ms(passes["backward"]), backend.kernel_mode(), bench.cpu_model(), processes,
                  median_ms(alone))


# ---- the table ------------------------------------------------------------------------------------

def _amount(value, unit):
    """value in k/M/G units, e.g. 1.23 MB, 45.6 MFLOP."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _rate(row, report):
    """(work, rate, % of peak) of a row as text, over its forward and backward together."""
    seconds = (row.forward_ms + row.backward_ms) / 1000
    work = sum(row.work)
    if row.unit is None or work == 0 or seconds == 0:
        return "-", "-", "-"
    per_second = work / seconds / 1e9
    peak = report.peak_gflops if row.unit == "FLOP" else report.peak_gbps
    return _amount(work, row.unit), f"{per_second:.2f} G{row.unit}/s", f"{100 * per_second / peak:.0f}%"


def _cpu_threads():
    """'2 CPU cores', plus any thread-count variable set for the BLAS (it decides the products' threads)."""
    cores = threads.usable_cores()
    limits = [f"{name}={os.environ[name]}" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                       "MKL_NUM_THREADS") if name in os.environ]
    return ", ".join([f"{cores} CPU cores"] + limits)


def format_report(report):
    """The profile as text: a row per (layer, op) in the order they first ran, the total, the
    same times summed per op, and the step time with the profiler off to compare the total with."""
    where = f"{report.cpu}, {_cpu_threads()}" if report.device == "cpu" else f"kernels: {report.kernels}"
    lines = [f"one training step of {report.model}, batch {report.batch_size}, on {report.device} "
             f"({where}): medians of {report.steps} steps, after {report.warmup} warm-up steps",
             f"peak: {report.peak_gflops:.1f} GFLOP/s (float32 {report.peak_size}×{report.peak_size} "
             f"matrix product, the best of {PEAK_REPEATS} before the steps and {PEAK_REPEATS} after), "
             f"{report.peak_gbps:.1f} GB/s (float32 a + b, {report.peak_megabytes} MiB each)", ""]
    header = (f"{'layer':<24} {'op':<20} {'fwd ms':>8} {'bwd ms':>8} {'% step':>7} "
              f"{'work':>11} {'rate':>14} {'% peak':>6}")
    rule = "-" * len(header)
    alone_ms = report.one_process_step_ms or report.step_ms   # (a Report made by hand may lack it)

    def line(layer, op, fwd, bwd, work="", rate="", peak=""):
        share = 100 * (fwd + bwd) / alone_ms
        return (f"{layer:<24} {op:<20} {fwd:>8.2f} {bwd:>8.2f} {share:>6.1f}% "
                f"{work:>11} {rate:>14} {peak:>6}").rstrip()

    lines += [header, rule]
    lines += [line(r.layer, r.op, r.forward_ms, r.backward_ms, *_rate(r, report)) for r in report.rows]
    forward = sum(r.forward_ms for r in report.rows)
    backward = sum(r.backward_ms for r in report.rows)
    lines += [rule, line("total of the rows", "", forward, backward), ""]

    per_op = {}
    for r in report.rows:
        per_op.setdefault(r.op, [0.0, 0.0])
        per_op[r.op][0] += r.forward_ms
        per_op[r.op][1] += r.backward_ms
    lines.append("the same, per op:")
    lines += [line("", op, f, b) for op, (f, b) in sorted(per_op.items(), key=lambda item: -sum(item[1]))]
    lines.append("")

    in_passes = forward - sum(r.forward_ms for r in report.rows if r.layer == "optimizer")
    ratio = report.rows_ms / alone_ms
    if report.processes > 1:
        lines += [f"step with the profiler off, as training takes it: {report.step_ms:.2f} ms, its images shared "
                  f"among {report.processes} processes, one core each (minivae/parallel.py)"]
    lines += [f"step with the profiler off{' in this process alone' if report.processes > 1 else ''}: "
              f"{alone_ms:.2f} ms; the rows add up to "
              f"{report.rows_ms:.2f} ms, {100 * ratio:.1f}% of it "
              f"({'within' if abs(ratio - 1) <= 0.10 else 'NOT within'} 10%)",
              f"step with the profiler on: {report.profiled_step_ms:.2f} ms; in it the ops took "
              f"{100 * in_passes / report.forward_ms:.0f}% of the forward pass ({report.forward_ms:.2f} ms) "
              f"and {100 * backward / report.backward_ms:.0f}% of the backward pass ({report.backward_ms:.2f} ms); "
              "the rest is Python between the ops",
              f"matrix-product floor: the step's products, {_amount(report.matrix_flops, 'FLOP')}, at the "
              f"peak {report.peak_gflops:.1f} GFLOP/s take {report.floor_ms:.2f} ms; the step "
              f"(profiler off) is {report.step_ms / report.floor_ms:.2f}× its floor",
              "(FLOPs are counted as a direct convolution does them; on the CPU, 3×3 stride-1 layers with "
              "16+ channels may run Winograd's F(2×2, 3×3) or F(4×4, 3×3), 2.25× or 4× fewer multiply-adds: see "
              "minivae/functional/winograd.py)"]
    return "\n".join(lines)
