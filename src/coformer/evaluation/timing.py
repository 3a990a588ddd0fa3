"""Time every method as real device processes: the loopback at every batch size, then the shaped
links (where this machine permits them) for the methods whose devices talk to each other.

A row is one timed series: (method, link, batch, wire dtype, micro-batches). Inputs are real
held-out texts padded to ``seq_len`` tokens (or held-out images), the same for every method.
"""

from __future__ import annotations

from collections.abc import Iterator

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


def run_method(method: Method, config: EvaluateConfig, requests: dict[int, Inputs], network: Network, shaped_link: bool, zygote: Zygote) -> RunResult:
    sets = series(method, config, shaped_link)
    plan = RuntimePlan(
        folder=str(method.folder),
        mode=method.mode,
        stages=list(method.stages),
        embed_at_aggregator=method.gateway,
        devices=len(method.policy.devices),
        sets=sets,
        warmup=config.warmup,
        repeats=config.requests,
    )
    return run_plan(plan, inputs_for(sets, requests), network, config.timeout_s, zygote)


def links(config: EvaluateConfig, unavailable: str | None) -> Iterator[float | None]:
    """None (the loopback), then every shaped rate unless shaping is unavailable."""
    yield None
    if unavailable is None:
        yield from config.links_mbit


def time_methods(methods: list[Method], config: EvaluateConfig, requests: dict[int, Inputs], unavailable: str | None, progress) -> list[tuple[Method, float | None, RunResult]]:
    """Every (method, link) run, all forked from one zygote; ``progress(description)`` is called before each."""
    results = []
    with Zygote() as zygote:
        for rate in links(config, unavailable):
            results += time_link(methods, config, requests, rate, progress, zygote)
    return results


def time_link(methods: list[Method], config: EvaluateConfig, requests, rate: float | None, progress, zygote: Zygote) -> list:
    """The methods run on one link: all on the loopback (None), ``shaped_methods`` on a shaped rate."""
    results = []
    for method in [m for m in methods if m.measurable and (rate is None or m.key in config.shaped_methods)]:
        progress(f"{method.key} on {'loopback' if rate is None else f'{rate:g} Mbit/s'}")
        world = len(method.stages) if method.mode == "pipeline" else len(method.policy.devices) + int(method.gateway)
        if rate is None:
            results.append((method, rate, run_method(method, config, requests, loopback(world), False, zygote)))
            continue
        with shaped(world, rate) as network:
            results.append((method, rate, run_method(method, config, requests, network, True, zygote)))
    return results
