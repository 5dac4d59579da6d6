"""Layers: parameters plus a forward method that calls ops from `minivae.functional`.

A Module owns Parameters (leaf tensors that require grad), buffers (arrays updated without
gradients, like batch norm's running statistics) and child Modules, found by attribute.
Backward needs nothing here: every op a layer calls records its own derivative.
"""
import math

import numpy as np

from . import backend, rng
from . import functional as F
from .functional.activations import Fused
from .tensor import Tensor, layer_scope

__all__ = ["Parameter", "Module", "Sequential", "Conv2d", "ConvTranspose2d", "Dense", "ReLU",
           "LeakyReLU", "Sigmoid", "Flatten", "Reshape", "BatchNorm2d", "Dropout", "Sampling",
           "glorot_uniform"]


class Parameter(Tensor):
    """A tensor the optimizer updates: a leaf that requires grad."""

    def __init__(self, data):
        super().__init__(data, requires_grad=True)


def glorot_uniform(shape, fan_in, fan_out, dtype=np.float32):
    """Keras's default kernel initialiser: U(-a, a) with a = √(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.generator("init").uniform(-limit, limit, size=shape).astype(dtype)


_summary_rows = None  # while Module.summary runs: a list collecting (name, layer, output shape)


class Module:
    def __init__(self):
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "_buffers", {})
        self.training = True
        self.name = None  # set to the attribute name when assigned to a parent Module

    def __setattr__(self, key, value):
        if isinstance(value, Module):
            self._children[key] = value
            value.name = key
        object.__setattr__(self, key, value)

    def register_buffer(self, key, array):
        self._buffers[key] = None
        object.__setattr__(self, key, array)

    def forward(self, *args):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        if self.name is None:  # the outermost model: layer names start below it
            out = self.forward(*args, **kwargs)
        else:
            with layer_scope(self.name):
                out = self.forward(*args, **kwargs)
        if _summary_rows is not None and not self._children and isinstance(out, Tensor):
            _summary_rows.append((self, tuple(out.shape)))
        return out

    # ---- walking the tree ----------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for key, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{key}" if prefix else key)

    def named_parameters(self):
        for path, module in self.named_modules():
            for key, value in vars(module).items():
                if isinstance(value, Parameter):
                    yield (f"{path}.{key}" if path else key), value

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def _named_buffers(self):
        for path, module in self.named_modules():
            for key in module._buffers:
                yield (f"{path}.{key}" if path else key), module, key

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    # ---- saving, loading, moving ---------------------------------------------------------
    def state_dict(self):
        """name -> NumPy array copy, for every parameter and buffer."""
        state = {name: p.numpy().copy() for name, p in self.named_parameters()}
        state.update({name: backend.to_numpy(getattr(m, key)).copy()
                      for name, m, key in self._named_buffers()})
        return state

    def load_state_dict(self, state):
        """Copy arrays in by name; refuses (ValueError, naming the entry) on a missing, extra or
        mis-shaped entry, before changing anything."""
        targets = dict(self.named_parameters())
        buffers = {name: (m, key) for name, m, key in self._named_buffers()}
        expected = set(targets) | set(buffers)
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"load_state_dict: state does not fit {type(self).__name__}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name in expected:
            have = targets[name].shape if name in targets else getattr(*buffers[name]).shape
            if tuple(state[name].shape) != tuple(have):
                raise ValueError(f"load_state_dict: '{name}' has shape {tuple(state[name].shape)} "
                                 f"in the state but {tuple(have)} in the model")
        for name, p in targets.items():
            p.data = backend.to_device(np.asarray(state[name], dtype=p.dtype), p.device)
            p.grad = None
        for name, (m, key) in buffers.items():
            old = getattr(m, key)
            object.__setattr__(m, key, backend.to_device(np.asarray(state[name], old.dtype),
                                                         backend.device_of(old)))

    def to(self, device):
        """Move every parameter and buffer to 'cpu' or 'cuda', in place; returns self."""
        for p in self.parameters():
            p.data, p.grad = backend.to_device(p.data, device), None
        for _, m, key in self._named_buffers():
            object.__setattr__(m, key, backend.to_device(getattr(m, key), device))
        return self

    @property
    def device(self):
        params = self.parameters()
        return params[0].device if params else "cpu"

    def summary(self, input_shape, print_fn=print):
        """Print a Keras-like table (layer, output shape, parameters) by running one sample
        through the model; returns the total parameter count. As in Keras, a layer's count
        includes its buffers (batch norm's running mean and variance), which are the
        non-trainable parameters; the table ends with the trainable, non-trainable and total counts."""
        global _summary_rows
        _summary_rows = []
        try:
            was_training = self.training
            self.eval()
            x = Tensor(np.zeros((1,) + tuple(input_shape), np.float32), device=self.device)
            from .tensor import no_grad
            with no_grad():
                self(x)
            self.train(was_training)
            rows = _summary_rows
        finally:
            _summary_rows = None
        paths = {id(m): path for path, m in self.named_modules()}
        print_fn(f"Model: {type(self).__name__}\n{'-' * 80}")
        print_fn(f"{'Layer (type)':<46}{'Output shape':<22}{'Param #':>12}\n{'=' * 80}")
        counted, trainable, frozen = set(), 0, 0
        for module, shape in rows:
            n_trainable = n_frozen = 0
            if id(module) not in counted:   # a layer called twice is counted once
                n_trainable = sum(v.size for v in vars(module).values() if isinstance(v, Parameter))
                n_frozen = sum(getattr(module, key).size for key in module._buffers)
            counted.add(id(module))
            trainable, frozen = trainable + n_trainable, frozen + n_frozen
            label = f"{paths.get(id(module)) or module.name} ({type(module).__name__})"
            print_fn(f"{label:<46}{str((None,) + shape[1:]):<22}{n_trainable + n_frozen:>12,}")
        total = trainable + frozen
        # Keras's three counts; the total last, so that the table ends with it
        print_fn(f"{'=' * 80}\nTrainable params: {trainable:,}\nNon-trainable params: {frozen:,}\n"
                 f"Total params: {total:,}")
        return total


class Sequential(Module):
    """Layers applied one after another; named by keyword, or by position."""

    def __init__(self, *layers, **named_layers):
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, f"layer_{i}", layer)
        for key, layer in named_layers.items():
            setattr(self, key, layer)

    def __iter__(self):
        return iter(self._children.values())

    def __len__(self):
        return len(self._children)

    def forward(self, x):
        layers = list(self._children.values())
        i = 0
        while i < len(layers):
            activation = _fusable(layers[i], layers[i + 1] if i + 1 < len(layers) else None, x)
            if activation is None:
                x = layers[i](x)
            else:  # the activation runs inside the layer before it, on the parts it makes
                x = layers[i](x, activation=activation)
                i += 1
            i += 1
        return x


FUSE = {"enabled": True}  # False: every layer runs on its own (to compare, or to rule fusion out)


def _fusable(layer, following, x):
    """The activations.Fused for `layer` to apply in place of the ReLU or LeakyReLU `following`
    it, or None. On NumPy arrays only, where our CUDA kernels do not run the activations (on the
    GPU they have kernels of their own), and not while `summary` lists the layers one by one."""
    if (not FUSE["enabled"] or _summary_rows is not None or not isinstance(layer, (Conv2d, ConvTranspose2d, Dense))
            or not isinstance(following, (ReLU, LeakyReLU)) or not isinstance(x, Tensor)
            or backend.array_module(x.data) is not np or backend.kernels_for(x.data)):
        return None
    return following.fused()


class Conv2d(Module):
    """2-D convolution, weight (C_out, C_in, k, k); padding "same" (Keras) by default."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding="same", bias=True):
        super().__init__()
        k = kernel_size
        self.stride, self.padding = stride, padding
        self.weight = Parameter(glorot_uniform((out_channels, in_channels, k, k),
                                               fan_in=in_channels * k * k, fan_out=out_channels * k * k))
        self.bias = Parameter(np.zeros(out_channels, np.float32)) if bias else None

    def forward(self, x, activation=None):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                        activation=activation)


class ConvTranspose2d(Module):
    """Transposed convolution, weight (C_in, C_out, k, k); with "same", output = input × stride."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding="same",
                 output_padding=0, bias=True):
        super().__init__()
        k = kernel_size
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.weight = Parameter(glorot_uniform((in_channels, out_channels, k, k),
                                               fan_in=out_channels * k * k, fan_out=in_channels * k * k))
        self.bias = Parameter(np.zeros(out_channels, np.float32)) if bias else None

    def forward(self, x, activation=None):
        return F.conv_transpose2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                                  output_padding=self.output_padding, activation=activation)


class Dense(Module):
    """Fully connected: y = x @ w + b, w (in_features, out_features)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.weight = Parameter(glorot_uniform((in_features, out_features), in_features, out_features))
        self.bias = Parameter(np.zeros(out_features, np.float32)) if bias else None

    def forward(self, x, activation=None):
        return F.linear(x, self.weight, self.bias, activation)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)

    def fused(self):
        return Fused()


class LeakyReLU(Module):
    """Keras's LeakyReLU: slope 0.3 for negative inputs by default (PyTorch's is 0.01)."""

    def __init__(self, negative_slope=0.3):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def fused(self):
        """The same activation for the layer before to apply (None: a negative slope cannot be)."""
        return Fused(self.negative_slope) if self.negative_slope >= 0 else None


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Flatten(Module):
    """(N, C, H, W) -> (N, C·H·W)."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


class Reshape(Module):
    """(N, ...) -> (N, *shape)."""

    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape)


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel, with Keras's momentum 0.99 and eps 1e-3."""

    def __init__(self, num_channels, momentum=0.99, eps=1e-3):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.gamma = Parameter(np.ones(num_channels, np.float32))
        self.beta = Parameter(np.zeros(num_channels, np.float32))
        self.register_buffer("running_mean", np.zeros(num_channels, np.float32))
        self.register_buffer("running_var", np.ones(num_channels, np.float32))

    def forward(self, x):
        return F.batch_norm(x, self.gamma, self.beta, self.running_mean, self.running_var,
                            training=self.training, momentum=self.momentum, eps=self.eps)


class Dropout(Module):
    """Inverted dropout in training; the identity in eval mode."""

    def __init__(self, rate=0.25):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        return F.dropout(x, self.rate, training=self.training)


class Sampling(Module):
    """The reparameterisation layer: z = mu + exp(½·log_var)·ε, ε ~ N(0, 1).

    book_exp_log_var=True reproduces the code of Deep Learning with Python (1st ed.), which
    used exp(log_var)·ε, i.e. treated log_var as a log standard deviation in the sample
    while its KL term treats it as a log variance."""

    def __init__(self, book_exp_log_var=False):
        super().__init__()
        self.book_exp_log_var = book_exp_log_var

    def forward(self, mu, log_var, eps=None):
        if self.book_exp_log_var:
            return F.reparameterize(mu, log_var * 2.0, eps)  # exp(½·2·log_var) = exp(log_var)
        return F.reparameterize(mu, log_var, eps)
