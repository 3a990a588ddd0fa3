"""Least-squares warm start: block by block, refit every device's row-parallel layers so that its
own residual stream tracks the teacher's, then fit every merge. Closed form, no gradient steps.

Notation: N devices, n calibration tokens, d hidden width, w_k device k's width (channels ch_k),
h_k its heads in a block (contexts c_k of width h_k*hd), f_k its FFN neurons (activations a_k).

For block i, with x the teacher's stream and x_k device k's (both entering the block), the
teacher's pre-norm sum after attention is ``u = x + sum_h W_O[h] attn_h(x) + b_O``; the device
computes ``x_k + W_k c_k + b_k``. Minimising ``||x_k + W_k c_k + b_k - u[ch_k]||^2`` over the
calibration tokens is ridge regression on ``[c_k, 1]`` -> ``u[ch_k] - x_k``: the best read-out of the
full attention's output from the heads the device has, on the stream the device really carries.
The FFN's output layer is fitted the same way from ``a_k``. Blocks go in order, each on streams
that already carry the refitted blocks before it, so every fit also corrects the drift that
accumulates at s = 0 (the progressive alignment of DeBo stage 2, solved in closed form). At each
sync point the merge is fitted from the devices' exports to the teacher's state.

On MiniLM at s = 0 with 2 devices this lifts the teacher-relative cosine from about 0.57 to about
0.82 in seconds, where gradient steps take minutes (see benchmarks/calibration.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coformer.executor import Ensemble, Teacher

Batch = dict[str, torch.Tensor]


class NormalEquations:
    """Accumulates X^T X and X^T Y of ``[X, 1] -> Y`` over batches of real tokens; solves with a ridge."""

    def __init__(self):
        self.xtx, self.xty = 0, 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)  # (n, p+1)
        self.xtx = self.xtx + x.T @ x  # (p+1, p+1)
        self.xty = self.xty + x.T @ y  # (p+1, w)

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (w, p), bias (w,)) in float64 on the CPU for stability, returned in the input's dtype/device."""
        a, b = self.xtx.double().cpu(), self.xty.double().cpu()
        a = a + ridge * a.diagonal().mean() * torch.eye(len(a), dtype=a.dtype)
        solution = torch.linalg.solve(a, b).to(self.xty)  # (p+1, w)
        return solution[:-1].T, solution[-1]


def refit(linear: nn.Linear, equations: NormalEquations, ridge: float) -> None:
    weight, bias = equations.solve(ridge)
    if linear.weight.shape[1]:  # a shard with no units keeps only its bias
        linear.weight.copy_(weight)
    linear.bias.copy_(bias)


def captured(probe: nn.Module, run) -> torch.Tensor | None:
    """What the identity probe point ``probe`` sees while ``run()`` executes: (B, T, p)."""
    seen = []
    handle = probe.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        run()
    finally:
        handle.remove()
    return seen[0] if seen else None  # a shard without heads returns before its probe point


def fit_sublayer(linear, probe, partial, merge, streams, targets, masks, ridge) -> list[torch.Tensor]:
    """Refit one device's row-parallel ``linear`` so ``merge``'s pre-norm sum meets ``targets``.

    ``partial(j, x)`` runs the sub-layer on batch j; returns the streams after it (recomputed from
    the captured features with the new weights, without running the sub-layer again).
    """
    equations, features = NormalEquations(), []
    for j, (x, target, mask) in enumerate(zip(streams, targets, masks)):
        seen = captured(probe, lambda: partial(j, x))  # (B, T, p)
        features.append(x.new_zeros(*x.shape[:2], 0) if seen is None else seen)  # no units: bias only
        equations.add(features[-1][mask], (target - x)[mask])  # (n, p) -> (n, w)
    refit(linear, equations, ridge)
    return [merge(x, F.linear(f, linear.weight)) for x, f in zip(streams, features)]  # (B, T, w)


def fit_merge(student: Ensemble, point: int, streams, starts, start: int, stop: int, targets, masks, ridge):
    """Refit merge ``point`` from the devices' exports to the teacher's state; returns the devices'
    streams after the sync point (their channels of the merged state) and the merged state's
    relative squared error against the teacher's."""
    subs = student.submodels
    exports = [
        [m.export(x, x0, start, stop) for x, x0 in zip(streams[k], starts[k])] for k, m in enumerate(subs)
    ]  # per device, per batch (B, T, w_k)
    equations = NormalEquations()
    for j, (target, mask) in enumerate(zip(targets, masks)):
        equations.add(torch.cat([e[j] for e in exports], -1)[mask], target[mask])  # (n, W) -> (n, d)
    refit(student.aggregator.merges[point].linear, equations, ridge)
    merged = [student.aggregator.merge(point, [e[j] for e in exports]) for j in range(len(targets))]  # (B, T, d)
    error = sum(float((s - t)[m].pow(2).sum()) for s, t, m in zip(merged, targets, masks))
    error /= max(sum(float(t[m].pow(2).sum()) for t, m in zip(targets, masks)), 1e-12)
    return [[state[..., m.channel_index] for state in merged] for m in subs], error


def real_tokens(batch: Batch, states: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: tokens that are not padding (every token for images)."""
    mask = batch.get("attention_mask")
    return torch.ones(states.shape[:2], dtype=torch.bool, device=states.device) if mask is None else mask.bool()


@torch.no_grad()
def least_squares_init(teacher: Teacher, student: Ensemble, batches: Sequence[Batch], ridge: float = 1e-3) -> dict[int, float]:
    """Refit ``student`` in place on ``batches``; returns the relative error of the merged state at
    every sync point after the fit (block count -> error)."""
    if student.sync == 1:
        return {}  # tensor parallelism has no own streams to align (and is exact with every unit kept)
    body, subs = teacher.body, list(student.submodels)
    errors = {}
    x = [body.embed(b) for b in batches]  # teacher stream per batch (B, T, d)
    masks = [real_tokens(b, s) for b, s in zip(batches, x)]
    teacher_bias = [body.attention_bias(b) for b in batches]
    device_bias = [[m.attention_bias(b) for b in batches] for m in subs]
    streams = [[m.embed(b) for b in batches] for m in subs]  # per device, per batch (B, T, w_k)
    for point, (start, stop) in enumerate(student.segments):
        starts = streams
        for i in range(start, stop):
            block = body.blocks[i]
            attn = [block.attention_partial(s, b, None, i) for s, b in zip(x, teacher_bias)]
            u = [s + a + block.attn.o.bias for s, a in zip(x, attn)]  # pre-norm sum after attention (B, T, d)
            h = [block.merge_attention(s, a) for s, a in zip(x, attn)]
            v = [s + block.ffn_partial(s) + block.ffn.fc2.bias for s in h]  # pre-norm sum after the FFN
            for k, m in enumerate(subs):
                mine, bias, ch = m.blocks[i], device_bias[k], m.channel_index
                streams[k] = fit_sublayer(
                    mine.attn.o, mine.attn.context, lambda j, s: mine.attention_partial(s, bias[j], None, i),
                    mine.merge_attention, streams[k], [t[..., ch] for t in u], masks, ridge,
                )  # fmt: skip
                streams[k] = fit_sublayer(
                    mine.ffn.fc2, mine.ffn.activation, lambda j, s: mine.ffn_partial(s),
                    mine.merge_ffn, streams[k], [t[..., ch] for t in v], masks, ridge,
                )  # fmt: skip
            x = [block.merge_ffn(s, block.ffn_partial(s)) for s in h]
        streams, errors[stop] = fit_merge(student, point, streams, starts, start, stop, x, masks, ridge)
    return errors
