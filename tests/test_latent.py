"""Walks in latent space (minivae.latent) and CelebA's attribute files (minivae.attributes), on a tiny
faces-like VAE (3×8×8, batch norm, dropout): a morph starts and ends exactly at the two images'
reconstructions, and attribute arithmetic decodes exactly z + s·(mean z with − mean z without)."""
import numpy as np
import pytest

import minivae
from helpers import ATTRIBUTE_NAMES, write_attributes
from minivae import attributes, latent
from minivae.models import foster_faces_vae
from minivae.tensor import no_grad

def tiny_faces_vae(channels=3):
    """foster-faces' layout, small: 8×8 images, two stride-2 convs each way, z_dim 4."""
    minivae.manual_seed(0)
    model = foster_faces_vae(input_shape=(channels, 8, 8), encoder_conv_filters=(4, 6),
                             encoder_conv_kernel_size=(3, 3), encoder_conv_strides=(2, 2),
                             decoder_conv_filters=(4, channels), decoder_conv_kernel_size=(3, 3),
                             decoder_conv_strides=(2, 2), z_dim=4)
    # running statistics away from (0, 1), so that evaluation mode visibly differs from training
    for _, module in model.named_modules():
        if isinstance(module, minivae.nn.BatchNorm2d):
            module.running_mean[:] = 0.1
            module.running_var[:] = 1.5
    return model


def images(n, channels=3, seed=0):
    return np.random.default_rng(seed).random((n, channels, 8, 8), dtype=np.float32)


def mu_of(model, x):
    """The codes of x, encoded as one batch, directly through the model."""
    model.eval()
    with no_grad():
        return model.encode(minivae.tensor(x))[0].data


def decoded(model, z):
    with no_grad():
        return model.decode(minivae.tensor(np.asarray(z, np.float32))).data


# ---- morph ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "colour"])
def test_morph_ends_are_the_two_reconstructions_exactly(channels):
    model, x = tiny_faces_vae(channels), images(2, channels)
    strip, z = latent.morph(model, x[0], x[1], steps=7)
    assert not model.training   # evaluation mode: batch norm on its running statistics, no dropout
    assert strip.shape == (7, channels, 8, 8) and z.shape == (7, 4)
    a, b = mu_of(model, x[:1]), mu_of(model, x[1:])
    np.testing.assert_array_equal(strip[0], decoded(model, a)[0])
    np.testing.assert_array_equal(strip[-1], decoded(model, b)[0])
    np.testing.assert_allclose(z[3], (a[0] + b[0]) / 2, rtol=1e-6)   # the middle of the line


def test_morph_needs_two_steps():
    with pytest.raises(ValueError, match="at least 2"):
        latent.morph(tiny_faces_vae(), *images(2), steps=1)


# ---- attribute arithmetic ------------------------------------------------------------------------

def test_arithmetic_decodes_z_plus_s_times_the_difference_of_means_exactly():
    model, x = tiny_faces_vae(), images(12)
    with_, without = np.array([0, 3, 4, 9]), np.array([1, 2, 5, 6, 7, 8, 10, 11])
    direction = latent.attribute_direction(model, lambda k: x[k], with_, without)
    mean_with = mu_of(model, x[with_]).astype(np.float64).sum(axis=0) / len(with_)
    mean_without = mu_of(model, x[without]).astype(np.float64).sum(axis=0) / len(without)
    np.testing.assert_array_equal(direction, (mean_with - mean_without).astype(np.float32))

    faces, strengths = x[:3], [-2.0, 0.0, 1.5]
    grid = latent.add_direction(model, faces, direction, strengths)
    assert grid.shape == (3, 3, 3, 8, 8)
    z = mu_of(model, faces)
    for k, s in enumerate(strengths):
        np.testing.assert_array_equal(grid[:, k], decoded(model, z + np.float32(s) * direction))


def test_mean_code_reads_in_batches_and_agrees_with_one_batch():
    model, x = tiny_faces_vae(), images(10)
    read = []
    mean = latent.mean_code(model, lambda k: read.append(len(k)) or x[k], np.arange(10), batch_size=4)
    assert read == [4, 4, 2]
    np.testing.assert_allclose(mean, mu_of(model, x).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_a_direction_needs_images_on_both_sides():
    with pytest.raises(ValueError, match="0 images with the attribute"):
        latent.attribute_direction(tiny_faces_vae(), lambda k: images(3)[k], [], [0, 1])


def test_choose_keeps_order_and_bounds_the_sample():
    generator = np.random.default_rng(0)
    np.testing.assert_array_equal(latent.choose([5, 2, 9], 10, generator), [5, 2, 9])
    picked = latent.choose(np.arange(100), 10, generator)
    assert len(picked) == len(set(picked)) == 10 and (np.diff(picked) > 0).all()


# ---- attribute files -----------------------------------------------------------------------------

VALUES = [[1, -1, 1], [-1, -1, 1], [1, 1, -1], [-1, 1, -1]]
NAMES = ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]


@pytest.mark.parametrize("layout", ["csv", "txt"])
def test_both_layouts_read_alike(tmp_path, layout):
    table = attributes.read(write_attributes(tmp_path / f"list_attr_celeba.{layout}", NAMES, VALUES))
    assert table.names == ATTRIBUTE_NAMES and table.images == NAMES
    np.testing.assert_array_equal(table.values, VALUES)
    np.testing.assert_array_equal(table.has("Smiling"), [True, False, True, False])
    np.testing.assert_array_equal(table.rows_of(["000004.jpg", "000001.jpg"]), [3, 0])
    assert attributes.find(tmp_path) == tmp_path / f"list_attr_celeba.{layout}"


@pytest.mark.parametrize("layout", ["csv", "txt"])
def test_a_missing_attribute_lists_those_there_are(tmp_path, layout):
    table = attributes.read(write_attributes(tmp_path / f"list_attr_celeba.{layout}", NAMES, VALUES))
    with pytest.raises(attributes.AttributesError, match="--attribute Bald: .* has no such attribute; "
                                                         "it has Smiling, Eyeglasses, Young"):
        table.has("Bald")


def test_images_the_file_does_not_list_are_counted_and_named(tmp_path):
    table = attributes.read(write_attributes(tmp_path / "list_attr_celeba.csv", NAMES, VALUES))
    folder = ["000001.jpg", "a.png", "b.png", "c.png", "d.png"]
    with pytest.raises(attributes.AttributesError, match=r"does not match the images: 4 of the 5 "
                                                         r"images are not in it \(e.g. a.png, b.png, c.png\)"):
        table.rows_of(folder)


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("3\nSmiling Young\n1.jpg 1 -1\n", "first line says '3' images but 1 lines follow"),
    ("1\nSmiling Young\n1.jpg 1\n", "the line of 1.jpg has 1 values for 2 attributes"),
    ("1\nSmiling Young\n1.jpg 1 0\n", r"must be 1 or -1, not \[0\]"),
    ("1\nSmiling Young\n1.jpg 1 yes\n", "must be 1 or -1"),
])
def test_bad_attribute_files(tmp_path, content, message):
    path = tmp_path / "attributes.txt"
    path.write_text(content)
    with pytest.raises(attributes.AttributesError, match=message):
        attributes.read(path)


def test_no_attributes_file_in_the_folder(tmp_path):
    with pytest.raises(attributes.AttributesError, match="looked for list_attr_celeba.csv and "
                                                         "list_attr_celeba.txt.*--attributes FILE"):
        attributes.find(tmp_path)
