"""The aggregator's link to one node: one httpx client, a deadline per call, bounded retries.

Only failures where the node cannot have acted are retried (connection refused, the node answering
503 while it starts), so a stateful round is never applied twice. A node that fails is skipped for
``down_s`` and then tried again: a node that comes back is used without restarting anything.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import httpx
import torch

from coformer.serving import wire
from coformer.serving.config import Deployment
from coformer.serving.errors import CacheMiss, NodeUnavailable, RequestError, RunLost

STEP_ROUTE = "/step"


class Observer(Protocol):
    """Where per-node latency and errors go (BentoML metrics in the service, nothing in tests)."""

    def latency(self, node: str, seconds: float) -> None: ...

    def error(self, node: str, kind: str) -> None: ...


class NoObserver:
    def latency(self, node: str, seconds: float) -> None:
        pass

    def error(self, node: str, kind: str) -> None:
        pass


class NodeClient:
    def __init__(self, name: str, url: str, deployment: Deployment, token: str, observer: Observer, transport: httpx.AsyncBaseTransport | None = None):
        self.name, self.deployment, self.observer = name, deployment, observer
        self.http = httpx.AsyncClient(base_url=url, transport=transport, headers={"authorization": f"Bearer {token}"})
        self.down_until = 0.0

    @property
    def down(self) -> bool:
        return time.monotonic() < self.down_until

    async def step(self, tensors: dict[str, torch.Tensor], meta: dict, request_id: str) -> torch.Tensor | None:
        """One round on this node: its answer tensor, or ``NodeUnavailable`` within the deadline."""
        d = self.deployment
        body = wire.encode(tensors, meta | {"wire": d.wire_dtype}, d.wire_dtype)
        started = time.monotonic()
        deadline = started + d.timeout_s
        reason = "no attempt"
        for attempt in range(d.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                r = await self.http.post(STEP_ROUTE, content=body, timeout=left, headers={"x-request-id": request_id, "content-type": "application/octet-stream"})
            except httpx.TimeoutException:
                reason = f"no answer within timeout_s={d.timeout_s}"
                break
            except httpx.TransportError as e:
                reason = f"{type(e).__name__}: {e}"
            else:
                if r.status_code == 200:
                    self.down_until = 0.0
                    self.observer.latency(self.name, time.monotonic() - started)
                    tensors, _ = wire.decode(r.content, len(r.content))  # an authenticated node's answer: no size limit
                    return tensors.get("out")
                self._raise_for(r)
                reason = f"HTTP {r.status_code}: {_message(r)}"
                if r.status_code not in (502, 503, 504):
                    break  # the node failed while acting: retrying could apply the round twice
            await asyncio.sleep(max(0.0, min(d.backoff_s * 2**attempt, deadline - time.monotonic())))
        self.down_until = time.monotonic() + d.down_s
        self.observer.error(self.name, "unavailable")
        raise NodeUnavailable([self.name], reason)

    def _raise_for(self, r: httpx.Response) -> None:
        """Answers that are not the node being down: our own errors, passed on to the caller."""
        if r.status_code == 409:
            self.observer.error(self.name, "cache_miss")
            raise CacheMiss(_message(r))
        if r.status_code == 410:
            self.observer.error(self.name, "run_lost")
            raise RunLost(_message(r))
        if 400 <= r.status_code < 500:
            self.observer.error(self.name, f"http_{r.status_code}")
            status = 502 if r.status_code == 401 else r.status_code  # a wrong node token is the operator's fault
            raise RequestError(f"node {self.name}: {_message(r)}", status=status)

    async def aclose(self) -> None:
        await self.http.aclose()


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", r.text))
    except ValueError:
        return r.text[:200]
