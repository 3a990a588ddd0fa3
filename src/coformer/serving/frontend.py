"""The public API behind the aggregator service: text, ids or images in, JSON-able answers out.

Tokenising (left-padded for generation), decoding images, and shaping the answers live here so the
BentoML service stays a thin typed shell. Every answer says whether it is degraded and which nodes
were missing.
"""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path

import torch
from pydantic import BaseModel

from coformer.modeling import Readout
from coformer.serving import wire
from coformer.serving.aggregate import AggregatorRuntime, Forwarded
from coformer.serving.errors import RequestError
from coformer.serving.inputs import check_inputs
from coformer.serving.sessions import Sampling, Sessions


class Answer(BaseModel):
    request_id: str  # also in the logs of the aggregator and of every node
    degraded: bool  # True when some node did not answer and its stream was left out
    missing: list[str]  # the nodes left out


class Embeddings(Answer):
    embeddings: list[list[float]]  # (B, d) the model's pooled output


class Classes(Answer):
    logits: list[list[float]]  # (B, C)
    labels: list[int]  # argmax per row


class Generated(Answer):
    tokens: list[list[int]]  # (B, new) generated token ids
    texts: list[str] | None  # decoded, when the deployment has a tokenizer
    session: str | None  # the kept session to continue, or None once freed


def load_processor(spec: str | Path | None, embedding: str):
    """A tokenizer (text models) or image processor (ViT) from a folder or model name; None if absent."""
    if spec is None or (isinstance(spec, Path) and not spec.is_dir()):
        return None
    from transformers import AutoImageProcessor, AutoTokenizer

    from coformer.loading import resolve

    return (AutoImageProcessor if embedding == "vit" else AutoTokenizer).from_pretrained(resolve(str(spec)))


class Frontend:
    def __init__(self, runtime: AggregatorRuntime, processor=None):
        self.runtime, self.processor = runtime, processor
        self.sessions = Sessions(runtime)
        self.limits = runtime.deployment.limits
        self.sweeper: asyncio.Task | None = None

    def start_sweeper(self) -> None:
        """Free idle sessions even when no request comes (started from the first request's loop)."""
        if self.sweeper is None:
            self.sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        period = min(self.runtime.deployment.session_idle_s / 4, 30.0)
        while True:
            await asyncio.sleep(period)
            await self.sessions.expire()

    # --- inputs ---------------------------------------------------------------------------------
    def check_body(self, length: int) -> None:
        if length > self.limits.max_body_bytes:
            raise RequestError(f"body of {length} bytes exceeds limits.max_body_bytes={self.limits.max_body_bytes}", status=413)

    def tokens(self, texts: list[str] | None, input_ids: list[list[int]] | None, left: bool = False) -> dict[str, torch.Tensor]:
        """(B, T) ids and mask from texts or id lists, padded on the left for generation."""
        if (texts is None) == (input_ids is None):
            raise RequestError("send exactly one of `texts` or `input_ids`")
        rows = input_ids if input_ids is not None else self._tokenize(texts)
        if not rows or len(rows) > self.limits.max_batch:
            raise RequestError(f"batch of {len(rows or [])} must be 1..limits.max_batch={self.limits.max_batch}", status=413 if rows else 400)
        longest = max(len(r) for r in rows)
        if longest > self.limits.max_seq_len or min(len(r) for r in rows) == 0:
            raise RequestError(f"sequences must hold 1..limits.max_seq_len={self.limits.max_seq_len} tokens, got up to {longest}", status=413)
        ids = torch.zeros(len(rows), longest, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            cols = slice(longest - len(row), longest) if left else slice(0, len(row))
            ids[r, cols], mask[r, cols] = torch.tensor(row, dtype=torch.long), 1
        return {"input_ids": ids, "attention_mask": mask}

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if self.processor is None:
            raise RequestError("this deployment has no tokenizer; send `input_ids` instead of `texts`")
        if len(texts) > self.limits.max_batch:
            raise RequestError(f"batch of {len(texts)} exceeds limits.max_batch={self.limits.max_batch}", status=413)
        return self.processor(texts, truncation=True, max_length=self.limits.max_seq_len)["input_ids"]

    def images(self, images: list[str]) -> dict[str, torch.Tensor]:
        """Base64-encoded image files -> pixel_values through the image processor."""
        from PIL import Image

        if self.processor is None:
            raise RequestError("this deployment has no image processor; send pixel_values to `forward`")
        if not images or len(images) > self.limits.max_batch:
            raise RequestError(f"batch of {len(images)} images must be 1..limits.max_batch={self.limits.max_batch}", status=413)
        decoded = []
        for i, text in enumerate(images):
            try:
                image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
            except Exception as e:  # PIL raises many types for a bad file
                raise RequestError(f"image {i} is not a base64-encoded image file ({e})") from None
            if max(image.size) > self.limits.max_image_side:
                raise RequestError(f"image {i} is {image.size[0]}x{image.size[1]}; limits.max_image_side={self.limits.max_image_side}", status=413)
            decoded.append(image.convert("RGB"))
        return {"pixel_values": self.processor(decoded, return_tensors="pt")["pixel_values"]}

    # --- APIs -----------------------------------------------------------------------------------
    async def embed(self, inputs: dict[str, torch.Tensor], request_id: str) -> Embeddings:
        out = await self.runtime.forward(inputs, request_id)
        return Embeddings(embeddings=out.output.tolist(), **_flags(out.missing, request_id))

    async def classify(self, inputs: dict[str, torch.Tensor], request_id: str) -> Classes:
        out = await self.runtime.forward(inputs, request_id)
        if out.output.dim() != 2:
            raise RequestError("this model has no classification head; use `embed` or `generate`")
        return Classes(logits=out.output.tolist(), labels=out.output.argmax(-1).tolist(), **_flags(out.missing, request_id))

    async def generate(
        self, texts, input_ids, max_new_tokens: int, sampling: Sampling, seed: int | None, session: str | None, keep: bool, request_id: str, gone=None
    ) -> Generated:
        """A new session from a prompt, or more tokens for a kept one (``session`` and no prompt)."""
        if max_new_tokens < 1 or max_new_tokens > self.limits.max_new_tokens:
            raise RequestError(f"max_new_tokens={max_new_tokens} must be 1..limits.max_new_tokens={self.limits.max_new_tokens}", status=413)
        if session is not None and texts is None and input_ids is None:
            s = self.sessions.get(session)
        else:
            prompt = self.tokens(texts, input_ids, left=True)
            check_inputs(prompt, self.runtime.config, self.limits)  # before a session exists: nothing half-open
            self.sessions.check_room(prompt["input_ids"].shape[1], max_new_tokens)
            s = self.sessions.start(prompt["input_ids"], prompt["attention_mask"], seed, session)
        try:
            new = await self.sessions.generate(s, max_new_tokens, sampling, request_id, gone)
        except BaseException:
            await self.sessions.close(s.id, request_id)  # error or disconnect: nothing half-open
            raise
        if not keep:
            await self.sessions.close(s.id, request_id)
        decoded = self.processor.batch_decode(new) if self.processor is not None and hasattr(self.processor, "batch_decode") else None
        return Generated(tokens=new.tolist(), texts=decoded, session=s.id if keep else None, **_flags(sorted(s.missing), request_id))

    async def forward_raw(self, body: bytes, request_id: str) -> bytes:
        """Debugging: safetensors inputs in, safetensors {hidden, output} out (metadata: missing)."""
        inputs, _ = wire.decode(body, self.limits.max_body_bytes)
        out: Forwarded = await self.runtime.forward(inputs, request_id, readout=Readout())  # every position
        return wire.encode({"hidden": out.hidden, "output": out.output}, _flags(out.missing, request_id))


def _flags(missing: list[str], request_id: str) -> dict:
    return {"request_id": request_id, "degraded": bool(missing), "missing": list(missing)}
