"""Optimizers: the rules that turn each parameter's gradient into a step, written as in the papers.

An optimizer holds a list of parameters (anything with a `.data` array and a `.grad` array or None;
in minivae, a model's `nn.Parameter`s) and, for each parameter, the state its rule keeps (a
velocity, running averages) in lists aligned with the parameters. `step()` changes every `.data`
in place, so the arrays a model holds stay the same objects; a parameter whose `.grad` is None
is left alone. A schedule such as `StepDecay` sets `optimizer.lr` between epochs.

    optimizer = Adam(model.parameters(), lr=1e-3)
    for x in batches:
        optimizer.zero_grad()
        loss = vae_loss(model, x)
        loss.backward()
        optimizer.step()

Defaults and formulas are Keras's, which both books train with.

RMSprop and Adam also have a fused CUDA kernel each (kernels/optim.py: one pass that updates the
parameter and its state in place), which `update` runs where `backend.kernels_for` says so (on the
GPU by default); the xp lines are the reference, and the CPU path. They update in place, each
product written into a scratch array from the workspace (`out=`), in the order the formula reads,
so a step allocates nothing and gives the same bits as the formula written out.
"""
import math

import numpy as np

from . import backend, cpu_kernels, kernels
from .workspace import workspace

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "StepDecay", "make_optimizer", "OPTIMIZERS"]


class Optimizer:
    """What every rule shares: the parameters, the learning rate, the step count, the state lists.

    A subclass names its per-parameter state in `state_names` and writes `update(param, grad,
    **state)`, which changes `param` and each state array in place for one parameter.
    """

    state_names = ()  # e.g. ("m", "v") for Adam

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty list of parameters")
        self.lr = float(lr)
        self.iterations = 0  # steps taken so far; Adam's t
        # one entry per parameter, None until that parameter's first step (then created on its
        # device, so a model may move to the GPU after its optimizer was made)
        self.state = {name: [None] * len(self.params) for name in self.state_names}

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient, by the rule in `update`."""
        self.iterations += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            slots = {name: self.state[name][i] for name in self.state_names}
            xp = backend.array_module(p.data, p.grad, *slots.values(), op=f"{type(self).__name__}.step")
            for name, s in slots.items():
                if s is None:
                    slots[name] = self.state[name][i] = xp.zeros_like(p.data)
            self.update(p.data, p.grad, **slots)

    def update(self, param, grad, **state):
        raise NotImplementedError

    @staticmethod
    def fused_kernel_for(param, *state):
        """Run the rule's fused kernel? Where kernels are on, and param and state are C-contiguous:
        the kernel updates them in place through flat views. (Parameters are, and so is the state
        made for them by zeros_like; one made contiguous by a copy would be updated instead of it.)"""
        return backend.kernels_for(param, *state) and all(a.flags.c_contiguous for a in (param, *state))

    # ---- saving and loading --------------------------------------------------------------
    def state_dict(self):
        """A plain dict: the optimizer's name, step count, lr, and each state list as NumPy copies.

        A state entry not yet created is saved as zeros, which is what it would start from.
        Hyper-parameters (momentum, betas, ...) are constructor arguments and are not saved.
        """
        state = {"optimizer": type(self).__name__, "iterations": self.iterations, "lr": self.lr}
        for name in self.state_names:
            state[name] = [np.zeros(p.data.shape, p.data.dtype) if s is None
                           else backend.to_numpy(s).copy()
                           for s, p in zip(self.state[name], self.params)]
        return state

    def load_state_dict(self, state):
        """Restore what `state_dict` saved, each array copied onto its parameter's device.

        Refuses (ValueError) a state from another optimizer, for another number of parameters or
        with a mis-shaped entry, before changing anything.
        """
        kind = type(self).__name__
        if state.get("optimizer") != kind:
            raise ValueError(f"load_state_dict: the state is from {state.get('optimizer')!r}, "
                             f"this optimizer is {kind!r}")
        for name in self.state_names:
            saved = state[name]
            if len(saved) != len(self.params):
                raise ValueError(f"load_state_dict: the state has '{name}' for {len(saved)} "
                                 f"parameters, this {kind} has {len(self.params)}")
            for i, (s, p) in enumerate(zip(saved, self.params)):
                if tuple(s.shape) != tuple(p.data.shape):
                    raise ValueError(f"load_state_dict: '{name}' of parameter {i} has shape "
                                     f"{tuple(s.shape)} in the state but the parameter has "
                                     f"{tuple(p.data.shape)}")
        self.iterations = int(state["iterations"])
        self.lr = float(state["lr"])
        for name in self.state_names:
            # np.array copies: the update works in place and must not write into `state`
            self.state[name] = [backend.to_device(np.array(s, dtype=p.data.dtype),
                                                  backend.device_of(p.data))
                                for s, p in zip(state[name], self.params)]


class SGD(Optimizer):
    """Gradient descent with momentum, as Keras writes it (velocity v, starting at 0):

        v = momentum·v − lr·g
        p = p + v                          (nesterov: p = p + momentum·v − lr·g)

    With momentum 0 this is plain gradient descent, p = p − lr·g.
    """

    state_names = ("velocity",)

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def update(self, param, grad, velocity):
        xp = backend.array_module(param)
        lr_g = xp.multiply(grad, self.lr, out=workspace.like(grad))      # lr·g
        velocity *= self.momentum
        velocity -= lr_g                                                 # v = momentum·v − lr·g
        if self.nesterov:
            # look ahead: the step the velocity is about to take, plus this gradient's step
            ahead = xp.multiply(velocity, self.momentum, out=workspace.like(param))
            ahead -= lr_g
            param += ahead
        else:
            param += velocity


class RMSprop(Optimizer):
    """RMSprop (Hinton, Coursera lecture 6e), as the Keras of Deep Learning with Python (Keras 2)
    writes it (mean square s, starting at 0):

        s = rho·s + (1 − rho)·g²
        p = p − lr·g / (√s + eps)

    eps keeps the division finite where s is 0. PyTorch writes it this way too; tf.keras 2 and
    Keras 3 moved eps inside the root, p − lr·g / √(s + eps), which caps each step at
    lr·|g|/√eps and so slows parameters whose gradients are small: eps_inside_root=True.
    (On the chollet preset the two differ: one epoch reaches test loss 0.201 with √s + eps
    and 0.209 with √(s + eps).)
    """

    state_names = ("mean_square",)

    def __init__(self, params, lr=1e-3, rho=0.9, eps=1e-7, eps_inside_root=False):
        super().__init__(params, lr)
        self.rho, self.eps, self.eps_inside_root = float(rho), float(eps), bool(eps_inside_root)

    def update(self, param, grad, mean_square):
        if self.fused_kernel_for(param, mean_square):
            kernels.rmsprop_update(param, grad, mean_square, self.lr, self.rho, self.eps, self.eps_inside_root)
            return
        if (not self.eps_inside_root and cpu_kernels.use_for(param, grad, mean_square)
                and cpu_kernels.rmsprop(param, grad, mean_square, self.lr, self.rho, self.eps)):
            return  # the lines below in one pass (Numba), the same bits
        xp = backend.array_module(param)
        step, root = workspace.like(param), workspace.like(param)
        xp.multiply(grad, 1 - self.rho, out=step)
        step *= grad
        mean_square *= self.rho
        mean_square += step                                    # s = rho·s + (1 − rho)·g²
        if self.eps_inside_root:
            xp.add(mean_square, self.eps, out=root)
            xp.sqrt(root, out=root)                            # √(s + eps)
        else:
            xp.sqrt(mean_square, out=root)
            root += self.eps                                   # √s + eps
        xp.multiply(grad, self.lr, out=step)
        step /= root
        param -= step                                          # p = p − lr·g / root


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), as Keras writes it (moments m and v, starting at 0; t = step):

        m = β1·m + (1 − β1)·g
        v = β2·v + (1 − β2)·g²
        lr_t = lr·√(1 − β2ᵗ) / (1 − β1ᵗ)
        p = p − lr_t·m / (√v + eps)

    lr_t folds both bias corrections (m̂ = m / (1 − β1ᵗ), v̂ = v / (1 − β2ᵗ)) into the step size:
    this is the paper's "more efficient order" (end of its section 2), whose ε̂ is added to the
    uncorrected √v. Algorithm 1 of the paper (and PyTorch) adds ε to √v̂ instead; Keras's eps
    equals an Algorithm-1 ε of eps/√(1 − β2ᵗ), about 32·eps at t = 1, falling to eps as t grows.
    """

    state_names = ("m", "v")

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def update(self, param, grad, m, v):
        xp = backend.array_module(param)
        t = self.iterations
        # bias correction: m and v start at 0, so early on they underestimate g and g²
        lr_t = self.lr * math.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        if self.fused_kernel_for(param, m, v):
            kernels.adam_update(param, grad, m, v, lr_t, self.beta1, self.beta2, self.eps)
            return
        if cpu_kernels.use_for(param, grad, m, v) and cpu_kernels.adam(param, grad, m, v, lr_t, self.beta1,
                                                                       self.beta2, self.eps):
            return  # the lines below in one pass (Numba), the same bits
        step, root = workspace.like(param), workspace.like(param)
        xp.multiply(grad, 1 - self.beta1, out=step)
        m *= self.beta1
        m += step                                              # m = β1·m + (1 − β1)·g
        xp.multiply(grad, 1 - self.beta2, out=step)
        step *= grad
        v *= self.beta2
        v += step                                              # v = β2·v + (1 − β2)·g²
        xp.sqrt(v, out=root)
        root += self.eps
        xp.multiply(m, lr_t, out=step)
        step /= root
        param -= step                                          # p = p − lr_t·m / (√v + eps)


class StepDecay:
    """Foster's `step_decay_schedule` (Generative Deep Learning, ch. 3):

        lr(epoch) = initial_lr · decay^⌊epoch / step_size⌋

    with epochs counted from 0, as Keras's LearningRateScheduler passes them. Call it for the
    rate, or `apply(optimizer, epoch)` at the start of each epoch to set `optimizer.lr`.
    """

    def __init__(self, initial_lr, decay=0.5, step_size=1):
        if step_size <= 0:
            raise ValueError(f"StepDecay: step_size must be positive, got {step_size}")
        self.initial_lr, self.decay, self.step_size = float(initial_lr), float(decay), step_size

    def __call__(self, epoch):
        return self.initial_lr * self.decay ** math.floor(epoch / self.step_size)

    def apply(self, optimizer, epoch):
        optimizer.lr = self(epoch)
        return optimizer.lr


OPTIMIZERS = {"adam": Adam, "rmsprop": RMSprop, "sgd": SGD}


def make_optimizer(name, params, lr=None):
    """The optimizer called `name` ("adam", "rmsprop" or "sgd") over `params`; lr=None keeps the
    rule's Keras default."""
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(sorted(OPTIMIZERS))}")
    cls = OPTIMIZERS[key]
    return cls(params) if lr is None else cls(params, lr=lr)
