"""CelebA's attribute files: which images show which attributes (Smiling, Eyeglasses, ...), for the
attribute arithmetic of `minivae.latent`.

Two layouts, values 1 (has it) or -1 (has not):
    list_attr_celeba.csv   image_id,5_o_Clock_Shadow,Arched_Eyebrows,...   then  000001.jpg,-1,1,...
    list_attr_celeba.txt   202599                                          (the number of images)
                           5_o_Clock_Shadow Arched_Eyebrows ...            (the attribute names)
                           000001.jpg -1  1 ...                            (one line per image)
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE_NAMES = ("list_attr_celeba.csv", "list_attr_celeba.txt")   # looked for in the images folder


class AttributesError(ValueError):
    """An attributes file that cannot be read, lacks an attribute, or does not fit the images."""


@dataclass
class Attributes:
    path: Path
    names: list          # the attributes, in the file's order
    images: list         # the image names, one per row
    values: np.ndarray   # (images, attributes) int8, 1 or -1

    def has(self, attribute):
        """A boolean per image: does it show `attribute`? Unknown names list the ones there are."""
        if attribute not in self.names:
            raise AttributesError(f"--attribute {attribute}: {self.path} has no such attribute; it has "
                                  f"{', '.join(self.names)}")
        return self.values[:, self.names.index(attribute)] > 0

    def rows_of(self, image_names):
        """The row of each of `image_names` (a folder's images, named relative to it); refuses, naming
        a few, images the file does not list."""
        rows = {name: k for k, name in enumerate(self.images)}
        missing = [name for name in image_names if name not in rows]
        if missing:
            raise AttributesError(f"{self.path} does not match the images: {len(missing):,} of the "
                                  f"{len(image_names):,} images are not in it (e.g. "
                                  f"{', '.join(missing[:3])}); the file lists {len(rows):,} images, "
                                  f"e.g. {', '.join(self.images[:3])}")
        return np.array([rows[name] for name in image_names], dtype=np.int64)


def find(folder):
    """The attributes file in an images folder: list_attr_celeba.csv or .txt."""
    for name in FILE_NAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise AttributesError(f"no attributes file in {folder} (looked for {' and '.join(FILE_NAMES)}): "
                          "give one with --attributes FILE")


def read(path):
    """An Attributes from a .csv or .txt file in CelebA's layout (see the module's docstring)."""
    path = Path(path)
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise AttributesError(f"--attributes {path}: cannot read it ({exc})") from None
    if not lines:
        raise AttributesError(f"--attributes {path}: the file is empty")
    if path.suffix.lower() == ".csv":
        names = [name.strip() for name in lines[0].split(",")[1:]]
        rows = [[value.strip() for value in line.split(",")] for line in lines[1:]]
    else:
        if len(lines) < 2:
            raise AttributesError(f"--attributes {path}: expected a count line, a line of attribute "
                                  "names, then one line per image")
        names, rows = lines[1].split(), [line.split() for line in lines[2:]]
        if lines[0].strip() != str(len(rows)):
            raise AttributesError(f"--attributes {path}: its first line says {lines[0].strip()!r} "
                                  f"images but {len(rows):,} lines follow")
    if not names or not rows:
        raise AttributesError(f"--attributes {path}: no attribute names or no images in it")
    for row in rows:
        if len(row) != len(names) + 1:
            raise AttributesError(f"--attributes {path}: the line of {row[0]} has {len(row) - 1} "
                                  f"values for {len(names)} attributes")
    try:
        values = np.array([[int(v) for v in row[1:]] for row in rows], dtype=np.int8)
    except ValueError:
        raise AttributesError(f"--attributes {path}: the values must be 1 or -1") from None
    if not np.isin(values, (1, -1)).all():
        others = sorted(set(values.ravel().tolist()) - {1, -1})
        raise AttributesError(f"--attributes {path}: the values must be 1 or -1, not {others}")
    return Attributes(path, names, [row[0] for row in rows], values)
