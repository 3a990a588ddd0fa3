"""The binary wire format between aggregator and nodes: safetensors bytes, never JSON lists or pickle.

One message is a set of named tensors plus string metadata (the operation and its arguments).
Floating tensors travel in the wire dtype (fp32 exact, fp16/bf16 half the bytes) and are read back
as fp32; integer tensors (token ids, masks) travel unchanged. Safetensors holds only dtype, shape
and raw bytes, so decoding can never execute anything.
"""

from __future__ import annotations

import json
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from coformer.serving.errors import RequestError

WireDtype = Literal["float32", "float16", "bfloat16"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
META = "coformer"  # the one metadata key: a JSON object of the operation's arguments


def encode(tensors: dict[str, torch.Tensor], meta: dict | None = None, dtype: WireDtype = "float32") -> bytes:
    wire = DTYPES[dtype]
    payload = {k: (v.to(wire) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    return save(payload, metadata={META: json.dumps(meta or {})})


def decode(body: bytes, max_bytes: int) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors as fp32 / int, metadata); refuses bodies over ``max_bytes`` before parsing them."""
    if len(body) > max_bytes:
        raise RequestError(f"body of {len(body)} bytes exceeds the limit max_body_bytes={max_bytes}", status=413)
    try:
        tensors = load(body)
        header_len = int.from_bytes(body[:8], "little")
        meta = json.loads(json.loads(body[8 : 8 + header_len]).get("__metadata__", {}).get(META, "{}"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"body is not a safetensors message ({e}); send tensors encoded by coformer.serving.wire") from e
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, meta
