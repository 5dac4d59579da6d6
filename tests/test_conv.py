"""conv2d and conv_transpose2d, checked three ways, in the order a reader should meet them:

1. against plain loops that follow the definitions one output number at a time;
2. the adjoint identity ⟨conv2d(x, w), y⟩ = ⟨x, conv_transpose2d(y, w)⟩, which is what makes the
   transposed convolution conv2d's gradient (and the other way round);
3. numerical gradient checks in float64;
then the error messages for bad arguments.
"""
import re

import numpy as np
import pytest
from helpers import Case, randn

import minivae
import minivae.functional as F


# ---- 1. the loop references ---------------------------------------------------------------------

def conv2d_loops(x, w, b, stride, pads):
    """y[n, o, p, q] = b[o] + Σ_{c,i,j} w[o, c, i, j] · x_pad[n, c, p·sH + i, q·sW + j]."""
    (sh, sw), (top, bottom, left, right) = stride, pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c_in, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    y = np.zeros((n, c_out, (h - kh) // sh + 1, (wd - kw) // sw + 1))
    for n_, o, p, q in np.ndindex(*y.shape):
        y[n_, o, p, q] = b[o]
        for c, i, j in np.ndindex(c_in, kh, kw):
            y[n_, o, p, q] += w[o, c, i, j] * x[n_, c, p * sh + i, q * sw + j]
    return y


def conv_transpose2d_loops(x, w, b, stride, pads, out_hw):
    """Each input pixel x[n, c, p, q] adds x[n, c, p, q] · w[c] onto the output patch at
    (p·sH, q·sW) of a padded canvas; the padding is then cropped off."""
    (sh, sw), (top, bottom, left, right) = stride, pads
    n, c_in, h, wd = x.shape
    _, c_out, kh, kw = w.shape
    canvas = np.zeros((n, c_out, out_hw[0] + top + bottom, out_hw[1] + left + right))
    for n_, c, p, q in np.ndindex(n, c_in, h, wd):
        canvas[n_, :, p * sh:p * sh + kh, q * sw:q * sw + kw] += x[n_, c, p, q] * w[c]
    return canvas[:, :, top:top + out_hw[0], left:left + out_hw[1]] + b[None, :, None, None]


# (id, x shape, w shape, stride, padding, the (top, bottom, left, right) padding it means)
CONV_CASES = [
    ("valid", (2, 3, 6, 5), (4, 3, 3, 3), 1, 0, (0, 0, 0, 0)),
    ("pad1", (2, 3, 6, 5), (4, 3, 3, 3), 1, 1, (1, 1, 1, 1)),
    ("pair-stride-and-padding", (1, 2, 7, 6), (3, 2, 3, 2), (2, 1), (1, 0), (1, 1, 0, 0)),
    ("stride3-odd", (1, 1, 9, 7), (2, 1, 2, 3), 3, 0, (0, 0, 0, 0)),
    ("same-s1", (2, 2, 5, 6), (3, 2, 3, 3), 1, "same", (1, 1, 1, 1)),
    # Keras' "same": out = ceil(in / s), total pad = (out - 1)·s + k - in, the odd one at the end.
    # 8 rows, s=2: out 4, total 3·2 + 3 - 8 = 1 -> (0, 1); 6 columns: out 3, total 1 -> (0, 1)
    ("same-s2-asymmetric", (2, 2, 8, 6), (3, 2, 3, 3), 2, "same", (0, 1, 0, 1)),
    # 7 rows, s=2: out 4, total 2 -> (1, 1); 10 columns: out 5, total 1 -> (0, 1)
    ("same-s2-odd-rows", (1, 2, 7, 10), (2, 2, 3, 3), 2, "same", (1, 1, 0, 1)),
    ("same-even-kernel", (1, 1, 5, 4), (2, 1, 2, 2), 1, "same", (0, 1, 0, 1)),
    # fewer channels out than in, stride 1: computed as the transposed conv of the turned kernel
    ("narrowing-same", (2, 5, 6, 7), (2, 5, 3, 3), 1, "same", (1, 1, 1, 1)),
    ("narrowing-to-one-asymmetric", (2, 4, 5, 6), (1, 4, 4, 3), 1, "same", (1, 2, 1, 1)),
    ("narrowing-valid-non-square", (1, 3, 6, 5), (2, 3, 2, 3), 1, 0, (0, 0, 0, 0)),
    ("narrowing-pad-wider-than-kernel", (1, 3, 4, 4), (2, 3, 3, 3), 1, 3, (3, 3, 3, 3)),  # the usual way
]


@pytest.mark.parametrize("id_, x_shape, w_shape, stride, padding, pads", CONV_CASES,
                         ids=[c[0] for c in CONV_CASES])
def test_conv2d_matches_loops(id_, x_shape, w_shape, stride, padding, pads):
    x, w, b = randn(*x_shape, seed=1), randn(*w_shape, seed=2), randn(w_shape[0], seed=3)
    strides = stride if isinstance(stride, tuple) else (stride, stride)
    expected = conv2d_loops(x, w, b, strides, pads)
    np.testing.assert_allclose(F.conv2d(x, w, b, stride=stride, padding=padding).data, expected,
                               rtol=1e-10, atol=1e-12)


# (id, x shape, w shape (C_in, C_out, kH, kW), stride, padding, output_padding, pads, output size)
TRANSPOSED_CASES = [
    ("s1-pad0", (2, 3, 4, 5), (3, 2, 3, 3), 1, 0, 0, (0, 0, 0, 0), (6, 7)),
    ("s2-pad1", (1, 2, 3, 4), (2, 3, 3, 3), 2, 1, 0, (1, 1, 1, 1), (5, 7)),
    ("s2-output-padding", (1, 2, 3, 4), (2, 3, 3, 3), 2, 1, 1, (1, 1, 1, 1), (6, 8)),
    ("s3-pairs", (2, 1, 3, 2), (1, 2, 2, 3), (3, 2), (0, 1), (2, 1), (0, 0, 1, 1), (10, 4)),
    ("same-s1", (2, 2, 4, 5), (2, 3, 3, 3), 1, "same", 0, (1, 1, 1, 1), (4, 5)),
    # "same": out = in·s, and the pads are those of the conv2d("same") from the 8×6 output: (0, 1)
    ("same-s2-asymmetric", (2, 2, 4, 3), (2, 3, 3, 3), 2, "same", 0, (0, 1, 0, 1), (8, 6)),
    ("same-s2-kernel-smaller-than-stride", (1, 2, 3, 3), (2, 1, 1, 1), 2, "same", 0, (0, 0, 0, 0), (6, 6)),
]


@pytest.mark.parametrize("id_, x_shape, w_shape, stride, padding, output_padding, pads, out_hw",
                         TRANSPOSED_CASES, ids=[c[0] for c in TRANSPOSED_CASES])
def test_conv_transpose2d_matches_loops(id_, x_shape, w_shape, stride, padding, output_padding, pads,
                                        out_hw):
    x, w, b = randn(*x_shape, seed=1), randn(*w_shape, seed=2), randn(w_shape[1], seed=3)
    strides = stride if isinstance(stride, tuple) else (stride, stride)
    expected = conv_transpose2d_loops(x, w, b, strides, pads, out_hw)
    y = F.conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=output_padding)
    assert y.shape == (x_shape[0], w_shape[1]) + out_hw
    np.testing.assert_allclose(y.data, expected, rtol=1e-10, atol=1e-12)


# ---- 2. the adjoint identity ----------------------------------------------------------------------

# (id, x shape, w shape (C_out, C_in, kH, kW) for conv2d, stride, padding). For "same" the input size
# is a multiple of the stride, since conv_transpose2d(padding="same") makes in·stride pixels.
ADJOINT_CASES = [
    ("valid", (2, 3, 6, 5), (4, 3, 3, 3), 1, 0),
    ("pad1", (2, 3, 6, 5), (4, 3, 3, 3), 1, 1),
    ("s2-odd-sizes", (1, 2, 7, 9), (3, 2, 3, 3), 2, 1),        # needs output_padding (0, 0)
    ("s2-even-sizes", (1, 2, 8, 6), (3, 2, 3, 3), 2, 1),       # needs output_padding (1, 1)
    ("s3-pairs", (2, 2, 10, 7), (3, 2, 2, 3), (3, 2), (1, 0)),
    ("same-s1-odd", (2, 2, 5, 7), (3, 2, 3, 3), 1, "same"),
    ("same-s2-asymmetric", (2, 2, 8, 6), (3, 2, 3, 3), 2, "same"),
    ("same-s2-non-square", (1, 3, 4, 10), (2, 3, 3, 3), 2, "same"),
    ("same-s2-kernel-4", (1, 2, 6, 8), (2, 2, 4, 4), 2, "same"),
    ("same-s3", (1, 1, 9, 6), (2, 1, 3, 3), 3, "same"),
]


@pytest.mark.parametrize("id_, x_shape, w_shape, stride, padding", ADJOINT_CASES,
                         ids=[c[0] for c in ADJOINT_CASES])
def test_conv_transpose2d_is_the_adjoint_of_conv2d(id_, x_shape, w_shape, stride, padding):
    """⟨conv2d(x, w), y⟩ = ⟨x, conv_transpose2d(y, w)⟩ with the same w array: conv2d reads it as
    (C_out, C_in, kH, kW), conv_transpose2d as (its C_in, its C_out, kH, kW), the same numbers."""
    x, w = randn(*x_shape, seed=1), randn(*w_shape, seed=2)
    conv_y = F.conv2d(x, w, stride=stride, padding=padding).data
    y = randn(*conv_y.shape, seed=3)
    output_padding = 0
    if padding != "same":  # the rows the conv's last window left unread: convT must make them too
        s = stride if isinstance(stride, tuple) else (stride, stride)
        p = padding if isinstance(padding, tuple) else (padding, padding)
        output_padding = tuple((size + 2 * pad - k) % st for size, pad, k, st
                               in zip(x_shape[2:], p, w_shape[2:], s))
    back = F.conv_transpose2d(y, w, stride=stride, padding=padding, output_padding=output_padding).data
    assert back.shape == x.shape
    np.testing.assert_allclose(np.sum(conv_y * y), np.sum(x * back), rtol=1e-10)


# ---- 3. gradient checks (float64) -----------------------------------------------------------------

def conv_case(id, x_shape, w_shape, bias=True, **kwargs):
    """A gradcheck of conv2d(x, w, b, **kwargs), w (C_out, C_in, kH, kW)."""
    inputs = [randn(*x_shape, seed=1), randn(*w_shape, seed=2)] + ([randn(w_shape[0], seed=3)] if bias else [])
    return Case(op="conv2d", fn=lambda x, w, b=None: F.conv2d(x, w, b, **kwargs), inputs=inputs, id=id)


def transposed_case(id, x_shape, w_shape, bias=True, **kwargs):
    """A gradcheck of conv_transpose2d(x, w, b, **kwargs), w (C_in, C_out, kH, kW)."""
    inputs = [randn(*x_shape, seed=1), randn(*w_shape, seed=2)] + ([randn(w_shape[1], seed=3)] if bias else [])
    return Case(op="conv_transpose2d", fn=lambda x, w, b=None: F.conv_transpose2d(x, w, b, **kwargs),
                inputs=inputs, id=id)


def encoder_decoder(x, w1, w2):
    """conv2d then conv_transpose2d, as in the VAEs: the second reads the first's output layout."""
    h = F.conv2d(x, w1, stride=2, padding="same") * 0.5
    return F.conv_transpose2d(h, w2, stride=2, padding="same")


GRADCHECK_CASES = [
    conv_case("batch2-cin3-cout2", (2, 3, 5, 4), (2, 3, 3, 3), padding=1),
    conv_case("no-bias-valid", (2, 2, 5, 6), (3, 2, 3, 3), bias=False),
    conv_case("stride2-odd-sizes", (2, 2, 7, 5), (3, 2, 3, 3), stride=2, padding=1),
    conv_case("same-s2-asymmetric", (2, 2, 6, 4), (3, 2, 3, 3), stride=2, padding="same"),
    conv_case("same-s1-non-square-kernel", (1, 2, 5, 4), (2, 2, 3, 2), padding="same"),
    conv_case("one-output-channel", (2, 3, 4, 5), (1, 3, 3, 3), padding="same"),
    conv_case("narrowing-asymmetric-kernel", (2, 4, 5, 6), (2, 4, 4, 3), padding="same"),
    conv_case("narrowing-valid", (2, 3, 5, 4), (2, 3, 2, 3)),
    # stride 1, as many channels out as in: dL/dx is the conv2d of dY by the turned kernel
    conv_case("same-width-s1-asymmetric-pads", (2, 3, 5, 6), (3, 3, 3, 2), padding="same"),
    transposed_case("batch2-cin3-cout2", (2, 3, 3, 4), (3, 2, 3, 3), padding=1),
    transposed_case("no-bias-s2", (2, 2, 3, 2), (2, 3, 3, 3), bias=False, stride=2),
    transposed_case("s2-output-padding", (1, 2, 3, 4), (2, 3, 3, 3), stride=2, padding=1, output_padding=1),
    transposed_case("same-s2-asymmetric", (2, 2, 3, 2), (2, 3, 3, 3), stride=2, padding="same"),
    transposed_case("same-s1-odd", (1, 2, 5, 3), (2, 2, 3, 3), padding="same"),
    # stride 1, widening: computed as the conv2d of the turned kernel
    transposed_case("widening-s1-non-square-kernel", (2, 2, 4, 5), (2, 3, 3, 2), padding=1),
    transposed_case("one-input-channel", (2, 1, 3, 4), (1, 3, 3, 3), stride=2, padding="same"),
    Case(op="conv2d", fn=encoder_decoder, id="then-conv_transpose2d",
         inputs=[randn(2, 2, 6, 4, seed=1), randn(3, 2, 3, 3, seed=2), randn(3, 2, 3, 3, seed=3)]),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_gradcheck(case):
    case.check()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
def test_dtype_is_kept(op, dtype):
    x = minivae.Tensor(randn(2, 3, 6, 6).astype(dtype), requires_grad=True)
    w = minivae.Tensor(randn(3, 3, 3, 3).astype(dtype), requires_grad=True)
    b = minivae.Tensor(randn(3).astype(dtype), requires_grad=True)
    y = getattr(F, op)(x, w, b, stride=2, padding="same")
    y.backward(np.ones(y.shape, dtype))
    assert {y.dtype, x.grad.dtype, w.grad.dtype, b.grad.dtype} == {np.dtype(dtype)}


@pytest.mark.parametrize("layout", ["NCHW", "CHWN view", "matrix (1, C, L)", "2-D", "2-D batch-fast"])
def test_bias_grad_is_the_sum_over_all_but_the_channel_axis_in_every_layout(layout):
    # the ops hand bias_grad dL/dy in several layouts; where the channels can be rows of a matrix
    # without a copy it sums by a matrix-vector product, else by NumPy's sum: the same numbers
    from minivae.functional._common import bias_grad
    g = {"NCHW": lambda: randn(4, 3, 5, 6),
         "CHWN view": lambda: np.ascontiguousarray(randn(3, 5, 6, 4)).transpose(3, 0, 1, 2),
         "matrix (1, C, L)": lambda: randn(1, 3, 40),
         "2-D": lambda: randn(7, 3),
         "2-D batch-fast": lambda: np.ascontiguousarray(randn(3, 7)).T}[layout]()
    expected = g.sum(axis=(0,) + tuple(range(2, g.ndim)))
    np.testing.assert_allclose(bias_grad(g), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m, k, length", [(64, 576, 1568), (3, 18, 40), (32, 9, 50), (2, 300, 16)])
def test_a_weight_gradient_taken_the_other_way_round_is_a_times_b_transposed(m, k, length):
    # the backward passes compute dY @ colsᵀ as (cols @ dYᵀ)ᵀ where cols has more rows, which
    # OpenBLAS runs faster: the plain product stays the reference, and the result is a contiguous
    # (m, k) array either way
    from minivae.functional._common import weight_product
    a, b = randn(m, length), randn(k, length)
    got = weight_product(a, b)
    assert got.shape == (m, k) and got.flags.c_contiguous
    np.testing.assert_allclose(got, a @ b.T, rtol=1e-10, atol=1e-10)


# ---- bad arguments: the error names the op and the shapes ---------------------------------------

def _x(*shape):
    return randn(*shape)


BAD_CALLS = [
    ("x-not-4d", lambda: F.conv2d(_x(3, 5, 5), _x(2, 3, 3, 3)), ValueError,
     "conv2d: x must have 4 dimensions (N, C, H, W), got shape (3, 5, 5)"),
    ("w-not-4d", lambda: F.conv_transpose2d(_x(1, 3, 5, 5), _x(3, 2, 3)), ValueError,
     "conv_transpose2d: w must have 4 dimensions (C_in, C_out, kH, kW), got shape (3, 2, 3)"),
    ("channels", lambda: F.conv2d(_x(1, 3, 5, 5), _x(2, 4, 3, 3)), ValueError,
     "conv2d: x has 3 channels but w expects 4: x (1, 3, 5, 5), w (2, 4, 3, 3)"),
    ("channels-transposed", lambda: F.conv_transpose2d(_x(1, 3, 5, 5), _x(2, 3, 3, 3)), ValueError,
     "conv_transpose2d: x has 3 channels but w expects 2: x (1, 3, 5, 5), w (2, 3, 3, 3)"),
    ("kernel-too-big", lambda: F.conv2d(_x(1, 1, 4, 4), _x(1, 1, 5, 5)), ValueError,
     "conv2d: kernel 5×5 is larger than the padded input 4×4: x (1, 1, 4, 4), w (1, 1, 5, 5)"),
    ("integer-dtype", lambda: F.conv2d(minivae.Tensor(np.ones((1, 1, 4, 4)), dtype=np.int64), _x(1, 1, 3, 3)),
     TypeError, "conv2d: x must be a floating-point tensor, got dtype int64"),
    ("stride-zero", lambda: F.conv2d(_x(1, 1, 4, 4), _x(1, 1, 3, 3), stride=0), ValueError,
     "conv2d: stride must be at least 1, got 0"),
    ("stride-float", lambda: F.conv_transpose2d(_x(1, 1, 4, 4), _x(1, 1, 3, 3), stride=1.5), TypeError,
     "conv_transpose2d: stride must be an int or a pair of ints, got 1.5"),
    ("stride-triple", lambda: F.conv2d(_x(1, 1, 4, 4), _x(1, 1, 3, 3), stride=(1, 1, 1)), TypeError,
     "conv2d: stride must be an int or a pair of ints, got (1, 1, 1)"),
    ("padding-negative", lambda: F.conv2d(_x(1, 1, 4, 4), _x(1, 1, 3, 3), padding=-1), ValueError,
     "conv2d: padding must be at least 0, got -1"),
    ("padding-unknown", lambda: F.conv2d(_x(1, 1, 4, 4), _x(1, 1, 3, 3), padding="full"), ValueError,
     "conv2d: padding must be an int, a pair of ints, 'same' or 'valid', got 'full'"),
    ("bias-shape", lambda: F.conv2d(_x(1, 2, 4, 4), _x(3, 2, 3, 3), _x(2)), ValueError,
     "conv2d: b must have shape (3,) for w (3, 2, 3, 3), got (2,)"),
    ("bias-shape-transposed", lambda: F.conv_transpose2d(_x(1, 2, 4, 4), _x(2, 3, 3, 3), _x(2)), ValueError,
     "conv_transpose2d: b must have shape (3,) for w (2, 3, 3, 3), got (2,)"),
    ("output-padding-too-big", lambda: F.conv_transpose2d(_x(1, 1, 4, 4), _x(1, 1, 3, 3), stride=2,
                                                          output_padding=2), ValueError,
     "conv_transpose2d: output_padding 2 must be smaller than the stride (2, 2)"),
    ("output-padding-with-same", lambda: F.conv_transpose2d(_x(1, 1, 4, 4), _x(1, 1, 3, 3), stride=2,
                                                            padding="same", output_padding=1), ValueError,
     "conv_transpose2d: output_padding must be 0 with padding='same'"),
    ("padding-crops-everything", lambda: F.conv_transpose2d(_x(1, 1, 1, 1), _x(1, 1, 1, 1), padding=1),
     ValueError, "conv_transpose2d: padding 1 crops the whole output (size -1×-1): x (1, 1, 1, 1)"),
]


@pytest.mark.parametrize("id_, call, error, message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_raise_with_the_op_and_shapes(id_, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()
