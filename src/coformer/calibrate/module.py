"""One calibration stage as a ``LightningModule``: frozen teacher, trainable student ensemble.

Notation: B batch, T tokens, d hidden width, L blocks.

The student is an ``Ensemble`` (sub-models + aggregator under the policy's sync interval), so the
forward pass is the reference executor's data flow, exactly as deployed. The runner makes one
module per stage around the same teacher and student objects; the module decides what the stage
trains (``set_trainable``), its loss and its optimizer (AdamW, linear warm-up, cosine decay).
"""

from __future__ import annotations

import math

import lightning as L
import torch

from coformer.calibrate.config import CalibrationConfig
from coformer.calibrate.losses import hidden_alignment, output_distillation, task_loss
from coformer.calibrate.stages import Stage, set_trainable
from coformer.calibrate.targets import BATCH_INDEX, TeacherTargets
from coformer.calibrate.views import student_view, teacher_view
from coformer.errors import DataError
from coformer.executor import Ensemble, EnsembleOutput, Teacher


def warmup_cosine(steps: int, warmup: float):
    """LR multiplier: linear from ~0 to 1 over ``warmup * steps``, then cosine down to 0 at ``steps``."""
    ramp = max(1, round(warmup * steps))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - ramp) / max(1, steps - ramp))))

    return factor


class CalibrationModule(L.LightningModule):
    def __init__(
        self, teacher: Teacher, student: Ensemble, config: CalibrationConfig, stage: Stage, targets: TeacherTargets | None = None
    ):
        """``targets``: the run's teacher cache, shared by its stages (default: none, the teacher runs every step)."""
        super().__init__()
        self.save_hyperparameters({"calibrate": config.model_dump()})  # the same for every stage of a run
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student.train()
        self.config, self.stage = config, stage
        self.targets = targets or TeacherTargets(teacher, set(stage.aligned), budget_gib=0)
        self.trainable = set_trainable(student, stage, config)
        self._views: dict = {}  # depth-truncated views, rebuilt per device (plain dict: not registered)

    def forward(self, inputs: dict[str, torch.Tensor], probe=frozenset()) -> EnsembleOutput:
        """The deployed data flow: the student ensemble under the policy's sync interval."""
        return self.student(inputs, probe=probe)

    def views(self) -> tuple[Ensemble, Teacher]:
        """Student and teacher over the stage's first blocks (the full models in the final stage)."""
        if self.stage.final:
            return self.student, self.teacher
        key = (self.stage.depth, str(self.device))
        if key not in self._views:
            self._views = {key: (student_view(self.student, self.stage.depth), teacher_view(self.teacher, self.stage.depth))}
        return self._views[key]

    def stage_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named loss terms of the stage for one batch; their sum is optimised."""
        c, aligned = self.config, set(self.stage.aligned)
        inputs = {k: v for k, v in batch.items() if k not in ("labels", BATCH_INDEX)}
        mask = inputs.get("attention_mask")  # (B, T) or None (images)
        student, teacher = self.views()
        index = int(batch[BATCH_INDEX]) if BATCH_INDEX in batch else None
        target = self.targets(index, inputs, teacher, aligned)
        out = student(inputs, probe=aligned, present=self.present() if self.stage.final else None)
        alignment = sum(hidden_alignment(out.probes[d], target.probes[d], mask, c.hidden_loss) for d in self.stage.aligned)
        if not self.stage.final:
            return {"align": alignment}
        head = self.student.aggregator.config.head
        terms = {"distill": output_distillation(out.output, target.output, head, mask, c.temperature)}
        if aligned:
            terms["hidden"] = c.hidden_weight * alignment
        if c.task_weight > 0:
            terms["task"] = c.task_weight * task_loss(out.output, self.labels(batch, head.projection), head)
        return terms

    def present(self) -> list[bool] | None:
        """Device dropout (``device_dropout``): which devices answer this step, one of them missing with
        that probability (failout, as in ResiliNet); None: all. Streams only: at s = 1 there is no merge
        to correct a missing device's partial sums, so no device is dropped."""
        n, rate = len(self.student.submodels), self.config.device_dropout
        if n < 2 or not rate or not self.student.aggregator.merges or float(torch.rand(())) >= rate:
            return None
        missing = int(torch.randint(n, ()))
        return [k != missing for k in range(n)]

    @staticmethod
    def labels(batch: dict[str, torch.Tensor], projection: str) -> torch.Tensor:
        if "labels" in batch:
            return batch["labels"]
        if projection == "lm" and "input_ids" in batch:  # language modelling labels itself
            mask = batch.get("attention_mask")
            return batch["input_ids"] if mask is None else batch["input_ids"].masked_fill(mask == 0, -100)  # (B, T)
        raise DataError("calibrate.task_weight > 0 but the calibration data has no labels; add labels or set it to 0")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = self.stage_loss(batch)
        loss = sum(terms.values())
        size = next(iter(batch.values())).shape[0]
        name = self.stage.name
        self.log(f"train/{name}/loss", loss, prog_bar=True, batch_size=size)
        if len(terms) > 1:
            self.log_dict({f"train/{name}/{k}": v for k, v in terms.items()}, batch_size=size)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.student.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay, betas=(0.9, self.config.beta2))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(self.stage.steps, self.config.warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The teacher is frozen and rebuilt from the base model: keep it out of resume checkpoints."""
        for key in [k for k in checkpoint["state_dict"] if k.startswith("teacher.")]:
            del checkpoint["state_dict"][key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
