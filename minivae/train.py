"""Training a book VAE: the loop, per-epoch validation, metrics, checkpoints, resume.

Reproducibility: with the same seed on the CPU the losses repeat bit for bit, and a run stopped
after epoch k (or by Ctrl-C mid-epoch) and resumed ends with exactly the weights of an
uninterrupted run, because everything random comes from named generators saved in the
checkpoint: "init" (weights), "shuffle" (batch order), "sample" (ε), "dropout" (masks).
"""
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import backend, checkpoint, data, optim, rng
from .models import get_preset
from .tensor import Tensor, detect_anomaly, no_grad


class TrainingError(Exception):
    pass


class Interrupted(TrainingError):
    """Ctrl-C: the state was saved and the run can be resumed."""


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
    dataset: str = "mnist"
    data_dir: str = None
    limit_steps: int = 0        # 0: whole epochs
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
    rng.manual_seed(config.seed)
    model = preset.build(book_exp_log_var=True) if config.book_exp_log_var else preset.build()
    if config.book_exp_log_var and config.model != "chollet":
        raise ValueError("--book-exp-log-var applies to the chollet preset only")
    model.to(config.device)
    optimizer = optim.make_optimizer(preset.optimizer, model.parameters(), config.lr)
    return model, optimizer, preset.loss


def to_tensor(images, device):
    return Tensor(images, device=None if device == "cpu" else device)


def evaluate(model, loss_fn, images, batch_size, seed, device):
    """Test-set loss with sampled z (as Keras reports it), its two terms, and the ELBO in nats
    per image: Σ_pixels log Bernoulli(x | x̂) − KL(q(z|x) ‖ p(z))."""
    from . import functional as F
    model.eval()
    eps_rng = np.random.default_rng([seed, 1_000_003])  # a stream of its own: training is untouched
    totals = np.zeros(4)
    with no_grad():
        for start in range(0, len(images), batch_size):
            x = to_tensor(images[start:start + batch_size], device)
            n = x.shape[0]
            mu, log_var = model.encode(x)
            eps = eps_rng.standard_normal(mu.shape).astype(mu.dtype)
            recon = model.decode(model.sampling(mu, log_var, eps=backend.to_device(eps, device)))
            loss, rec, kl = loss_fn(x, recon, mu, log_var)
            bce = F.binary_cross_entropy(recon.reshape(n, -1), x.reshape(n, -1), reduction="sum")
            elbo = -(bce.item() + F.gaussian_kl(mu, log_var).sum().item())
            totals += np.array([loss.item(), rec.item(), kl.item(), elbo / n]) * n
    model.train()
    loss, rec, kl, elbo = totals / len(images)
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

    def read_metrics(self):
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def write_metrics(self, records):
        tmp = self.metrics.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        os.replace(tmp, self.metrics)

    def save(self, model, optimizer, config, epoch, step, epoch_state):
        checkpoint.save(self.checkpoint, model.state_dict(), optimizer.state_dict(),
                        {"config": asdict(config), "epoch": epoch, "step": step,
                         "rng": rng.get_state(), "epoch_state": epoch_state})


def train(config, log=print):
    """Train per `config`; returns the list of per-epoch metric dicts."""
    config.resolved()
    run = Run(config.out)
    preset = get_preset(config.model)
    train_x, _ = data.load_mnist("train", config.dataset, config.data_dir)
    test_x, _ = data.load_mnist("test", config.dataset, config.data_dir)

    model, optimizer, loss_fn = build(config)
    start_epoch, start_step, epoch_state = 0, 0, None
    if config.extra.get("resume"):
        start_epoch, start_step, epoch_state = resume(run, config, model, optimizer)
    elif run.checkpoint.exists():
        raise TrainingError(f"{run.checkpoint} exists: pass --resume to continue that run, "
                            "or choose another --out")
    run.dir.mkdir(parents=True, exist_ok=True)
    (run.dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    metrics = [m for m in run.read_metrics() if m["epoch"] <= start_epoch]
    run.write_metrics(metrics)
    steps_per_epoch = len(train_x) // config.batch_size + (len(train_x) % config.batch_size > 0)
    if config.limit_steps:
        steps_per_epoch = min(steps_per_epoch, config.limit_steps)
    log(f"training {config.model} ({preset.description}) on {config.device}: "
        f"{config.epochs} epoch(s) × {steps_per_epoch} steps of {config.batch_size}; run folder {run.dir}")

    with CtrlC() as ctrl_c:
        return _epochs(config, run, model, optimizer, loss_fn, train_x, test_x, metrics, start_epoch,
                       start_step, epoch_state, steps_per_epoch, ctrl_c, log)


def _epochs(config, run, model, optimizer, loss_fn, train_x, test_x, metrics, start_epoch,
            start_step, epoch_state, steps_per_epoch, ctrl_c, log):
    schedule = optim.StepDecay(config.lr, config.lr_decay, config.lr_step)
    for epoch in range(start_epoch, config.epochs):
        optimizer.lr = schedule(epoch)
        if epoch_state is None:  # a new epoch: remember how its shuffle began, for mid-epoch resume
            epoch_state = {"shuffle": rng.generator("shuffle").bit_generator.state,
                           "sums": [0.0, 0.0, 0.0], "images": 0, "seconds": 0.0}
        rng.generator("shuffle").bit_generator.state = epoch_state["shuffle"]
        order = data.batches(np.arange(len(train_x)), config.batch_size, shuffle=True,
                             generator=rng.generator("shuffle"))
        bar = _progress(config, epoch, steps_per_epoch, start_step)
        t0, completed = time.perf_counter() - epoch_state["seconds"], start_step
        try:
            for step, index in enumerate(order):
                if step >= steps_per_epoch:
                    break
                if step < start_step:
                    continue
                if ctrl_c.pressed:
                    raise KeyboardInterrupt
                x = to_tensor(train_x[index], config.device)
                rng_before = rng.get_state()
                loss, rec, kl = loss_fn(x, *model(x))
                value = loss.item()
                if not math.isfinite(value):
                    culprit = _find_non_finite_op(model, loss_fn, x, rng_before)
                    kept = (f"the last good checkpoint {run.checkpoint} is kept" if run.checkpoint.exists()
                            else "no checkpoint had been written yet")
                    raise TrainingError(f"loss became {value} at epoch {epoch + 1}, step {step + 1}: "
                                        f"{culprit}; {kept}")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                n = x.shape[0]
                sums = epoch_state["sums"]
                sums[0] += value * n
                sums[1] += rec.item() * n
                sums[2] += kl.item() * n
                epoch_state["images"] += n
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value:.4g}", recon=f"{rec.item():.4g}", kl=f"{kl.item():.3g}")
                completed = step + 1
        except KeyboardInterrupt:  # raised only between steps, so the saved state is consistent
            epoch_state["seconds"] = time.perf_counter() - t0
            run.save(model, optimizer, config, epoch, completed, epoch_state)
            raise Interrupted(f"interrupted at epoch {epoch + 1}, step {completed}: saved "
                                f"{run.checkpoint}; continue with the same command plus --resume") from None
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        images = max(epoch_state["images"], 1)
        record = {"epoch": epoch + 1, "lr": optimizer.lr,
                  "train_loss": epoch_state["sums"][0] / images,
                  "train_recon": epoch_state["sums"][1] / images,
                  "train_kl": epoch_state["sums"][2] / images,
                  **evaluate(model, loss_fn, test_x, 500, config.seed + epoch, config.device),
                  "seconds": seconds, "images_per_s": epoch_state["images"] / seconds}
        metrics.append(record)
        run.write_metrics(metrics)
        epoch_state, start_step = None, 0
        run.save(model, optimizer, config, epoch + 1, 0, None)
        log(f"epoch {epoch + 1}/{config.epochs}: train loss {record['train_loss']:.4f}  test loss "
            f"{record['test_loss']:.4f} (recon {record['test_recon']:.4f}, kl {record['test_kl']:.4f}; "
            f"ELBO {record['test_elbo_nats']:.1f} nats)  {record['images_per_s']:.0f} images/s")
    return metrics


class CtrlC:
    """While active, the first Ctrl-C only raises a flag that the loop checks between steps
    (so a checkpoint is never taken halfway through an update); a second one interrupts at once."""

    def __enter__(self):
        self.pressed = False
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def resume(run, config, model, optimizer):
    """Load the run's checkpoint into model and optimizer; returns (epoch, step, epoch_state)."""
    model_state, optimizer_state, meta = checkpoint.load(run.checkpoint)
    saved = meta["config"]
    if saved["model"] != config.model:
        raise checkpoint.CheckpointError(
            f"{run.checkpoint} holds a '{saved['model']}' model, not '{config.model}'")
    try:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"{run.checkpoint} is from another architecture: {exc}") from None
    rng.set_state(meta["rng"])
    return meta["epoch"], meta["step"], meta["epoch_state"]


def load_run_model(path, device="cpu"):
    """(model, config, meta) from a checkpoint file or a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    model_state, _, meta = checkpoint.load(path)
    config = TrainConfig(**meta["config"])
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
