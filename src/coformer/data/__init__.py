"""Data for calibration, search and evaluation: an embedded corpus, datasets sources, batching.

The default needs no network: docstrings and reference topics that ship with Python (a
summary -> body retrieval task, split by module) and synthetic images for ViT. Any Hugging Face
dataset or local text/JSONL/CSV file (or image folder) can replace them.
"""

from coformer.data.batching import calibration_batches, text_batches, tokenize
from coformer.data.corpus import SPLITS, RetrievalPair, load_pairs
from coformer.data.images import image_batches, load_images, synthetic_images
from coformer.data.sources import load_texts

__all__ = [
    "SPLITS",
    "RetrievalPair",
    "calibration_batches",
    "image_batches",
    "load_images",
    "load_pairs",
    "load_texts",
    "synthetic_images",
    "text_batches",
    "tokenize",
]
