"""Layers and the two book models: shapes, parameter counts (equal to the Keras models'),
initialisation, state dicts, train/eval behaviour, gradients reaching every parameter."""
import numpy as np
import pytest

import minivae
from minivae import nn
from minivae.models import PRESETS, VariationalAutoencoder, chollet_loss, foster_loss, foster_vae


@pytest.mark.parametrize("name, trainable, frozen", [
    ("foster", 207_237, 0), ("chollet", 550_629, 0),
    # batch norm's moving mean and variance: 2 · (32+64+64+64 + 64+64+32) = 768, as Keras counts them
    ("foster-faces", 2_649_299, 768)])
def test_parameter_counts_equal_the_keras_models(name, trainable, frozen):
    model = PRESETS[name].build()
    lines = []
    total = trainable + frozen
    assert model.summary(model.input_shape, print_fn=lines.append) == total
    assert lines[-1].splitlines()[-3:] == [f"Trainable params: {trainable:,}",
                                           f"Non-trainable params: {frozen:,}", f"Total params: {total:,}"]


def test_foster_first_convs_have_the_books_parameter_counts():
    model = foster_vae()
    assert model.encoder.encoder_conv_0.weight.size + model.encoder.encoder_conv_0.bias.size == 320
    assert model.encoder.encoder_conv_1.weight.size + model.encoder.encoder_conv_1.bias.size == 18_496


def test_glorot_uniform_bounds_and_zero_biases():
    minivae.manual_seed(0)
    conv = nn.Conv2d(32, 64, 3)
    limit = np.sqrt(6 / (32 * 9 + 64 * 9))
    assert np.abs(conv.weight.data).max() <= limit and np.abs(conv.weight.data).max() > 0.9 * limit
    assert not conv.bias.data.any()


def test_same_seed_same_weights():
    minivae.manual_seed(3)
    a = foster_vae().state_dict()
    minivae.manual_seed(3)
    b = foster_vae().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_forward_shapes_and_every_parameter_gets_a_gradient(name):
    minivae.manual_seed(0)
    model, loss_fn = PRESETS[name].build(), PRESETS[name].loss
    shape = (3,) + model.input_shape   # (3, 1, 28, 28) for MNIST, (3, 3, 128, 128) for the faces
    x = minivae.Tensor(np.random.default_rng(0).random(shape, dtype=np.float32))
    reconstruction, mu, log_var = model(x)
    assert reconstruction.shape == shape and mu.shape == log_var.shape == (3, model.z_dim)
    loss, recon, kl = loss_fn(x, reconstruction, mu, log_var)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and np.isfinite(p.grad).all(), pname


def test_foster_options_batch_norm_and_dropout():
    model = foster_vae(use_batch_normalization=True, use_dropout=True)
    names = [name for name, _ in model.named_modules()]
    assert "encoder.encoder_bn_0" in names and "encoder.encoder_dropout_3" in names
    assert "decoder.decoder_bn_2" in names and "decoder.decoder_bn_3" not in names  # none before the sigmoid
    x = minivae.Tensor(np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))
    model.eval()
    a, b = model.decode(model.encode(x)[0]).data, model.decode(model.encode(x)[0]).data
    np.testing.assert_array_equal(a, b)  # eval: dropout off, batch norm on running statistics
    state = model.state_dict()
    assert "encoder.encoder_bn_0.running_mean" in state


def test_configurable_like_the_book():
    model = VariationalAutoencoder(input_shape=(1, 28, 28), encoder_conv_filters=(8, 16),
                                   encoder_conv_kernel_size=(3, 5), encoder_conv_strides=(2, 2),
                                   decoder_conv_filters=(8, 1), decoder_conv_kernel_size=(5, 3),
                                   decoder_conv_strides=(2, 2), z_dim=5)
    out, mu, _ = model(minivae.Tensor(np.zeros((2, 1, 28, 28), np.float32)))
    assert out.shape == (2, 1, 28, 28) and mu.shape == (2, 5)
    with pytest.raises(ValueError, match="equal lengths"):
        VariationalAutoencoder((1, 28, 28), (8, 16), (3,), (2, 2), (1,), (3,), (1,), 2)


def test_state_dict_round_trip_and_shape_check():
    minivae.manual_seed(0)
    a = foster_vae()
    minivae.manual_seed(1)
    b = foster_vae()
    b.load_state_dict(a.state_dict())
    assert all(np.array_equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({})
    bad = a.state_dict()
    bad["mu.weight"] = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"'mu.weight' has shape \(5, 2\)"):
        b.load_state_dict(bad)


def test_losses_follow_the_books():
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 28, 28))
    recon = rng.uniform(0.05, 0.95, (4, 1, 28, 28))
    mu, log_var = rng.standard_normal((4, 2)), rng.standard_normal((4, 2)) * 0.3
    kl_sum = -0.5 * (1 + log_var - mu**2 - np.exp(log_var)).sum(axis=1)
    total, _, _ = foster_loss(*map(minivae.Tensor, (x, recon, mu, log_var)))
    mse = ((x - recon) ** 2).reshape(4, -1).mean(axis=1)
    assert total.item() == pytest.approx(np.mean(1000 * mse + kl_sum))
    total, _, _ = PRESETS["foster-faces"].loss(*map(minivae.Tensor, (x, recon, mu, log_var)))
    assert total.item() == pytest.approx(np.mean(10_000 * mse + kl_sum))
    total, _, _ = chollet_loss(*map(minivae.Tensor, (x, recon, mu, log_var)))
    bce = -(x * np.log(recon) + (1 - x) * np.log(1 - recon)).reshape(4, -1).mean(axis=1)
    kl_book = -5e-4 * (1 + log_var - mu**2 - np.exp(log_var)).mean(axis=1)
    assert total.item() == pytest.approx(np.mean(bce + kl_book))


def test_layer_names_reach_traces_and_anomaly_errors():
    model = foster_vae()
    model.mu.weight.data[:] = np.float32(3e38)  # make the mu head overflow
    x = minivae.Tensor(np.ones((1, 1, 28, 28), np.float32))
    with minivae.detect_anomaly(), pytest.raises(FloatingPointError, match=r"layer 'mu'"), \
            np.errstate(all="ignore"):
        model(x)
