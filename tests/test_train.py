"""Training runs end to end on a tiny synthetic MNIST: reproducibility, resume, Ctrl-C, a NaN
stop, and the CLI's one-line errors. Real MNIST is for the README's run and the benchmarks."""
import hashlib
import json
import signal
import warnings

import numpy as np
import pytest

from minivae import checkpoint, cli, data, parallel, train


def write_idx(path, array):
    """IDX: 2 zero bytes, type 0x08 (ubyte), number of dims, big-endian dims, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    return tiny_mnist(tmp_path, monkeypatch)


def tiny_mnist(parent, monkeypatch):
    """A folder with 96 training and 40 test 'digits' whose hashes the loader is told to expect."""
    rng = np.random.default_rng(0)
    folder = parent / "mnist"
    folder.mkdir()
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (96, 28, 28)),
             "train-labels-idx1-ubyte": rng.integers(0, 10, 96),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28)),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, 40)}
    for name, array in files.items():
        write_idx(folder / name, array)
    hashes = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in files}
    monkeypatch.setitem(data.SHA256, "mnist", hashes)
    return folder


def config(mnist_dir, out, **kw):
    base = dict(model="foster", epochs=1, batch_size=16, seed=0, out=str(out), data_dir=str(mnist_dir),
                limit_steps=3, progress=False)
    return train.TrainConfig(**{**base, **kw})


def weights(out):
    return checkpoint.load(out / "checkpoint.npz")[0]


def same_metrics(a, b):
    timing = {"seconds", "images_per_s"}
    return [{k: v for k, v in m.items() if k not in timing} for m in a] == \
           [{k: v for k, v in m.items() if k not in timing} for m in b]


@pytest.mark.parametrize("model", ["foster", "chollet"])
def test_same_seed_same_losses_bit_for_bit(mnist_dir, tmp_path, model):
    a = train.train(config(mnist_dir, tmp_path / "a", model=model), log=lambda s: None)
    b = train.train(config(mnist_dir, tmp_path / "b", model=model), log=lambda s: None)
    assert same_metrics(a, b)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    record = a[0]
    for key in ("epoch", "train_loss", "test_loss", "test_recon", "test_kl", "seconds",
                "images_per_s", "test_elbo_nats"):
        assert key in record and np.isfinite(record[key])
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]


def assert_resume_matches(straight, mnist_dir, tmp_path, processes=0):
    """Resuming runs/split to 2 epochs ends exactly where the uninterrupted runs/straight did."""
    resumed = train.train(config(mnist_dir, tmp_path / "split", epochs=2, extra={"resume": True},
                                 processes=processes), log=lambda s: None)
    assert same_metrics(straight, resumed)
    ws, wr = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert all(np.array_equal(ws[k], wr[k]) for k in ws)


# processes=2: each step's images shared out between two processes (minivae/parallel.py)
ONE_AND_TWO_PROCESSES = pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.skipif(
    parallel._why_not(train.TrainConfig()) is not None, reason="no data parallelism here"))])


@ONE_AND_TWO_PROCESSES
def test_two_epochs_equal_one_then_resume(mnist_dir, tmp_path, processes):
    straight = train.train(config(mnist_dir, tmp_path / "straight", epochs=2, processes=processes),
                           log=lambda s: None)
    train.train(config(mnist_dir, tmp_path / "split", epochs=1, processes=processes), log=lambda s: None)
    assert_resume_matches(straight, mnist_dir, tmp_path, processes)


@ONE_AND_TWO_PROCESSES
def test_ctrl_c_saves_mid_epoch_and_resume_is_exact(mnist_dir, tmp_path, monkeypatch, processes):
    straight = train.train(config(mnist_dir, tmp_path / "straight", epochs=2, processes=processes),
                           log=lambda s: None)
    real_build, calls = train.build, {"steps": 0}

    def build_that_presses_ctrl_c(cfg):
        model, optimizer, loss_fn = real_build(cfg)
        real_step = optimizer.step

        def step():
            real_step()
            calls["steps"] += 1
            if calls["steps"] == 5:  # epoch 2, step 2
                signal.raise_signal(signal.SIGINT)
        optimizer.step = step
        return model, optimizer, loss_fn

    monkeypatch.setattr(train, "build", build_that_presses_ctrl_c)
    with pytest.raises(train.Interrupted, match="epoch 2, step 2.*--resume"):
        train.train(config(mnist_dir, tmp_path / "split", epochs=2, processes=processes), log=lambda s: None)
    monkeypatch.setattr(train, "build", real_build)
    assert_resume_matches(straight, mnist_dir, tmp_path, processes)


@ONE_AND_TWO_PROCESSES
def test_non_finite_loss_stops_naming_the_op_and_changes_nothing(mnist_dir, tmp_path, monkeypatch, processes):
    """A NaN stop on --resume: one line naming the op, no NumPy warnings, and the run folder as it
    was (config.json still says 1 epoch, though this call asked for 2)."""
    out = tmp_path / "run"
    train.train(config(mnist_dir, out, epochs=1), log=lambda s: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def resume_then_explode(run, cfg, model, optimizer):
        result = real_resume(run, cfg, model, optimizer)
        model.log_var.bias.data[:] = 200.0  # exp(½·200) overflows float32
        return result

    real_resume = train.resume
    monkeypatch.setattr(train, "resume", resume_then_explode)
    with pytest.raises(train.TrainingError, match=r"loss became (inf|nan) at epoch 2, step 1: "
                                                  r"op '\w+' in layer 'sampling'.*last good checkpoint"), \
            warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning reaching the user fails the test
        train.train(config(mnist_dir, out, epochs=2, extra={"resume": True}, processes=processes),
                    log=lambda s: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_chollet_survives_a_log_var_spike(mnist_dir, tmp_path, monkeypatch):
    """PyTorch's reference run of chollet at batch 32 saw log_var jump to about 40 (loss ~1e12)
    and recover. exp(40) = 2.4e17 is finite in float32 (the limit is exp(88.7)), so training must
    carry on: the spike shows in the loss, nothing stops, and the test metrics stay finite."""
    out = tmp_path / "run"
    cfg = dict(model="chollet", batch_size=32)
    train.train(config(mnist_dir, out, epochs=1, **cfg), log=lambda s: None)

    def resume_then_spike(run, cfg, model, optimizer):
        result = real_resume(run, cfg, model, optimizer)
        model.log_var.bias.data[:] = 40.0
        return result

    real_resume = train.resume
    monkeypatch.setattr(train, "resume", resume_then_spike)
    metrics = train.train(config(mnist_dir, out, epochs=2, extra={"resume": True}, **cfg), log=lambda s: None)
    spiked = metrics[-1]
    assert spiked["epoch"] == 2 and spiked["train_kl"] > 1e12  # 5e-4 · ½ · e^40 and more
    assert all(np.isfinite(v) for k, v in spiked.items() if k.startswith("test_"))
    assert all(np.isfinite(a).all() for a in weights(out).values())


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_unknown_preset_is_one_line(capsys):
    code, _, err = run_cli(capsys, "summary", "--model", "nope")
    assert code != 0 and err.strip().count("\n") == 0 and "unknown model preset 'nope'" in err


def test_cli_corrupt_data_file_is_one_line_and_writes_nothing(capsys, mnist_dir, tmp_path):
    (mnist_dir / "t10k-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03garbage")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data-dir", str(mnist_dir), "--out", str(out),
                           "--limit-steps", "1", "--no-progress")
    assert code == 1 and err.count("\n") == 1 and "t10k-images-idx3-ubyte" in err
    assert "Traceback" not in err and not out.exists()


def test_cli_checkpoint_of_another_architecture_is_refused(capsys, mnist_dir, tmp_path):
    out = tmp_path / "run"
    train.train(config(mnist_dir, out), log=lambda s: None)
    model_state, optimizer_state, meta = checkpoint.load(out / "checkpoint.npz")
    meta["config"]["model"] = "chollet"  # foster weights, chollet label
    checkpoint.save(out / "checkpoint.npz", model_state, optimizer_state, meta)
    code, _, err = run_cli(capsys, "sample", str(out), "--out", str(tmp_path / "s.png"))
    assert code == 1 and err.count("\n") == 1 and "does not fit the 'chollet' model" in err


def test_cli_train_writes_metrics_checkpoint_and_pictures(capsys, mnist_dir, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "--data-dir", str(mnist_dir), "--out", str(out),
                                "--limit-steps", "2", "--batch-size", "8", "--no-progress")
    assert code == 0, err
    for name in ("metrics.jsonl", "checkpoint.npz", "config.json", "reconstructions.png",
                 "samples.png", "latent_scatter.png", "manifold.png", "losses.png"):
        assert (out / name).stat().st_size > 0, name
    code, _, err = run_cli(capsys, "train", "--data-dir", str(mnist_dir), "--out", str(out), "--no-progress")
    assert code == 1 and "--resume" in err  # an existing run is never overwritten
