"""Every differentiable op, forward and backward side by side, grouped by family.

Each public function here takes Tensors (or arrays/numbers) and returns a Tensor whose
`backward` closure applies that op's derivative, stated in its docstring.
"""
from .elementwise import *    # noqa: F401,F403  add sub mul div neg power exp log
from .shape import *          # noqa: F401,F403  sum mean reshape transpose getitem
from .linear import *         # noqa: F401,F403  matmul linear
from .activations import *    # noqa: F401,F403  relu leaky_relu sigmoid
from .conv import *           # noqa: F401,F403  conv2d conv_transpose2d
from .losses import *         # noqa: F401,F403  binary_cross_entropy(_with_logits) mse_loss gaussian_kl
from .sampling import *       # noqa: F401,F403  reparameterize
from .normalization import *  # noqa: F401,F403  batch_norm dropout

import sys as _sys  # noqa: E402

# (the modules' names are looked up in sys.modules: `linear` here is the function, not the module)
FAMILIES = ("elementwise", "shape", "linear", "activations", "conv", "losses", "sampling", "normalization")
__all__ = [name for family in FAMILIES for name in _sys.modules[f"{__name__}.{family}"].__all__]
