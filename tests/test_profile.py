"""minivae.profile: the FLOP counts against hand-computed values, then the profiler on real steps."""
import contextlib

import numpy as np
import pytest

import minivae
from minivae import functional as F
from minivae import profile
from minivae.cli import main
from minivae.models import foster_loss, foster_vae
from minivae.tensor import Tensor
from minivae.tensor import _state as tensor_state

# ---- 1. FLOP counts ---------------------------------------------------------------------------------
# Each case: the shapes, which inputs need a gradient, and (forward, backward) worked out by hand.
FLOP_CASES = [
    # conv2d x (2, 3, 8, 8), w (4, 3, 3, 3), "same" -> y (2, 4, 8, 8): 2·4·8·8 = 512 outputs,
    # each a 3·3·3 = 27-term dot product: 2·512·27 = 27648, plus 512 bias adds.
    ("conv2d", ((2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 8, 8)), ("x", "w", "b"), (27648 + 512, 2 * 27648 + 512)),
    # a first layer: its input is data, so the backward skips dL/dx
    ("conv2d", ((2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 8, 8)), ("w", "b"), (27648 + 512, 27648 + 512)),
    # stride 2 -> y (2, 4, 4, 4): 128 outputs, 2·128·27 = 6912
    ("conv2d", ((2, 3, 8, 8), (4, 3, 3, 3), (2, 4, 4, 4)), ("x", "w", "b"), (6912 + 128, 2 * 6912 + 128)),
    # conv_transpose2d x (2, 4, 4, 4), w (4, 3, 3, 3), stride 2 -> y (2, 3, 8, 8): each of the
    # 2·4·4·4 = 128 input pixels adds a 3·3·3 = 27-number patch: 2·128·27 = 6912, plus 2·3·8·8 = 384 bias adds
    ("conv_transpose2d", ((2, 4, 4, 4), (4, 3, 3, 3), (2, 3, 8, 8)), ("x", "w", "b"), (6912 + 384, 2 * 6912 + 384)),
    ("conv_transpose2d", ((2, 4, 4, 4), (4, 3, 3, 3), (2, 3, 8, 8)), ("w",), (6912 + 384, 6912)),
    # linear x (32, 3136) @ w (3136, 2): 2·32·3136·2 = 401408, plus 64 bias adds
    ("linear", ((32, 3136), (3136, 2)), ("x", "w", "b"), (401408 + 64, 2 * 401408 + 64)),
    ("linear", ((5, 7), (7, 3)), ("x",), (2 * 5 * 7 * 3 + 15, 2 * 5 * 7 * 3)),
]
COUNTERS = {"conv2d": profile.conv2d_flops, "conv_transpose2d": profile.conv_transpose2d_flops,
            "linear": profile.linear_flops}


@pytest.mark.parametrize("op, shapes, grads, expected", FLOP_CASES, ids=[c[0] for c in FLOP_CASES])
def test_flop_counts_match_the_hand_computed_ones(op, shapes, grads, expected):
    assert COUNTERS[op](*shapes, bias=True, grads=grads) == expected


def test_the_profiler_counts_what_each_call_needs():
    """A conv on data (no dL/dx) then a dense layer on its output: the counts the profiler records."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.random((2, 3, 8, 8), dtype=np.float32))
    w = Tensor(rng.random((4, 3, 3, 3), dtype=np.float32), requires_grad=True)
    b = Tensor(np.zeros(4, np.float32), requires_grad=True)
    dense_w = Tensor(rng.random((256, 5), dtype=np.float32), requires_grad=True)
    profiler = profile.Profiler()
    with profiler.recording():
        F.linear(F.reshape(F.conv2d(x, w, b, padding="same"), (2, 256)), dense_w).sum().backward()
    rows = {row.op: row for row in profiler.rows.values()}
    assert rows["conv2d"].work == [27648 + 512, 27648 + 512]
    assert rows["linear"].work == [2 * 2 * 256 * 5, 2 * 2 * 256 * 5 * 2]
    assert rows["conv2d"].unit == "FLOP" and rows["sum"].unit == "B" and rows["reshape"].unit is None


# ---- 2. the profiler on training steps ------------------------------------------------------------------

def test_profiling_changes_no_number_and_restores_the_ops(keep_global_rng_state):
    x = Tensor(np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32))
    conv2d = F.conv2d
    losses = []
    for profiling in (False, True):
        minivae.manual_seed(0)  # the same weights and the same ε both times
        model = foster_vae()
        with profile.Profiler().recording() if profiling else contextlib.nullcontext():
            loss = foster_loss(x, *model(x))[0]
            loss.backward()
        losses.append((loss.item(), model.encoder.encoder_conv_0.weight.grad.copy()))
    assert losses[0][0] == losses[1][0]
    np.testing.assert_array_equal(losses[0][1], losses[1][1])
    assert F.conv2d is conv2d and tensor_state["backward_hook"] is None


def test_one_profiled_step_adds_up(keep_global_rng_state):
    """With one profiled step the medians are that step's times: the rows, each timed inside it,
    can add up to no more than the whole step, and they cover the layers and the optimizer."""
    report = profile.run("foster", batch_size=4, steps=1, warmup=1, synthetic=True,
                         peak_size=64, peak_megabytes=1)
    ops = {row.op for row in report.rows}
    assert {"conv2d", "linear", "reparameterize", "conv_transpose2d", "sigmoid",
            "mse_loss", "gaussian_kl", "Adam.step"} <= ops
    assert "leaky_relu" not in ops  # each runs inside the conv before it (nn.Sequential fuses them)
    assert all(row.forward_ms >= 0 and row.backward_ms >= 0 for row in report.rows)
    assert 0 < report.rows_ms <= report.profiled_step_ms
    backward_rows = sum(row.backward_ms for row in report.rows)
    assert 0 < backward_rows <= report.backward_ms
    text = profile.format_report(report)
    total = next(line for line in text.splitlines() if line.startswith("total of the rows"))
    fwd, bwd = (float(v) for v in total.split()[4:6])
    assert fwd + bwd == pytest.approx(report.rows_ms, abs=0.011)


@pytest.mark.parametrize("before, after", [(120.0, 170.0), (170.0, 120.0)])
def test_the_peak_is_the_best_of_products_before_and_after_the_steps(before, after, monkeypatch,
                                                                    keep_global_rng_state):
    """A peak taken at one moment can be a quarter low on a shared machine, and a low peak makes
    the step look nearer its floor: the profile keeps the higher of its two measurements."""
    asked = []

    def peak(device, size, repeats):
        asked.append(repeats)
        return [before, after][len(asked) - 1]
    monkeypatch.setattr(profile, "peak_gflops", peak)
    report = profile.run("chollet", batch_size=2, steps=1, warmup=0, synthetic=True, peak_size=64,
                         peak_megabytes=1)
    assert asked == [profile.PEAK_REPEATS, profile.PEAK_REPEATS]
    assert report.peak_gflops == 170.0


def test_profile_command_prints_the_table(capsys, keep_global_rng_state):
    assert main(["profile", "--model", "chollet", "--synthetic", "--batch-size", "2", "--steps", "1",
                 "--warmup", "0", "--peak-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "encoder.conv_0" in out and "decoder.conv_t" in out and "RMSprop.step" in out
    assert "step with the profiler off:" in out and "× its floor" in out


def test_the_matrix_product_floor_is_the_products_flops_at_the_peak():
    """3 GFLOP of products (a memory-bound row's bytes do not count) at a 150 GFLOP/s peak take
    20 ms; a 50 ms step is 2.5× that floor, and the report says so."""
    rows = [profile.Row("encoder.conv", "conv2d", [0.010], [0.020], [1e9, 2e9], "FLOP"),
            profile.Row("encoder.act", "leaky_relu", [0.001], [0.001], [5e8, 5e8], "B")]
    report = profile.Report("foster", "cpu", 32, 1, 0, peak_gflops=150.0, peak_gbps=10.0, peak_size=64,
                            peak_megabytes=1, rows=rows, step_ms=50.0, profiled_step_ms=51.0,
                            forward_ms=12.0, backward_ms=22.0, cpu="Some CPU")
    assert report.matrix_flops == 3e9
    assert report.floor_ms == pytest.approx(20.0)
    text = profile.format_report(report)
    assert "on cpu (Some CPU, " in text.splitlines()[0]
    assert ("matrix-product floor: the step's products, 3 GFLOP, at the peak 150.0 GFLOP/s take 20.00 ms; "
            "the step (profiler off) is 2.50× its floor") in text
