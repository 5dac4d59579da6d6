"""Interrupts and resumes that never lose work, on the tiny synthetic MNIST of test_train.py.

Ctrl-C is a real SIGINT, raised from a hook at a chosen point: inside a step's forward pass, its
backward pass, half-way through the optimizer's update, inside a checkpoint save, inside the
test-set evaluation. Whatever the point and however many presses, the run must end with a
checkpoint that resumes bit for bit, or with none and the last one intact, and say which.
Then: --resume refuses settings that would not continue the run exactly, damaged or newer
checkpoints are one line naming the file, and a NaN stop on resume changes nothing.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minivae import checkpoint, data, train
from minivae.tensor import Tensor
from test_train import config, run_cli, same_metrics, tiny_mnist, weights

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def keep_the_sigint_handler():
    """cli.main ignores Ctrl-C once a run is stopping (the process is on its way out): put back
    the handler the tests found."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def quiet(cfg):
    return train.train(cfg, log=lambda s: None)


def small(data_dir, out, **kw):
    """2 steps of 4 images per epoch: the points below are chosen by counting calls."""
    return config(data_dir, out, **{"batch_size": 4, "limit_steps": 2, **kw})


def press_ctrl_c(times):
    for _ in range(times):
        signal.raise_signal(signal.SIGINT)  # the handler runs here, as for a key press


def press_on_call(obj, name, call, times, presses_first=True):
    """Wrap obj.name so that its `call`-th call presses Ctrl-C `times` times: before doing its
    work (presses_first) or after it."""
    real, count = getattr(obj, name), {"calls": 0}

    def hooked(*args, **kwargs):
        count["calls"] += 1
        pressing = count["calls"] == call
        if pressing and presses_first:
            press_ctrl_c(times)
        result = real(*args, **kwargs)
        if pressing and not presses_first:
            press_ctrl_c(times)
        return result
    return hooked


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Made once for the module: the tiny data set, an uninterrupted 2-epoch run (every
    interrupted run must end up equal to it) and a 1-epoch run of the same settings."""
    folder = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        data_dir = tiny_mnist(folder, patch)
        straight = quiet(small(data_dir, folder / "straight", epochs=2))
        quiet(small(data_dir, folder / "one_epoch", epochs=1))
        yield {"data": data_dir, "metrics": straight, "weights": weights(folder / "straight"),
               "one_epoch": folder / "one_epoch"}


@pytest.fixture
def data_dir(runs):
    return runs["data"]


@pytest.fixture
def saved_run(runs, tmp_path):
    """A copy of the 1-epoch run, to resume, damage or refuse."""
    shutil.copytree(runs["one_epoch"], tmp_path / "run")
    return tmp_path / "run"


def files_of(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def resume_and_compare(runs, out):
    resumed = quiet(small(runs["data"], out, epochs=2, extra={"resume": True}))
    assert same_metrics(runs["metrics"], resumed)
    got = weights(out)
    assert all(np.array_equal(runs["weights"][k], got[k]) for k in runs["weights"])


def with_hook(patch, point, call, times):
    """Make the run press Ctrl-C at the call-th call of `point`."""
    real_build = train.build

    def build(cfg):
        model, optimizer, loss_fn = real_build(cfg)
        if point == "forward":
            model.forward = press_on_call(model, "forward", call, times)
        elif point == "update, half-way":  # press once `call` parameter updates have been made
            optimizer.update = press_on_call(optimizer, "update", call, times, presses_first=False)
        return model, optimizer, loss_fn

    patch.setattr(train, "build", build)
    if point == "backward":
        patch.setattr(Tensor, "backward", press_on_call(Tensor, "backward", call, times))


@pytest.mark.parametrize("point, times", [("forward", 2), ("backward", 2), ("update, half-way", 3)])
def test_ctrl_c_inside_a_step_saves_that_step_whole(runs, tmp_path, monkeypatch, point, times):
    """A step is never cut: one press or several, the step finishes and the state after it is
    saved. The presses come in step 3 of the 2 × 2-step run, i.e. epoch 2, step 1."""
    parameters = len(train.build(small(runs["data"], tmp_path).resolved())[0].parameters())
    call = 3 if point != "update, half-way" else 2 * parameters + 2  # step 3, 2 parameters updated
    out = tmp_path / "split"
    with monkeypatch.context() as patch, \
            pytest.raises(train.Interrupted, match=r"at epoch 2, step 1: saved .*--resume"):
        with_hook(patch, point, call, times)
        quiet(small(runs["data"], out, epochs=2))
    meta = checkpoint.load(out / "checkpoint.npz")[2]
    assert (meta["epoch"], meta["step"]) == (1, 1)
    resume_and_compare(runs, out)


@pytest.mark.parametrize("save, where", [
    (1, "at epoch 1, step 2"),  # the save of epoch 1's trained state, before its evaluation
    (2, "after epoch 1")])      # the end-of-epoch save
def test_ctrl_c_inside_a_save_lets_it_finish(runs, tmp_path, monkeypatch, save, where):
    """Two presses while the checkpoint file is being written (inside np.savez) wait for the save."""
    out = tmp_path / "split"
    with monkeypatch.context() as patch, pytest.raises(train.Interrupted, match=f"{where}: saved"):
        patch.setattr(checkpoint.np, "savez", press_on_call(np, "savez", save, 2))
        quiet(small(runs["data"], out, epochs=2))
    resume_and_compare(runs, out)


def test_ctrl_c_while_evaluating_keeps_the_trained_state(runs, tmp_path, monkeypatch):
    """The trained state is saved before the evaluation, so Ctrl-C there loses nothing (the
    first press stops at once; the second comes while stopping and changes nothing); --resume
    evaluates it, writes the metrics record and continues."""
    out = tmp_path / "split"
    with monkeypatch.context() as patch, \
            pytest.raises(train.Interrupted, match="while evaluating epoch 2: saved its trained state"):
        patch.setattr(train, "evaluate", press_on_call(train, "evaluate", 2, 2))
        quiet(small(runs["data"], out, epochs=2))
    meta = checkpoint.load(out / "checkpoint.npz")[2]
    assert (meta["epoch"], meta["step"]) == (1, 2)  # epoch 2's two steps done, not evaluated
    assert [m["epoch"] for m in train.Run(out).read_metrics()] == [1]
    resume_and_compare(runs, out)


def test_ctrl_c_while_evaluating_on_the_command_line(capsys, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "evaluate", press_on_call(train, "evaluate", 1, 1))
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data-dir", str(data_dir), "--out", str(out),
                           "--limit-steps", "1", "--batch-size", "4", "--no-progress")
    assert code == 130 and err.count("\n") == 1 and "Traceback" not in err
    assert f"saved its trained state in {out / 'checkpoint.npz'}" in err and "--resume" in err


def test_ctrl_c_before_any_step_changes_nothing(data_dir, saved_run, tmp_path, monkeypatch):
    """Two quick presses before a step begins stop at once: a new run saves nothing, a resumed
    one leaves its folder as it was; the message says which."""
    new = tmp_path / "new"
    with monkeypatch.context() as patch, pytest.raises(train.Interrupted, match="nothing saved"):
        patch.setattr(train, "to_tensor", press_on_call(train, "to_tensor", 1, 2))
        quiet(small(data_dir, new))
    assert not (new / "checkpoint.npz").exists()
    before = files_of(saved_run)
    with monkeypatch.context() as patch, pytest.raises(train.Interrupted, match="after epoch 1: saved"):
        patch.setattr(train, "to_tensor", press_on_call(train, "to_tensor", 1, 2))
        quiet(small(data_dir, saved_run, epochs=2, extra={"resume": True}))
    assert files_of(saved_run) == before


def test_a_late_ctrl_c_never_ends_in_a_traceback(data_dir, tmp_path):
    """The whole program, progress bars on: two presses in a step, then one more as the process
    exits. Exit status 130 and one line, never -2 (killed by SIGINT) or a traceback."""
    script = textwrap.dedent(f"""
        import signal, sys
        from minivae import cli, data, optim
        data.SHA256["mnist"] = {dict(data.SHA256["mnist"])!r}
        real_step, calls = optim.Adam.step, []
        def step(self):
            real_step(self)
            calls.append(1)
            if len(calls) == 1:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
        optim.Adam.step = step
        code = cli.main(["train", "--data-dir", {str(data_dir)!r}, "--out", {str(tmp_path / "run")!r},
                         "--limit-steps", "2", "--batch-size", "4"])
        signal.raise_signal(signal.SIGINT)
        sys.exit(code)
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert "interrupted at epoch 1, step 1: saved" in done.stderr.splitlines()[-1]


SAVED_AND_GIVEN = {"--batch-size": ("4", "8"), "--dataset": ("mnist", "fashion"),
                   "--lr": ("0.0005", "0.01"), "--lr-decay": ("1.0", "0.5"), "--lr-step": ("1", "2"),
                   "--seed": ("0", "1"), "--limit-steps": ("2", "3"), "--book-exp-log-var": ("off", None),
                   "--model": ("foster", "chollet")}


@pytest.mark.parametrize("option", SAVED_AND_GIVEN)
def test_resume_refuses_settings_that_would_change_the_run(capsys, data_dir, saved_run, option):
    saved, given = SAVED_AND_GIVEN[option]
    before = files_of(saved_run)
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(saved_run), "--data-dir",
                           str(data_dir), "--epochs", "2", "--no-progress", option, *[given] if given else [])
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{option} is {given or 'on'} here but {saved} in {saved_run / 'checkpoint.npz'}" in err
    assert "another --out" in err
    assert files_of(saved_run) == before


def test_resume_refuses_fewer_epochs_than_done(runs, tmp_path):
    shutil.copytree(runs["one_epoch"].parent / "straight", tmp_path / "run")
    with pytest.raises(train.TrainingError, match="--epochs 1 is fewer than the 2 the run has done"):
        quiet(small(runs["data"], tmp_path / "run", epochs=1, extra={"resume": True}))


def test_resume_allows_what_cannot_change_the_run(runs, saved_run, tmp_path):
    """More epochs, progress bars, another copy of the data: the resumed run is still exact."""
    copy = shutil.copytree(runs["data"], tmp_path / "copy")
    resumed = quiet(small(copy, saved_run, epochs=2, progress=True, extra={"resume": True}))
    assert same_metrics(runs["metrics"], resumed)


def rewrite_meta(path, edit):
    """Rewrite a checkpoint's metadata with edit(meta), bypassing checkpoint.save (which would
    stamp the current format)."""
    with np.load(path) as z:
        files = {k: z[k] for k in z.files}
    meta = json.loads(str(files.pop("meta")))
    edit(meta)
    np.savez(path, meta=np.array(json.dumps(meta)), **files)


DAMAGE = {
    "newer format": (lambda p: rewrite_meta(p, lambda m: m.update(format=2)),
                     "was written by a newer minivae (format 2); this one reads up to 1"),
    "unknown setting": (lambda p: rewrite_meta(p, lambda m: m["config"].update(warmup=5)),
                        "was written by a newer minivae (format 1, with the setting 'warmup' "
                        "unknown here); this one reads up to 1"),
    "no rng": (lambda p: rewrite_meta(p, lambda m: m.pop("rng")), "its metadata lacks rng"),
    "no config": (lambda p: rewrite_meta(p, lambda m: m.pop("config")), "its metadata lacks config"),
    "no model in config": (lambda p: rewrite_meta(p, lambda m: m["config"].pop("model")),
                           "its config lacks 'model'"),
    "zero bytes": (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:p.stat().st_size // 2]),
                  "is not a readable minivae checkpoint"),
}


@pytest.mark.parametrize("command", ["train --resume", "sample"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_or_newer_checkpoint_is_one_line(capsys, data_dir, saved_run, tmp_path, damage,
                                                command):
    damage_it, message = DAMAGE[damage]
    ckpt = saved_run / "checkpoint.npz"
    damage_it(ckpt)
    before = files_of(saved_run)
    if command == "sample":
        argv = ["sample", str(saved_run), "--out", str(tmp_path / "s.png")]
    else:
        argv = ["train", "--resume", "--out", str(saved_run), "--data-dir", str(data_dir), "--no-progress"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(ckpt) in err and message in err
    assert files_of(saved_run) == before


@pytest.mark.parametrize("damage", ["newer format", "no rng"])
def test_plot_reads_checkpoints_through_the_same_check(saved_run, damage):
    """`plot` loads its model with train.load_run_model, as `sample` does."""
    DAMAGE[damage][0](saved_run / "checkpoint.npz")
    with pytest.raises(checkpoint.CheckpointError, match=re.escape(DAMAGE[damage][1])):
        train.load_run_model(saved_run)


def test_format_0_checkpoint_still_resumes(runs, saved_run):
    """A checkpoint written before checkpoints had a format number reads as format 0."""
    rewrite_meta(saved_run / "checkpoint.npz", lambda m: m.pop("format"))
    resume_and_compare(runs, saved_run)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_honours_the_umask_like_the_other_files(tmp_path, umask):
    previous = os.umask(umask)
    try:
        checkpoint.save(tmp_path / "checkpoint.npz", {"w": np.zeros(2)}, {"lr": 0.1}, {})
        (tmp_path / "config.json").write_text("{}")
    finally:
        os.umask(previous)
    mode = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert mode == {"checkpoint.npz": 0o666 & ~umask, "config.json": 0o666 & ~umask}


def test_header_names_the_optimizer_and_the_lr_in_use(data_dir, tmp_path):
    class Header(Exception):
        pass

    def log(line):  # the header is the first line logged: stop there
        raise Header(line)

    with pytest.raises(Header) as header:
        train.train(small(data_dir, tmp_path / "run", lr=1e-3, lr_decay=0.5), log=log)
    assert str(header.value).startswith("training foster with Adam lr 0.001, ×0.5 every 1 epoch(s) on cpu")
    assert "5e-4" not in str(header.value)
