"""`morph` and `arithmetic` on a trained run: which images, which attribute, which file; the
latent-space work itself is `minivae.latent`'s, the drawing `minivae.plots`'.

    morph RUN --from A --to B        A, B: test-set indices, or (a run on a folder) image files
    arithmetic RUN --attribute NAME  a run on a folder of faces with CelebA's attribute file
"""
from pathlib import Path

import numpy as np

from . import attributes, data, latent, plots


def morph(model, config, start, end, steps, out, device="cpu"):
    """A strip from image `start` to image `end` (as --from and --to give them); returns its path."""
    test_set = data.open_dataset(config, "test", model.input_shape, quiet=True)
    (a, a_name), (b, b_name) = (_image(test_set, config, text, option)
                                for text, option in ((start, "--from"), (end, "--to")))
    strip, _ = latent.morph(model, a, b, steps, device)
    return plots.save_morph(strip, out, ends=(a_name, b_name))


def _image(test_set, config, text, option):
    """(image (C, H, W), its name for the picture) for a test-set index, or an image file."""
    if text.isdigit():
        index = int(text)
        if index >= len(test_set):
            raise ValueError(f"{option} {index}: the test set's images are 0 to {len(test_set) - 1:,}")
        return test_set.images([index])[0], f"test image {index}"
    if not config.images:
        raise ValueError(f"{option} {text}: give a test-set index (0 to {len(test_set) - 1:,}); "
                         "image files are for runs trained on a folder of images (--images DIR)")
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"{option} {text}: neither a test-set index nor an image file")
    pixels = data.decode(path, test_set.image_shape)   # as the training images were read
    return pixels.astype(np.float32) / 255, path.name


def arithmetic(model, config, run_dir, attribute, attributes_file, n, strengths, sample, seed, out,
               device="cpu", log=print):
    """Foster's attribute arithmetic on a run trained on a folder of faces: the direction is the
    mean code of at most `sample` training images with `attribute` minus that of at most `sample`
    without (drawn at random with `seed` where there are more), added at each strength to the
    first `n` test images. Returns the picture's path."""
    if not config.images:
        raise ValueError(f"arithmetic needs a run trained on a folder of images with attributes "
                         f"(train --images DIR); {run_dir} was trained on {data.DATASETS[config.dataset]}")
    train_set = data.open_dataset(config, "train", model.input_shape)
    table = attributes.read(attributes_file or attributes.find(config.images))
    has = table.has(attribute)
    # CelebA's files name each image by its file name, wherever it sits in the folder
    rows = table.rows_of([path.name for path in train_set.paths])
    with_attribute, without = np.flatnonzero(has[rows]), np.flatnonzero(~has[rows])
    generator = np.random.default_rng(seed)
    chosen = [latent.choose(side, sample, generator) for side in (with_attribute, without)]
    counts = ", ".join(f"{len(c):,} of the {len(side):,} training images {what}"
                       + (" (a random sample)" if len(c) < len(side) else "")
                       for c, side, what in zip(chosen, (with_attribute, without), ("with it", "without")))
    log(f"{attribute}: mean z of {counts}")
    direction = latent.attribute_direction(model, train_set.images, *chosen, device=device)
    test_set = data.open_dataset(config, "test", model.input_shape, quiet=True)
    faces = test_set.images(range(min(n, len(test_set))))
    grid = latent.add_direction(model, faces, direction, strengths, device)
    return plots.save_arithmetic(grid, strengths, attribute, out)
