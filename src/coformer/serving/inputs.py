"""Request validation shared by the aggregator and the nodes: every limit is named in the 4xx.

Notation: B batch, T new tokens, P tokens already cached (``past``), S = P + T.
"""

from __future__ import annotations

import torch

from coformer.modeling import SubModelConfig
from coformer.serving.config import Limits
from coformer.serving.errors import RequestError

TOKEN_KEYS = {"input_ids", "attention_mask", "position_ids", "token_type_ids"}
IMAGE_KEYS = {"pixel_values"}


def check_inputs(inputs: dict[str, torch.Tensor], config: SubModelConfig, limits: Limits, past: int = 0) -> None:
    """Raise a ``RequestError`` naming the limit for anything a sub-model cannot or must not run."""
    allowed = IMAGE_KEYS if config.input_kind == "pixels" else TOKEN_KEYS
    unknown = set(inputs) - allowed
    if unknown:
        raise RequestError(f"inputs {sorted(unknown)} are not taken by a {config.embedding} model; send {sorted(allowed)}")
    if config.input_kind == "pixels":
        _check_pixels(inputs.get("pixel_values"), config, limits)
    else:
        _check_tokens(inputs, config, limits, past)


def _check_pixels(pixels, config: SubModelConfig, limits: Limits) -> None:
    expected = (config.num_channels, config.image_size, config.image_size)
    if pixels is None or pixels.dim() != 4 or tuple(pixels.shape[1:]) != expected or not pixels.is_floating_point():
        got = None if pixels is None else tuple(pixels.shape)
        raise RequestError(f"pixel_values must be float (B, {', '.join(map(str, expected))}) for image_size={config.image_size}, got {got}")
    _check_batch(pixels.shape[0], limits)


def _check_tokens(inputs: dict[str, torch.Tensor], config: SubModelConfig, limits: Limits, past: int) -> None:
    ids = inputs.get("input_ids")
    if ids is None or ids.dim() != 2 or ids.is_floating_point() or ids.shape[1] == 0:
        raise RequestError(f"input_ids must be integer (B, T) with T >= 1, got {None if ids is None else (tuple(ids.shape), ids.dtype)}")
    B, T = ids.shape
    _check_batch(B, limits)
    total = past + T
    longest = min(limits.max_seq_len, config.max_tokens or limits.max_seq_len)
    if total > longest:
        raise RequestError(f"sequence of {total} tokens exceeds max_seq_len={longest} (limits.max_seq_len={limits.max_seq_len}, model positions {config.max_tokens})", status=413)
    _check_range(ids, config.vocab_size, "input_ids", "the vocabulary size")
    mask = inputs.get("attention_mask")
    if mask is not None and (tuple(mask.shape) != (B, total) or mask.is_floating_point()):
        raise RequestError(f"attention_mask must be integer (B, past + T) = ({B}, {total}), got {tuple(mask.shape)}")
    for key, size, name in (("position_ids", config.max_positions, "max_positions"), ("token_type_ids", config.type_vocab_size, "type_vocab_size")):
        value = inputs.get(key)
        if value is not None:
            if tuple(value.shape) != (B, T) or value.is_floating_point():
                raise RequestError(f"{key} must be integer (B, T) = ({B}, {T}), got {tuple(value.shape)}")
            _check_range(value, size, key, name)


def _check_batch(batch: int, limits: Limits) -> None:
    if batch > limits.max_batch:
        raise RequestError(f"batch of {batch} exceeds limits.max_batch={limits.max_batch}; split the request", status=413)
    if batch < 1:
        raise RequestError("empty batch: send at least one sequence or image")


def _check_range(values: torch.Tensor, size: int, key: str, name: str) -> None:
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= size):
        raise RequestError(f"{key} must lie in [0, {size}) ({name}), got values in [{int(values.min())}, {int(values.max())}]")
