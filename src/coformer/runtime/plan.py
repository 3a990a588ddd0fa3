"""What one measurement run executes: the student folder, how it is laid out over processes, and the
request sets each process times. Plain data, written to JSON and read by every device process.

Rank layout (rank 0 is always the process requests arrive at, and the hub of the links):

* ``ensemble``: device k is rank k and device 0 hosts the aggregator; with ``embed_at_aggregator``
  the aggregator is a process of its own (a gateway, rank 0) and device k is rank k + 1;
* ``pipeline``: stage k is rank k; stage 0 embeds, the last stage holds the head.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coformer.errors import CoFormerError

Mode = Literal["ensemble", "pipeline"]
WireDtype = Literal["fp32", "fp16", "bf16"]


class RuntimeFailure(CoFormerError):
    """A measurement run cannot start or a device process failed."""


class RequestSet(BaseModel):
    """One request shape timed ``warmup + repeats`` times; its inputs travel in the requests file."""

    model_config = ConfigDict(extra="forbid")

    name: str  # key of the set's tensors in the requests file and of its results
    micro_batches: int = Field(default=1, ge=1)  # pipeline: the request streams through the stages in this many parts
    wire: WireDtype = "fp32"  # dtype of activations on the wire (token ids and masks always go as integers)


class RuntimePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str  # student folder: policy.json, devices/<name>/, aggregator/ (pipeline: a one-device full model)
    mode: Mode = "ensemble"  # ensemble: the policy's own data flow (s = 0, 1 or k); pipeline: contiguous blocks per stage
    stages: list[int] = Field(default_factory=list)  # pipeline: blocks per stage, in order (all > 0)
    embed_at_aggregator: bool = False  # ensemble: a gateway process embeds every request; devices hold no embedding table
    sets: list[RequestSet] = Field(min_length=1)  # request shapes to time, in order
    warmup: int = Field(default=3, ge=0)  # untimed requests per set
    repeats: int = Field(default=20, ge=1)  # timed requests per set
    devices: int = Field(default=1, ge=1)  # ensemble: sub-models in the folder (pipeline: len(stages))
    first_core: int = Field(default=0, ge=0)  # device k runs on the (first_core + k)-th allowed core (rotates the cores between runs)

    @model_validator(mode="after")
    def _consistent(self) -> RuntimePlan:
        if self.mode == "pipeline":
            if not self.stages or min(self.stages) < 1:
                raise RuntimeFailure(f"pipeline stages {self.stages} must list at least one block count, each >= 1")
            if self.embed_at_aggregator:
                raise RuntimeFailure("embed_at_aggregator applies to the ensemble mode; a pipeline's first stage embeds")
        return self

    @property
    def gateway(self) -> bool:
        return self.mode == "ensemble" and self.embed_at_aggregator

    @property
    def world(self) -> int:
        if self.mode == "pipeline":
            return len(self.stages)
        return self.devices + int(self.gateway)

    def device_rank(self, k: int) -> int:
        """Rank of device (or pipeline stage) k."""
        return k + int(self.gateway)

    @property
    def output_rank(self) -> int:
        """The rank that produces the model's output: the aggregator's, or the last stage's."""
        return self.world - 1 if self.mode == "pipeline" else 0
