"""Training a book VAE: the loop, per-epoch validation, metrics, checkpoints, resume.

Reproducibility: with the same seed on the CPU the losses repeat bit for bit, and a run stopped
after epoch k (or by Ctrl-C mid-epoch, or during an evaluation) and resumed with the same
settings ends with exactly the weights and metrics of an uninterrupted run, because everything random comes from named generators saved in the
checkpoint: "init" (weights), "shuffle" (batch order), "sample" (ε), "dropout" (masks).
"""
import json
import math
import os
import signal
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import backend, checkpoint, data, optim, parallel, rng
from .models import get_preset
from .tensor import Tensor, detect_anomaly, no_grad


class TrainingError(Exception):
    pass


class Interrupted(TrainingError):
    """Ctrl-C: the message says what was saved and how to resume."""


@dataclass
class TrainConfig:
    model: str = "foster"
    epochs: int = 1
    batch_size: int = 0         # 0: the preset's
    lr: float = 0.0             # 0: the preset's
    lr_decay: float = 1.0       # step decay: lr = lr · decay ** floor(epoch / lr_step)
    lr_step: int = 1
    seed: int = 0
    device: str = "cpu"
    out: str = "runs/foster"
    dataset: str = "mnist"      # None when training on a folder of images
    data_dir: str = None
    images: str = None          # a folder of images (--images), as an absolute path
    images_fingerprint: str = None   # its listing's when the run began: resume refuses a changed folder
    limit_steps: int = 0        # 0: whole epochs
    processes: int = 0          # CPU: processes sharing each step's images (parallel.py); 0: chosen there
    book_exp_log_var: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def resolved(self):
        preset = get_preset(self.model)
        self.batch_size = self.batch_size or preset.batch_size
        self.lr = self.lr or preset.lr
        return self


def build(config):
    """(model, optimizer, loss function) for a config, initialised from its seed."""
    preset = get_preset(config.model)
    if config.book_exp_log_var and config.model != "chollet":
        raise ValueError("--book-exp-log-var applies to the chollet preset only")
    rng.manual_seed(config.seed)
    model = preset.build(book_exp_log_var=True) if config.book_exp_log_var else preset.build()
    model.to(config.device)
    optimizer = optim.make_optimizer(preset.optimizer, model.parameters(), config.lr)
    return model, optimizer, preset.loss


def to_tensor(images, device):
    return Tensor(images, device=None if device == "cpu" else device)


def evaluate(model, loss_fn, dataset, batch_size, seed, device):
    """Test-set loss with sampled z (as Keras reports it), its two terms, and the ELBO in nats
    per image: Σ_pixels log Bernoulli(x | x̂) − KL(q(z|x) ‖ p(z)). `dataset`: a data.Dataset."""
    from . import functional as F
    model.eval()
    eps_rng = np.random.default_rng([seed, 1_000_003])  # a stream of its own: training is untouched
    totals = np.zeros(4)
    with no_grad():
        for batch in dataset.batches(batch_size, shuffle=False):
            x = to_tensor(batch, device)
            n = x.shape[0]
            mu, log_var = model.encode(x)
            eps = eps_rng.standard_normal(mu.shape).astype(mu.dtype)
            recon = model.decode(model.sampling(mu, log_var, eps=backend.to_device(eps, device)))
            loss, rec, kl = loss_fn(x, recon, mu, log_var)
            bce = F.binary_cross_entropy(recon.reshape(n, -1), x.reshape(n, -1), reduction="sum")
            elbo = -(bce.item() + F.gaussian_kl(mu, log_var).sum().item())
            totals += np.array([loss.item(), rec.item(), kl.item(), elbo / n]) * n
    model.train()
    loss, rec, kl, elbo = totals / len(dataset)
    return {"test_loss": loss, "test_recon": rec, "test_kl": kl, "test_elbo_nats": elbo}


def _find_non_finite_op(model, loss_fn, x, rng_state):
    """Re-run the step's forward with the same random numbers, checking every op's output."""
    saved = rng.get_state()
    rng.set_state(rng_state)
    try:
        with detect_anomaly(), no_grad():
            loss_fn(x, *model(x))
    except FloatingPointError as exc:
        return str(exc)
    finally:
        rng.set_state(saved)
    return "no single op produced it (the overflow is in the loss's final sum)"


class Run:
    """A run folder: config.json, metrics.jsonl, checkpoint.npz, pictures."""

    def __init__(self, out):
        self.dir = Path(out)
        self.checkpoint = self.dir / "checkpoint.npz"
        self.metrics = self.dir / "metrics.jsonl"
        self.config = self.dir / "config.json"

    def read_metrics(self):
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def write_metrics(self, records):
        _write_atomically(self.metrics, "".join(json.dumps(r) + "\n" for r in records))

    def write_config(self, config):
        _write_atomically(self.config, json.dumps(asdict(config), indent=2) + "\n")

    def save(self, model, optimizer, config, epoch, step, epoch_state):
        """The checkpoint, and config.json beside it (so it always describes what the checkpoint holds)."""
        checkpoint.save(self.checkpoint, model.state_dict(), optimizer.state_dict(),
                        {"config": asdict(config), "epoch": epoch, "step": step,
                         "rng": rng.get_state(), "epoch_state": epoch_state})
        self.write_config(config)


def _write_atomically(path, text):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train(config, log=print):
    """Train per `config`; returns the list of per-epoch metric dicts.

    With config.extra["resume"], continue the run in config.out, after checking that `config`
    continues it exactly. Nothing in the run folder changes until a step has succeeded."""
    config.resolved()
    run = Run(config.out)
    resuming = bool(config.extra.get("resume"))
    if resuming:
        config.images_fingerprint = check_resume_settings(run, config).images_fingerprint
    elif run.checkpoint.exists():
        raise TrainingError(f"{run.checkpoint} exists: pass --resume to continue that run, "
                            "or choose another --out")
    model, optimizer, loss_fn = build(config)
    start_epoch, start_step, epoch_state = 0, 0, None
    if resuming:
        start_epoch, start_step, epoch_state = resume(run, config, model, optimizer)
    train_set, test_set = open_datasets(config, model.input_shape, log)
    metrics = [m for m in run.read_metrics() if m["epoch"] <= start_epoch]
    if not resuming:  # a new run folder; a resumed one is rewritten only by its next save
        run.dir.mkdir(parents=True, exist_ok=True)
        run.write_config(config)
        run.write_metrics(metrics)
    steps_per_epoch = len(train_set) // config.batch_size + (len(train_set) % config.batch_size > 0)
    if config.limit_steps:
        steps_per_epoch = min(steps_per_epoch, config.limit_steps)
    decay = f", ×{config.lr_decay:g} every {config.lr_step} epoch(s)" if config.lr_decay != 1 else ""
    processes = parallel.processes_for(config, model)
    shared = f" in {processes} processes" if processes > 1 else ""
    log(f"training {config.model} with {type(optimizer).__name__} lr {config.lr:g}{decay} on "
        f"{config.device}{shared}: {config.epochs} epoch(s) × {steps_per_epoch} steps of {config.batch_size}; "
        f"run folder {run.dir}")

    with CtrlC() as ctrl_c, _shared_steps(processes, model, optimizer, loss_fn, config) as parallel_steps:
        return _epochs(config, run, model, optimizer, loss_fn, train_set, test_set, metrics, start_epoch,
                       start_step, epoch_state, steps_per_epoch, ctrl_c, log, parallel_steps)


def _shared_steps(processes, model, optimizer, loss_fn, config):
    """A parallel.DataParallel taking the steps in `processes` processes (a context manager that
    ends them), or, for one, a context holding None."""
    if processes == 1:
        return nullcontext()
    return parallel.DataParallel(model, optimizer, loss_fn, config.batch_size, model.input_shape, processes)


def _epochs(config, run, model, optimizer, loss_fn, train_set, test_set, metrics, start_epoch,
            start_step, epoch_state, steps_per_epoch, ctrl_c, log, parallel_steps=None):
    """The epochs' loop (each step taken by parallel_steps where given). Each epoch: its steps, a
    checkpoint of the trained state, the test-set evaluation, the metrics record, the end-of-epoch
    checkpoint. Ctrl-C saves the state at the last step boundary (see CtrlC); the checkpoint's
    (epoch, step) says where to pick up."""
    schedule = optim.StepDecay(config.lr, config.lr_decay, config.lr_step)
    saved = (start_epoch, start_step) if config.extra.get("resume") else None  # what checkpoint.npz holds
    unsaved = False  # steps done since the last save

    def save(epoch, step, state):
        nonlocal saved, unsaved
        if parallel_steps is not None:
            parallel_steps.gather()   # the optimizer's state of the parameters other processes update
        run.save(model, optimizer, config, epoch, step, state)
        saved, unsaved = (epoch, step), False

    bar, evaluating = None, False
    try:  # around the whole loop: Ctrl-C can land anywhere, even between two epochs
        for epoch in range(start_epoch, config.epochs):
            done = start_step
            optimizer.lr = schedule(epoch)
            if epoch_state is None:  # a new epoch: remember how its shuffle began, for mid-epoch resume
                epoch_state = {"shuffle": rng.generator("shuffle").bit_generator.state,
                               "sums": [0.0, 0.0, 0.0], "images": 0, "seconds": 0.0}
            rng.generator("shuffle").bit_generator.state = epoch_state["shuffle"]
            batches = train_set.batches(config.batch_size, shuffle=True,
                                        generator=rng.generator("shuffle"), skip=start_step)
            bar = _progress(config, epoch, steps_per_epoch, start_step)
            t0 = time.perf_counter() - epoch_state["seconds"]
            for step, batch in enumerate(batches, start=start_step):
                if step >= steps_per_epoch:
                    break
                if ctrl_c.pressed:
                    ctrl_c.stop()
                x = to_tensor(batch, config.device)
                with ctrl_c.deferring():  # a step happens whole or not at all
                    value, rec, kl = _step(model, optimizer, loss_fn, x, run, epoch, step, parallel_steps)
                    n = x.shape[0]
                    epoch_state["sums"] = [a + b * n for a, b in zip(epoch_state["sums"], (value, rec, kl))]
                    epoch_state["images"] += n
                    done, unsaved = step + 1, True
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.4g}", recon=f"{rec:.4g}", kl=f"{kl:.3g}")
            if bar is not None:
                bar.close()
            epoch_state["seconds"] = time.perf_counter() - t0
            if unsaved:
                with ctrl_c.deferring():  # the trained state first: an interrupted evaluation loses nothing
                    save(epoch, done, epoch_state)
            if ctrl_c.pressed:
                ctrl_c.stop()
            evaluating = True
            with ctrl_c.at_once(), np.errstate(all="ignore"):
                test = evaluate(model, loss_fn, test_set, 500, config.seed + epoch, config.device)
            evaluating = False
            seconds = epoch_state["seconds"]   # the training steps' time, evaluation not counted
            images = max(epoch_state["images"], 1)
            sums = epoch_state["sums"]
            record = {"epoch": epoch + 1, "lr": optimizer.lr, "train_loss": sums[0] / images,
                      "train_recon": sums[1] / images, "train_kl": sums[2] / images, **test,
                      "seconds": seconds, "images_per_s": epoch_state["images"] / seconds}
            with ctrl_c.deferring():
                metrics.append(record)
                run.write_metrics(metrics)
                save(epoch + 1, 0, None)
            epoch_state, start_step = None, 0
            log(f"epoch {epoch + 1}/{config.epochs}: train loss {record['train_loss']:.4f}  test loss "
                f"{record['test_loss']:.4f} (recon {record['test_recon']:.4f}, kl {record['test_kl']:.4f}; "
                f"ELBO {record['test_elbo_nats']:.1f} nats)  {record['images_per_s']:.0f} images/s")
    except KeyboardInterrupt:
        if unsaved:
            epoch_state["seconds"] = time.perf_counter() - t0
            save(epoch, done, epoch_state)
        raise Interrupted(_interrupted(run, saved, evaluating)) from None
    finally:
        if bar is not None:
            bar.close()  # a second close does nothing
    return metrics


def open_datasets(config, image_shape, log=print):
    """The run's (train, test) data sets at the model's `image_shape`. For a folder of images: the
    folder must be the one the run began with (its listing's fingerprint, recorded in the config
    of a new run), and its cache is built here, before the first step, if need be."""
    train_set = data.open_dataset(config, "train", image_shape)
    test_set = data.open_dataset(config, "test", image_shape, quiet=True)
    if config.images:
        fingerprint = train_set.listing.fingerprint
        if config.images_fingerprint not in (None, fingerprint):
            raise TrainingError(f"--resume continues a run exactly, but the folder --images "
                                f"{config.images} has changed since the run began (then: "
                                f"{config.images_fingerprint[:40]}..., now: {fingerprint[:40]}...): "
                                "give another --out to start a new run on it")
        config.images_fingerprint = fingerprint
        built = train_set.prepare(config.progress)
        if built:
            log(built)
    return train_set, test_set


def _step(model, optimizer, loss_fn, x, run, epoch, step, parallel_steps=None):
    """One training step (by parallel_steps where given); -> (loss, recon, kl) as floats. A
    non-finite loss stops the run before the update, naming the op that produced it (NumPy's own
    overflow warnings are silenced: this one line says it)."""
    rng_before = rng.get_state()
    with np.errstate(all="ignore"):
        if parallel_steps is not None:
            value, rec, kl = parallel_steps.step(x)       # no update where the loss is not finite
        else:
            loss, rec, kl = loss_fn(x, *model(x))
            value = loss.item()
        if not math.isfinite(value):
            culprit = _find_non_finite_op(model, loss_fn, x, rng_before)
            kept = (f"the last good checkpoint {run.checkpoint} is kept" if run.checkpoint.exists()
                    else "no checkpoint had been written yet")
            raise TrainingError(f"loss became {value} at epoch {epoch + 1}, step {step + 1}: "
                                f"{culprit}; {kept}")
        if parallel_steps is not None:
            return value, rec, kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return value, rec.item(), kl.item()


def _interrupted(run, saved, evaluating):
    """The one line an interrupted run ends with. The checkpoint holds the state it stopped in
    (just saved, or unchanged since), at `saved` = (epoch, step), or there is none."""
    if saved is None:
        return "interrupted before the first step ended: nothing saved; run the same command again"
    epoch, step = saved
    if evaluating:
        where = f"while evaluating epoch {epoch + 1}: saved its trained state in {run.checkpoint}"
    elif step == 0:
        where = f"{f'after epoch {epoch}' if epoch else 'before the first step'}: saved {run.checkpoint}"
    else:
        where = f"at epoch {epoch + 1}, step {step}: saved {run.checkpoint}"
    return f"interrupted {where}; continue with the same command plus --resume"


class CtrlC:
    """Ctrl-C during training, so that a checkpoint only ever holds the state at a step boundary.

    The first press raises a flag that the loop checks before each step. A second one stops at
    once, except inside `with ctrl_c.deferring():` (a step, a save), where it waits for the block's
    end. Inside `with ctrl_c.at_once():` (the evaluation, whose trained state is already saved) the
    first press stops at once. Once stopping, further presses are ignored, so the last save finishes.
    """

    def __enter__(self):
        self.pressed, self._second, self._stopping = False, False, False
        self._deferring, self._at_once = 0, False
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self._stopping:
            return
        if self._deferring:
            self._second = self.pressed
            self.pressed = True
        elif self.pressed or self._at_once:
            self.stop()
        else:
            self.pressed = True

    def stop(self):
        self._stopping = True
        raise KeyboardInterrupt

    @contextmanager
    def deferring(self):
        """A block no press may cut: a second press stops the run once it ends."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if self._second and not self._deferring:
            self.stop()

    @contextmanager
    def at_once(self):
        """A block any press may cut, as nothing in it needs saving."""
        self._at_once = True
        try:
            yield
        finally:
            self._at_once = False

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# What --resume may change: none of these alters what the next step computes. (The images folder
# may move: its listing's fingerprint, which open_datasets checks, may not change.)
RESUME_MAY_CHANGE = {"epochs", "progress", "data_dir", "images", "device", "processes", "out", "extra"}
RECORDED = {"images_fingerprint"}   # not options: what the run found, taken from its checkpoint


def check_resume_settings(run, config):
    """Refuse, in one line naming the options, settings that would not continue the saved run
    exactly (another batch size skips images, another data set switches mid-epoch, ...).
    Returns the saved run's config."""
    _, _, meta, saved = load_checkpoint(run.checkpoint)
    path, epochs_done = run.checkpoint, meta["epoch"]
    changed = [f"--{f.name.replace('_', '-')} is {_shown(getattr(config, f.name))} here but "
               f"{_shown(getattr(saved, f.name))} in {path}"
               for f in fields(TrainConfig)
               if f.name not in RESUME_MAY_CHANGE | RECORDED
               and getattr(config, f.name) != getattr(saved, f.name)]
    if bool(config.images) != bool(saved.images):   # the folder may move, but not come or go
        changed.append(f"--images is {_shown(config.images)} here but {_shown(saved.images)} in {path}")
    if config.epochs < epochs_done:
        changed.append(f"--epochs {config.epochs} is fewer than the {epochs_done} the run has done")
    if changed:
        raise TrainingError(f"--resume continues a run exactly, but {'; '.join(changed)}: drop "
                            "those options to resume, or give another --out to start a new run")
    return saved


def _shown(value):
    """A setting as the command line writes it: flags on/off, the rest as they are."""
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def load_checkpoint(path):
    """(model_state, optimizer_state, meta, config) of a checkpoint file, checked: a missing,
    damaged, incomplete or newer file is a CheckpointError naming it. Resume, sample and plot
    all read checkpoints through here."""
    model_state, optimizer_state, meta = checkpoint.load(path)
    saved = meta["config"]
    if not isinstance(saved, dict) or "model" not in saved:
        raise checkpoint.CheckpointError(f"{path} is incomplete: its config lacks 'model'")
    unknown = sorted(set(saved) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise checkpoint.newer_format(path, meta.get("format", 0), f", with the setting "
                                      f"{unknown[0]!r} unknown here")
    if meta["step"] and not isinstance(meta.get("epoch_state"), dict):
        raise checkpoint.CheckpointError(f"{path} is incomplete: it stopped mid-epoch but lacks "
                                         "its epoch_state")
    return model_state, optimizer_state, meta, TrainConfig(**saved)


def resume(run, config, model, optimizer):
    """Load the run's checkpoint into model and optimizer (check_resume_settings has found that
    `config` continues it exactly); returns (epoch, step, epoch_state)."""
    model_state, optimizer_state, meta, _ = load_checkpoint(run.checkpoint)
    try:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"{run.checkpoint} is from another architecture: {exc}") from None
    rng.set_state(meta["rng"])
    return meta["epoch"], meta["step"], meta.get("epoch_state")


def load_run_model(path, device="cpu"):
    """(model, config, meta) from a checkpoint file or a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    model_state, _, meta, config = load_checkpoint(path)
    config.device = device
    model, _, loss_fn = build(config)
    try:
        model.load_state_dict(model_state)
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"{path} does not fit the '{config.model}' model: {exc}") from None
    return model, config, meta


def _progress(config, epoch, total, initial):
    if not config.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="step", dynamic_ncols=True, leave=True)
