"""The two book VAEs in PyTorch, as an outside reference for minivae (speed and agreement).

`torch_twin(name, model)` builds the PyTorch model of preset `name` with the weights of the minivae
model `model` copied in, the same layers, the same Keras "same" padding (the odd row/column of
padding at the bottom/right, done with explicit pads and crops), the same loss and the same
optimizer settings. Nothing in minivae imports this file: PyTorch is an oracle here, not a code path.

    python examples/torch_reference.py      # checks that both presets agree with minivae's forward
"""
import numpy as np
import torch
import torch.nn.functional as TF
from torch import nn

K = 3  # every conv of both books is 3×3


def same_pads(size, stride):
    """Keras' "same" for a 3×3 conv over `size` pixels: (before, after), the odd one after."""
    total = max((-(-size // stride) - 1) * stride + K - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Conv2d):
    """Conv2d with Keras "same" padding on a square input of `size` pixels: PyTorch's own padding
    where it is symmetric, else an explicit pad first."""

    def __init__(self, c_in, c_out, stride, size):
        before, after = self.pads = same_pads(size, stride)
        super().__init__(c_in, c_out, K, stride, padding=before if before == after else 0)

    def forward(self, x):
        before, after = self.pads
        return super().forward(x if before == after else TF.pad(x, (before, after, before, after)))


class SameConvT(nn.ConvTranspose2d):
    """ConvTranspose2d with Keras "same" padding: output = input·stride, the adjoint of SameConv."""

    def __init__(self, c_in, c_out, stride, size):
        before, after = same_pads(size * stride, stride)
        super().__init__(c_in, c_out, K, stride, padding=before)
        self.out_size = size * stride

    def forward(self, x):
        y = super().forward(x)
        return y[:, :, :self.out_size, :self.out_size]  # crops the odd row and column, if any


class Dense(nn.Linear):
    """Keras's Dense keeps its kernel as (in, out); minivae does too. PyTorch's Linear is (out, in)."""

    def load_keras(self, kernel, bias):
        self.weight.data = torch.tensor(np.ascontiguousarray(kernel.T))
        self.bias.data = torch.tensor(bias)


class TorchVAE(nn.Module):
    def __init__(self, encoder, features, decoder, z_dim=2):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.mu, self.log_var = Dense(features, z_dim), Dense(features, z_dim)

    def forward(self, x, sample=True):
        h = self.encoder(x)
        mu, log_var = self.mu(h), self.log_var(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu) if sample else mu
        return self.decoder(z), mu, log_var


def foster_torch():
    act = lambda: nn.LeakyReLU(0.3)  # noqa: E731  (Keras's default slope)
    encoder = nn.Sequential(SameConv(1, 32, 1, 28), act(), SameConv(32, 64, 2, 28), act(),
                            SameConv(64, 64, 2, 14), act(), SameConv(64, 64, 1, 7), act(), nn.Flatten())
    decoder = nn.Sequential(Dense(2, 3136), nn.Unflatten(1, (64, 7, 7)),
                            SameConvT(64, 64, 1, 7), act(), SameConvT(64, 64, 2, 7), act(),
                            SameConvT(64, 32, 2, 14), act(), SameConvT(32, 1, 1, 28), nn.Sigmoid())
    return TorchVAE(encoder, 3136, decoder)


def chollet_torch():
    encoder = nn.Sequential(SameConv(1, 32, 1, 28), nn.ReLU(), SameConv(32, 64, 2, 28), nn.ReLU(),
                            SameConv(64, 64, 1, 14), nn.ReLU(), SameConv(64, 64, 1, 14), nn.ReLU(),
                            nn.Flatten(), Dense(12544, 32), nn.ReLU())
    decoder = nn.Sequential(Dense(2, 12544), nn.ReLU(), nn.Unflatten(1, (64, 14, 14)),
                            SameConvT(64, 32, 2, 14), nn.ReLU(), SameConv(32, 1, 1, 28), nn.Sigmoid())
    return TorchVAE(encoder, 32, decoder)


def foster_loss(x, reconstruction, mu, log_var):
    recon = 1000 * ((reconstruction - x) ** 2).flatten(1).mean(1)
    kl = -0.5 * (1 + log_var - mu ** 2 - log_var.exp()).sum(1)
    return (recon + kl).mean()


def chollet_loss(x, reconstruction, mu, log_var):
    recon = TF.binary_cross_entropy(reconstruction.clamp(1e-7, 1 - 1e-7), x, reduction="none").flatten(1).mean(1)
    kl = -5e-4 * (1 + log_var - mu ** 2 - log_var.exp()).mean(1)
    return (recon + kl).mean()


TWINS = {
    # name: (builder, loss, optimizer with the Keras settings minivae uses)
    "foster": (foster_torch, foster_loss, lambda p: torch.optim.Adam(p, lr=5e-4, eps=1e-7)),
    "chollet": (chollet_torch, chollet_loss, lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-7)),
}


def torch_twin(name, model):
    """(torch model, loss, optimizer) for preset `name`, starting from minivae `model`'s weights."""
    build, loss, make_optimizer = TWINS[name]
    twin = build()
    ours = [p.data for p in model.parameters()]
    # minivae's parameter order is encoder, mu, log_var, decoder, (weight, bias) for each layer
    weighted = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    order = ([m for m in twin.encoder.modules() if isinstance(m, weighted)] + [twin.mu, twin.log_var]
             + [m for m in twin.decoder.modules() if isinstance(m, weighted)])
    assert 2 * len(order) == len(ours), "the twin's layers do not match minivae's"
    for layer, (weight, bias) in zip(order, zip(ours[::2], ours[1::2])):
        if isinstance(layer, Dense):
            layer.load_keras(weight, bias)
        else:
            layer.weight.data, layer.bias.data = torch.tensor(weight), torch.tensor(bias)
    return twin, loss, make_optimizer(twin.parameters())


def main():
    import minivae
    from minivae.models import get_preset
    from minivae.tensor import no_grad

    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    for name in TWINS:
        model = get_preset(name).build()
        twin, _, _ = torch_twin(name, model)
        with no_grad():
            mu, _ = model.encode(minivae.tensor(x))
            ours = model.decode(mu).data
        theirs = twin(torch.tensor(x), sample=False)[0].detach().numpy()
        print(f"{name}: z = mu reconstructions differ by at most {np.abs(ours - theirs).max():.2e}")


if __name__ == "__main__":
    main()
