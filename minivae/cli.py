"""`python -m minivae COMMAND` (or `minivae COMMAND`): train, summary, data, plot, sample, bench.

Errors a user can cause (bad data, a checkpoint that does not fit, an unknown preset, no GPU)
print one line on stderr and exit non-zero, without a traceback (MINIVAE_DEBUG=1 shows it).
"""
import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from . import backend, checkpoint, data
from .models import PRESETS
from .train import Interrupted, TrainingError

USER_ERRORS = (data.DataError, checkpoint.CheckpointError, TrainingError, ValueError, RuntimeError, OSError)


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "kernels", None):
        backend.use_kernels(args.kernels)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("minivae: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if os.environ.get("MINIVAE_DEBUG"):
            raise
        print(f"minivae: {'' if isinstance(exc, Interrupted) else 'error: '}{exc}", file=sys.stderr)
        return 130 if isinstance(exc, Interrupted) else 1


def cmd_train(args):
    from . import pictures, train
    explicit = {k: v for k, v in vars(args).items() if v is not None and k in _config_fields()}
    if args.resume:
        meta = checkpoint.load(Path(args.out or f"runs/{args.model or 'foster'}") / "checkpoint.npz")[2]
        config = train.TrainConfig(**{**meta["config"], **explicit})
        if args.model and args.model != meta["config"]["model"]:
            raise checkpoint.CheckpointError(f"the checkpoint in {config.out} holds a "
                                             f"'{meta['config']['model']}' model, not '{args.model}'")
    else:
        explicit.setdefault("out", f"runs/{explicit.get('model', 'foster')}")
        config = train.TrainConfig(**explicit)
    config.extra = {"resume": args.resume}
    if config.device != "cpu":
        backend.require_cuda()
    metrics = train.train(config)
    model, _, _ = train.load_run_model(config.out, config.device)
    test_x, test_y = data.load_mnist("test", config.dataset, config.data_dir, quiet=True)
    paths = pictures.write_pictures(model, test_x, test_y, metrics, config.out, config.device, config.seed)
    print(f"pictures: {', '.join(str(p) for p in paths)}")


def cmd_summary(args):
    from .models import get_preset
    model = get_preset(args.model).build()
    model.summary(model.input_shape)


def cmd_data(args):
    print(data.describe(args.dataset, args.data_dir))


def cmd_plot(args):
    from . import pictures, train
    model, config, _ = train.load_run_model(args.run, args.device)
    run = train.Run(args.run)
    test_x, test_y = data.load_mnist("test", config.dataset, config.data_dir, quiet=True)
    paths = pictures.write_pictures(model, test_x, test_y, run.read_metrics(), args.run, args.device)
    print("\n".join(str(p) for p in paths))


def cmd_sample(args):
    import numpy as np

    from . import plots, train
    from .tensor import Tensor, no_grad
    model, _, _ = train.load_run_model(args.checkpoint, args.device)
    model.eval()
    z = np.random.default_rng(args.seed).standard_normal((args.n, model.z_dim)).astype(np.float32)
    with no_grad():
        images = backend.to_numpy(model.decode(Tensor(z, device=_gpu_or_none(args.device))).data)
    print(plots.save_samples(images, args.out))


def cmd_bench(args):
    from . import bench
    result = bench.run(args.model, args.batch_size, args.steps, args.device, args.data_dir,
                       synthetic=args.synthetic)
    print(json.dumps(result))


def cmd_profile(args):
    from . import profile
    if args.device != "cpu":
        backend.require_cuda()
    report = profile.run(args.model, args.device, args.batch_size or 0, args.steps, args.warmup,
                         args.data_dir, synthetic=args.synthetic, peak_size=args.peak_size)
    print(profile.format_report(report))


def _gpu_or_none(device):
    return None if device == "cpu" else device


def _config_fields():
    from .train import TrainConfig
    return {f.name for f in fields(TrainConfig)}


def _kernels_option(p):
    p.add_argument("--kernels", choices=["auto", "never"],
                   help="on a GPU: our CUDA kernels (auto, the default) or CuPy's own (never)")


def _parser():
    parser = argparse.ArgumentParser(prog="minivae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    models = sorted(PRESETS)

    p = sub.add_parser("train", help="train a book VAE on MNIST")
    p.add_argument("--model", help=f"preset: {' or '.join(models)} (default foster)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="default: the preset's (foster 32, chollet 16)")
    p.add_argument("--lr", type=float, help="default: the preset's (foster 5e-4, chollet 1e-3)")
    p.add_argument("--lr-decay", type=float, help="step decay factor per --lr-step epochs (default 1)")
    p.add_argument("--lr-step", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu (default) or cuda")
    _kernels_option(p)
    p.add_argument("--out", help="run folder (default runs/MODEL)")
    p.add_argument("--dataset", choices=["mnist", "fashion"])
    p.add_argument("--data-dir", help="folder holding the four IDX files")
    p.add_argument("--limit-steps", type=int, help="end each epoch after N steps (quick runs)")
    p.add_argument("--book-exp-log-var", action="store_true", default=None,
                   help="chollet: sample with exp(log_var) as the book's code did")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("summary", help="print a model's layers and parameter count")
    p.add_argument("--model", default="foster", help=" or ".join(models))
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("data", help="fetch and verify the data set, and say where it is")
    p.add_argument("--dataset", choices=["mnist", "fashion"], default="mnist")
    p.add_argument("--data-dir")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser("plot", help="redraw a run's pictures from its checkpoint")
    p.add_argument("run", help="run folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=cmd_plot)

    p = sub.add_parser("sample", help="decode new digits from the prior")
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples.png")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("bench", help="time training steps; prints a JSON line last")
    p.add_argument("--model", default="foster", help=" or ".join(models))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic", action="store_true", help="random images instead of MNIST")
    _kernels_option(p)
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("profile", help="time each op of one training step, forward and backward")
    p.add_argument("--model", default="foster", choices=models)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--batch-size", type=int, help="default: the preset's (foster 32, chollet 16)")
    p.add_argument("--steps", type=int, default=10, help="profiled steps, of which the medians are shown")
    p.add_argument("--warmup", type=int, default=3, help="steps run first and not timed")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic", action="store_true", help="random images instead of MNIST")
    p.add_argument("--peak-size", type=int, default=2048, help="side of the matrix product that measures the peak")
    _kernels_option(p)
    p.set_defaults(run=cmd_profile)
    return parser
