"""The ``evaluate:`` section of params.yaml: which requests are timed, on which links, and the
calibration budget of the baselines (scaled down by default so the whole default pipeline stays
under 25 minutes on 2 cores; the report says which budget every row had)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["full", "pipe-edge", "distri-edge", "single-edge", "aggregate-edge", "coformer", "coformer-gateway"]
METHODS: list[Method] = ["full", "pipe-edge", "distri-edge", "single-edge", "aggregate-edge", "coformer", "coformer-gateway"]
SHAPED_DEFAULT: list[Method] = ["pipe-edge", "distri-edge", "aggregate-edge"]


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[Method] = Field(default=METHODS, min_length=1)  # methods to evaluate (coformer: only with a calibrated folder)
    devices: int | None = Field(default=None, ge=1)  # measured device processes, one per core (null: every core)
    batch_sizes: list[int] = Field(default=[1, 8], min_length=1)  # sequences per timed request on the loopback
    seq_len: int = Field(default=128, ge=1)  # tokens per sequence of a timed request (padded to it)
    warmup: int = Field(default=2, ge=0)  # untimed requests before every timed series
    requests: int = Field(default=20, ge=1)  # timed requests per method, batch and link (median and p90 over them)
    rounds: int = Field(default=2, ge=1)  # loopback: the requests split over this many rounds through the methods, the order
    #   reversed and every device moved one core on each round, then pooled (a drift of this machine's speed, or a slower
    #   core, then reaches every method alike)
    micro_batches: int = Field(default=4, ge=1)  # Pipe-Edge stream: a batch cut into this many micro-batches
    links_mbit: list[float] = Field(default=[100.0, 20.0])  # shaped link rates (tc tbf between namespaces), Mbit/s
    shaped_methods: list[Method] = Field(default=SHAPED_DEFAULT)  # methods also timed on the shaped links (others cross no link)
    shaped_batch: int = Field(default=1, ge=1)  # sequences per request on shaped links (8 x 128 tensor parallel at 20 Mbit/s: ~8 s a request)
    wires: list[Literal["fp32", "fp16", "bf16"]] = Field(default=["fp32", "fp16"], min_length=1)  # activation dtypes on the shaped wire (first: reference)
    baseline_budget: float = Field(default=0.04, ge=0, le=1)  # Single-/Aggregate-Edge calibration steps as a fraction of calibrate's (0: uncalibrated)
    single_keep: float | None = Field(default=None, gt=0, le=1)  # Single-Edge kept fraction (null: the largest fitting the biggest device)
    importance: Literal["activation", "magnitude"] = "activation"  # unit ranking of the baselines (as the search's)
    quality_texts: int = Field(default=128, ge=1)  # held-out texts the output cosine (and KL) is measured on
    quality_pairs: int = Field(default=200, ge=0)  # retrieval pairs recall@1/@5 is measured on (0: skip)
    max_length: int = Field(default=128, ge=1)  # tokens per quality text
    timeout_s: float = Field(default=600.0, gt=0)  # longest one runtime run (all its requests) may take
