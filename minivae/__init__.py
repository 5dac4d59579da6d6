"""minivae: a small deep-learning engine, written to be read, that trains the MNIST VAEs of
Chollet's and Foster's books on the CPU (NumPy) or the GPU (CuPy + our own CUDA kernels)."""
from . import functional
from .backend import cuda_available
from .gradcheck import GradcheckError, gradcheck
from .rng import manual_seed
from .tensor import Tensor, detect_anomaly, is_grad_enabled, no_grad, tensor

__version__ = "0.1.0"

__all__ = ["Tensor", "tensor", "no_grad", "is_grad_enabled", "detect_anomaly", "gradcheck",
           "GradcheckError", "functional", "manual_seed", "cuda_available"]
