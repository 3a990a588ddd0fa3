"""Run the progressive schedule with Lightning, one ``Trainer.fit`` per stage, resumable.

Layout of the output folder:

* ``stages/<t>-<name>/`` — policy.json, devices/, aggregator/ after stage t (safetensors + JSON):
  ``lsq`` (the closed-form warm start), ``align<g>`` (alignment after block g), ``distill``;
* ``stages/state.json`` — the run's fingerprint, completed stages, MLflow run id, the loss curve;
* ``checkpoints/<t>-<name>/last.ckpt`` — Lightning's mid-stage resume checkpoint (teacher left out,
  loaded with ``weights_only=True``), deleted once the stage's artifacts are written;
* ``policy.json``, ``devices/``, ``aggregator/`` — the calibrated student, when every stage is done.

A killed run started again on the same folder reloads the last completed stage's artifacts and
continues with the next stage (from its Lightning checkpoint when one was written).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from coformer.calibrate.config import CalibrationConfig, CalibrationConfigError
from coformer.calibrate.data import CalibrationData
from coformer.calibrate.module import CalibrationModule
from coformer.calibrate.stages import Stage, plan
from coformer.calibrate.student import restore_student, save_student
from coformer.calibrate.targets import TeacherTargets
from coformer.calibrate.warmstart import least_squares_init
from coformer.decompose import Policy
from coformer.executor import Ensemble, Teacher

STATE = "state.json"
# Keys that only change how a run executes, not what it computes: they may differ on resume.
RUN_KEYS = {"accelerator", "strategy", "devices", "threads", "checkpoint_every", "log_every", "teacher_cache_gib"}

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")  # the frozen teacher, on purpose
# A mid-stage resume restores weights, optimizer and schedule; the stage's batch order restarts.
warnings.filterwarnings("ignore", ".*your dataloader is not resumable.*")
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")  # inside Lightning, not ours


@dataclass
class CalibrationResult:
    stages: list[str]  # every stage of the plan, in order
    resumed: list[str]  # stages found complete on disk and not run again
    curve: list[dict] = field(default_factory=list)  # {"step", "stage", "loss"} over the whole run
    seconds: float = 0.0  # wall time of this invocation
    run_id: str | None = None  # MLflow run


class LossCurve(Callback):
    """Records the training loss of every step; its state travels in Lightning's checkpoint."""

    def __init__(self, stage: str, offset: int):
        self.stage, self.offset, self.rows = stage, offset, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.rows.append({"step": self.offset + trainer.global_step, "stage": self.stage, "loss": float(loss)})

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = state["rows"]


class StageProgress(TQDMProgressBar):
    """One bar per stage over its optimizer steps: ``stage 2/4 align4  150/400 [01:10<02:00, 2.1it/s]``.

    Lightning's default bar counts the batches of an epoch, which says nothing in a fit bounded
    by ``max_steps`` over an endless epoch loop; a resumed stage starts the bar where it stopped.
    """

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    @property
    def train_description(self) -> str:
        return self.label

    def on_train_start(self, trainer, *_) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=trainer.max_steps)
        self.train_progress_bar.initial = trainer.global_step

    def on_train_epoch_start(self, *_) -> None:
        return None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._should_update(trainer.global_step, self.train_progress_bar.total):
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, *_) -> None:
        return None


def fingerprint(config: CalibrationConfig, policy: Policy, stages: list[Stage]) -> dict:
    """What the saved stages depend on: a resumed run must agree on all of it."""
    return {
        "calibrate": config.model_dump(exclude=RUN_KEYS),
        "policy": policy.model_dump(),
        "stages": [s.name for s in stages],
    }


def read_state(folder: Path, expected: dict, restart: bool) -> dict:
    """The run's progress in ``folder``; a run with another fingerprint there is an error, or with
    ``restart`` is discarded (its stage artifacts and checkpoints) so this run starts afresh."""
    path = folder / "stages" / STATE
    if path.is_file():
        state = json.loads(path.read_text())
        if state["fingerprint"] == expected:
            return state
        if not restart:
            raise CalibrationConfigError(
                f"{folder} holds a calibration run with other parameters or another policy; "
                "give a fresh output folder or delete this one to start over"
            )
        for stale in ("stages", "checkpoints"):
            shutil.rmtree(folder / stale, ignore_errors=True)
    return {"fingerprint": expected, "completed": [], "run_id": None, "curve": []}


def write_state(folder: Path, state: dict) -> None:
    path = folder / "stages" / STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)  # atomic: a kill never leaves half a state file


def make_logger(tracking_uri: str | None, experiment: str, run_id: str | None, run_name: str | None):
    if tracking_uri is None:
        return False
    return MLFlowLogger(experiment_name=experiment, tracking_uri=tracking_uri, run_id=run_id, run_name=run_name)


def calibrate(
    teacher: Teacher,
    student: Ensemble,
    policy: Policy,
    data: CalibrationData,
    config: CalibrationConfig,
    out: str | Path,
    tracking_uri: str | None = None,
    experiment: str = "coformer",
    run_name: str | None = "calibrate",
    run_id: str | None = None,
    callbacks: list[Callback] | None = None,
    progress: bool = True,
    restart_on_change: bool = False,
) -> CalibrationResult:
    """Calibrate ``student`` against the frozen ``teacher`` in place; resumable from ``out``.

    ``out`` holding a run with other parameters or another policy is an error, unless
    ``restart_on_change`` (a pipeline stage whose parameters changed) discards that run.
    Training logs into the MLflow run ``run_id`` when given (a pipeline stage's run), else into
    the run a resumed calibration used before, else a new run named ``run_name``.
    """
    start = time.time()
    out = Path(out)
    if config.threads:
        torch.set_num_threads(config.threads)
    stages = plan(student.submodels[0].config.num_layers, config)
    state = read_state(out, fingerprint(config, policy, stages), restart_on_change)
    done = list(state["completed"])
    if done:
        restore_student(stage_folder(out, stages, len(done) - 1), student)
    logger = make_logger(tracking_uri, experiment, run_id or state["run_id"], run_name)
    offset = sum(s.steps for s in stages[: len(done)])
    targets = TeacherTargets(teacher, {d for s in stages for d in s.aligned}, config.teacher_cache_gib)
    for index, stage in enumerate(stages):
        if index < len(done):
            continue
        if stage.kind == "least-squares":
            errors = warm_start(teacher, student, data, config)
            if logger:
                logger.log_metrics({f"warmstart/error_block{b}": e for b, e in errors.items()}, step=0)
            if rank_zero_only.rank == 0:
                finish(out, stages, index, policy, student, state, [], logger)
            continue
        L.seed_everything(config.seed + index, verbose=False)
        data.stage = index
        module = CalibrationModule(teacher, student, config, stage, targets)
        checkpoints = out / "checkpoints" / f"{index + 1}-{stage.name}"
        curve = LossCurve(stage.name, offset)
        trainer = L.Trainer(
            max_steps=stage.steps,
            max_epochs=-1,
            accelerator=config.accelerator,
            strategy=config.strategy,
            devices=config.devices,
            precision=resolve_precision(config.precision, config.accelerator),
            logger=logger,
            callbacks=[curve, *stage_checkpoint(checkpoints, config), *progress_bar(progress, index, stages), *(callbacks or [])],
            enable_checkpointing=config.checkpoint_every > 0,
            gradient_clip_val=config.grad_clip or None,
            log_every_n_steps=config.log_every,
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=out,
        )
        last = checkpoints / "last.ckpt"
        trainer.fit(module, datamodule=data, ckpt_path=last if last.is_file() else None, weights_only=True)
        offset += stage.steps
        if trainer.is_global_zero:
            finish(out, stages, index, policy, student, state, curve.rows, logger)
            shutil.rmtree(checkpoints, ignore_errors=True)
        trainer.strategy.barrier()
    if rank_zero_only.rank == 0:
        save_student(out, policy, student)
    return CalibrationResult(
        stages=[s.name for s in stages],
        resumed=done,
        curve=state["curve"],
        seconds=time.time() - start,
        run_id=logger.run_id if logger else state["run_id"],
    )


def finish(out: Path, stages: list[Stage], index: int, policy, student, state: dict, rows: list[dict], logger) -> None:
    """Write stage ``index``'s artifacts, then mark it complete (a kill in between redoes the stage)."""
    save_student(stage_folder(out, stages, index), policy, student)
    state["completed"].append(stages[index].name)
    state["curve"] += rows
    state["run_id"] = logger.run_id if logger else None
    write_state(out, state)


def warm_start(teacher: Teacher, student: Ensemble, data: CalibrationData, config: CalibrationConfig) -> dict[int, float]:
    """The closed-form least-squares stage, on the run's accelerator (GPU when it has one)."""
    device = fit_device(config.accelerator)
    batches = [{k: v.to(device) for k, v in b.items() if k != "labels"} for b in data.sample(config.warm_start_texts)]
    teacher.to(device), student.to(device)
    try:
        return least_squares_init(teacher, student, batches, config.ridge)
    finally:
        teacher.cpu(), student.cpu()  # where Lightning leaves modules after a fit, too


def fit_device(accelerator: str) -> torch.device:
    """This process's GPU when the run uses GPUs (one per process under DDP), else the CPU."""
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if accelerator in ("mps", "auto") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed only where bf16 matmuls are native; emulated bf16 on a CPU without
    AVX512-BF16 or AMX (an AVX2 EPYC, say) runs about 50x slower than fp32, not 1.1x faster."""
    if precision != "auto":
        return precision
    device = fit_device(accelerator).type
    if device == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if device == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def progress_bar(progress: bool, index: int, stages: list[Stage]) -> list[Callback]:
    return [StageProgress(f"calibrate stage {index + 1}/{len(stages)} {stages[index].name}")] if progress else []


def stage_folder(out: Path, stages: list[Stage], index: int) -> Path:
    return out / "stages" / f"{index + 1}-{stages[index].name}"


def stage_checkpoint(folder: Path, config: CalibrationConfig) -> list[Callback]:
    """Lightning's resume checkpoint every ``checkpoint_every`` steps (only the last one is kept)."""
    if not config.checkpoint_every:
        return []
    return [ModelCheckpoint(dirpath=folder, every_n_train_steps=config.checkpoint_every, save_top_k=0, save_last=True)]
