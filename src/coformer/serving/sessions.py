"""Generation sessions: the tokens so far and where the nodes' KV caches stand, and the decode loop.

A session's nodes hold its KV caches; the aggregator holds its tokens. When a node answers that its
cache does not match (it restarted, or missed a step while degraded), the step is run again from
the whole token history with every cache reset, so the output equals a run without the failure.
Sessions are freed on completion, when the client disconnects and after ``session_idle_s``.

Notation: B batch, S tokens so far (left-padded prompt + generated), V vocabulary.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import torch

from coformer.modeling import Readout
from coformer.serving.aggregate import AggregatorRuntime, Forwarded
from coformer.serving.errors import CacheMiss, RequestError

NEXT_TOKEN = Readout(kind="last", count=1)  # a generation step reads the last position's logits


@dataclass
class Sampling:
    do_sample: bool = False  # False: greedy (argmax)
    temperature: float = 1.0
    top_k: int = 0  # keep the k most likely tokens (0: all)
    top_p: float = 1.0  # keep the smallest set whose probability reaches p

    def pick(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Next token per row from last-position logits (B, V): (B,)."""
        if not self.do_sample:
            return logits.argmax(-1)
        logits = logits / max(self.temperature, 1e-6)
        if self.top_k:
            kth = logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            drop = cumulative - sorted_logits.softmax(-1) > self.top_p  # keep the token that crosses p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@dataclass
class Session:
    id: str
    tokens: torch.Tensor  # (B, S) left-padded prompt + generated tokens
    mask: torch.Tensor  # (B, S) 1 for real tokens
    generator: torch.Generator  # sampling state, so a continued session samples as one long call would
    cached: int = 0  # tokens the nodes' caches hold (the last generated token is fed at the next step)
    used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    missing: set[str] = field(default_factory=set)  # nodes left out of any step (degraded mode)

    def positions(self) -> torch.Tensor:
        return (self.mask.cumsum(1) - 1).clamp(min=0)  # (B, S): left padding does not shift positions


class Sessions:
    """The open sessions of one aggregator, bounded by ``limits.max_sessions``."""

    def __init__(self, runtime: AggregatorRuntime):
        self.runtime = runtime
        self.open: dict[str, Session] = {}

    def start(self, tokens: torch.Tensor, mask: torch.Tensor, seed: int | None, session_id: str | None = None) -> Session:
        limit = self.runtime.deployment.limits.max_sessions
        if session_id in self.open:
            raise RequestError(f"session {session_id!r} is already open; continue it without a prompt, or close it first", status=409)
        if len(self.open) >= limit:
            raise RequestError(f"{limit} generation sessions are open (limits.max_sessions); close one or retry later", status=429)
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else torch.seed())
        session = Session(session_id or uuid.uuid4().hex, tokens, mask, generator)
        self.open[session.id] = session
        return session

    def get(self, session_id: str) -> Session:
        session = self.open.get(session_id)
        if session is None:
            raise RequestError(f"no open session {session_id!r} (finished, closed or idle longer than session_idle_s); start a new one", status=404)
        return session

    async def close(self, session_id: str, request_id: str) -> None:
        if self.open.pop(session_id, None) is not None:
            await self.runtime.release(session_id, request_id)

    async def expire(self, request_id: str = "expiry") -> None:
        cutoff = time.monotonic() - self.runtime.deployment.session_idle_s
        for sid in [s.id for s in self.open.values() if s.used < cutoff and not s.lock.locked()]:
            await self.close(sid, request_id)

    def check_room(self, length: int, new_tokens: int) -> None:
        longest = min(self.runtime.deployment.limits.max_seq_len, self.runtime.config.max_tokens or self.runtime.deployment.limits.max_seq_len)
        if length + new_tokens > longest:
            raise RequestError(f"{length} tokens + {new_tokens} new exceed max_seq_len={longest} (limits or model positions); ask for fewer tokens", status=413)

    async def step(self, s: Session, request_id: str) -> Forwarded:
        """Feed the tokens the caches lack; a cache miss rebuilds every cache from the history."""
        positions = s.positions()
        new = {"input_ids": s.tokens[:, s.cached :], "attention_mask": s.mask, "position_ids": positions[:, s.cached :]}
        try:
            out = await self.runtime.forward(new, request_id, session=s.id, past=s.cached, readout=NEXT_TOKEN)
        except CacheMiss:
            full = {"input_ids": s.tokens, "attention_mask": s.mask, "position_ids": positions}
            out = await self.runtime.forward(full, request_id, session=s.id, past=0, reset=True, readout=NEXT_TOKEN)
        s.cached = s.tokens.shape[1]
        s.missing.update(out.missing)
        return out

    async def generate(self, s: Session, new_tokens: int, sampling: Sampling, request_id: str, gone: Callable[[], Awaitable[bool]] | None = None) -> torch.Tensor:
        """Append ``new_tokens`` tokens to the session; returns them (B, new_tokens).

        ``gone`` is polled between steps: a client that disconnected stops the loop."""
        self.check_room(s.tokens.shape[1], new_tokens)
        async with s.lock:
            start = s.tokens.shape[1]
            for _ in range(new_tokens):
                if gone is not None and await gone():
                    raise asyncio.CancelledError("client disconnected")
                out = await self.step(s, request_id)
                token = sampling.pick(out.output[:, -1], s.generator)  # (B,)
                s.tokens = torch.cat([s.tokens, token[:, None]], dim=1)
                s.mask = torch.cat([s.mask, torch.ones_like(s.mask[:, :1])], dim=1)
            s.used = time.monotonic()
            return s.tokens[:, start:]
