"""`python -m minivae COMMAND` (or `minivae COMMAND`): train, summary, data, plot, sample, explore,
morph, arithmetic, bench, profile.

Errors a user can cause (bad data, a checkpoint that does not fit, an unknown preset, no GPU)
print one line on stderr and exit non-zero, without a traceback (MINIVAE_DEBUG=1 shows it).
Every option is checked before anything is printed or written: the values each alone while the
command line is parsed, then what depends on several of them or on the data (a batch larger than
the data set, a step that cannot fit in memory).
"""
import argparse
import json
import math
import os
import signal
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from . import backend, checkpoint, data
from .models import PRESETS, get_preset
from .train import Interrupted, TrainingError

USER_ERRORS = (data.DataError, checkpoint.CheckpointError, TrainingError, ValueError, RuntimeError, OSError)
PLOT_EXTRA = "pip install 'minivae[plot]'"


def main(argv=None):
    args = _parser().parse_args(argv)   # a usage error exits here (status 2), in one line
    if getattr(args, "kernels", None):
        backend.use_kernels(args.kernels)
    try:
        if getattr(args, "device", None) not in (None, "cpu"):
            backend.require_cuda()
        return args.run(args) or 0
    except (KeyboardInterrupt, Interrupted) as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # on the way out: one more Ctrl-C must not raise
        print(f"minivae: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if os.environ.get("MINIVAE_DEBUG"):
            raise
        print(f"minivae: error: {exc}", file=sys.stderr)
        return 1


def cmd_train(args):
    from . import train
    _check_model(args.model)
    _check_out_folder(args.out)
    explicit = {k: v for k, v in vars(args).items() if v is not None and k in _config_fields()}
    if args.images:   # the run's config names the folder wherever the run is resumed from
        explicit["images"] = str(Path(args.images).resolve())
    if args.resume:
        # the saved run's settings, with those given here on top; any that would not continue
        # the run exactly are refused before anything is written
        run = train.Run(args.out or f"runs/{args.model or 'foster'}")
        config = replace(train.load_checkpoint(run.checkpoint)[3], **explicit)
        train.check_resume_settings(run, config)   # before the data and memory checks below
    else:
        explicit.setdefault("out", f"runs/{explicit.get('model', 'foster')}")
        if args.images:
            explicit["dataset"] = None
        config = train.TrainConfig(**explicit)
    config.extra = {"resume": args.resume}
    if config.images and (args.dataset or args.data_dir):
        raise ValueError("--images DIR trains on a folder of images, --dataset and --data-dir on "
                         "MNIST's files: give one or the other")
    if config.book_exp_log_var and config.model != "chollet":
        raise ValueError(f"--book-exp-log-var applies to --model chollet only, not {config.model}")
    batch_size = config.batch_size or get_preset(config.model).batch_size
    if config.images:   # read a batch at a time: the data set takes no room in memory
        train_set = data.open_dataset(config, "train")
        sizes, in_memory, source = {"train": len(train_set)}, False, train_set.description
    else:
        _check_model_takes(config.model, data.DATASETS[config.dataset], "train it on a folder of "
                           "images with --images DIR")
        folder, sizes = _data_folder(config.dataset, config.data_dir)
        in_memory, source = True, f"{data.DATASETS[config.dataset]} from {folder}"
    _check_batch_fits(config.model, batch_size, config.device, sizes, in_memory)
    metrics = train.train(config, log=_first_saying(f"data: {source}"))
    try:
        from . import pictures
    except ImportError:   # matplotlib is an optional extra: the run itself is complete
        print(f"minivae: no pictures: they need matplotlib ({PLOT_EXTRA}); the checkpoint and "
              f"metrics are in {config.out}", file=sys.stderr)
        return 0
    model, _, _ = train.load_run_model(config.out, config.device)
    test_x, test_y = _pictures_test_set(config)
    paths = pictures.write_pictures(model, test_x, test_y, metrics, config.out, config.device, config.seed,
                                    config.dataset)
    print(f"pictures: {', '.join(str(p) for p in paths)}")


def cmd_summary(args):
    _check_model(args.model)
    model = get_preset(args.model).build()
    model.summary(model.input_shape)


def cmd_data(args):
    print(data.describe(args.dataset, args.data_dir))


def cmd_plot(args):
    from . import train
    pictures = _needs_matplotlib("pictures")
    model, config, _ = train.load_run_model(args.run_dir, args.device)
    run = train.Run(args.run_dir)
    test_x, test_y = _pictures_test_set(config)
    paths = pictures.write_pictures(model, test_x, test_y, run.read_metrics(), args.run_dir, args.device,
                                    config.seed, config.dataset)
    print("\n".join(str(p) for p in paths))


PICTURE_IMAGES = 2000   # a folder's test images the pictures encode, at most (MNIST's: all 10,000)


def _pictures_test_set(config):
    """The run's test set for its pictures: MNIST's whole test set, or a folder's first
    PICTURE_IMAGES test images (its whole test set could be gigabytes)."""
    return _run_test_set(config, PICTURE_IMAGES if getattr(config, "images", None) else 0)


def cmd_sample(args):
    from . import train
    from .tensor import Tensor, no_grad
    plots = _needs_matplotlib("plots")
    _check_picture_file(args.out)
    model, _, _ = train.load_run_model(args.checkpoint, args.device)
    model.eval()
    z = np.random.default_rng(args.seed).standard_normal((args.n, model.z_dim)).astype(np.float32)
    with no_grad():
        images = backend.to_numpy(model.decode(Tensor(z, device=_gpu_or_none(args.device))).data)
    print(plots.save_samples(images, args.out))


def cmd_morph(args):
    from . import train
    latent_commands = _needs_matplotlib("latent_commands")
    _check_picture_file(args.out)
    model, config, _ = train.load_run_model(args.run_dir, args.device)
    print(latent_commands.morph(model, config, args.start, args.end, args.steps, args.out, args.device))


def cmd_arithmetic(args):
    from . import train
    latent_commands = _needs_matplotlib("latent_commands")
    out = args.out or f"arithmetic_{args.attribute}.png"
    _check_picture_file(out)
    model, config, _ = train.load_run_model(args.run_dir, args.device)
    print(latent_commands.arithmetic(model, config, args.run_dir, args.attribute, args.attributes, args.n,
                                     args.strengths, args.sample, args.seed, out, args.device))


def cmd_explore(args):
    from . import train
    explore = _needs_matplotlib("explore")
    if args.save is not None:
        if args.at is None:
            raise ValueError("--save writes the figure for one point: give it with --at Z0,Z1")
        _check_picture_file(args.save, "--save")
    run = train.Run(args.run_dir)
    if run.config.is_file() and not run.checkpoint.exists():
        raise ValueError(f"{run.checkpoint}: no checkpoint yet (a run writes its first at the end of its "
                         "first epoch)")
    model, config, meta = train.load_run_model(args.run_dir, args.device)
    images, labels = _run_test_set(config, args.limit)
    epochs = f"{meta['epoch']} epoch{'s' * (meta['epoch'] != 1)}"
    trained = f"{epochs} and {meta['step']} steps" if meta["step"] else epochs   # a Ctrl-C'd run: mid-epoch
    path = explore.run(model, images, labels, what=data.WHAT.get(config.dataset, "image"),
                       class_names=data.CLASS_NAMES.get(config.dataset),
                       title=f"{args.run_dir}: {config.model} after {trained}", at=args.at, save=args.save,
                       axes=args.axes, held=args.hold, neighbours=args.neighbours, device=args.device,
                       progress=args.progress)
    if path:
        print(path)


def _run_test_set(config, limit=0):
    """A run's first `limit` (0: all) test images (N, C, H, W) in [0, 1] and their labels (N,), or
    None for a data set without classes (a folder of images)."""
    test_set = data.open_dataset(config, "test", quiet=True)
    n = min(limit, len(test_set)) if limit else len(test_set)
    return test_set.images(np.arange(n)), None if test_set.labels is None else test_set.labels[:n]


def cmd_bench(args):
    from . import bench
    batch_size = _timed_batch_size(args)
    result = bench.run(args.model, batch_size, args.steps, args.device, args.data_dir,
                       synthetic=args.synthetic, processes=args.processes)
    print(json.dumps(result))


def _timed_batch_size(args):
    """bench and profile: the batch size they time, checked against the data and memory."""
    _check_model(args.model)
    batch_size = args.batch_size or get_preset(args.model).batch_size
    if args.synthetic:
        sizes = {"train": batch_size * 8}   # bench's own random images
    else:
        _check_model_takes(args.model, "MNIST", "time it on random images with --synthetic")
        sizes = _data_folder("mnist", args.data_dir)[1]
        del sizes["test"]                   # bench reads the training images only
    _check_batch_fits(args.model, batch_size, args.device, sizes)
    return batch_size


def cmd_profile(args):
    from . import profile
    batch_size = _timed_batch_size(args)
    report = profile.run(args.model, args.device, batch_size, args.steps, args.warmup,
                         args.data_dir, synthetic=args.synthetic, peak_size=args.peak_size,
                         processes=args.processes)
    print(profile.format_report(report))


def _first_saying(line):
    """A log function for train.train that prints `line` before its first line: so it comes
    after train's own checks (an existing run), which print nothing when they refuse."""
    pending = [line]

    def log(text):
        while pending:
            print(pending.pop())
        print(text)
    return log


# ---- checks that need more than one option, the file system or the data ----------------------

def _check_out_folder(out):
    """--out names a run folder: it may exist, but neither it nor a folder above it is a file."""
    if out is None:
        return
    for path in (Path(out), *Path(out).parents):
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"--out {out}: {path} is a file; --out must be a folder (the run folder)")
            return


def _check_picture_file(out, option="--out"):
    """`option` names a picture: a file name whose suffix matplotlib can write (none: .png)."""
    from matplotlib.figure import Figure
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"{option} {out} is a folder: give a file name such as samples.png")
    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise ValueError(f"{option} {out}: matplotlib cannot write .{path.suffix[1:]} files; "
                         f"use .png (or one of {', '.join(sorted(formats))})")
    _check_out_folder(path.parent)


def _data_folder(dataset, data_dir):
    """The folder the data set is read from (fetched first if need be), and how many images each
    split holds there (read from the IDX headers, so nothing is loaded yet)."""
    folder = data.find_or_fetch(dataset, data_dir)
    sizes = {split: data.idx_shape(folder / images)[0] for split, (images, _) in data.SPLITS.items()}
    return folder, sizes


MNIST_SHAPE = (1, 28, 28)


def _check_model_takes(model_name, dataset_name, instead):
    """A preset built for other images than MNIST's (foster-faces: 3×128×128) cannot read it;
    `instead` says what to do."""
    shape = data.model_input_shape(model_name)
    if shape != MNIST_SHAPE:
        raise ValueError(f"--model {model_name} takes {_shape_text(shape)} images, but {dataset_name}'s "
                         f"are {_shape_text(MNIST_SHAPE)}: {instead}")


def _shape_text(shape):
    """(C, H, W) as people write it: 3×128×128."""
    return "×".join(str(n) for n in shape)


def _check_batch_fits(model_name, batch_size, device, sizes, in_memory=True):
    """Refuse a batch larger than the training set, or one whose step cannot fit in memory
    (see minivae.memory): better now, with both figures, than killed minutes later. `sizes`:
    the images of each split; `in_memory`: whether they are all held in memory (MNIST) or read a
    batch at a time (a folder of images)."""
    from . import memory, train
    if batch_size > sizes["train"]:
        raise ValueError(f"--batch-size {batch_size} is larger than the data set "
                         f"({sizes['train']:,} training images)")
    config = train.TrainConfig(model=model_name, batch_size=batch_size).resolved()
    net, _, loss_fn = train.build(config)   # on the CPU: the sizes are the same on a GPU
    step = memory.step_bytes(net, loss_fn, batch_size)
    # the data set, in host memory (MNIST), or read a batch at a time (a folder)
    images = sum(sizes.values()) * memory.image_bytes(net.input_shape) if in_memory else 0
    needs = [(step + images, "cpu")] if device == "cpu" else [(step, device), (images, "cpu")]
    for need, where in needs:
        available = memory.available_bytes(where)
        if available is not None and need > available:
            with_data = where == "cpu" and in_memory
            what = f"a training step of {model_name}" + (" and the data set need" if with_data else " needs")
            memory_of = "memory" if where == "cpu" else f"GPU memory on {where}"
            raise RuntimeError(f"--batch-size {batch_size}: {what} about {memory.gigabytes(need)}, "
                               f"more than the {memory.gigabytes(available)} of {memory_of} available; "
                               "choose a smaller --batch-size")


def _needs_matplotlib(module):
    """minivae.pictures or minivae.plots, or a one-line error saying how to install matplotlib."""
    import importlib
    try:
        return importlib.import_module(f"minivae.{module}")
    except ImportError:
        raise RuntimeError(f"pictures need matplotlib: {PLOT_EXTRA}") from None


def _gpu_or_none(device):
    return None if device == "cpu" else device


def _config_fields():
    from .train import TrainConfig
    return {f.name for f in fields(TrainConfig)}


# ---- the parser: each option's value is checked as it is read ---------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _whole_number(minimum, maximum=None, zero_means=None):
    """An argparse type: an int in [minimum, maximum]; zero_means says what 0 stands for."""
    def whole_number(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            note = f" (0: {zero_means})" if zero_means else ""
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}{note}, not {value}")
        return value
    return whole_number


def _number(minimum, maximum=math.inf, above_minimum=False, zero_means=None):
    """An argparse type: a finite float in [minimum, maximum] (or (minimum, maximum])."""
    def number(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
        low_ok = value > minimum if above_minimum else value >= minimum
        if not (math.isfinite(value) and low_ok and value <= maximum):
            low = f"above {minimum:g}" if above_minimum else f"at least {minimum:g}"
            bound = low + (f" and at most {maximum:g}" if math.isfinite(maximum) else "")
            note = f" (0: {zero_means})" if zero_means else ""
            raise argparse.ArgumentTypeError(f"must be {bound}{note}, not {text}")
        return value
    return number


def _numbers(text):
    """An argparse type: comma-separated finite numbers, 1 to 12 of them."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from None
    if not 1 <= len(values) <= 12 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected 1 to 12 finite numbers, not {text!r}")
    return values
def _finite_number(text):
    """An argparse type: any finite float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text.strip()}")
    return value


def _pair(value, names):
    """An argparse type: two values written 'A,B' (`names` says what they are), each read by the
    argparse type `value`."""
    def pair(text):
        parts = text.split(",")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected two values {names}, not {text!r}")
        return tuple(value(part) for part in parts)
    return pair


def _check_model(name):
    """--model names a preset (checked in the command rather than by argparse, so that the
    error is one of the command's: status 1)."""
    if name is not None and name not in PRESETS:
        raise ValueError(f"--model: unknown model preset {name!r}: choose one of {', '.join(PRESETS)}")


def _device(text):
    """One device parser for every command: 'cpu', 'cuda', 'cuda:N' ('gpu' too), any case."""
    try:
        return backend.parse_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _kernels_option(p):
    p.add_argument("--kernels", choices=["auto", "never"],
                   help="on a GPU: our CUDA kernels (auto, the default) or CuPy's own (never)")


def _processes_option(p, default=None):
    p.add_argument("--processes", type=_whole_number(0, zero_means="chosen"), default=default,
                   help="CPU: processes sharing each step's images, one core each (default 0: one per "
                        "core where each gets a multiple of 16 images, the model has no batch norm and "
                        "at most 20,000 parameters per image of a share; else 1)")


def _parser():
    parser = _Parser(prog="minivae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    models = " or ".join(sorted(PRESETS))
    preset_batch = "the preset's, foster 32, foster-faces 32 or chollet 16"

    p = sub.add_parser("train", help="train a book VAE on MNIST or a folder of images")
    p.add_argument("--model", help=f"preset: {models} (default foster)")
    p.add_argument("--epochs", type=_whole_number(1), help="default 1")
    p.add_argument("--batch-size", type=_whole_number(0, zero_means=preset_batch),
                   help=f"default 0: {preset_batch}")
    p.add_argument("--lr", type=_number(0, zero_means="the preset's"),
                   help="default 0: the preset's (foster and foster-faces 5e-4, chollet 1e-3)")
    p.add_argument("--lr-decay", type=_number(0, 1, above_minimum=True),
                   help="multiply the rate by this every --lr-step epochs (default 1: constant)")
    p.add_argument("--lr-step", type=_whole_number(1), help="epochs between decays (default 1)")
    p.add_argument("--seed", type=_whole_number(0), help="default 0")
    p.add_argument("--device", type=_device, help="cpu (default) or cuda")
    _kernels_option(p)
    p.add_argument("--out", help="run folder (default runs/MODEL)")
    p.add_argument("--dataset", choices=["mnist", "fashion"])
    p.add_argument("--data-dir", help="folder holding the four IDX files")
    p.add_argument("--images", metavar="DIR",
                   help="train on the JPEG and PNG images in DIR and its subfolders instead")
    p.add_argument("--limit-steps", type=_whole_number(0, zero_means="whole epochs"),
                   help="end each epoch after N steps (quick runs; default 0: whole epochs)")
    p.add_argument("--book-exp-log-var", action="store_true", default=None,
                   help="chollet only: sample with exp(log_var) as the book's code did")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar")
    _processes_option(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("summary", help="print a model's layers and parameter count")
    p.add_argument("--model", default="foster", help=models)
    p.set_defaults(run=cmd_summary)

    p = sub.add_parser("data", help="fetch and verify the data set, and say where it is")
    p.add_argument("--dataset", choices=["mnist", "fashion"], default="mnist")
    p.add_argument("--data-dir")
    p.set_defaults(run=cmd_data)

    p = sub.add_parser("plot", help="redraw a run's pictures from its checkpoint")
    # dest run_dir: `run` is the sub-command's function (set_defaults below)
    p.add_argument("run_dir", metavar="RUN", help="run folder")
    p.add_argument("--device", type=_device, default="cpu")
    p.set_defaults(run=cmd_plot)

    p = sub.add_parser("sample", help="decode new digits from the prior")
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("--n", type=_whole_number(1, 1000), default=100, help="how many (default 100)")
    p.add_argument("--seed", type=_whole_number(0), default=0)
    p.add_argument("--out", default="samples.png", help="picture file (default samples.png)")
    p.add_argument("--device", type=_device, default="cpu")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("morph", help="decode the line between two images' codes, as a strip")
    p.add_argument("run_dir", metavar="RUN", help="run folder")
    p.add_argument("--from", dest="start", required=True, metavar="A",
                   help="a test-set index, or (a run on a folder of images) an image file")
    p.add_argument("--to", dest="end", required=True, metavar="B", help="the same, for the other end")
    p.add_argument("--steps", type=_whole_number(2, 100), default=10, help="images in the strip (default 10)")
    p.add_argument("--out", default="morph.png", help="picture file (default morph.png)")
    p.add_argument("--device", type=_device, default="cpu")
    p.set_defaults(run=cmd_morph)

    p = sub.add_parser("arithmetic", help="add an attribute's direction (Smiling, ...) to faces")
    p.add_argument("run_dir", metavar="RUN", help="run folder, trained on a folder of faces")
    p.add_argument("--attribute", required=True, metavar="NAME", help="a column of the attributes file")
    p.add_argument("--attributes", metavar="FILE",
                   help="CelebA's list_attr_celeba.csv or .txt (default: the one in the images folder)")
    p.add_argument("--n", type=_whole_number(1, 50), default=5, help="test images to change (default 5)")
    p.add_argument("--strengths", type=_numbers, default=[-3.0, -1.5, 0.0, 1.5, 3.0], metavar="S,S,...",
                   help="multiples of the direction to add (default -3,-1.5,0,1.5,3; write "
                        "--strengths=-3,3 when the first is negative)")
    p.add_argument("--sample", type=_whole_number(1), default=1000,
                   help="training images encoded on each side, at most (default 1000; more are "
                        "sampled at random)")
    p.add_argument("--seed", type=_whole_number(0), default=0, help="for that sample")
    p.add_argument("--out", help="picture file (default arithmetic_NAME.png)")
    p.add_argument("--device", type=_device, default="cpu")
    p.set_defaults(run=cmd_arithmetic)
    p = sub.add_parser("explore", help="move through a run's latent space: the decoder's image under the "
                                       "mouse")
    p.add_argument("run_dir", metavar="RUN", help="run folder (or checkpoint file)")
    p.add_argument("--at", metavar="Z0,Z1", type=_pair(_finite_number, "Z0,Z1"),
                   help="pin this point (on the plane, for more than 2 latent dimensions); a negative "
                        "Z0 is written --at=-1.5,0.3")
    p.add_argument("--save", metavar="FILE", help="with --at: write the figure to FILE; open no window")
    p.add_argument("--axes", metavar="I,J", type=_pair(_whole_number(1), "I,J"),
                   help="more than 2 latent dimensions: the principal directions spanning the plane "
                        "(default 1,2)")
    p.add_argument("--hold", metavar="K", type=_whole_number(0),
                   help="more than 2 latent dimensions: the test image whose z is kept off the plane "
                        "(default 0)")
    p.add_argument("--limit", metavar="N", type=_whole_number(0, zero_means="all"), default=0,
                   help="encode only the first N test images (default 0: all)")
    p.add_argument("--neighbours", metavar="K", type=_whole_number(1, 32), default=8,
                   help="how many nearest test images a pinned point shows (default 8)")
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(run=cmd_explore)

    p = sub.add_parser("bench", help="time training steps; prints a JSON line last")
    p.add_argument("--model", default="foster", help=models)
    p.add_argument("--batch-size", type=_whole_number(0, zero_means=preset_batch), default=32)
    p.add_argument("--steps", type=_whole_number(1), default=50)
    p.add_argument("--device", type=_device, default="cpu")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic", action="store_true", help="random images instead of MNIST")
    _kernels_option(p)
    _processes_option(p, default=0)
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("profile", help="time each op of one training step, forward and backward")
    p.add_argument("--model", default="foster", help=models)
    p.add_argument("--device", type=_device, default="cpu", help="cpu (default) or cuda")
    p.add_argument("--batch-size", type=_whole_number(0, zero_means=preset_batch), default=0,
                   help=f"default 0: {preset_batch}")
    p.add_argument("--steps", type=_whole_number(1), default=10,
                   help="profiled steps, of which the medians are shown")
    p.add_argument("--warmup", type=_whole_number(0), default=3, help="steps run first and not timed")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic", action="store_true", help="random images instead of MNIST")
    p.add_argument("--peak-size", type=_whole_number(1), default=2048,
                   help="side of the matrix product that measures the peak")
    _processes_option(p, default=0)
    _kernels_option(p)
    p.set_defaults(run=cmd_profile)
    return parser
