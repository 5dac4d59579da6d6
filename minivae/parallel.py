"""Data parallelism on the CPU: each training step's images shared out among processes, one core each.

threads.py splits every op over the cores; between the ops, one core waits while the other runs
Python, the small ops and the hand-overs (about a quarter of foster's batch-32 step on a 2-core
VM). Here each of P processes (forked from the trainer, so each starts with a copy of its model and
optimizer) takes its share of the batch through the forward and backward passes on one thread,
and no core waits on another inside the passes.

The books' losses are means over the batch's images, so the whole batch's loss and gradient are
the parts', each weighted by its share n_k of the n images:

    L = Σ_k (n_k / n) · L_k,        dL/dθ = Σ_k (n_k / n) · dL_k/dθ

Each process writes its gradients into memory that the processes share and waits for the others'.
Then each adds up the parts' gradients (in the order k = 0, 1, ...) of its own share of the
parameters, takes the optimizer's step on those (it alone keeps their Adam moments) and writes
their new values out, and reads in the others': the work of the update is shared out too, and every
copy of the weights stays equal to the others bit for bit (`gather` brings the moments together
for a checkpoint). Each part draws the random numbers a step on the whole batch would give its
images (rng.batch_part), so ε and the dropout masks are one process's. The numbers differ from
one process's in their last bits (sums made in other orders); the same seed and process count
give the same bits.

For a loss that is a mean over the images (not a sum), models without buffers that a training
step changes (batch norm's running statistics would each see one part), NumPy arrays, and Linux
(os.fork). `processes_for` says where a config's training takes this path.

    with DataParallel(model, optimizer, loss_fn, 32, (1, 28, 28), processes=2) as parallel:
        loss, recon, kl = parallel.step(images)          # a NumPy batch (n, 1, 28, 28), n <= 32
"""
import mmap
import os
import pickle
import signal
import sys
import time
import zlib

import numpy as np

from . import rng, threads
from .tensor import Tensor
from .workspace import workspace

__all__ = ["DataParallel", "processes_for"]

LANES = 16              # a process's share of a batch must be a multiple: the direct convolutions' runs
PARAMETERS_AN_IMAGE = 20000  # and it takes no more parameters than this per image of a share: the gradients'
                        # exchange and each process's optimizer step cost per parameter, the sharing saves
                        # per image (2-core Xeon VM, 2 processes: foster 32, 207,237 parameters, 16 images a
                        # process, 13% faster; chollet 128, 550,629 and 64, 4% faster; chollet 32 4% slower)
WAIT_ROUNDS = 2000      # rounds of a wait (each a sched_yield) between looks at the other processes' health
IDLE_SECONDS = 0.002    # a waiting process spins this long for the next step, then dozes between looks
DOZE_SECONDS = 5e-4
STEP, SYNC, CHECK, GATHER, EXIT = 1, 2, 3, 4, 5    # the commands, control[COMMAND]
TICKET, COMMAND, IMAGES, STOPPING, SYNC_BYTES = 0, 1, 2, 3, 4   # control's first entries
FIRST = 8               # then, per process k: ARRIVED (its gradients written), DONE (its step over), FAILED,
                        # UPDATED (its parameters' new values written)


def processes_for(config, model, requested=None):
    """How many processes a training step for `config` (a TrainConfig) on `model` takes.
    requested (default config.processes): 1 for one; P > 1 for P, refused (ValueError) where this
    path cannot take the step; 0 for the choice made here: threads.count() processes on the CPU
    where each gets a whole number of LANES images and the model has at most PARAMETERS_AN_IMAGE
    parameters per image of a share, else one."""
    requested = getattr(config, "processes", 0) if requested is None else requested
    if requested == 1:
        return 1
    cores = threads.count()
    why_not = _why_not(config, model)
    if requested == 0:
        share, left = divmod(config.batch_size, max(cores, 1))
        parameters = sum(p.data.size for p in model.parameters())
        suits = cores > 1 and left == 0 and share % LANES == 0 and parameters <= PARAMETERS_AN_IMAGE * share
        return cores if suits and not why_not else 1
    if why_not:
        raise ValueError(f"--processes {requested}: {why_not}; use --processes 1")
    if config.batch_size < requested:
        raise ValueError(f"--processes {requested}: the batch ({config.batch_size} images) must have "
                         "at least one image per process")
    return requested


def _why_not(config, model=None):
    """Why a step for this config (and model, where given) cannot be shared out among processes,
    or None."""
    if config.device != "cpu":
        return f"data parallelism runs on the CPU, the device is {config.device}"
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return f"data parallelism forks processes, which minivae does on Linux only ({sys.platform})"
    if threads._spin() is None:
        return "data parallelism needs Numba (its processes wait for each other in compiled loops)"
    buffered = [path or type(module).__name__ for path, module in model.named_modules() if module._buffers] \
        if model is not None else []
    if buffered:
        more = f" and {len(buffered) - 1} more layers" if len(buffered) > 1 else ""
        return (f"{buffered[0]}{more} keep statistics of the batches they see (batch norm), which each "
                "process would keep for its part only")
    return None


class DataParallel:
    """P - 1 forked copies of (model, optimizer, loss_fn), and this process as the P-th (part 0):
    `step(x)` is one training step on the batch x, shared out among them. Close it (or use it
    as a context manager) to end the copies."""

    def __init__(self, model, optimizer, loss_fn, batch_size, image_shape, processes=2):
        if processes < 2:
            raise ValueError(f"DataParallel: processes must be at least 2, got {processes}")
        self.model, self.optimizer, self.loss_fn, self.processes = model, optimizer, loss_fn, processes
        self.params = list(optimizer.params)
        dtypes = {p.data.dtype for p in self.params}
        if len(dtypes) != 1 or not all(isinstance(p.data, np.ndarray) for p in self.params):
            raise ValueError(f"DataParallel: the parameters must be NumPy arrays of one dtype, got {dtypes}")
        self.sizes = [p.data.size for p in self.params]
        self.offsets = np.cumsum([0] + self.sizes)
        # the parameters each process updates (and keeps the optimizer's state of): consecutive
        # ones, about as many numbers for each process
        cuts = [int(np.searchsorted(self.offsets, k * self.offsets[-1] / processes)) for k in range(processes)]
        self.owned = list(zip(cuts, cuts[1:] + [len(self.params)]))
        self.batch_size, self.image_shape = batch_size, tuple(image_shape)
        sync_bytes = 2 * len(pickle.dumps(self._state(), protocol=5)) + (1 << 16)
        self._lay_out(dtypes.pop(), sync_bytes)
        self.ticket, self.children, self.closed = 0, [], False
        parent = os.getpid()
        for k in range(1, processes):
            pid = os.fork()
            if pid == 0:  # the child: serves steps until told to stop; never returns into the caller
                code = 1
                try:
                    self._serve(k, parent)
                    code = 0
                finally:
                    os._exit(code)
            self.children.append(pid)

    def _lay_out(self, dtype, sync_bytes):
        """The memory the processes share (an anonymous mapping, inherited by the forked ones):
        counters, losses, the batch, each process's gradients, error messages, a state to hand on."""
        p, total = self.processes, int(self.offsets[-1])
        states = len(self.optimizer.state_names)
        parts = [("control", np.int64, FIRST + 4 * p), ("floats", np.float64, 1 + 4 * p),
                 ("images", np.float32, self.batch_size * int(np.prod(self.image_shape))),
                 ("grads", dtype, p * total), ("has_grad", np.int8, p * len(self.params)),
                 ("weights", dtype, total), ("moments", dtype, max(states, 1) * total),
                 ("errors", np.uint8, p * 4096), ("handed_on", np.uint8, sync_bytes)]
        at, places = 0, []
        for name, kind, count in parts:
            at = -(-at // 64) * 64                       # each on its own cache lines
            places.append((name, kind, count, at))
            at += count * np.dtype(kind).itemsize
        self.memory = mmap.mmap(-1, at)
        for name, kind, count, offset in places:
            setattr(self, name, np.frombuffer(self.memory, kind, count, offset))
        self.images = self.images.reshape((self.batch_size,) + self.image_shape)
        self.grads = self.grads.reshape(p, total)
        self.has_grad = self.has_grad.reshape(p, len(self.params))
        self.errors = self.errors.reshape(p, 4096)
        self.moments = self.moments.reshape(max(states, 1), total)

    # ---- what the trainer calls ---------------------------------------------------------------

    def step(self, x):
        """One training step on the batch x (n, C, H, W) (a NumPy array or a Tensor): every
        process's part forward and backward, the gradients added up and the optimizer's step taken,
        each process on its share of the parameters. Returns (loss, reconstruction term, KL term) of
        the whole batch as floats. Where the loss is not finite no process updates its weights (the
        caller can look for the op at fault)."""
        x = x.data if isinstance(x, Tensor) else np.asarray(x)
        if x.shape[1:] != self.image_shape or not 1 <= len(x) <= self.batch_size:
            raise ValueError(f"DataParallel.step: a batch of up to {self.batch_size} images of shape "
                             f"{self.image_shape}, got {x.shape}")
        if len(x) < self.processes:          # too few images to share: this process alone, then its state
            self.gather()
            result = self._alone(x)
            self._hand_on()
            return result
        ticket = self._post(STEP, x)
        return self._part(0, ticket)

    def gather(self):
        """The optimizer's state (Adam's moments) of the parameters the other processes update,
        into this process's optimizer: before its state is saved (a checkpoint) or used here."""
        self._wait_for_done(self._post(GATHER))
        for k in range(1, self.processes):
            for s, name in enumerate(self.optimizer.state_names):
                for i in range(*self.owned[k]):
                    state = self.optimizer.state[name]
                    if state[i] is None:
                        state[i] = np.zeros_like(self.params[i].data)
                    state[i][...] = self.moments[s, self.offsets[i]:self.offsets[i + 1]].reshape(state[i].shape)

    def _hand_on(self):
        """Hand this process's weights, whole optimizer state and random generators to the others
        (after a step taken here alone)."""
        blob = pickle.dumps(self._state(), protocol=5)
        if len(blob) > self.handed_on.size:
            raise RuntimeError(f"DataParallel: the state to hand on grew to {len(blob)} bytes, room for "
                               f"{self.handed_on.size}")
        self._wait_for_done(self.ticket)
        self.handed_on[:len(blob)] = np.frombuffer(blob, np.uint8)
        self.control[SYNC_BYTES] = len(blob)
        self._wait_for_done(self._post(SYNC))

    def checksums(self):
        """Each process's CRC-32 of its weights (equal where the copies are)."""
        self._wait_for_done(self._post(CHECK))
        return [int(self.floats[1 + 3 * self.processes + k]) for k in range(self.processes)]

    def close(self):
        """Tell the other processes to stop, and wait for them (killing any that does not stop)."""
        if self.closed:
            return
        self.closed = True
        self.control[STOPPING] = 1
        self.control[COMMAND] = EXIT
        threads._spin()["publish"](self.control, TICKET, self.ticket + 1)
        deadline = time.monotonic() + 5
        for pid in self.children:
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.001)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- one step's part, in every process ----------------------------------------------------

    def _post(self, command, x=None):
        """Post the next command (and its batch) once every process has finished the last one."""
        self._wait_for_done(self.ticket)
        if x is not None:
            self.images[:len(x)] = x
            self.control[IMAGES] = len(x)
            self.floats[0] = self.optimizer.lr
        self.control[COMMAND] = command
        self.ticket += 1
        publish = threads._spin()["publish"]
        publish(self.control, TICKET, self.ticket)
        if command == CHECK:
            self.floats[1 + 3 * self.processes] = self._checksum()
        if command != STEP:   # (in a step, part 0 says when it is done)
            publish(self.control, FIRST + self.processes, self.ticket)
        return self.ticket

    def _part(self, k, ticket):
        """Process k's share of step `ticket`, on this thread alone (the other cores are the other
        processes'): its images forward and backward, its gradients written out; then, once all
        are, the sum and the optimizer's step on its parameters. (loss, recon, kl)."""
        with threads.one_thread():
            return self._part_here(k, ticket)

    def _part_here(self, k, ticket):
        n, p = int(self.control[IMAGES]), self.processes
        start, stop = threads.bounds(n, p)[k]
        x = np.array(self.images[start:stop])   # a copy: the next batch is written here while this one is in use
        lr, control, publish = float(self.floats[0]), self.control, threads._spin()["publish"]
        try:
            with rng.batch_part(start, stop, n), np.errstate(all="ignore"):
                images = Tensor(x)
                losses = self.loss_fn(images, *self.model(images))
                self.optimizer.zero_grad()
                losses[0].backward()
            self.floats[1 + 3 * k:4 + 3 * k] = [t.item() for t in losses]
            for i, param in enumerate(self.params):
                self.has_grad[k, i] = param.grad is not None
                into = self.grads[k, self.offsets[i]:self.offsets[i + 1]]
                if param.grad is not None:
                    into[...] = param.grad.reshape(-1)
                else:
                    into[...] = 0
            failure = None
        except BaseException as error:  # noqa: B902 - reported to the others, then raised (in part 0)
            failure = error
            text = f"{type(error).__name__}: {error}".encode()[:4095]
            self.errors[k, :len(text) + 1] = np.frombuffer(text + b"\0", np.uint8)
            control[FIRST + 2 * p + k] = ticket
        publish(control, FIRST + k, ticket)
        self._wait(FIRST, FIRST + p, ticket)              # every part's gradients written
        failed = [j for j in range(p) if control[FIRST + 2 * p + j] == ticket]
        if failed:
            publish(control, FIRST + p + k, ticket)
            if failure is not None:
                raise failure
            text = bytes(self.errors[failed[0]]).split(b"\0")[0].decode(errors="replace")
            raise RuntimeError(f"DataParallel: process {failed[0]} of {p} failed in the step: {text}")
        shares = [(b - a) / n for a, b in threads.bounds(n, p)]
        result = tuple(float(sum(s * self.floats[1 + 3 * j + i] for j, s in enumerate(shares))) for i in range(3))
        if np.isfinite(result[0]):
            self._add_up(k, ticket, shares, lr)
        publish(control, FIRST + p + k, ticket)
        return result

    def _add_up(self, k, ticket, shares, lr):
        """Process k's parameters' gradients as Σ_j share_j · (part j's gradient), in the order of
        j (a part without one wrote zeros), as one long vector; the optimizer's step on them; their
        new values written out, and the others' read in once written. Each parameter is updated
        by one process, the same way on any: the copies stay equal."""
        (first, stop), dtype = self.owned[k], self.grads.dtype
        lo, hi = self.offsets[first], self.offsets[stop]
        total = np.multiply(self.grads[0, lo:hi], dtype.type(shares[0]), out=workspace.empty((hi - lo,), dtype))
        term = workspace.empty(total.shape, dtype)
        for j in range(1, self.processes):
            total += np.multiply(self.grads[j, lo:hi], dtype.type(shares[j]), out=term)
        for i, param in enumerate(self.params):
            mine = first <= i < stop and self.has_grad[:, i].any()
            param.grad = total[self.offsets[i] - lo:self.offsets[i + 1] - lo].reshape(param.data.shape) if mine else None
        self.optimizer.lr = lr
        self.optimizer.step()                  # (a parameter without a gradient is left alone)
        for i in range(first, stop):
            self.weights[self.offsets[i]:self.offsets[i + 1]] = self.params[i].data.reshape(-1)
        threads._spin()["publish"](self.control, FIRST + 3 * self.processes + k, ticket)
        self._wait(FIRST + 3 * self.processes, FIRST + 4 * self.processes, ticket)
        for i, param in enumerate(self.params):
            if not first <= i < stop:
                param.data[...] = self.weights[self.offsets[i]:self.offsets[i + 1]].reshape(param.data.shape)

    def _alone(self, x):
        """The whole step here, on the threads as usual (for a batch too small to share)."""
        with np.errstate(all="ignore"):
            images = Tensor(x)
            losses = self.loss_fn(images, *self.model(images))
            values = tuple(t.item() for t in losses)
            if np.isfinite(values[0]):
                self.optimizer.zero_grad()
                losses[0].backward()
                self.optimizer.step()
        return values

    # ---- the other processes --------------------------------------------------------------------

    def _serve(self, k, parent):
        """Process k's loop: wait for a command, carry it out, until told to stop."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the trainer's to handle
        self.parent, seen = parent, 0
        while True:
            self._wait(TICKET, TICKET + 1, seen + 1, idle=True)
            seen += 1
            command = int(self.control[COMMAND])
            if command == EXIT:
                return
            if command == STEP:
                try:
                    self._part(k, seen)
                except Exception:  # noqa: B902 - a failed part is reported through the shared memory
                    if self.control[FIRST + self.processes + k] != seen:
                        os._exit(1)   # a failure after that (in the update): the others see this process end
                continue
            if command == SYNC:
                self._load_state(pickle.loads(bytes(self.handed_on[:int(self.control[SYNC_BYTES])])))
            elif command == CHECK:
                self.floats[1 + 3 * self.processes + k] = self._checksum()
            elif command == GATHER:
                for s, name in enumerate(self.optimizer.state_names):
                    for i in range(*self.owned[k]):
                        state = self.optimizer.state[name][i]
                        into = self.moments[s, self.offsets[i]:self.offsets[i + 1]]
                        into[...] = 0 if state is None else state.reshape(-1)
            threads._spin()["publish"](self.control, FIRST + self.processes + k, seen)

    def _wait(self, start, stop, value, idle=False):
        """Until control[start:stop] >= value, spinning, and between bursts making sure the other
        processes are alive (the parent: its children; a child: its parent, and not told to stop)."""
        at_least = threads._spin()["at_least"]
        since = time.monotonic()
        while not at_least(self.control, start, stop, value, WAIT_ROUNDS):
            if self.children:
                for j, pid in enumerate(self.children, start=1):
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        self.closed = True
                        raise RuntimeError(f"DataParallel: process {j} of {self.processes} ended "
                                           f"(wait status {status}) in the middle of a step")
            elif self.control[STOPPING] or os.getppid() != self.parent:
                os._exit(0)
            if idle and time.monotonic() - since > IDLE_SECONDS:
                time.sleep(DOZE_SECONDS)

    def _wait_for_done(self, ticket):
        if not self.closed and ticket:
            self._wait(FIRST + self.processes, FIRST + 2 * self.processes, ticket)
        if self.closed:
            raise RuntimeError("DataParallel: closed")

    # ---- the state handed on --------------------------------------------------------------------

    def _state(self):
        return {"params": [p.data for p in self.params], "optimizer": self.optimizer.state_dict(),
                "rng": rng.get_state()}

    def _load_state(self, state):
        for param, data in zip(self.params, state["params"]):
            param.data[...] = data
        self.optimizer.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])

    def _checksum(self):
        crc = 0
        for param in self.params:
            crc = zlib.crc32(np.ascontiguousarray(param.data).tobytes(), crc)
        return crc
