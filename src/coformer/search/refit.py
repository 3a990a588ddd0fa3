"""Calibration-aware degradation: ``D`` after a closed-form least-squares refit, in a second or two.

Notation: N devices, B batch, T tokens, d hidden width, W_k the summed widths of the streams.

The uncalibrated ``D`` scores the part of the error that calibration removes: two full sub-models
at s = 0 start at 0.57 cosine and calibrate to 0.93, while a single model pruned to half starts
higher (0.61) and ends lower (0.88). What calibration restores is bounded by what the streams
still carry, and a linear read-out of them measures that without a gradient step. Per estimate:

* ``refit``: every merge is refitted in order from the devices' exports to the teacher's state
  there (the deployable least-squares merge of ``calibrate.warmstart``, which alone lifts two
  sub-models from 0.58 to 0.78); a policy with no merge (one device, or s = 1) gets the same
  chance through a (d, d) read-out of its last state, as calibration would retrain its last layers;
* ``warm-start``: the full warm start (every block's row-parallel layers, then the merges) and the
  read-out where there is no merge; about three times slower.

The fit uses the first ``search.fit_texts`` calibration texts and ``D`` is measured on the rest,
so a read-out that merely memorises its fit texts gains nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from coformer.calibrate.warmstart import NormalEquations, least_squares_init, real_tokens, refit
from coformer.executor import DeviceRun, Ensemble, Teacher

Batch = dict[str, torch.Tensor]
RIDGE = 1e-3  # relative to the mean feature energy, as the calibration's warm start


def split_rows(batches: list[Batch], n: int) -> tuple[list[Batch], list[Batch]]:
    """The first ``n`` rows of ``batches`` (in order) and the rest, keeping batch boundaries."""
    first, rest, seen = [], [], 0
    for batch in batches:
        size = len(next(iter(batch.values())))
        cut = min(max(n - seen, 0), size)
        if cut:
            first.append({k: v[:cut] for k, v in batch.items()})
        if cut < size:
            rest.append({k: v[cut:] for k, v in batch.items()})
        seen += size
    return first, rest


@torch.no_grad()
def refit_merges(student: Ensemble, batches: list[Batch], states: list[dict[int, torch.Tensor]]) -> None:
    """Refit merge after merge from the exports to the teacher's ``states`` (per batch, block count ->
    (B, T, d)); each next segment runs from the refitted merged state, as deployed."""
    runs = [[DeviceRun(m, b) for m in student.submodels] for b in batches]
    masks = [real_tokens(b, r[0].x) for b, r in zip(batches, runs)]
    for point, (start, stop) in enumerate(student.segments):
        exports = [[r.segment(start, stop) for r in device_runs] for device_runs in runs]  # per batch N x (B, T, w_k)
        equations = NormalEquations()
        for e, state, mask in zip(exports, states, masks):
            equations.add(torch.cat(e, -1)[mask], state[stop][mask])  # (n, W_k) -> (n, d)
        refit(student.aggregator.merges[point].linear, equations, RIDGE)
        for e, device_runs in zip(exports, runs):
            for r, channels in zip(device_runs, student.aggregator.scatter(student.aggregator.merge(point, e))):
                r.receive(channels)


@torch.no_grad()
def fit_readout(student: Ensemble, batches: list[Batch], states: list[dict[int, torch.Tensor]]) -> nn.Linear:
    """The (d, d) map from the student's last state to the teacher's that least squares finds."""
    depth = len(student.submodels[0].blocks)
    equations = NormalEquations()
    for batch, state in zip(batches, states):
        last = student(batch, probe={depth}).probes[depth]  # (B, T, d)
        mask = real_tokens(batch, last)
        equations.add(last[mask], state[depth][mask])
    d = student.aggregator.config.hidden_size
    readout = nn.Linear(d, d)
    refit(readout, equations, RIDGE)
    return readout


def calibrated_outputs(
    student: Ensemble, estimate: str, teacher: Teacher, fit: list[Batch], states: list[dict[int, torch.Tensor]]
) -> Callable[[Batch], torch.Tensor]:
    """Refit ``student`` in place per ``estimate`` (refit | warm-start); returns its output function,
    with the read-out in front of the head when the policy has no merge."""
    if estimate == "warm-start":
        least_squares_init(teacher, student, fit, RIDGE)
    else:
        refit_merges(student, fit, states)
    if student.aggregator.merges:
        return lambda batch: student(batch).output
    readout, depth = fit_readout(student, fit, states), len(student.submodels[0].blocks)
    return lambda batch: student.aggregator(readout(student(batch, probe={depth}).probes[depth]), batch.get("attention_mask"))[1]
