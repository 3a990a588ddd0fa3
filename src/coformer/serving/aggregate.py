"""The aggregator's side of the data flow, over HTTP: fan a round out to every node, merge, repeat.

It drives exactly the calls ``coformer.executor.Ensemble`` makes in one process (``DeviceRun`` on
the nodes, ``Aggregator.merge`` / ``scatter`` / ``forward`` here), so with the fp32 wire its output
equals the executor's:

* s = 0: one round; s = k: one round per segment, each node continuing from its channels of the
  merged state; s = 1: two rounds per block (partials summed here and sent back) and a last round
  that returns the stream (exact, the slow mode);
* the last round returns only what is read of the last state (``Readout``: by default what the
  head reads, e.g. the masked mean of a sentence embedding; the last position while generating).

A node that fails is left out of the rest of the pass: ``fail_fast`` answers 503 naming it,
``degraded`` merges the streams (or partial sums) that came and lists the missing nodes. At most
``max_inflight`` passes run on the nodes at once: the others queue here, so a node's timeout
measures the node and not the queue in front of it (and fail_fast answers at once while a node is
known to be down, without queueing).

Notation: N nodes, B batch, T tokens, d hidden width, w_k node k's width.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import torch

from coformer.decompose import Policy
from coformer.errors import CoFormerError
from coformer.executor import segments
from coformer.modeling import Aggregator, Readout, SubModelConfig
from coformer.serving.client import NodeClient, NoObserver, Observer
from coformer.serving.config import Deployment
from coformer.serving.errors import CacheMiss, NodeUnavailable, RunLost
from coformer.serving.inputs import check_inputs

Request = tuple[dict[str, torch.Tensor], dict]  # (tensors, step metadata) for one node


@dataclass
class Forwarded:
    hidden: torch.Tensor  # (B, T', d) what was read of the final-normed last hidden state (``Readout``)
    output: torch.Tensor  # the model's output: embedding (B, d), logits (B, C) or (B, T, V), states
    missing: list[str] = field(default_factory=list)  # nodes left out (degraded mode)


@dataclass
class Pass:
    """One forward pass across the nodes: its id on them and who is still in it."""

    run: str
    request_id: str
    live: list[bool]
    missing: list[str] = field(default_factory=list)


class AggregatorRuntime:
    def __init__(
        self,
        aggregator: Aggregator,
        policy: Policy,
        configs: list[SubModelConfig],
        deployment: Deployment,
        token: str,
        observer: Observer | None = None,
        transports: dict[str, httpx.AsyncBaseTransport] | None = None,
    ):
        names = [d.name for d in policy.devices]
        unknown = [n for n in names if n not in deployment.nodes]
        if unknown:
            raise CoFormerError(f"the deployment gives no URL for device(s) {unknown}; add them under `nodes:` (devices: {names})")
        self.aggregator, self.policy, self.configs, self.deployment = aggregator.eval(), policy, configs, deployment
        observer = observer or NoObserver()
        transports = transports or {}
        self.clients = [NodeClient(n, deployment.nodes[n], deployment, token, observer, transports.get(n)) for n in names]
        self.segments = segments(configs[0].num_layers, policy.sync)
        self.background: set[asyncio.Task] = set()
        self.admission = asyncio.Semaphore(deployment.max_inflight)

    @property
    def config(self) -> SubModelConfig:
        return self.configs[0]

    async def forward(
        self,
        inputs: dict[str, torch.Tensor],
        request_id: str,
        session: str | None = None,
        past: int = 0,
        reset: bool = False,
        readout: Readout | None = None,
    ) -> Forwarded:
        """Run the pass on the nodes and apply the head to ``readout`` of the last state (None:
        what the head reads)."""
        check_inputs(inputs, self.config, self.deployment.limits, past)
        self._fail_fast()
        async with self.admission:
            self._fail_fast()  # a node may have failed while this request queued
            return await self._pass(inputs, request_id, session, past, reset, readout or self.aggregator.config.head.readout)

    def _fail_fast(self) -> None:
        down = [c.name for c in self.clients if c.down]
        if down and self.deployment.failure_mode == "fail_fast":
            raise NodeUnavailable(down, f"failed less than down_s={self.deployment.down_s} s ago")

    async def _pass(self, inputs, request_id: str, session: str | None, past: int, reset: bool, readout: Readout) -> Forwarded:
        p = Pass(uuid.uuid4().hex, request_id, [True] * len(self.clients))
        base = {"run": p.run, "session": session, "past": past, "reset": reset}
        try:
            if self.policy.sync == 1:
                hidden = await self._tensor_parallel(p, inputs, base, readout)
            else:
                hidden = await self._streams(p, inputs, base, readout)
        except BaseException:
            self._forget(p)
            raise
        with torch.inference_mode():
            normed, output = self.aggregator(hidden, readout.head_mask(inputs.get("attention_mask")))
        return Forwarded(normed, output, p.missing)

    async def _streams(self, p: Pass, inputs, base: dict, readout: Readout) -> torch.Tensor:
        channels: list[torch.Tensor | None] = [None] * len(self.clients)
        for point, (start, stop) in enumerate(self.segments):
            last = point == len(self.segments) - 1
            meta = base | {"op": "segment", "start": start, "stop": stop, "close": last}
            if last:
                meta["readout"] = readout.model_dump()
            exports = await self._round(p, lambda k: (dict(inputs) if point == 0 else {"channels": channels[k]}, meta))
            with torch.inference_mode():
                merged = self.aggregator.merge(point, exports)  # (B, T, d); the last (B, T', d)
                if not last:
                    channels = self.aggregator.scatter(merged)  # N x (B, T, w_k)
        return merged

    async def _tensor_parallel(self, p: Pass, inputs, base: dict, readout: Readout) -> torch.Tensor:
        reduced = None
        for i in range(self.config.num_layers):
            for op in ("attention", "ffn"):
                tensors = dict(inputs) if reduced is None else {"reduced": reduced}
                partials = await self._round(p, lambda k: (tensors, base | {"op": op, "block": i}))
                reduced = sum(x for x in partials if x is not None)  # the all-reduce: (B, T, d)
        meta = base | {"op": "final", "block": self.config.num_layers - 1, "close": True, "readout": readout.model_dump()}
        streams = await self._round(p, lambda k: ({"reduced": reduced}, meta))
        return next(x for x in streams if x is not None)

    async def _round(self, p: Pass, request: Callable[[int], Request]) -> list[torch.Tensor | None]:
        """One concurrent round on the nodes still in the pass; failures per the failure mode."""
        live = [k for k, ok in enumerate(p.live) if ok]
        results = await asyncio.gather(*(self._call(k, *request(k), p.request_id) for k in live), return_exceptions=True)
        answers: list[torch.Tensor | None] = [None] * len(self.clients)
        errors, reasons = [], []
        for k, result in zip(live, results):
            if isinstance(result, (NodeUnavailable, RunLost)):
                p.live[k] = False
                p.missing.append(self.clients[k].name)
                reasons.append(getattr(result, "reason", str(result)))
            elif isinstance(result, BaseException):
                errors.append(result)
            else:
                answers[k] = result
        if p.missing and (self.deployment.failure_mode == "fail_fast" or not any(p.live)):
            reasons.append(f"failure_mode={self.deployment.failure_mode}" + ("" if any(p.live) else ", no node answered"))
            raise NodeUnavailable(p.missing, "; ".join(reasons))
        if errors:
            raise next((e for e in errors if isinstance(e, CacheMiss)), errors[0])
        return answers

    async def _call(self, k: int, tensors, meta: dict, request_id: str) -> torch.Tensor | None:
        client = self.clients[k]
        if client.down:  # degraded mode: leave it out without waiting for it
            raise NodeUnavailable([client.name], f"failed less than down_s={self.deployment.down_s} s ago")
        return await client.step(tensors, meta, request_id)

    def _forget(self, p: Pass) -> None:
        """Close an abandoned pass on the nodes, in the background (never blocks the error)."""
        self.spawn(*(c.step({}, {"op": "close", "run": p.run}, p.request_id) for c, ok in zip(self.clients, p.live) if ok and not c.down))

    async def release(self, session: str, request_id: str) -> None:
        """Free a generation session's KV caches on every node (best effort: nodes also expire them)."""
        await asyncio.gather(*(c.step({}, {"op": "release", "session": session}, request_id) for c in self.clients if not c.down), return_exceptions=True)

    def spawn(self, *coroutines) -> None:
        for coroutine in coroutines:
            task = asyncio.ensure_future(coroutine)
            self.background.add(task)
            task.add_done_callback(lambda t: (self.background.discard(t), t.cancelled() or t.exception()))

    async def aclose(self) -> None:
        await asyncio.gather(*self.background, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in self.clients))
