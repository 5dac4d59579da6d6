"""Data parallelism (minivae/parallel.py): a step whose images are shared out among processes is
the whole batch's step, to float rounding, with the same random numbers; every process's copy of
the weights stays equal to the others bit for bit; a failure or a death in another process is an
error here, not a hang; and the choice of how many processes refuses what this path cannot do."""
import os
import signal

import numpy as np
import pytest

from minivae import models, parallel, rng, threads
from minivae.tensor import Tensor
from minivae import train
from minivae.train import TrainConfig, build

pytestmark = pytest.mark.skipif(parallel._why_not(TrainConfig()) is not None,
                                reason=str(parallel._why_not(TrainConfig())))

IMAGE = (1, 28, 28)


def images(n, seed=1):
    return np.random.default_rng(seed).random((n,) + IMAGE, dtype=np.float32)


def fresh(batch=8, seed=0):
    """Foster's model, optimizer and loss, built (and minivae's generators seeded) from `seed`."""
    return build(TrainConfig(model="foster", batch_size=batch, seed=seed).resolved())


LEARNING_RATES = (5e-4, 2.5e-4, 1e-3)   # a rate that changes between steps (a schedule) reaches every process


def one_process_steps(x, steps, seed=0):
    """The losses of `steps` ordinary steps on x, the weights after them, and the generators' state."""
    model, optimizer, loss_fn = fresh(len(x), seed)
    losses = []
    for k in range(steps):
        optimizer.lr = LEARNING_RATES[k % 3]
        outputs = loss_fn(Tensor(x), *model(Tensor(x)))
        optimizer.zero_grad()
        outputs[0].backward()
        optimizer.step()
        losses.append([t.item() for t in outputs])
    return losses, [p.data.copy() for p in model.parameters()], rng.get_state()


def shared_steps(x, steps, processes=2, seed=0, batch=None):
    model, optimizer, loss_fn = fresh(batch or len(x), seed)
    with parallel.DataParallel(model, optimizer, loss_fn, batch or len(x), IMAGE, processes) as shared:
        losses = []
        for k in range(steps):
            optimizer.lr = LEARNING_RATES[k % 3]
            losses.append(list(shared.step(x)))
        checksums = shared.checksums()
    return losses, [p.data.copy() for p in model.parameters()], rng.get_state(), checksums


def test_a_shared_step_is_the_whole_batch_step(keep_global_rng_state):
    x = images(8)
    one_losses, one_weights, one_state = one_process_steps(x, 3)
    losses, weights, state, checksums = shared_steps(x, 3)
    # the same ε for every image: the losses agree to float32 rounding, not just roughly
    np.testing.assert_allclose(losses, one_losses, rtol=2e-6, atol=1e-7)
    for shared, alone in zip(weights, one_weights):
        np.testing.assert_allclose(shared, alone, rtol=1e-4, atol=1e-6)
    assert state == one_state                   # every generator drew what one process draws
    assert checksums[0] == checksums[1]         # and both copies of the weights are the same bits


def test_gather_brings_every_processs_optimizer_state_here(keep_global_rng_state):
    """Each process keeps Adam's moments of the parameters it updates; gathered, they are the
    moments of one process's steps."""
    x = images(8)
    model, optimizer, loss_fn = fresh(8)
    for _ in range(3):   # one process's, to compare with
        outputs = loss_fn(Tensor(x), *model(Tensor(x)))
        optimizer.zero_grad()
        outputs[0].backward()
        optimizer.step()
    alone = {name: [a.copy() for a in optimizer.state[name]] for name in optimizer.state_names}
    model, optimizer, loss_fn = fresh(8)
    with parallel.DataParallel(model, optimizer, loss_fn, 8, IMAGE, 2) as shared:
        for _ in range(3):
            shared.step(x)
        assert shared.owned[0][1] < len(optimizer.params)      # the other process updates some
        shared.gather()
    for name in optimizer.state_names:
        for gathered, one in zip(optimizer.state[name], alone[name]):
            np.testing.assert_allclose(gathered, one, rtol=1e-3, atol=1e-9)


def test_uneven_parts_are_weighted_by_their_images(keep_global_rng_state):
    x = images(7)                                # 3 images in one process, 4 in the other
    one_losses, one_weights, _ = one_process_steps(x, 2)
    losses, weights, _, checksums = shared_steps(x, 2)
    np.testing.assert_allclose(losses, one_losses, rtol=2e-6, atol=1e-7)
    for shared, alone in zip(weights, one_weights):
        np.testing.assert_allclose(shared, alone, rtol=1e-4, atol=1e-6)
    assert checksums[0] == checksums[1]


def test_the_same_seed_gives_the_same_bits(keep_global_rng_state):
    x = images(8)
    first, second = shared_steps(x, 3), shared_steps(x, 3)
    assert first[0] == second[0]
    assert all(np.array_equal(a, b) for a, b in zip(first[1], second[1]))


def test_a_batch_smaller_than_the_processes_is_taken_here_and_handed_on(keep_global_rng_state):
    x = images(1)
    one_losses, one_weights, one_state = one_process_steps(x, 2)
    losses, weights, state, checksums = shared_steps(x, 2, batch=8)
    np.testing.assert_allclose(losses, one_losses, rtol=2e-6, atol=1e-7)
    assert all(np.array_equal(a, b) for a, b in zip(weights, one_weights))
    assert state == one_state and checksums[0] == checksums[1]


def test_a_failure_in_another_process_is_raised_here_with_its_message(keep_global_rng_state):
    model, optimizer, loss_fn = fresh()
    here = os.getpid()
    before = [p.data.copy() for p in model.parameters()]

    def loss_that_fails_elsewhere(x, *outputs):
        if os.getpid() != here:
            raise ValueError("the loss refuses")
        return loss_fn(x, *outputs)

    with parallel.DataParallel(model, optimizer, loss_that_fails_elsewhere, 8, IMAGE, 2) as shared:
        for _ in range(2):    # and again: the processes are still in step, none waits for ever
            with pytest.raises(RuntimeError, match="process 1 of 2 failed in the step: ValueError: the loss refuses"):
                shared.step(images(8))
        assert len(set(shared.checksums())) == 1
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))   # no update


def test_a_process_that_dies_is_an_error_not_a_hang(keep_global_rng_state):
    model, optimizer, loss_fn = fresh()
    shared = parallel.DataParallel(model, optimizer, loss_fn, 8, IMAGE, 2)
    try:
        shared.step(images(8))
        os.kill(shared.children[0], signal.SIGKILL)
        with pytest.raises(RuntimeError, match="process 1 of 2 ended"):
            shared.step(images(8))
    finally:
        shared.close()
    with pytest.raises(RuntimeError, match="closed"):
        shared.step(images(8))


def test_the_choice_of_processes():
    foster, chollet = models.foster_vae(), models.chollet_vae()
    with_batch_norm = models.foster_vae(use_batch_normalization=True)
    previous = threads.count()
    threads.set_count(2)
    try:
        def chosen(batch, model=foster, **kw):
            return parallel.processes_for(TrainConfig(batch_size=batch, **kw), model)
        assert chosen(32) == 2 and chosen(64) == 2            # 16 and 32 images a process
        assert chosen(16) == 1 and chosen(48) == 1            # 8, or 24: not whole runs of 16
        assert chosen(32, chollet) == 1 and chosen(128, chollet) == 2   # 550,629 parameters: 34k or 8.6k an image
        assert chosen(32, with_batch_norm) == 1 and chosen(32, device="cuda") == 1
        assert chosen(32, processes=1) == 1 and chosen(16, processes=2) == 2
        with pytest.raises(ValueError, match="encoder.encoder_bn_0 and 6 more layers keep.*batch norm"):
            chosen(32, with_batch_norm, processes=2)
        with pytest.raises(ValueError, match="on the CPU, the device is cuda"):
            chosen(32, device="cuda", processes=2)
        with pytest.raises(ValueError, match="at least one image per process"):
            chosen(2, processes=3)
    finally:
        threads.set_count(previous)


def test_a_part_of_a_batch_draws_what_the_whole_batch_would(keep_global_rng_state):
    rng.manual_seed(5)
    whole = rng.generator("sample").standard_normal((6, 2), dtype=np.float32)
    mask = rng.generator("dropout").random((6, 3))
    rng.manual_seed(5)
    with rng.batch_part(2, 4, 6):
        part = rng.generator("sample").standard_normal((2, 2), dtype=np.float32)
        out = np.empty((2, 3))
        rng.generator("dropout").random(out=out)
        with pytest.raises(ValueError, match=r"first axis must be 2"):
            rng.generator("sample").standard_normal((6, 2))
        with pytest.raises(AttributeError, match="integers is not drawn per image"):
            rng.generator("sample").integers(3)
    assert np.array_equal(part, whole[2:4]) and np.array_equal(out, mask[2:4])


def test_training_in_two_processes_ends_near_one_process(tmp_path, monkeypatch):
    from test_train import config, tiny_mnist, weights
    mnist_dir = tiny_mnist(tmp_path, monkeypatch)
    runs = {p: train.train(config(mnist_dir, tmp_path / str(p), processes=p, batch_size=32), log=lambda s: None)
            for p in (1, 2)}
    for key in ("train_loss", "test_loss", "test_kl"):
        np.testing.assert_allclose(runs[2][0][key], runs[1][0][key], rtol=1e-4, atol=1e-6)
    one, two = weights(tmp_path / "1"), weights(tmp_path / "2")
    assert any(not np.array_equal(one[k], two[k]) for k in one)   # two processes really ran the steps
    for k in one:   # Adam's first steps are about ±lr each, whatever the gradient's size: where it is
        np.testing.assert_allclose(two[k], one[k], atol=6 * 5e-4)   # near 0, rounding may flip one


def test_the_command_line_takes_processes_and_refuses_what_it_cannot(capsys):
    from minivae import cli
    assert cli.main(["bench", "--synthetic", "--steps", "1", "--batch-size", "32", "--processes", "2"]) in (0, None)
    assert '"processes": 2' in capsys.readouterr().out
    assert cli.main(["bench", "--model", "foster-faces", "--synthetic", "--steps", "1", "--processes", "2"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--processes 2: encoder.encoder_bn_0 and" in error and "--processes 1" in error
