"""The ``search:`` section of params.yaml: budget, search space bounds, objective weight, workload.

Units: the objective is ``T + lambda * D`` with ``T`` the cost model's request latency in
milliseconds and ``D`` the measured degradation (``1 - mean cosine`` for embeddings, mean KL of
logits for LMs and classifiers), so ``lambda`` is in milliseconds per unit of degradation. The default 100 values 0.01 of
degradation like 1 ms: on the default fleet and MiniLM, exact tensor parallelism (D = 0) costs
about 50 ms and the fastest compressed policies about 4 ms at D ~ 0.3, so both terms matter.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coformer.errors import CoFormerError
from coformer.fleet.dims import Workload


class SearchConfigError(CoFormerError):
    """A search parameter is out of range or inconsistent with another."""


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    trials: int = Field(default=40, ge=1)  # policies evaluated (real Ray Tune trials)
    concurrency: int = Field(default=1, ge=1)  # trials running at once
    seed: int = 0  # seeds the sampler; same seed + concurrency 1 = same trials
    sampler: Literal["tpe", "random"] = "tpe"  # tpe: Optuna's multi-objective TPE; random: the baseline
    lam: float | None = Field(default=100.0, ge=0, alias="lambda")  # ms per unit of D; null = knee of the front
    sync: list[int] = Field(default=[0, 1, 2, 3], min_length=1)  # sync intervals s the search may pick
    keep_min: float = Field(default=0.5, gt=0, le=1)  # lowest kept fraction rho of heads and neurons
    channels_min: float = Field(default=0.5, gt=0, le=1)  # narrowest residual stream, as a fraction of d
    dealing: list[Literal["balanced", "grouped"]] = Field(default=["balanced", "grouped"], min_length=1)
    choose_devices: bool = True  # search which devices take part (else every fleet device does)
    batch: int = Field(default=1, ge=1)  # workload the cost model prices: sequences per request
    seq_len: int = Field(default=128, ge=1)  # tokens per sequence
    decode_tokens: int = Field(default=0, ge=0)  # generated tokens per request (LMs)
    texts: int = Field(default=32, ge=1)  # calibration inputs D is measured on
    max_length: int = Field(default=64, ge=1)  # their token length
    importance: Literal["activation", "magnitude"] = "activation"  # how units are ranked before dealing

    @field_validator("sync")
    @classmethod
    def _sync_values(cls, values: list[int]) -> list[int]:
        if min(values) < 0:
            raise SearchConfigError(f"search.sync {values}: intervals must be >= 0 (0: aggregate once, 1: every sub-layer)")
        return sorted(set(values))

    @model_validator(mode="after")
    def _budget(self) -> SearchConfig:
        if self.concurrency > self.trials:
            raise SearchConfigError(f"search.concurrency={self.concurrency} exceeds search.trials={self.trials}; lower it")
        return self

    @classmethod
    def parse(cls, values: dict) -> SearchConfig:
        """Validate a params section; a bad value becomes one ``SearchConfigError`` naming the key."""
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            problems = "; ".join(f"search.{'.'.join(map(str, x['loc']))}: {x['msg']} (got {x.get('input')!r})" for x in e.errors())
            raise SearchConfigError(f"invalid search parameters: {problems}") from None

    def workload(self) -> Workload:
        return Workload(batch=self.batch, seq_len=self.seq_len, decode_tokens=self.decode_tokens)

    def fingerprint(self) -> dict:
        """What the stored trials depend on: a resumed search must agree on all of it."""
        return self.model_dump(exclude={"trials", "concurrency", "lam"})
