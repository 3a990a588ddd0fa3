"""Time every method as real device processes: the loopback at every batch size, then the shaped
links (where this machine permits them) for the methods whose devices talk to each other.

A row is one timed series: (method, link, batch, wire dtype, micro-batches). Inputs are real
held-out texts padded to ``seq_len`` tokens (or held-out images), the same for every method.
"""

from __future__ import annotations

import math

import torch

from coformer.evaluation.config import EvaluateConfig
from coformer.evaluation.methods import Method
from coformer.runtime import Network, RequestSet, RunResult, RuntimePlan, Zygote, loopback, run_plan, shaped

Inputs = dict[str, torch.Tensor]


def series(method: Method, config: EvaluateConfig, shaped_link: bool) -> list[RequestSet]:
    """The request sets one run of ``method`` times: per batch on the loopback (the pipeline also
    as a stream of micro-batches), per wire dtype at ``shaped_batch`` on a shaped link."""
    if shaped_link:
        return [RequestSet(name=f"b{config.shaped_batch}-{w}", wire=w) for w in config.wires]
    sets = [RequestSet(name=f"b{b}-fp32") for b in config.batch_sizes]
    b = max(config.batch_sizes)
    if method.mode == "pipeline" and min(config.micro_batches, b) > 1:
        sets.append(RequestSet(name=f"b{b}-fp32-stream", micro_batches=min(config.micro_batches, b)))
    return sets


def inputs_for(sets: list[RequestSet], requests: dict[int, Inputs]) -> dict[str, Inputs]:
    return {s.name: requests[int(s.name.split("-")[0][1:])] for s in sets}


def run_method(
    method: Method,
    config: EvaluateConfig,
    requests: dict[int, Inputs],
    network: Network,
    shaped_link: bool,
    repeats: int,
    zygote: Zygote,
    first_core: int = 0,
) -> RunResult:
    sets = series(method, config, shaped_link)
    plan = RuntimePlan(
        folder=str(method.folder),
        mode=method.mode,
        stages=list(method.stages),
        embed_at_aggregator=method.gateway,
        devices=len(method.policy.devices),
        sets=sets,
        warmup=config.warmup,
        repeats=repeats,
        first_core=first_core,
    )
    return run_plan(plan, inputs_for(sets, requests), network, config.timeout_s, zygote)


def time_methods(methods: list[Method], config: EvaluateConfig, requests: dict[int, Inputs], unavailable: str | None, progress) -> list[tuple[Method, float | None, RunResult]]:
    """(method, link, result) for every run: the loopback in ``config.rounds`` rounds through the
    methods, the order reversed and the devices moved one core on each round, every method's
    requests pooled (a machine whose speed drifts, or whose cores are unequal, as a shared VM's
    are, then slows every method alike), then each shaped link once (unless shaping is
    unavailable). All forked from one zygote; ``progress(description)`` is called before each run."""
    measured = [m for m in methods if m.measurable]
    shaped_ones = [m for m in measured if m.key in config.shaped_methods]
    per_round = math.ceil(config.requests / config.rounds)
    with Zygote() as zygote:
        rounds = []
        for r in range(config.rounds):
            order = measured[::-1] if r % 2 else measured
            label = f", round {r + 1}/{config.rounds}"
            rounds.append(time_link(order, config, requests, None, per_round, lambda d, label=label: progress(d + label), zygote, first_core=r))
        results = [(m, None, RunResult.pooled([runs[m.key] for runs in rounds])) for m in measured]
        for rate in [] if unavailable else config.links_mbit:
            runs = time_link(shaped_ones, config, requests, rate, config.requests, progress, zygote)
            results += [(m, rate, runs[m.key]) for m in shaped_ones]
    return results


def time_link(
    methods: list[Method], config: EvaluateConfig, requests, rate: float | None, repeats: int, progress, zygote: Zygote, first_core: int = 0
) -> dict[str, RunResult]:
    """Every method of ``methods`` run once on one link (None: the loopback), in their order, device k
    on allowed core ``first_core + k``."""
    results = {}
    for method in methods:
        progress(f"{method.key} on {'loopback' if rate is None else f'{rate:g} Mbit/s'}")
        world = len(method.stages) if method.mode == "pipeline" else len(method.policy.devices) + int(method.gateway)
        if rate is None:
            results[method.key] = run_method(method, config, requests, loopback(world), False, repeats, zygote, first_core)
            continue
        with shaped(world, rate) as network:
            results[method.key] = run_method(method, config, requests, network, True, repeats, zygote)
    return results
