"""One edge node: its sub-model driven one round at a time through ``coformer.executor.DeviceRun``.

The aggregator opens a *run* (one forward pass) with the inputs, then drives it round by round;
the node keeps the run between rounds, and a *session*'s KV cache between forward passes. Rounds:

* ``segment`` (s = 0 or k): optionally continue from the merged channels, run blocks
  [start, stop), return the export (B, T, w) (the last one: only its ``readout``);
* ``attention`` / ``ffn`` / ``final`` (s = 1): apply the summed partials of the previous sub-layer
  (``merge_ffn`` / ``merge_attention``), return this node's next partial sum (B, T, d); ``final``
  applies the last FFN sum and returns the stream itself.

Every message is a ``coformer.serving.wire`` body; metadata is validated by ``Step``.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coformer.decompose import ModelShape
from coformer.executor import DeviceRun
from coformer.modeling import KVCache, Readout, SubModel
from coformer.serving import wire
from coformer.serving.config import Deployment
from coformer.serving.wire import WireDtype
from coformer.serving.errors import CacheMiss, RequestError, RunLost
from coformer.serving.inputs import IMAGE_KEYS, TOKEN_KEYS, check_inputs

Op = Literal["segment", "attention", "ffn", "final", "close", "release"]


class Step(BaseModel):
    """Arguments of one round, sent as the message's metadata."""

    model_config = ConfigDict(extra="forbid")

    op: Op
    run: str = ""  # forward pass id (one per aggregator forward)
    start: int = 0  # segment: first block
    stop: int = 0  # segment: block after the last
    block: int = 0  # attention / ffn / final: block index
    session: str | None = None  # generation session whose KV cache the run extends
    past: int = 0  # tokens the aggregator believes the session's cache holds
    reset: bool = False  # start the session's cache over (rebuild from the full token history)
    close: bool = False  # the last round of the run: forget it afterwards
    readout: Readout = Field(default_factory=Readout)  # what of the answer to return (default: all of it)
    wire: WireDtype = "float32"  # dtype of the answer's floating tensors


class NodeRuntime:
    """Runs, sessions and their expiry for one sub-model; thread-safe (BentoML runs sync APIs in threads)."""

    def __init__(self, model: SubModel, deployment: Deployment, shape: ModelShape):
        self.model, self.deployment = model.eval(), deployment
        self.shape = shape  # the original model's unit counts (what /profile measures at)
        self.runs: dict[str, tuple[DeviceRun, float]] = {}
        self.sessions: dict[str, tuple[KVCache, float]] = {}
        self.lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.model.config.name

    def handle(self, body: bytes) -> bytes:
        tensors, meta = wire.decode(body, self.deployment.limits.max_body_bytes)
        try:
            step = Step.model_validate(meta)
        except ValidationError as e:
            raise RequestError(f"bad step metadata: {e}") from None
        self.expire()
        with torch.inference_mode():
            out = self.step(step, tensors)
        out = {} if out is None else {"out": out}
        return wire.encode(out, dtype=step.wire)

    def step(self, step: Step, tensors: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if step.op in ("release", "close"):  # forget a session's cache / an abandoned run
            with self.lock:
                self.sessions.pop(step.session or "", None) if step.op == "release" else self.runs.pop(step.run, None)
            return None
        inputs = {k: v for k, v in tensors.items() if k in TOKEN_KEYS | IMAGE_KEYS}
        run = self.open(step, inputs) if inputs else self.find(step.run)
        try:
            out = step.readout.reduce(self.advance(run, step, tensors), run.mask)
        except BaseException:
            step.close = True  # a failed round leaves nothing half-open
            raise
        finally:
            with self.lock:
                if step.close:
                    self.runs.pop(step.run, None)
                else:
                    self.runs[step.run] = (run, time.monotonic())
        return out

    def advance(self, run: DeviceRun, step: Step, tensors: dict[str, torch.Tensor]) -> torch.Tensor | None:
        received = tensors.get("channels", tensors.get("reduced"))
        if received is not None and tuple(received.shape) != tuple(run.x.shape):
            raise RequestError(f"received state of shape {tuple(received.shape)}; this run's stream is {tuple(run.x.shape)}")
        self._check_block(step)
        if step.op == "segment":
            if received is not None:
                run.receive(received)
            return run.segment(step.start, step.stop)
        if step.op == "attention":
            if received is not None:
                run.merge_ffn(step.block - 1, received)
            return run.attention_partial(step.block)
        if received is None and step.op in ("ffn", "final"):
            raise RequestError(f"op {step.op!r} needs the summed partials as tensor 'reduced'")
        if step.op == "ffn":
            run.merge_attention(step.block, received)
            return run.ffn_partial(step.block)
        if step.op == "final":
            run.merge_ffn(step.block, received)
            return run.x
        raise RequestError(f"op {step.op!r} cannot continue a run")

    def _check_block(self, step: Step) -> None:
        L = self.model.config.num_layers
        if not (0 <= step.block < L and 0 <= step.start <= step.stop <= L):
            raise RequestError(f"block range start={step.start} stop={step.stop} block={step.block} outside the model's {L} blocks")

    def open(self, step: Step, inputs: dict[str, torch.Tensor]) -> DeviceRun:
        if not step.run:
            raise RequestError("a step with inputs needs a run id")
        check_inputs(inputs, self.model.config, self.deployment.limits, step.past)
        return DeviceRun(self.model, inputs, self.cache_for(step) if step.session else None)

    def cache_for(self, step: Step) -> KVCache:
        """The session's cache, new at the first pass (or a reset); a mismatch is a ``CacheMiss``."""
        with self.lock:
            entry = self.sessions.get(step.session)
            if step.reset or (entry is None and step.past == 0):
                if entry is None and len(self.sessions) >= self.deployment.limits.max_sessions:
                    raise RequestError(f"node {self.name} holds limits.max_sessions={self.deployment.limits.max_sessions} sessions; close some", status=429)
                cache = self.model.new_cache()
            else:
                held = 0 if entry is None else entry[0].length
                if held != step.past:
                    raise CacheMiss(f"node {self.name} holds {held} tokens of session {step.session}, the aggregator expects {step.past}")
                cache = entry[0]
            self.sessions[step.session] = (cache, time.monotonic())
            return cache

    def find(self, run_id: str) -> DeviceRun:
        with self.lock:
            entry = self.runs.get(run_id)
        if entry is None:
            raise RunLost(f"node {self.name} has no run {run_id!r} (restarted or expired); the aggregator retries the pass")
        return entry[0]

    def expire(self) -> None:
        """Forget runs and sessions idle for longer than the deployment's session_idle_s."""
        cutoff = time.monotonic() - self.deployment.session_idle_s
        with self.lock:
            for table in (self.runs, self.sessions):
                for key in [k for k, (_, used) in table.items() if used < cutoff]:
                    del table[key]
