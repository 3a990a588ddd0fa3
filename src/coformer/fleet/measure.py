"""Measure the machine this runs on as a device profile.

A library function, not a script: the edge node's ``/profile`` endpoint runs the same code where
a board stands. Everything is measured at the configured model's shapes, each figure the fastest
(or the median) of repeats after warm-up (``coformer.fleet.timing`` says why):

1. matrix products: the q/k/v/o and FFN products of up to L blocks, each with its own weights,
   at the request's rows and at one row; ``time = FLOPs / rate + weight bytes / weight bandwidth``
   gives a first rate and weight bandwidth;
2. memory-bound operators (LayerNorm, activation, residual adds) at the model's shapes: the
   ``memory_bandwidth`` the cost model charges them with (a streaming add far beyond the caches
   is recorded too, for reference);
3. fixed overheads: a one-block sub-model too small to compute anything, per block and for the
   rest of its forward (embedding, mask, export);
4. chains of random blocks at several unit fractions and row counts (a decode step with a KV
   cache for causal models): rate, weight bandwidth and block overhead are refined by least
   squares so the cost model reproduces them (products inside blocks run slower than back to back);
5. the link to the aggregator: TCP over the loopback (a remote aggregator passes its own figures).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import numpy as np
import psutil
import torch
import torch.nn.functional as F

from coformer.errors import CoFormerError
from coformer.fleet.cost import UnitCounts, block_seconds
from coformer.fleet.dims import ModelDims, Workload
from coformer.fleet.profile import DeviceProfile, Fleet, validate_profile
from coformer.fleet.timing import Clock, Statistic, Timer, measure_link, pinned

FRACTIONS = (0.25, 0.5, 1.0)  # unit fractions of the profiled block chains
MAX_WEIGHT_BYTES = 256e6  # cap on the weights a product sequence or block chain allocates


@dataclass
class Measurement:
    """A measured profile and the evidence behind it."""

    profile: DeviceProfile
    threads: int
    clock: Clock
    products: list[dict] = field(default_factory=list)  # product sequences: rows, blocks, flops, weight_bytes, seconds
    stream_bandwidth: float = 0.0  # bytes/s of a streaming add far beyond the caches (DRAM), for reference
    blocks: list[dict] = field(default_factory=list)  # block chains: heads, neurons, batch, tokens, decode, measured_s, predicted_s
    seconds: float = 0.0  # how long the measurement took

    def block_error(self) -> float:
        """Median absolute relative error of the fitted model on the measured block chains."""
        errors = [abs(b["predicted_s"] - b["measured_s"]) / b["measured_s"] for b in self.blocks]
        return float(np.median(errors)) if errors else float("nan")


def measure_device(
    dims: ModelDims,
    workload: Workload,
    *,
    name: str | None = None,
    threads: int = 1,
    core: int | None = None,
    clock: Clock = "cpu",
    statistic: Statistic = "min",
    active_power_w: float = 0.0,
    idle_power_w: float = 0.0,
    memory_bytes: float | None = None,
    link: tuple[float, float] | None = None,
    repeats: int = 7,
) -> Measurement:
    """Profile this machine as one device running ``threads`` torch threads (pinned to ``core``).

    ``memory_bytes`` defaults to the available memory divided among ``os.cpu_count() / threads``
    devices; ``link`` is (bytes/s, rtt) when the aggregator is elsewhere, else the loopback is
    measured. Power cannot be read on most machines: pass the figures (0 means unknown).
    ``clock`` and ``statistic``: see ``coformer.fleet.timing``.
    """
    if threads > 1 and clock == "cpu":
        raise CoFormerError("clock='cpu' times one thread; use clock='wall' with threads > 1")
    started = time.perf_counter()
    host = platform.node() or "localhost"
    timer = Timer(clock, statistic, repeats)
    with pinned(threads, core), torch.inference_mode():
        rate, weight_bandwidth, products = measure_products(dims, workload, timer)
        bandwidth = measure_elementwise_bandwidth(dims, workload, timer)
        stream = measure_stream_bandwidth(timer)
        overhead, forward_overhead = measure_overheads(dims, replace(timer, repeats=3 * repeats))
        blocks = measure_chains(dims, workload, timer)
    link_bandwidth, rtt = link if link is not None else measure_link()
    profile = validate_profile(
        {
            "name": name or (f"{host}-core" if threads == 1 else host),
            "matmul_flops": rate,
            "memory_bandwidth": bandwidth,
            "weight_bandwidth": weight_bandwidth,
            "memory_bytes": memory_bytes or psutil.virtual_memory().available * threads / (os.cpu_count() or 1),
            "link_bandwidth": link_bandwidth,
            "link_rtt_s": rtt,
            "active_power_w": active_power_w,
            "idle_power_w": idle_power_w,
            "block_overhead_s": overhead,
            "forward_overhead_s": forward_overhead,
            "source": f"measured on {host} {datetime.now(timezone.utc):%Y-%m-%d %H:%M}Z ({threads} thread(s), {clock} clock, {statistic})",
        },
        "measured profile",
    )
    profile = fit_rates(blocks, profile, dims)
    for b in blocks:
        b["predicted_s"] = predict_chain(b, profile, dims)
    return Measurement(profile, threads, clock, products, stream, blocks, time.perf_counter() - started)


# --- 1. matrix products ---------------------------------------------------------------------------


def product_shapes(dims: ModelDims) -> list[tuple[int, int]]:
    """(in, out) of a block's matrix products: q, k, v, o, fc1, fc2."""
    d, F_, inner = dims.hidden_size, dims.ffn_size, dims.num_heads * dims.head_dim
    return [(d, inner)] * 3 + [(inner, d), (d, F_), (F_, d)]


def measure_products(dims: ModelDims, workload: Workload, timer: Timer) -> tuple[float, float | None, list[dict]]:
    """(FLOP/s, weight bytes/s or None, details) of up to L blocks' products run in sequence.

    Timing one product over and over keeps its weights in cache and overstates the rate; a model
    runs L blocks of six products whose weights evict each other.
    """
    shapes = product_shapes(dims)
    per_block = sum(4 * (k * n + n) for k, n in shapes)
    blocks = int(max(1, min(dims.num_layers, MAX_WEIGHT_BYTES // per_block)))
    weights = [(torch.randn(n, k), torch.randn(n)) for _ in range(blocks) for k, n in shapes]
    details = []
    for rows in (workload.batch * dims.tokens(workload), 1):
        inputs = {k: torch.randn(rows, k) for k, _ in shapes}  # (rows, in) activations, shared

        def run():
            for w, b in weights:
                F.linear(inputs[w.shape[1]], w, b)  # (rows, out)

        flops = 2.0 * rows * sum(k * n for k, n in shapes) * blocks
        seconds = timer.seconds(run)
        details.append({"rows": rows, "blocks": blocks, "flops": flops, "weight_bytes": blocks * per_block, "seconds": seconds})
    full, single = details
    per_flop = (full["seconds"] - single["seconds"]) / (full["flops"] - single["flops"])
    if per_flop <= 0:  # noise swamped the difference: the plain rate, no separate weight term
        return full["flops"] / full["seconds"], None, details
    streaming = single["seconds"] - single["flops"] * per_flop
    return 1 / per_flop, (single["weight_bytes"] / streaming if streaming > 0 else None), details


# --- 2. memory-bound operators --------------------------------------------------------------------


def measure_elementwise_bandwidth(dims: ModelDims, workload: Workload, timer: Timer) -> float:
    """Bytes/s the block's memory-bound operators reach at the model's shapes.

    Runs a block's LayerNorms, activation and residual adds on (B*T, d) and (B*T, F) tensors and
    counts their bytes exactly as the cost model does (norm 3, residual 5 passes of the stream,
    activation 2 of the hidden layer), so the figure and the model agree on what a byte is.
    """
    M, d, F_ = workload.batch * dims.tokens(workload), dims.hidden_size, dims.ffn_size
    x, y, b = torch.randn(M, d), torch.randn(M, d), torch.randn(d)
    hidden = torch.randn(M, F_)
    weight, bias = torch.ones(d), torch.zeros(d)

    def run():
        for _ in range(2):  # one norm and one residual per sub-layer
            F.layer_norm(x, (d,), weight, bias)
            (x + y) + b
        F.gelu(hidden)

    seconds = timer.seconds(run)
    return 4 * (2 * (3 + 5) * M * d + 2 * M * F_) / seconds


def measure_stream_bandwidth(timer: Timer, megabytes: int = 64) -> float:
    """Bytes/s of ``z = x + y`` over arrays of ``megabytes`` each, far larger than the caches."""
    n = megabytes * 2**20 // 4
    x, y, z = torch.randn(n), torch.randn(n), torch.empty(n)
    seconds = timer.seconds(lambda: torch.add(x, y, out=z))
    return 3 * 4 * n / seconds


# --- 3-4. overheads and block chains -------------------------------------------------------------


def measure_overheads(dims: ModelDims, timer: Timer) -> tuple[float, float]:
    """(per block, per forward outside the blocks) seconds of a sub-model too small to compute anything.

    A sub-model of width 8 with one head and one neuron per block runs one token: a block costs
    only dispatch, and so do the embedding, the attention mask and the export around the blocks
    (the export of a pre-LN model touches every block's biases, so it has the model's L blocks).
    """
    from coformer.modeling.submodel import SubModel, example_inputs

    tiny = replace(dims, hidden_size=8, head_dim=8)
    per_block = time_chain(random_blocks(tiny, heads=1, neurons=1, count=1), 1, 1, decode=False, causal=False, timer=timer)
    L = min(dims.num_layers, 64)
    config = dims.embedding_config.model_copy(  # the model's embedding kind over one token, or one patch
        update=dict(
            family="profile", hidden_size=8, channels=list(range(8)), head_dim=8, heads_per_block=[1] * L,
            neurons_per_block=[1] * L, vocab_size=16, max_positions=16, type_vocab_size=2,
            image_size=dims.patch_size, discount=dims.pre_norm,
        )
    )
    model = SubModel(config).eval()
    inputs = example_inputs(config, batch=1, tokens=1)
    start = model.embed(inputs)  # (1, T, 8)

    def around_blocks():
        model.attention_bias(inputs)
        return model.export(model.embed(inputs), start, 0, L)

    return per_block, timer.seconds(around_blocks)


def random_blocks(dims: ModelDims, heads: int, neurons: int, count: int) -> list:
    """``count`` blocks with random weights, built the way ``SubModel`` builds its blocks."""
    from coformer.modeling.submodel import Block, SubModelConfig

    config = SubModelConfig(
        family="profile",
        embedding="bert",
        norm_position="pre" if dims.pre_norm else "post",
        activation="gelu",
        causal=dims.causal,
        layer_norm_eps=1e-5,
        hidden_size=dims.hidden_size,
        channels=list(range(dims.hidden_size)),
        head_dim=dims.head_dim,
        heads_per_block=[heads] * count,
        neurons_per_block=[neurons] * count,
    )
    return [Block(config, i).eval() for i in range(count)]


def time_chain(blocks: list, batch: int, tokens: int, decode: bool, causal: bool, timer: Timer) -> float:
    """Seconds to run the blocks in turn on (batch, tokens) rows, or one decode step after them."""
    from coformer.modeling.submodel import KVCache, attention_bias

    width = blocks[0].norm1.normalized_shape[0]
    x = torch.randn(batch, tokens, width)  # (B, T, d)
    bias = attention_bias(torch.ones(batch, tokens), tokens, 0, causal, x.dtype)
    cache = KVCache(len(blocks)) if decode else None

    def run(state, mask):
        for i, block in enumerate(blocks):
            state = block(state, mask, cache, i)
        return state

    if not decode:
        return timer.seconds(lambda: run(x, bias))
    run(x, bias)  # fill the cache with the prompt
    step = torch.randn(batch, 1, width)  # (B, 1, d): each timed step attends to the prompt and earlier steps
    return timer.seconds(lambda: run(step, attention_bias(None, 1, cache.length, causal, step.dtype)))


def chain_shapes(dims: ModelDims, workload: Workload) -> list[tuple[int, int, bool]]:
    """(batch, tokens, decode) of the profiled chains: the request, a quarter of it, and single rows.

    Causal models are also timed one decode step after a prompt, at batch 1 (products become
    matrix-vector ones) and at a small batch, the two regimes generation runs in.
    """
    B, T = workload.batch, dims.tokens(workload)
    prefill = [(B, T, False), (B, max(1, T // 4), False)]
    if dims.causal:
        return prefill + [(1, T, True), (max(4, B), T, True)]
    return prefill + [(1, 1, False)]


def measure_chains(dims: ModelDims, workload: Workload, timer: Timer) -> list[dict]:
    block_bytes = 4 * float(dims.block_params(dims.hidden_size, dims.num_heads, dims.ffn_size))
    count = int(max(1, min(dims.num_layers, MAX_WEIGHT_BYTES // block_bytes)))
    results = []
    for fraction in FRACTIONS:
        h, f = max(1, round(fraction * dims.num_heads)), max(1, round(fraction * dims.ffn_size))
        blocks = random_blocks(dims, h, f, count)
        for batch, tokens, decode in chain_shapes(dims, workload):
            seconds = time_chain(blocks, batch, tokens, decode, dims.causal, timer)
            results.append({"heads": h, "neurons": f, "blocks": count, "batch": batch, "tokens": tokens, "decode": decode, "measured_s": seconds})
    return results


def predict_chain(chain: dict, profile: DeviceProfile, dims: ModelDims) -> float:
    """The cost model's seconds for a measured chain (a decode step: with one token minus without)."""
    fleet = Fleet(name="self", devices=[profile], aggregator=profile)
    n = chain["blocks"]
    chain_dims = replace(dims, num_layers=n)
    counts = UnitCounts(np.full((1, n), chain["heads"]), np.full((1, n), chain["neurons"]), np.array([dims.hidden_size]), 0)
    prompt = Workload(chain["batch"], chain["tokens"])
    seconds = block_seconds(counts, chain_dims, fleet, prompt).sum()
    if chain["decode"]:
        seconds = block_seconds(counts, chain_dims, fleet, replace(prompt, decode_tokens=1)).sum() - seconds
    return float(seconds)


def fit_rates(chains: list[dict], profile: DeviceProfile, dims: ModelDims) -> DeviceProfile:
    """Matmul rate, weight bandwidth and per-block overhead that make the model reproduce the chains.

    Per chain the model's time is ``rest + a * compute + b * weights + overhead * blocks`` where
    ``compute`` and ``weights`` are its product and weight-streaming times at the first estimates
    and ``rest`` the memory-bound operators; least squares on the relative error gives ``a``,
    ``b`` and ``overhead``. Scales beyond 3x either way mean noise swamped a term (a busy
    machine): then only the rate is refitted, or the first estimates are kept.
    """
    base = {"matmul_flops": 1e30, "weight_bandwidth": 1e30, "block_overhead_s": 0.0}
    rest = np.array([predict_chain(c, profile.model_copy(update=base), dims) for c in chains])
    compute = np.array([predict_chain(c, profile.model_copy(update=base | {"matmul_flops": profile.matmul_flops}), dims) for c in chains]) - rest
    weight_rate = profile.weight_bandwidth or profile.memory_bandwidth
    weights = np.array([predict_chain(c, profile.model_copy(update=base | {"weight_bandwidth": weight_rate}), dims) for c in chains]) - rest
    blocks = np.array([c["blocks"] for c in chains], dtype=float)
    measured = np.array([c["measured_s"] for c in chains])
    design = np.stack([compute, weights, blocks], axis=1) / measured[:, None]  # relative error: every chain counts alike
    target = (measured - rest) / measured
    (a, b, overhead), *_ = np.linalg.lstsq(design, target, rcond=None)
    if not (1 / 3 < a < 3 and 1 / 3 < b < 3 and overhead > 0):  # noise made a term unidentifiable: fit the rate alone
        fixed = weights + profile.block_overhead_s * blocks
        a = float(np.linalg.lstsq(design[:, :1], target - fixed / measured, rcond=None)[0][0])
        a = a if 1 / 3 < a < 3 else 1.0  # and if even that is off, keep the products' own rate
        b, overhead = 1.0, profile.block_overhead_s
    return profile.model_copy(
        update={
            "matmul_flops": float(profile.matmul_flops / a),
            "weight_bandwidth": float(weight_rate / b),
            "block_overhead_s": float(overhead),
        }
    )


def profile_machine(
    dims: ModelDims, workload: Workload, core: int | None = None, whole: bool = True, **figures
) -> tuple[Measurement, Measurement | None]:
    """This machine as one device per core (one torch thread, pinned) and, if ``whole``, as one
    device using every core (wall clock). ``figures``: power, memory, link, repeats, statistic."""
    cores = os.cpu_count() or 1
    core = cores - 1 if core is None else core
    per_core = measure_device(dims, workload, threads=1, core=core, **figures)
    if not whole or cores == 1:
        return per_core, None
    quick = figures | {"repeats": max(2, figures.get("repeats", 7) // 2)}  # wall clock on every core: keep it short
    machine = measure_device(dims, workload, threads=cores, clock="wall", **quick)
    return per_core, machine


def local_fleet(profile: DeviceProfile, devices: int | None = None, name: str = "local") -> Fleet:
    """This machine as ``devices`` identical one-core devices (default: one per core); core 0 aggregates."""
    n = devices or os.cpu_count() or 1
    members = [profile.model_copy(update={"name": f"core{k}"}) for k in range(n)]
    return Fleet(name=name, devices=members, aggregator=members[0])
