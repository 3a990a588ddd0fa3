"""Texts and images into model-ready tensor batches.

Batches are plain dicts of the keys our executor accepts (``input_ids``, ``attention_mask``,
``token_type_ids`` or ``pixel_values``), padded per batch, in the order of the input, so a
calibration run and an evaluation run see exactly the same tensors for the same seed.
"""

from __future__ import annotations

from coformer.data.images import SYNTHETIC, image_batches, load_images
from coformer.data.sources import BUILTIN, load_texts
from coformer.errors import DataError

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def tokenize(tokenizer, texts: list[str], max_length: int = 128, fixed: bool = False) -> dict:
    """Pad to the longest text (``fixed``: to ``max_length`` itself, a timed request's shape) and
    truncate to ``max_length``: ``{key: (B, T)}``.

    Tokenizers without a pad token (GPT-2's) pad with their end-of-text token; the attention
    mask hides the padding either way.
    """
    if not texts:
        raise DataError("no texts to tokenize; check the data source and limit")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DataError("the tokenizer has neither a pad nor an end-of-text token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    padding = "max_length" if fixed else True
    encoded = tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    return {key: encoded[key] for key in TEXT_KEYS if key in encoded}  # each (B, T)


def text_batches(tokenizer, texts: list[str], batch_size: int = 32, max_length: int = 128) -> list[dict]:
    """``tokenize`` over consecutive chunks of ``batch_size`` texts; the last batch may be smaller."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    return [tokenize(tokenizer, texts[i : i + batch_size], max_length) for i in range(0, len(texts), batch_size)]


def calibration_batches(
    processor,
    config,
    source: str = BUILTIN,
    n: int = 64,
    batch_size: int = 32,
    max_length: int = 128,
    seed: int = 0,
    text_field: str = "text",
) -> list[dict]:
    """``n`` calibration inputs for the model described by ``config`` (a ``SubModelConfig``).

    Image models get pixel batches (synthetic images for the builtin source, at the model's image
    size); text models get tokenised texts, truncated to what the model's positions cover.
    """
    if processor is None:
        kind = "image processor" if config.input_kind == "pixels" else "tokenizer"
        raise DataError(
            f"the model ships no {kind}, and calibration data must be encoded; save its {kind} into the model "
            "folder (save_pretrained), or use data-free steps (magnitude importance)"
        )
    if config.input_kind == "pixels":
        image_source = SYNTHETIC if source == BUILTIN else source
        images = load_images(image_source, "calibration", limit=n, seed=seed, size=config.image_size or 224)
        return image_batches(processor, images, batch_size)
    if config.max_tokens:
        max_length = min(max_length, config.max_tokens)
    texts = load_texts(source, "calibration", limit=n, text_field=text_field, seed=seed)
    return text_batches(processor, texts, batch_size, max_length)
