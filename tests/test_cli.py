"""The command line, run in-process on tiny synthetic data: every command of the README's block on
its happy path, then a table of bad inputs, each answered in one line that names the option or the
file, without a traceback and without writing or changing anything."""
import builtins
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import minivae
from helpers import faces_folder, fill, make_files
from minivae import cli, data, memory, train

README = Path(__file__).parent.parent / "README.md"


@pytest.fixture(scope="module")
def files():
    return make_files(n_train=96, n_test=40)


@pytest.fixture(scope="module")
def module_patch(files, tmp_path_factory):
    """For the whole module: the tiny files are the ones the loader trusts, and no real data folder
    or network is looked at; matplotlib keeps its font cache outside the folders compared."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLCONFIGDIR", str(tmp_path_factory.mktemp("matplotlib")))
        mp.setitem(data.SHA256, "mnist", {name: hashlib.sha256(content).hexdigest()
                                          for name, content in files.items()})
        mp.setattr(data, "MIRRORS", {"mnist": [], "fashion": []})
        mp.setenv("PATH", "/nonexistent")          # no npm, no apt-get
        mp.delenv("MINIVAE_DATA", raising=False)
        yield mp


@pytest.fixture(scope="module")
def trained(tmp_path_factory, files, module_patch):
    """A run trained once for the module (foster, 2 steps of 8), for the commands that read one."""
    root = tmp_path_factory.mktemp("trained")
    data_dir = fill(root / "data" / "mnist", files)
    config = train.TrainConfig(epochs=1, batch_size=8, limit_steps=2, out=str(root / "run"),
                               data_dir=str(data_dir), progress=False)
    train.train(config, log=lambda line: None)
    return root / "run"


@pytest.fixture
def here(tmp_path, monkeypatch, trained, files):
    """A fresh working folder holding the tiny data set (data/mnist) and a copy of the trained run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fill(tmp_path / "data" / "mnist", files)
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of `python -m minivae ARGV`, run in this process."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:   # argparse's way out, after its one-line usage error
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- every command of the README, on its happy path ----------------------------------------------

def readme_commands():
    """The sub-commands that README's "## The command line" block shows."""
    section = README.read_text().split("## The command line", 1)[1]
    block = section.split("```", 2)[1]
    return {m.group(1) for m in re.finditer(r"python -m minivae (\w+)", block)}


HAPPY = {   # command: (argv, what must then exist, what stdout must say)
    "train": (["train", "--data-dir", "data", "--out", "new", "--limit-steps", "2", "--batch-size", "8",
               "--no-progress"],
              ["new/metrics.jsonl", "new/checkpoint.npz", "new/config.json", "new/losses.png",
               "new/samples.png", "new/latent_scatter.png", "new/latent_histograms.png", "new/manifold.png",
               "new/reconstructions.png"],
              "data: MNIST from data/mnist"),
    "summary": (["summary", "--model", "chollet"], [], "Total params: 550,629"),
    "data": (["data", "--data-dir", "data"], [], "MNIST in data/mnist"),
    "plot": (["plot", "run"], ["run/losses.png", "run/manifold.png"], "run/losses.png"),
    "sample": (["sample", "run", "--out", "new_digits", "--n", "7", "--seed", "3"], ["new_digits.png"],
               "new_digits.png"),
    "morph": (["morph", "run", "--from", "3", "--to", "7", "--steps", "5", "--out", "digits.png"],
              ["digits.png"], "digits.png"),
    "arithmetic": (["arithmetic", "faces_run", "--attribute", "Smiling", "--n", "2", "--sample", "4"],
                   ["arithmetic_Smiling.png"], "arithmetic_Smiling.png"),
    "explore": (["explore", "run", "--at", "0.5,-1", "--save", "explored.png", "--no-progress"],
                ["explored.png"], "explored.png"),
    "bench": (["bench", "--synthetic", "--steps", "1", "--batch-size", "4"], [], '"images_per_s"'),
    "profile": (["profile", "--synthetic", "--steps", "1", "--warmup", "0", "--batch-size", "4",
                 "--peak-size", "64"], [], "optimizer"),
}


def test_the_happy_paths_cover_every_command_of_the_readme():
    assert readme_commands() == set(HAPPY)


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory, module_patch):
    """A run trained on a folder of 24 small grey 'faces' with CelebA's attribute file (foster,
    1 step of 8), for arithmetic."""
    pytest.importorskip("PIL")
    root = tmp_path_factory.mktemp("faces")
    module_patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    faces_folder(root / "faces", 24, channels=1, size=28)
    config = train.TrainConfig(epochs=1, batch_size=8, limit_steps=1, out=str(root / "run"), dataset=None,
                               images=str(root / "faces"), progress=False)
    train.train(config, log=lambda line: None)
    return root / "run"


@pytest.mark.parametrize("command", HAPPY)
def test_readme_command_runs(here, capsys, request, command):
    argv, made, said = HAPPY[command]
    if "faces_run" in argv:
        shutil.copytree(request.getfixturevalue("faces_run"), here / "faces_run")
    for name in made:
        (here / name).unlink(missing_ok=True)
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert said in out
    for name in made:
        assert (here / name).stat().st_size > 0, name


def test_bench_on_the_data_set(here, capsys):
    code, out, err = run_cli(capsys, "bench", "--data-dir", "data", "--steps", "1", "--batch-size", "4",
                             "--device", "CPU")
    result = json.loads(out.splitlines()[-1])
    assert code == 0 and result["batch_size"] == 4 and result["device"] == "cpu"
    from minivae import bench
    assert result["cpu"] == bench.cpu_model() != "" and result["cores"] >= 1 and "UTC" in result["date"]


def test_sample_prints_the_file_it_wrote(here, capsys):
    code, out, _ = run_cli(capsys, "sample", "run", "--out", "x", "--n", "3")
    assert code == 0 and out.strip() == "x.png" and (here / "x.png").is_file() and not (here / "x").exists()


# ---- bad input: one line, naming the option or file; nothing written ---------------------------

def spoil_data(how):
    """Set-up for a bad data folder, given as data/ in the working folder."""
    def spoil(here):
        if how == "missing":
            shutil.rmtree(here / "data")
        elif how == "partial":
            (here / "data" / "mnist" / "t10k-labels-idx1-ubyte").unlink()
        else:
            (here / "data" / "mnist" / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03garbage")
    spoil.__name__ = f"data {how}"
    return spoil


def make_file(name):
    def make(here):
        (here / name).write_text("not a folder")
    make.__name__ = f"{name} is a file"
    return make


TRAIN = ["train", "--data-dir", "data", "--no-progress", "--limit-steps", "1"]
BAD = [   # (argv, what the one line must say, set-up of the working folder or None)
    (TRAIN + ["--epochs", "0"], "--epochs: must be at least 1, not 0", None),
    (TRAIN + ["--epochs", "-1"], "--epochs: must be at least 1", None),
    (TRAIN + ["--epochs", "two"], "--epochs: expected a whole number, not 'two'", None),
    (TRAIN + ["--limit-steps", "-3"], "--limit-steps: must be at least 0 (0: whole epochs)", None),
    (TRAIN + ["--lr", "-1"], "--lr: must be at least 0 (0: the preset's)", None),
    (TRAIN + ["--lr", "nan"], "--lr: must be at least 0", None),
    (TRAIN + ["--lr-decay", "0"], "--lr-decay: must be above 0 and at most 1, not 0", None),
    (TRAIN + ["--lr-decay", "-2"], "--lr-decay: must be above 0", None),
    (TRAIN + ["--lr-step", "0"], "--lr-step: must be at least 1, not 0", None),
    (TRAIN + ["--seed", "-1"], "--seed: must be at least 0, not -1", None),
    (TRAIN + ["--batch-size", "-5"], "--batch-size: must be at least 0 (0: the preset's", None),
    (TRAIN + ["--batch-size", "97"], "--batch-size 97 is larger than the data set (96 training images)",
     None),
    (TRAIN + ["--device", "foo"], "--device: unknown device 'foo'", None),
    (TRAIN + ["--device", "tpu:0"], "--device: unknown device 'tpu:0'", None),
    (TRAIN + ["--model", "nope"], "--model: unknown model preset 'nope'", None),
    (TRAIN + ["--model", "foster", "--book-exp-log-var"],
     "--book-exp-log-var applies to --model chollet only, not foster", None),
    (TRAIN + ["--dataset", "kmnist"], "--dataset: invalid choice: 'kmnist'", None),
    (TRAIN + ["--kernels", "sometimes"], "--kernels: invalid choice", None),
    (TRAIN + ["--out", "afile"], "--out afile: afile is a file; --out must be a folder", make_file("afile")),
    (TRAIN + ["--out", "afile/run"], "afile is a file; --out must be a folder", make_file("afile")),
    (TRAIN + ["--out", "new"], "--data-dir data: no such folder", spoil_data("missing")),
    (TRAIN + ["--out", "new"], "data/mnist/t10k-labels-idx1-ubyte is missing", spoil_data("partial")),
    (TRAIN + ["--out", "new"], "data/mnist/train-images-idx3-ubyte is not the MNIST file",
     spoil_data("corrupt")),
    (TRAIN + ["--out", "run"], "run/checkpoint.npz exists: pass --resume", None),
    (["data", "--data-dir", "data"], "--data-dir data: no such folder", spoil_data("missing")),
    (["data", "--data-dir", "data"], "t10k-labels-idx1-ubyte is missing", spoil_data("partial")),
    (["data", "--dataset", "kmnist"], "--dataset: invalid choice", None),
    (["summary", "--model", "nope"], "--model: unknown model preset 'nope'", None),
    (["plot"], "the following arguments are required: RUN", None),
    (["plot", "nowhere"], "no checkpoint at nowhere", None),
    (["plot", "run", "--device", "foo"], "--device: unknown device 'foo'", None),
    (["sample", "run", "--n", "0"], "--n: must be from 1 to 1000, not 0", None),
    (["sample", "run", "--n", "1001"], "--n: must be from 1 to 1000, not 1001", None),
    (["sample", "run", "--seed", "-1"], "--seed: must be at least 0, not -1", None),
    (["sample", "run", "--device", "foo"], "--device: unknown device 'foo'", None),
    (["sample", "run", "--out", "run"], "--out run is a folder: give a file name", None),
    (["sample", "run", "--out", "x.xyz"], "--out x.xyz: matplotlib cannot write .xyz files", None),
    (["sample", "nowhere"], "no checkpoint at nowhere", None),
    (["morph", "run", "--from", "3"], "the following arguments are required: --to", None),
    (["morph", "run", "--from", "3", "--to", "40"], "--to 40: the test set's images are 0 to 39", None),
    (["morph", "run", "--from", "x.png", "--to", "4"], "--from x.png: give a test-set index (0 to 39); "
                                                       "image files are for runs trained on a folder", None),
    (["morph", "run", "--from", "3", "--to", "4", "--steps", "1"], "--steps: must be from 2 to 100, not 1", None),
    (["morph", "run", "--from", "3", "--to", "4", "--out", "run"], "--out run is a folder", None),
    (["arithmetic", "run", "--attribute", "Smiling"], "arithmetic needs a run trained on a folder of images "
                                                      "with attributes (train --images DIR); run was trained on MNIST", None),
    (["arithmetic", "run"], "the following arguments are required: --attribute", None),
    (["arithmetic", "run", "--attribute", "Smiling", "--strengths", ""], "--strengths: expected numbers", None),
    (["arithmetic", "run", "--attribute", "Smiling", "--sample", "0"], "--sample: must be at least 1", None),
    (["bench", "--model", "foster-faces"], "--model foster-faces takes 3×128×128 images, but MNIST's are "
                                           "1×28×28: time it on random images with --synthetic", None),
    (TRAIN + ["--model", "foster-faces", "--out", "new"], "--model foster-faces takes 3×128×128 images, but "
     "MNIST's are 1×28×28: train it on a folder of images with --images DIR", None),
    (["bench", "--steps", "0"], "--steps: must be at least 1, not 0", None),
    (["bench", "--batch-size", "-1"], "--batch-size: must be at least 0", None),
    (["bench", "--data-dir", "data", "--batch-size", "97"], "--batch-size 97 is larger than the data set",
     None),
    (["bench", "--data-dir", "data", "--device", "foo"], "--device: unknown device 'foo'", None),
    (["bench", "--model", "nope", "--synthetic"], "--model: unknown model preset 'nope'", None),
    (["bench", "--data-dir", "data"], "--data-dir data: no such folder", spoil_data("missing")),
    (["nonsense"], "invalid choice: 'nonsense'", None),
]


def snapshot(folder):
    """Every file under folder (the working folder and the cache): its content's hash and mtime."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, says, setup", BAD,
                         ids=[" ".join(argv) + (f" [{setup.__name__}]" if setup else "") for argv, _, setup in BAD])
def test_bad_input_is_one_line_naming_it_and_changes_nothing(here, capsys, argv, says, setup):
    if setup:
        setup(here)
    before = snapshot(here)
    code, out, err = run_cli(capsys, *argv)
    assert code != 0
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert says in err, err
    assert snapshot(here) == before


def test_a_step_that_cannot_fit_in_memory_is_refused_with_both_figures(here, capsys, monkeypatch):
    need = memory.step_bytes(*train.build(train.TrainConfig(batch_size=8))[::2], 8)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": need // 2)
    before = snapshot(here)
    code, out, err = run_cli(capsys, *TRAIN, "--out", "new", "--batch-size", "8")
    assert code == 1 and out == "" and err.count("\n") == 1
    figures = re.findall(r"([\d.]+) (MB|GB)", err)
    assert "--batch-size 8: a training step of foster and the data set need about" in err
    assert len(figures) == 2 and "choose a smaller --batch-size" in err
    assert snapshot(here) == before
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 100 * need)
    cli._check_batch_fits("foster", 8, "cpu", {"train": 96, "test": 40})   # fits: no error


@pytest.mark.parametrize("model, batch_size", [("foster", 16), ("chollet", 8)])
def test_the_memory_estimate_counts_what_the_graph_keeps(model, batch_size):
    """At least the outputs of every op, which the graph keeps alive until backward; at most a
    small multiple of them (the im2col patches and the gradients come on top)."""
    net, _, loss_fn = train.build(train.TrainConfig(model=model))
    x = minivae.Tensor(np.zeros((batch_size, 1, 28, 28), np.float32))
    loss, _, _ = loss_fn(x, *net(x))
    kept, seen, stack = 0, set(), [loss]
    while stack:
        t = stack.pop()
        if id(t) not in seen and t.op is not None:   # leaves (parameters, x) exist before the step
            seen.add(id(t))
            kept += t.data.nbytes
            stack.extend(t._inputs)
    estimate = memory.step_bytes(net, loss_fn, batch_size)
    assert kept < estimate < 10 * kept


def test_available_memory_is_known_on_linux():
    assert memory.available_bytes() > 2**20


# ---- matplotlib is optional ---------------------------------------------------------------------

@pytest.fixture
def no_matplotlib(monkeypatch):
    """Make `import matplotlib` fail, and forget minivae's modules that import it."""
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    for module in ("plots", "pictures", "explore"):
        monkeypatch.delitem(sys.modules, f"minivae.{module}", raising=False)
        monkeypatch.delattr(minivae, module, raising=False)


def test_without_matplotlib_train_still_trains_and_says_how_to_get_pictures(here, capsys, no_matplotlib):
    code, out, err = run_cli(capsys, *TRAIN, "--out", "new", "--batch-size", "0", "--lr", "0")
    assert code == 0
    config = json.loads((here / "new" / "config.json").read_text())
    assert config["batch_size"] == 32 and config["lr"] == 5e-4   # 0: the preset's
    assert (here / "new" / "checkpoint.npz").is_file() and (here / "new" / "metrics.jsonl").is_file()
    assert not list((here / "new").glob("*.png"))
    assert err.count("\n") == 1 and "pip install 'minivae[plot]'" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["plot", "run"], ["sample", "run"], ["explore", "run"]])
def test_without_matplotlib_the_picture_commands_say_so_in_one_line(here, capsys, no_matplotlib, argv):
    before = snapshot(here)
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and err.count("\n") == 1 and "pip install 'minivae[plot]'" in err
    assert snapshot(here) == before


# ---- one device parser --------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["train"], ["bench"], ["plot", "run"], ["sample", "run"],
                                     ["explore", "run"]])
@pytest.mark.parametrize("given, parsed", [("cpu", "cpu"), ("CPU", "cpu"), ("Cuda:1", "cuda:1"),
                                           ("gpu", "cuda")])
def test_every_command_reads_devices_alike(command, given, parsed):
    assert cli._parser().parse_args([*command, "--device", given]).device == parsed


def test_a_real_process_exits_non_zero_with_one_line(tmp_path):
    """The in-process calls above, checked once as a user runs them."""
    import subprocess
    root = Path(__file__).parent.parent
    result = subprocess.run([sys.executable, "-m", "minivae", "train", "--epochs", "0"], cwd=tmp_path,
                            capture_output=True, text=True,
                            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and result.stdout == "" and list(tmp_path.iterdir()) == []
    assert result.stderr == "minivae train: error: argument --epochs: must be at least 1, not 0\n"
