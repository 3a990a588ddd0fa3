"""The ``search:`` section of params.yaml: budget, search space bounds, objective weight, workload.

Units: the objective is ``T + lambda * D`` with ``T`` the cost model's request latency in
milliseconds and ``D`` the degradation (``1 - mean cosine`` for embeddings, mean KL of logits for
LMs and classifiers) estimated after calibration (``degradation``, see ``refit.py``), so
``lambda`` is in milliseconds per unit of degradation. The default workload is the default fleet's
case, a batch of 16 documents of 128 tokens embedded by CPU boards: about 1 s on one Pi 5 and
0.4 s split over the fleet at s = 0, while the refitted D of sensible policies spans 0.2-0.5, so
the default 1000 (0.01 of D worth 10 ms) lets both terms matter.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    lam: float | None = Field(default=1000.0, ge=0, alias="lambda")  # ms per unit of D; null = knee of the front
    sync: list[int] = Field(default=[0, 1, 2, 3], min_length=1)  # sync intervals s the search may pick
    keep_min: float = Field(default=0.5, gt=0, le=1)  # lowest kept fraction rho of heads and neurons
    channels_min: float = Field(default=0.5, gt=0, le=1)  # narrowest residual stream, as a fraction of d
    dealing: list[Literal["balanced", "grouped"]] = Field(default=["balanced", "grouped"], min_length=1)
    choose_devices: bool = True  # search which devices take part (else every fleet device does)
    batch: int = Field(default=16, ge=1)  # workload the cost model prices: sequences per request (documents to embed)
    seq_len: int = Field(default=128, ge=1)  # tokens per sequence
    decode_tokens: int = Field(default=0, ge=0)  # generated tokens per request (LMs)
    texts: int = Field(default=128, ge=1)  # calibration inputs: the first fit_texts fit the refit, D is measured on the rest
    max_length: int = Field(default=64, ge=1)  # their token length
    importance: Literal["activation", "magnitude"] = "activation"  # how units are ranked before dealing
    degradation: Literal["refit", "warm-start", "uncalibrated"] = "refit"  # which D the objective uses (search/refit.py)
    fit_texts: int = Field(default=96, ge=1)  # of the texts, how many fit the refit; D is measured on the others
    ray_address: str | None = None  # Ray cluster to run trials on ("auto", "host:6379"); null: RAY_ADDRESS, else a local Ray

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
        if self.degradation != "uncalibrated" and self.fit_texts >= self.texts:
            raise SearchConfigError(
                f"search.fit_texts={self.fit_texts} leaves none of search.texts={self.texts} to measure D on; "
                "raise search.texts or lower search.fit_texts"
            )
        return self

    def workload(self) -> Workload:
        return Workload(batch=self.batch, seq_len=self.seq_len, decode_tokens=self.decode_tokens)

    def fingerprint(self) -> dict:
        """What the stored trials depend on: a resumed search must agree on all of it."""
        return self.model_dump(exclude={"trials", "concurrency", "lam", "ray_address"})
