"""Images for ViT models: synthetic ones for offline runs and tests, or any image dataset.

Python ships no images, so the embedded default for ViT is ``synthetic_images``: seeded colour
gradients with a few filled shapes. They have edges and regions, unlike noise, so attention and
FFN activations on them are structured enough to rank heads and neurons. A local image folder
(``datasets`` ``imagefolder`` layout) or a cached hub dataset replaces them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from coformer.data.corpus import SPLITS, check_split
from coformer.data.sources import BUILTIN, choose_split, class_labels, first_rows, open_datasets
from coformer.errors import DataError

SYNTHETIC = "synthetic"
DEFAULT_IMAGE_COUNT = 64  # synthetic images made when no limit is given
MAX_SHAPES = 3  # filled circles/rectangles drawn over each gradient


def synthetic_image(rng: np.random.Generator, size: int) -> Image.Image:
    """One RGB image: a linear gradient between two colours with 1..MAX_SHAPES shapes on top."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)  # (S, S) each, in [0, 1]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy + 1.0) / 2.0  # (S, S) in [0, 1]
    start, end = rng.uniform(0, 255, size=(2, 3))
    pixels = start * (1 - ramp[..., None]) + end * ramp[..., None]  # (S, S, 3)
    for _ in range(rng.integers(1, MAX_SHAPES + 1)):
        cx, cy, extent = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.35)
        if rng.random() < 0.5:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < extent**2  # (S, S) disc
        else:
            mask = (abs(xx - cx) < extent) & (abs(yy - cy) < extent / 2)  # (S, S) rectangle
        pixels[mask] = rng.uniform(0, 255, size=3)
    return Image.fromarray(pixels.astype(np.uint8))  # (S, S, 3) uint8 is RGB


def synthetic_images(n: int, size: int = 224, seed: int = 0) -> list[Image.Image]:
    """``n`` deterministic PIL images of ``size`` x ``size`` pixels; the same seed gives the same images."""
    if n < 1 or size < 1:
        raise DataError(f"synthetic_images needs n >= 1 and size >= 1, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    return [synthetic_image(rng, size) for _ in range(n)]


def image_column(dataset) -> str:
    """Name of the first column holding images (``image`` for an imagefolder)."""
    import datasets

    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return name
    columns = ", ".join(dataset.column_names)
    raise DataError(f"the data source has no image column (columns: {columns}); give an image dataset")


def load_images(
    source: str = SYNTHETIC, split: str = "calibration", limit: int | None = None, seed: int = 0, size: int = 224
) -> list:
    """PIL images of one split: synthetic (``"synthetic"`` or ``"builtin"``), a local image
    folder, or a hub id. ``size`` only applies to synthetic images; processors resize the rest."""
    check_split(split)
    if source in (SYNTHETIC, BUILTIN):
        # distinct seeds per split, so calibration and evaluation never share an image
        return synthetic_images(limit or DEFAULT_IMAGE_COUNT, size, seed * len(SPLITS) + SPLITS.index(split))
    return images_of(first_rows(image_split(source, split, seed), limit))


def load_labelled_images(source: str, split: str, limit: int | None, label_field: str, seed: int = 0) -> tuple[list, list[int]]:
    """The images ``load_images`` gives for the same arguments and their class ids, read in one
    pass (an image folder's class sub-folders are its ``label`` column)."""
    check_split(split)
    if source in (SYNTHETIC, BUILTIN):
        raise DataError("data.label_field is set but synthetic images have no labels; give a labelled data.source or set label_field: null")
    rows = first_rows(image_split(source, split, seed), limit)
    return images_of(rows), class_labels(rows, label_field, split)


def images_of(rows) -> list:
    column = image_column(rows)
    return [row[column] for row in rows]


def image_split(source: str, split: str, seed: int):
    """One split of a local image folder or a hub image dataset, shuffled from ``seed``."""
    path = Path(source).expanduser()
    if path.is_dir():
        dataset_dict = open_datasets("imagefolder", f"image folder {path}", data_dir=str(path))
    elif path.exists():
        raise DataError(f"{source!r} is a file; give a folder of images (imagefolder layout) or a hub id")
    else:
        dataset_dict = open_datasets(source, f"hub dataset {source!r}")
    return choose_split(dataset_dict, split, seed)


def image_batches(processor, images: list, batch_size: int = 32) -> list[dict]:
    """Pixel batches ``{"pixel_values": (B, 3, H, W)}`` through a Hugging Face image processor, order kept."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if not images:
        raise DataError("no images to batch; check the image source and limit")
    batches = []
    for start in range(0, len(images), batch_size):
        chunk = [image.convert("RGB") for image in images[start : start + batch_size]]
        pixels = processor(images=chunk, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
        batches.append({"pixel_values": pixels})
    return batches
