"""The ``calibrate:`` section of params.yaml: the progressive schedule and how Lightning runs it.

A run has an optional closed-form warm start, one alignment stage per group of ``group_size``
blocks (aligning the merged state after blocks g, 2g, ..., L with the teacher's) and a final
output-distillation stage. A gradient stage with 0 steps is skipped, so ``warm_start: false``
with ``steps_per_stage: 0`` is plain one-shot output distillation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coformer.errors import CoFormerError


class CalibrationConfigError(CoFormerError):
    """A calibration parameter is out of range or inconsistent with another."""


class CalibrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    warm_start: bool = False  # least-squares refit of every block before the gradient stages (see warmstart.py)
    warm_start_texts: int = Field(default=800, ge=1)  # calibration texts the warm start fits on
    ridge: float = Field(default=1e-3, ge=0)  # warm-start ridge, relative to the mean feature energy
    group_size: int = Field(default=2, ge=1)  # blocks per alignment stage (the last group may be shorter)
    steps_per_stage: int = Field(default=300, ge=0)  # optimizer steps of every alignment stage
    final_steps: int = Field(default=1000, ge=0)  # optimizer steps of the output-distillation stage
    lr: float = Field(default=3e-4, gt=0)  # peak AdamW learning rate of every stage
    beta2: float = Field(default=0.95, gt=0, lt=1)  # AdamW second-moment decay (lower adapts faster in short runs)
    warmup: float = Field(default=0.1, ge=0, lt=1)  # share of a stage's steps with linear warm-up; then cosine to 0
    weight_decay: float = Field(default=0.0, ge=0)  # AdamW decoupled decay (0: keep the teacher's weights' scale)
    batch_size: int = Field(default=16, ge=1)  # calibration texts per step (per process under DDP)
    max_length: int = Field(default=64, ge=1)  # tokens per calibration text (longer ones are truncated)
    grad_clip: float = Field(default=1.0, ge=0)  # gradient norm clipping (0: off)
    hidden_loss: Literal["mse", "cosine"] = "mse"  # alignment loss on merged vs teacher hidden states
    hidden_weight: float = Field(default=10.0, ge=0)  # final stage: weight of the alignment at every group boundary
    temperature: float = Field(default=2.0, gt=0)  # softens logits for the KL of LMs and classifiers
    task_weight: float = Field(default=0.0, ge=0)  # weight of the task loss in the final stage (needs labels)
    freeze_embeddings: bool = True  # keep the (large, duplicated) token embedding tables as sliced
    train_merges: bool = False  # also train the aggregator's merges in alignment stages (final stage always does)
    teacher_cache_gib: float = Field(default=2.0, ge=0)  # memory for teacher targets kept across steps (0: recompute)
    seed: int = 0  # seeds initial data order and Lightning
    accelerator: str = "cpu"  # Lightning accelerator: cpu, gpu, cuda, mps, auto
    strategy: str = "auto"  # Lightning strategy: auto, ddp, ddp_spawn, fsdp, ...
    devices: int | str = 1  # Lightning devices: a count, "auto", or a list string such as "0,1"
    precision: str = "auto"  # Lightning precision, or auto: bf16-mixed where the hardware has fast bf16, else 32-true
    threads: int = Field(default=0, ge=0)  # torch CPU threads per process (0: leave torch's default, every core)
    checkpoint_every: int = Field(default=50, ge=0)  # steps between Lightning resume checkpoints (0: none)
    log_every: int = Field(default=5, ge=1)  # steps between logged losses
    device_dropout: float = Field(default=0.0, ge=0, lt=1)  # final stage: share of steps that leave one random device's
    #   stream out (the merge adds that device's learned "absent" correction), so a missing node still gives a useful answer

    @model_validator(mode="after")
    def _has_work(self) -> CalibrationConfig:
        if self.steps_per_stage == 0 and self.final_steps == 0 and not self.warm_start:
            raise CalibrationConfigError(
                "calibrate.steps_per_stage and calibrate.final_steps are both 0 and warm_start is off: nothing would "
                "be calibrated; give one of them steps or turn warm_start on"
            )
        return self
