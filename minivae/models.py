"""The two book VAEs and their losses.

A VAE here is: encoder body → two Dense heads (mu, log_var) → Sampling → decoder.
- `VariationalAutoencoder` is the configurable class of Foster, *Generative Deep Learning*, ch. 3.
  `foster_vae` is its MNIST model, `foster_faces_vae` the CelebA faces model of the same chapter.
- `chollet_vae` builds the model of Chollet, *Deep Learning with Python*, §8.4.
`PRESETS` names each with its loss, optimizer and batch size, as the books trained them.
"""
from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import nn


class VAE(nn.Module):
    """encoder (N, C, H, W) -> features (N, F); mu, log_var heads (N, z); decoder z -> image."""

    def __init__(self, encoder, features, z_dim, decoder, book_exp_log_var=False):
        super().__init__()
        self.encoder = encoder
        self.mu = nn.Dense(features, z_dim)
        self.log_var = nn.Dense(features, z_dim)
        self.sampling = nn.Sampling(book_exp_log_var)
        self.decoder = decoder
        self.z_dim = z_dim

    def encode(self, x):
        """x -> (mu, log_var) of q(z | x)."""
        h = self.encoder(x)
        return self.mu(h), self.log_var(h)

    def encode_z(self, x):
        """x -> a sample z ~ q(z | x)."""
        return self.sampling(*self.encode(x))

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        """x -> (reconstruction, mu, log_var)."""
        mu, log_var = self.encode(x)
        return self.decode(self.sampling(mu, log_var)), mu, log_var


class VariationalAutoencoder(VAE):
    """Foster's configurable VAE: "same" convs + LeakyReLU [+ batch norm] [+ dropout], Flatten,
    mu/log_var heads; decoder Dense → Reshape → transposed convs, LeakyReLU between, sigmoid last."""

    def __init__(self, input_shape, encoder_conv_filters, encoder_conv_kernel_size,
                 encoder_conv_strides, decoder_conv_filters, decoder_conv_kernel_size,
                 decoder_conv_strides, z_dim, use_batch_normalization=False, use_dropout=False,
                 dropout_rate=0.25):
        channels, height, width = input_shape
        lists = [encoder_conv_filters, encoder_conv_kernel_size, encoder_conv_strides]
        if len({len(v) for v in lists}) != 1:
            raise ValueError("VariationalAutoencoder: encoder filters, kernel sizes and strides "
                             f"must have equal lengths, got {[len(v) for v in lists]}")
        lists = [decoder_conv_filters, decoder_conv_kernel_size, decoder_conv_strides]
        if len({len(v) for v in lists}) != 1:
            raise ValueError("VariationalAutoencoder: decoder filters, kernel sizes and strides "
                             f"must have equal lengths, got {[len(v) for v in lists]}")

        def extras(prefix, i, filters):
            layers = {}
            if use_batch_normalization:
                layers[f"{prefix}_bn_{i}"] = nn.BatchNorm2d(filters)
            layers[f"{prefix}_lrelu_{i}"] = nn.LeakyReLU()
            if use_dropout:
                layers[f"{prefix}_dropout_{i}"] = nn.Dropout(dropout_rate)
            return layers

        encoder = {}
        for i, (filters, k, s) in enumerate(zip(encoder_conv_filters, encoder_conv_kernel_size,
                                                encoder_conv_strides)):
            encoder[f"encoder_conv_{i}"] = nn.Conv2d(channels, filters, k, s, padding="same")
            encoder.update(extras("encoder", i, filters))
            channels, height, width = filters, -(-height // s), -(-width // s)  # "same": ceil(n / s)
        shape_before_flattening = (channels, height, width)
        encoder["flatten"] = nn.Flatten()

        decoder = {"decoder_input": nn.Dense(z_dim, int(np.prod(shape_before_flattening))),
                   "reshape": nn.Reshape(*shape_before_flattening)}
        last = len(decoder_conv_filters) - 1
        for i, (filters, k, s) in enumerate(zip(decoder_conv_filters, decoder_conv_kernel_size,
                                                decoder_conv_strides)):
            decoder[f"decoder_conv_t_{i}"] = nn.ConvTranspose2d(channels, filters, k, s, padding="same")
            decoder.update(extras("decoder", i, filters) if i < last else {"sigmoid": nn.Sigmoid()})
            channels = filters
        super().__init__(nn.Sequential(**encoder), int(np.prod(shape_before_flattening)), z_dim,
                         nn.Sequential(**decoder))
        self.input_shape = tuple(input_shape)


def foster_vae(**overrides):
    """The MNIST VAE of Generative Deep Learning ch. 3 (z_dim 2)."""
    config = dict(input_shape=(1, 28, 28), encoder_conv_filters=(32, 64, 64, 64),
                  encoder_conv_kernel_size=(3, 3, 3, 3), encoder_conv_strides=(1, 2, 2, 1),
                  decoder_conv_filters=(64, 64, 32, 1), decoder_conv_kernel_size=(3, 3, 3, 3),
                  decoder_conv_strides=(1, 2, 2, 1), z_dim=2)
    config.update(overrides)
    return VariationalAutoencoder(**config)


def foster_faces_vae(**overrides):
    """The CelebA faces VAE of Generative Deep Learning ch. 3: 128×128 RGB, four stride-2 convs
    each way, batch norm and dropout 0.25 after every conv but the last, z_dim 200."""
    config = dict(input_shape=(3, 128, 128), encoder_conv_filters=(32, 64, 64, 64),
                  encoder_conv_kernel_size=(3, 3, 3, 3), encoder_conv_strides=(2, 2, 2, 2),
                  decoder_conv_filters=(64, 64, 32, 3), decoder_conv_kernel_size=(3, 3, 3, 3),
                  decoder_conv_strides=(2, 2, 2, 2), z_dim=200, use_batch_normalization=True,
                  use_dropout=True, dropout_rate=0.25)
    config.update(overrides)
    return VariationalAutoencoder(**config)


def chollet_vae(z_dim=2, book_exp_log_var=False):
    """The MNIST VAE of Deep Learning with Python §8.4: ReLU convs, Dense 32, 2-D latent."""
    encoder = nn.Sequential(
        conv_0=nn.Conv2d(1, 32, 3, 1), relu_0=nn.ReLU(),
        conv_1=nn.Conv2d(32, 64, 3, 2), relu_1=nn.ReLU(),
        conv_2=nn.Conv2d(64, 64, 3, 1), relu_2=nn.ReLU(),
        conv_3=nn.Conv2d(64, 64, 3, 1), relu_3=nn.ReLU(),
        flatten=nn.Flatten(), dense=nn.Dense(14 * 14 * 64, 32), relu_dense=nn.ReLU())
    decoder = nn.Sequential(
        decoder_input=nn.Dense(z_dim, 14 * 14 * 64), relu_input=nn.ReLU(),
        reshape=nn.Reshape(64, 14, 14),
        conv_t=nn.ConvTranspose2d(64, 32, 3, 2), relu_t=nn.ReLU(),
        conv_out=nn.Conv2d(32, 1, 3, 1), sigmoid=nn.Sigmoid())
    model = VAE(encoder, 32, z_dim, decoder, book_exp_log_var)
    model.input_shape = (1, 28, 28)
    return model


def foster_loss(x, reconstruction, mu, log_var, r_loss_factor=1000.0):
    """Foster: 1000 · per-pixel MSE + KL summed over latent dims, averaged over the batch.
    Returns (total, reconstruction term, KL term), each a batch mean."""
    n = x.shape[0]
    recon = F.mse_loss(reconstruction.reshape(n, -1), x.reshape(n, -1), reduction="none").mean(axis=1)
    recon = recon * r_loss_factor
    kl = F.gaussian_kl(mu, log_var)
    return (recon + kl).mean(), recon.mean(), kl.mean()


def foster_faces_loss(x, reconstruction, mu, log_var):
    """Foster's faces: 10,000 · per-pixel MSE + KL (the faces notebook's r_loss_factor)."""
    return foster_loss(x, reconstruction, mu, log_var, r_loss_factor=10_000.0)


def chollet_loss(x, reconstruction, mu, log_var, kl_weight=5e-4):
    """Chollet: per-pixel binary cross-entropy (mean) + 5e-4 · (−mean over latent dims of
    (1 + log_var − mu² − exp(log_var))), averaged over the batch. The KL term here is
    2·kl_weight·KL/z_dim, since gaussian_kl = −½ Σ(...)."""
    n, z_dim = x.shape[0], mu.shape[1]
    recon = F.binary_cross_entropy(reconstruction.reshape(n, -1), x.reshape(n, -1),
                                   reduction="none").mean(axis=1)
    kl = F.gaussian_kl(mu, log_var) * (2.0 * kl_weight / z_dim)
    return (recon + kl).mean(), recon.mean(), kl.mean()


@dataclass(frozen=True)
class Preset:
    build: object        # () -> VAE
    loss: object         # (x, reconstruction, mu, log_var) -> (total, recon, kl)
    optimizer: str
    lr: float
    batch_size: int
    description: str


PRESETS = {
    "foster": Preset(foster_vae, foster_loss, "adam", 5e-4, 32,
                     "Generative Deep Learning ch. 3: LeakyReLU convs, 1000·MSE + KL, Adam 5e-4"),
    "foster-faces": Preset(foster_faces_vae, foster_faces_loss, "adam", 5e-4, 32,
                           "Generative Deep Learning ch. 3, CelebA faces: 128×128×3, batch norm, "
                           "dropout 0.25, z_dim 200, 10000·MSE + KL, Adam 5e-4"),
    "chollet": Preset(chollet_vae, chollet_loss, "rmsprop", 1e-3, 16,
                      "Deep Learning with Python §8.4: ReLU convs, BCE + 5e-4·KL, RMSprop 1e-3"),
}


def get_preset(name):
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
