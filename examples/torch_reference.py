"""The book VAEs in PyTorch, as an outside reference for minivae (speed and agreement).

`torch_twin(name, model)` builds the PyTorch model of preset `name` with the weights of the minivae
model `model` copied in (batch norm's running statistics too), the same layers, the same Keras
"same" padding (the odd row/column of padding at the bottom/right, done with explicit pads and
crops), the same loss and the same optimizer settings. Nothing in minivae imports this file:
PyTorch is an oracle here, not a code path.

    python examples/torch_reference.py      # checks that every preset agrees with minivae's
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


def foster_faces_torch():
    """128×128×3 → four stride-2 convs, each followed by batch norm, LeakyReLU and dropout."""
    def block(conv, channels):
        # Keras's BatchNormalization: eps 1e-3, moving average 0.99 (PyTorch counts it as 1 - 0.99)
        return [conv, nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01), nn.LeakyReLU(0.3), nn.Dropout(0.25)]
    encoder, channels, size = [], 3, 128
    for filters in (32, 64, 64, 64):
        encoder += block(SameConv(channels, filters, 2, size), filters)
        channels, size = filters, size // 2
    decoder = [Dense(200, 64 * 8 * 8), nn.Unflatten(1, (64, 8, 8))]
    for filters in (64, 64, 32):
        decoder += block(SameConvT(channels, filters, 2, size), filters)
        channels, size = filters, size * 2
    decoder += [SameConvT(channels, 3, 2, size), nn.Sigmoid()]
    return TorchVAE(nn.Sequential(*encoder, nn.Flatten()), 64 * 8 * 8, nn.Sequential(*decoder), z_dim=200)


def chollet_torch():
    encoder = nn.Sequential(SameConv(1, 32, 1, 28), nn.ReLU(), SameConv(32, 64, 2, 28), nn.ReLU(),
                            SameConv(64, 64, 1, 14), nn.ReLU(), SameConv(64, 64, 1, 14), nn.ReLU(),
                            nn.Flatten(), Dense(12544, 32), nn.ReLU())
    decoder = nn.Sequential(Dense(2, 12544), nn.ReLU(), nn.Unflatten(1, (64, 14, 14)),
                            SameConvT(64, 32, 2, 14), nn.ReLU(), SameConv(32, 1, 1, 28), nn.Sigmoid())
    return TorchVAE(encoder, 32, decoder)


def foster_loss(r_loss_factor):
    def loss(x, reconstruction, mu, log_var):
        recon = r_loss_factor * ((reconstruction - x) ** 2).flatten(1).mean(1)
        kl = -0.5 * (1 + log_var - mu ** 2 - log_var.exp()).sum(1)
        return (recon + kl).mean()
    return loss


def chollet_loss(x, reconstruction, mu, log_var):
    recon = TF.binary_cross_entropy(reconstruction.clamp(1e-7, 1 - 1e-7), x, reduction="none").flatten(1).mean(1)
    kl = -5e-4 * (1 + log_var - mu ** 2 - log_var.exp()).mean(1)
    return (recon + kl).mean()


TWINS = {
    # name: (builder, loss, optimizer with the Keras settings minivae uses)
    "foster": (foster_torch, foster_loss(1000), lambda p: torch.optim.Adam(p, lr=5e-4, eps=1e-7)),
    "foster-faces": (foster_faces_torch, foster_loss(10_000), lambda p: torch.optim.Adam(p, lr=5e-4, eps=1e-7)),
    "chollet": (chollet_torch, chollet_loss, lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-7)),
}


def weighted_layers(twin):
    """The twin's layers in minivae's parameter order: encoder, mu, log_var, decoder, each layer's
    (weight, bias) in turn; a batch norm's (gamma, beta) are PyTorch's (weight, bias)."""
    weighted = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d)
    return ([m for m in twin.encoder.modules() if isinstance(m, weighted)] + [twin.mu, twin.log_var]
            + [m for m in twin.decoder.modules() if isinstance(m, weighted)])


def torch_twin(name, model):
    """(torch model, loss, optimizer) for preset `name`, starting from minivae `model`'s weights."""
    build, loss, make_optimizer = TWINS[name]
    twin = build()
    ours = [p.data for p in model.parameters()]
    order = weighted_layers(twin)
    assert 2 * len(order) == len(ours), "the twin's layers do not match minivae's"
    for layer, (weight, bias) in zip(order, zip(ours[::2], ours[1::2])):
        if isinstance(layer, Dense):
            layer.load_keras(weight, bias)
        else:
            layer.weight.data, layer.bias.data = torch.tensor(weight), torch.tensor(bias)
    norms = [m for m in twin.modules() if isinstance(m, nn.BatchNorm2d)]
    state = model.state_dict()
    running = [name for name in state if name.endswith(".running_mean")]
    assert len(norms) == len(running), "the twin's batch norms do not match minivae's"
    for norm, name in zip(norms, running):
        norm.running_mean.data = torch.tensor(state[name])
        norm.running_var.data = torch.tensor(state[name.replace("running_mean", "running_var")])
    return twin, loss, make_optimizer(twin.parameters())


def without_dropout(model, twin):
    """Both models with every dropout rate set to 0, so that training mode is deterministic."""
    from minivae import nn as mnn
    for _, module in model.named_modules():
        if isinstance(module, mnn.Dropout):
            module.rate = 0.0
    for module in twin.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def layer_gradients(twin):
    """The twin's gradients in minivae's parameter order and layouts (Dense kernels as (in, out))."""
    grads = []
    for layer in weighted_layers(twin):
        weight = layer.weight.grad.double().numpy()
        grads += [weight.T if isinstance(layer, Dense) else weight, layer.bias.grad.double().numpy()]
    return grads


def worst_relative_difference(grads, reference):
    """max |a - b| over every parameter, relative to the largest reference gradient of its layer
    (weight and bias together): the layers' scales differ widely, and a conv bias before a batch
    norm gets no gradient at all (the norm subtracts the mean it adds), only float noise."""
    worst = 0.0
    for k in range(0, len(reference), 2):
        scale = max(np.abs(reference[k]).max(), np.abs(reference[k + 1]).max(), 1e-12)
        worst = max(worst, *(np.abs(grads[i] - reference[i]).max() / scale for i in (k, k + 1)))
    return worst


def compare(name):
    """How far minivae's preset `name` is from its twin, z = mu throughout: the reconstructions in
    evaluation mode (batch norm on running statistics, set to random values here so that they
    matter), then in training mode with dropout off (batch norm on the batch's statistics), and
    the loss's gradients there. The gradients are compared with the twin in float64, and so are
    PyTorch's own float32 ones, since float32 alone strays measurably on foster-faces: its batch
    norms sum up to 16,384 values per channel. Last, minivae's gradients in float64 against the
    twin's: in float32 a pre-activation within rounding of 0 may fall on either side of a ReLU in
    two right computations (summed in other orders), and their gradients then differ at that unit;
    in float64 the two must agree to rounding."""
    import minivae
    from minivae.models import get_preset
    from minivae.tensor import no_grad

    preset = get_preset(name)
    model = preset.build()
    rng = np.random.default_rng(0)
    state = {key: (rng.uniform(0.5, 2, value.shape) if key.endswith("running_var") else
                   rng.normal(0, 0.1, value.shape) if key.endswith("running_mean") else value).astype(np.float32)
             for key, value in model.state_dict().items()}
    model.load_state_dict(state)
    twin, loss_fn, _ = torch_twin(name, model)
    x = rng.random((4,) + model.input_shape, dtype=np.float32)
    differences = {}

    model.eval(), twin.eval()
    with no_grad():
        ours = model.decode(model.encode(minivae.tensor(x))[0]).data
    theirs = twin(torch.tensor(x), sample=False)[0].detach().numpy()
    differences["eval"] = np.abs(ours - theirs).max()

    model.train(), twin.train()
    without_dropout(model, twin)
    mu, log_var = model.encode(minivae.tensor(x))
    reconstruction = model.decode(mu)
    preset.loss(minivae.tensor(x), reconstruction, mu, log_var)[0].backward()
    gradients = {}
    for dtype in (torch.float32, torch.float64):
        twin.to(dtype).zero_grad()
        out = twin(torch.tensor(x, dtype=dtype), sample=False)
        loss_fn(torch.tensor(x, dtype=dtype), *out).backward()
        gradients[dtype] = layer_gradients(twin)
    differences["train"] = np.abs(reconstruction.data - out[0].detach().numpy()).max()
    reference = gradients[torch.float64]
    differences["gradient"] = worst_relative_difference([p.grad for p in model.parameters()], reference)
    differences["torch_float32_gradient"] = worst_relative_difference(gradients[torch.float32], reference)

    for p in model.parameters():                              # minivae's model in float64
        p.data, p.grad = p.data.astype(np.float64), None
    for _, module in model.named_modules():
        for key in module._buffers:
            object.__setattr__(module, key, getattr(module, key).astype(np.float64))
    x64 = minivae.tensor(x.astype(np.float64))
    mu, log_var = model.encode(x64)
    preset.loss(x64, model.decode(mu), mu, log_var)[0].backward()
    differences["float64_gradient"] = worst_relative_difference([p.grad for p in model.parameters()], reference)
    return differences


def main():
    for name in TWINS:
        d = compare(name)
        print(f"{name}: z = mu reconstructions differ by at most {d['eval']:.2e} (evaluation mode) and "
              f"{d['train']:.2e} (training mode, dropout off); against float64 PyTorch, the gradients "
              f"differ by {d['gradient']:.2e} of their layer's largest (PyTorch's float32: "
              f"{d['torch_float32_gradient']:.2e}; minivae's float64: {d['float64_gradient']:.2e})")


if __name__ == "__main__":
    main()
