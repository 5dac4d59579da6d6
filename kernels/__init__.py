"""Hand-written CUDA kernels (being written)."""
