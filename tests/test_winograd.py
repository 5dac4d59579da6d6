"""Winograd's F(2×2, 3×3) and F(4×4, 3×3) (minivae/functional/winograd.py) compute the 3×3 stride-1
convolutions that im2col's path computes, which stays the reference: the same numbers to rounding,
forward and backward, with and without bias and fused activation; gradients right by central
differences; the same bits on any thread count. And each is taken exactly where it should be."""
import numpy as np
import pytest
from helpers import (Case, assert_close_to_reference, assert_same_bits, conv_arrays, grads_with_path,
                     on_one_thread_and_on, randn)

from minivae import functional as F
from minivae import threads
from minivae.functional import direct, winograd
from minivae.functional.activations import Fused
from minivae.tensor import Tensor

pytest.importorskip("numba")


@pytest.fixture(autouse=True, params=[2, 4], ids=["F(2x2)", "F(4x4)"])
def tiles(request, monkeypatch):
    """Each test for both tile sizes, taken at the tests' small shapes and odd sizes too."""
    monkeypatch.setattr(winograd, "TILE_SIZES", (request.param,))
    monkeypatch.setattr(winograd, "MIN_COLUMNS", {2: 1, 4: 1})
    monkeypatch.setattr(winograd, "MIN_COLUMNS_BESIDE_DIRECT", {2: 1, 4: 1})
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 2)
    monkeypatch.setattr(winograd, "MAX_SPARE", 16.0)
    assert winograd._compile()   # the kernels, for the tests that call the transforms themselves
    return request.param


def run(op, arrays, kwargs, g, on):
    """y, dL/dx, dL/dw, dL/db of op(x, w, b, **kwargs) for dL/dy = g, with the Winograd path on or off."""
    return grads_with_path(winograd.settings, on, op, arrays, kwargs, g)


LAYERS = {  # name: (op, x shape, w shape, keyword arguments)
    "same, even": (F.conv2d, (3, 4, 8, 6), (5, 4, 3, 3), {"padding": "same"}),
    "same, odd sizes": (F.conv2d, (2, 3, 7, 5), (4, 3, 3, 3), {"padding": "same"}),
    "valid": (F.conv2d, (2, 4, 9, 6), (4, 4, 3, 3), {"padding": "valid"}),
    "padding 2": (F.conv2d, (2, 3, 5, 4), (3, 3, 3, 3), {"padding": 2}),
    "padding (0, 1)": (F.conv2d, (2, 3, 6, 5), (3, 3, 3, 3), {"padding": (0, 1)}),
    "a 1×1 image": (F.conv2d, (2, 3, 1, 1), (3, 3, 3, 3), {"padding": 1}),
    "transposed, widening (the turned kernel)": (F.conv_transpose2d, (2, 3, 6, 7), (3, 5, 3, 3), {"padding": 1}),
    "transposed, no padding": (F.conv_transpose2d, (2, 4, 5, 5), (4, 4, 3, 3), {}),
}
ACTIVATIONS = {"none": None, "relu": Fused(), "leaky_relu 0.3": Fused(0.3)}


@pytest.mark.parametrize("activation", ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_winograd_gives_the_numbers_of_im2col(layer, activation, dtype, tiles):
    op, x_shape, w_shape, kwargs = layer
    arrays = conv_arrays(op, x_shape, w_shape, dtype)
    assert winograd.suits(arrays[0], arrays[1] if op is F.conv2d else arrays[1].transpose(1, 0, 2, 3),
                          (1, 1), (1, 1, 1, 1))
    kwargs = dict(kwargs, activation=activation)
    g = randn(*op(*arrays, **kwargs).shape, seed=4).astype(dtype)
    fast, reference = run(op, arrays, kwargs, g, True), run(op, arrays, kwargs, g, False)
    # F(4×4)'s transforms multiply by up to 8 and its G by 1/6, 1/12, 1/24 (rounded): in float32 its
    # numbers stray further from im2col's than F(2×2)'s do, whose factors are 1 and 1/2 (exact)
    loosen = 10 if tiles == 4 and dtype == np.float32 else 1
    assert_close_to_reference(["y", "dL/dx", "dL/dw", "dL/db"], fast, reference, dtype, loosen)


def test_at_a_batch_of_whole_vectors_the_weight_gradient_takes_the_direct_block(tiles, monkeypatch):
    """dM @ Vᵀ by direct.products_t where the tiles' columns come in whole vectors (batch 16):
    the numbers of im2col's path."""
    op, x_shape, w_shape, kwargs = F.conv2d, (16, 4, 6, 5), (8, 4, 3, 3), {"padding": "same"}
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = randn(*op(*arrays, **kwargs).shape, seed=4).astype(np.float32)
    calls = []
    monkeypatch.setattr(direct, "products_t", lambda *a, _f=direct.products_t: calls.append(1) or _f(*a))
    fast = run(op, arrays, kwargs, g, True)
    assert calls, "the direct block did not make dU"
    assert_close_to_reference(["y", "dL/dx", "dL/dw", "dL/db"], fast, run(op, arrays, kwargs, g, False), np.float32,
                              10 if tiles == 4 else 1)


def test_the_path_is_taken_and_differs_in_rounding_only():
    """A check that the test above compares two paths: in float32 they differ in the last bits."""
    op, x_shape, w_shape, kwargs = LAYERS["same, even"]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = randn(3, 5, 8, 6, seed=4).astype(np.float32)
    fast, reference = run(op, arrays, kwargs, g, True), run(op, arrays, kwargs, g, False)
    assert not np.array_equal(fast[0], reference[0])


GRADCHECK_CASES = [  # float64 central differences through the Winograd path (the autouse fixture)
    Case(op="conv2d", id="winograd-same-odd", inputs=[randn(2, 3, 5, 3, seed=1), randn(2, 3, 3, 3, seed=2),
                                                      randn(2, seed=3)],
         fn=lambda x, w, b: F.conv2d(x, w, b, padding="same")),
    Case(op="conv2d", id="winograd-valid-no-bias", inputs=[randn(2, 2, 6, 5, seed=1), randn(3, 2, 3, 3, seed=2)],
         fn=lambda x, w: F.conv2d(x, w)),
    Case(op="conv_transpose2d", id="winograd-turned", inputs=[randn(2, 2, 3, 4, seed=1),
                                                              randn(2, 3, 3, 3, seed=2), randn(3, seed=3)],
         fn=lambda x, w, b: F.conv_transpose2d(x, w, b, padding=1)),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_gradcheck(case):
    case.check()


@pytest.mark.parametrize("count", [1, 2, 3])
def test_the_bits_do_not_depend_on_the_thread_count(count, monkeypatch):
    op, x_shape, w_shape, kwargs = LAYERS["same, odd sizes"]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = randn(2, 4, 7, 5, seed=4).astype(np.float32)

    def split_more():
        monkeypatch.setattr(threads, "MIN_PIECE", 16)        # split the transforms of these small arrays
        monkeypatch.setattr(threads, "MIN_SPLIT_FLOPS", 1)   # and the 16 products
    assert_same_bits(*on_one_thread_and_on(count, lambda: run(op, arrays, kwargs, g, True), split_more))


def test_a_gradient_in_the_layers_memory_order_is_read_where_it_lies():
    """dL/dy as the next layer hands it back, a view of (C, H, W, N) memory, is read in place
    (the tiles reaching past the 7×5 output's edge through a buffer of one tile); as an (N, C, H,
    W) array it is first copied into that order. The same dL/dx and dL/dw either way, bit for bit
    (dL/db, summed outside this path, may round otherwise in another order)."""
    op, x_shape, w_shape, kwargs = LAYERS["same, odd sizes"]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    g = randn(2, 4, 7, 5, seed=4).astype(np.float32)
    g_chwn = np.ascontiguousarray(g.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    assert_same_bits(run(op, arrays, kwargs, g, True)[1:3], run(op, arrays, kwargs, g_chwn, True)[1:3])


@pytest.mark.parametrize("activation", [Fused(), Fused(0.3)], ids=["relu", "leaky_relu 0.3"])
def test_the_fused_activation_gives_the_bits_of_the_two_ops(activation):
    """As for im2col's path (tests/test_fused.py): the activation applied in the output transform
    equals the op followed by F.relu / F.leaky_relu, bit for bit."""
    op, x_shape, w_shape, kwargs = LAYERS["same, even"]
    arrays = conv_arrays(op, x_shape, w_shape, np.float32)
    separate = (lambda y: F.relu(y)) if activation.negative_slope is None else \
        (lambda y: F.leaky_relu(y, activation.negative_slope))
    x, w, b = (Tensor(a) for a in arrays)
    fused = F.conv2d(x, w, b, activation=activation, **kwargs).data
    assert np.array_equal(fused.view(np.uint32), separate(F.conv2d(x, w, b, **kwargs)).data.view(np.uint32))


def test_the_kernel_gradient_is_the_adjoint_of_the_kernel_transform(tiles):
    """<U(w), dU> = <w, Uᵀ(dU)>: the identity that makes dL/dw right whatever the shapes."""
    w, du = randn(3, 2, 3, 3, seed=1), randn((tiles + 2) ** 2, 3, 2, seed=2)
    assert np.isclose(np.sum(winograd.kernel_transform(w, tiles) * du), np.sum(w * winograd.kernel_gradient(du)),
                      rtol=1e-13)


BT = {2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],          # Bᵀ, as in winograd.py
      4: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
          [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]}
TILE_CASES = [((2, 3, 6, 5), (1, 1, 1, 1)), ((3, 2, 9, 8), (0, 0, 2, 0)), ((1, 2, 5, 7), (2, 1, 0, 1))]
# x (N, C, H, W) and its padding (top, bottom, left, right)


def tiles_of(x_shape, pads, m):
    """(TH, TW): the m×m tiles that cover the output of a 3×3 convolution of x padded by pads."""
    top, bottom, left, right = pads
    oh, ow = x_shape[2] + top + bottom - 2, x_shape[3] + left + right - 2
    return -(-oh // m), -(-ow // m)


@pytest.mark.parametrize("x_shape, pads", TILE_CASES, ids=str)
def test_the_input_transform_is_bt_d_b_of_each_patch(x_shape, pads, tiles):
    """V[:, tile] = Bᵀ d B for the (m + 2)×(m + 2) patch d of the padded input at (m·ty, m·tx),
    computed here by NumPy, patch by patch. The numbers are integers, so every sum is exact in
    whatever order it is added: equal, not close."""
    m, (top, _, left, _) = tiles, pads
    x = np.random.default_rng(0).integers(-8, 9, size=x_shape).astype(np.float64)
    th, tw = tiles_of(x_shape, pads, m)
    v = winograd.input_transform(x, top, left, m, th, tw)
    padded = np.zeros((x_shape[0], x_shape[1], m * th + 2, m * tw + 2))
    padded[:, :, top:top + x_shape[2], left:left + x_shape[3]] = x
    bt = np.array(BT[m], np.float64)
    for c in range(x_shape[1]):
        for ty in range(th):
            for tx in range(tw):
                d = padded[:, c, m * ty:m * ty + m + 2, m * tx:m * tx + m + 2]      # (N, m + 2, m + 2)
                expected = (bt @ d @ bt.T).reshape(x_shape[0], -1).T              # ((m + 2)², N)
                assert np.array_equal(v[:, (c * th + ty) * tw + tx], expected)


@pytest.mark.parametrize("x_shape, pads", TILE_CASES, ids=str)
def test_the_input_gradient_is_the_adjoint_of_the_input_transform(x_shape, pads, tiles):
    """<V(x), dV> = <x, Vᵀ(dV)>: dL/dx (each tile's B dV Bᵀ added back onto the patch it read, the
    padding cut off) is right for any shapes and padding."""
    m, (top, _, left, _) = tiles, pads
    x = randn(*x_shape, seed=1)
    th, tw = tiles_of(x_shape, pads, m)
    v = winograd.input_transform(x, top, left, m, th, tw)
    dv = randn(*v.shape, seed=2)
    dx = winograd.input_gradient_of(dv, x_shape, top, left, m, th, tw)          # (C, H, W, N)
    tiles_only = slice(0, v.shape[1] - 1)                                        # not the spare tile
    assert np.isclose(np.sum(v[:, tiles_only] * dv[:, tiles_only]), np.sum(x * dx.transpose(3, 0, 1, 2)),
                      rtol=1e-13)


def test_the_tiles_cover_the_output_with_the_fewest_outputs_to_spare(monkeypatch):
    monkeypatch.setattr(winograd, "TILE_SIZES", (4, 2))
    assert winograd.tile_size(14, 14) == 2        # 7·7 tiles of 2×2 fit; 4·4 of 4×4 would cover 16×16
    assert winograd.tile_size(7, 7) == 4          # both cover 8×8: the larger tile on a tie
    assert winograd.tile_size(28, 28) == 4
    assert winograd.tile_size(6, 5) == 2          # 6×6 against 8×8


def test_which_convolutions_take_the_path(monkeypatch):
    monkeypatch.setattr(winograd, "TILE_SIZES", (4, 2))
    monkeypatch.setattr(winograd, "MIN_COLUMNS", {2: 768, 4: 64})
    monkeypatch.setattr(winograd, "MIN_COLUMNS_BESIDE_DIRECT", {2: 768, 4: 128})
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 16)
    monkeypatch.setattr(winograd, "MAX_SPARE", 1.35)
    x = np.zeros((16, 64, 14, 14), np.float32)       # Chollet's 14×14 layers at batch 16: 7·7·16 = 784 columns
    w = np.zeros((64, 64, 3, 3), np.float32)
    same = (1, 1, 1, 1)
    assert winograd.suits(x, w, (1, 1), same)
    assert not winograd.suits(x, w, (2, 2), same)                                  # stride 2
    assert not winograd.suits(x, np.zeros((64, 64, 5, 5), np.float32), (1, 1), same)   # not 3×3
    assert not winograd.suits(x[:, :1], w[:, :1], (1, 1), same)                    # one channel in
    assert not winograd.suits(x[:8], w, (1, 1), same)                             # 7·7·8 = 392 columns
    assert not winograd.suits(x[:, :, :7, :7], w, (1, 1), same)                   # 7×7: 2·2·16 columns of 4×4,
    assert direct.suits(x[:, :, :7, :7], w)                                       # where the direct path runs
    assert winograd.suits(np.concatenate([x[:, :, :7, :7]] * 2), w, (1, 1), same)  # 2·2·32, or
    x64, w64 = x[:, :, :7, :7].astype(np.float64), w.astype(np.float64)          # where it does not
    assert winograd.suits(x64, w64, (1, 1), same) and not direct.suits(x64, w64)
    assert not winograd.suits(x64[:8], w64, (1, 1), same)                         # 2·2·8 = 32
    assert not winograd.suits(x[:, :, :5, :5], w, (1, 1), same)                   # 36 tile outputs for 25
    assert winograd.suits(np.zeros((16, 64, 28, 28), np.float32), w, (1, 1), same)
    assert not winograd.suits(x.astype(np.float16), w.astype(np.float16), (1, 1), same)
    monkeypatch.setitem(winograd.settings, "enabled", False)                       # MINIVAE_WINOGRAD=never
    assert not winograd.suits(x, w, (1, 1), same)
