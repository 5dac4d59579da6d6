"""im2col and col2im: the data movement behind conv2d and conv_transpose2d (private helpers).

A convolution is a matrix product once every kH×kW input patch is laid out as one column:

    cols[(c, i, j), (oh, ow, n)] = x_padded[n, c, oh·sH + i, ow·sW + j]      (C·kH·kW, OH·OW·N)

Then conv2d is `W @ cols` with W = w.reshape(C_out, C·kH·kW): one large BLAS call.
col2im is the adjoint (transpose) of im2col: it adds every column entry back onto the pixel it
was read from, so a pixel that sits in several patches receives the sum of their entries.

Both loop over the kH·kW kernel offsets only; each offset moves a whole (C, OH, OW, N) block
with one strided slice, so there is no Python loop over the batch or the pixels, and only
slicing and `+=`, which NumPy and CuPy both have.

Memory layout: the batch is the fastest-moving axis, (C, H, W, N) ("CHWN", as in cuda-convnet).
A kernel offset shifts whole rows of pixels, and with N innermost each pixel is a contiguous run
of N numbers (a whole row of them at stride 1), so every slice copies long runs; with the usual
(N, C, H, W) the runs would be only OW numbers long, and the copies 2-4× slower. The convolutions
return their (N, C, H, W) results as transposed views of CHWN memory; elementwise ops keep that
layout, and the next convolution reads it back without a copy.

`pads` is always (top, bottom, left, right): "same" padding can be asymmetric.

On the CPU, where Numba is installed, minivae/cpu_kernels.py builds the same arrays in one pass
(the NumPy lines below are the reference it is tested against). The padded images and patch
matrices come from the workspace (minivae/workspace.py): the same
arrays serve every training step instead of being allocated, and faulted in, afresh.

Where `backend.kernels_for` says so (on the GPU by default), kernels/patches.py builds the same
matrix, element for element, with one CUDA thread per entry instead of kH·kW slices.
"""
from .. import backend, cpu_kernels, kernels
from ..workspace import workspace


def conv_output_size(size, kernel, stride, pad_before, pad_after):
    """Positions of a `kernel`-wide window moving by `stride` over a padded axis of `size`."""
    return (size + pad_before + pad_after - kernel) // stride + 1


def to_chwn(x):
    """(N, C, H, W) -> the matrix (C, H·W·N) the products use: free if x is a CHWN view, else one copy."""
    x_chwn = x.transpose(1, 2, 3, 0)
    if not x_chwn.flags.c_contiguous:
        contiguous = workspace.empty(x_chwn.shape, x.dtype, backend.array_module(x))
        contiguous[...] = x_chwn
        x_chwn = contiguous
    return x_chwn.reshape(x.shape[1], -1)


def from_chwn(y, shape):
    """The matrix (C, H·W·N) as the (N, C, H, W) array `shape`: a transposed view, no copy."""
    n, c, h, w = shape
    return y.reshape(c, h, w, n).transpose(3, 0, 1, 2)


def im2col(x, kernel, stride, pads):
    """(N, C, H, W) -> cols (C·kH·kW, OH·OW·N), the patch of output pixel (n, oh, ow) in each column."""
    if backend.kernels_for(x):
        return kernels.im2col(x, kernel, stride, pads)
    xp = backend.array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel, stride, pads
    oh, ow = conv_output_size(h, kh, sh, top, bottom), conv_output_size(w, kw, sw, left, right)
    x_chwn = x.transpose(1, 2, 3, 0)                                # (C, H, W, N) view
    # kept in the workspace as the matrix, the shape a product of the same size asks for (conv2d's
    # backward hands this memory on to Wᵀ @ dY), and filled through a 6-D view of it
    matrix = workspace.empty((c * kh * kw, oh * ow * n), x.dtype, xp)
    cols = matrix.reshape(c, kh, kw, oh, ow, n)
    if cpu_kernels.use_for(x):
        cpu_kernels.im2col(x_chwn, cols, sh, sw, top, left)
        return matrix
    if any(pads):
        padded = workspace.zeros((c, h + top + bottom, w + left + right, n), x.dtype, xp)
        padded[:, top:top + h, left:left + w] = x_chwn
    else:
        padded = x_chwn
    for i in range(kh):
        for j in range(kw):  # kernel offset (i, j) sees pixels i, i + sH, i + 2·sH, ...
            cols[:, i, j] = padded[:, i:i + sh * oh:sh, j:j + sw * ow:sw]
    return matrix


def col2im(cols, shape, kernel, stride, pads, bias=None, activation=None):
    """The adjoint of im2col: cols (C·kH·kW, OH·OW·N) -> (N, C, H, W), overlapping patches summed;
    then + bias (C,) and an activations.Fused where given (conv_transpose2d's output), on the CPU
    kernels' path in the same pass, each channel while it is in the cache.

    The result is an (N, C, H, W) view of a CHWN buffer.
    """
    if backend.kernels_for(cols):
        return _finish(kernels.col2im(cols, shape, kernel, stride, pads), bias, activation)
    xp = backend.array_module(cols)
    n, c, h, w = shape
    (kh, kw), (sh, sw), (top, bottom, left, right) = kernel, stride, pads
    oh, ow = conv_output_size(h, kh, sh, top, bottom), conv_output_size(w, kw, sw, left, right)
    cols = cols.reshape(c, kh, kw, oh, ow, n)
    if cpu_kernels.use_for(cols) and (bias is None or cpu_kernels.use_for(bias)):
        out = workspace.empty((c, h, w, n), cols.dtype, xp)
        cpu_kernels.col2im(cols, out, sh, sw, top, left, bias, activation)
        return out.transpose(3, 0, 1, 2)
    padded = workspace.zeros((c, h + top + bottom, w + left + right, n), cols.dtype, xp)
    for i in range(kh):
        for j in range(kw):  # the same slices im2col read, now added back (no np.add.at needed)
            padded[:, i:i + sh * oh:sh, j:j + sw * ow:sw] += cols[:, i, j]
    return _finish(padded[:, top:top + h, left:left + w].transpose(3, 0, 1, 2), bias, activation)


def _finish(y, bias, activation):
    """y = activation(y + bias), in place, each where given."""
    if activation is not None:
        activation.apply_with_bias(y, bias)
    elif bias is not None:
        y += bias[:, None, None]
    return y
