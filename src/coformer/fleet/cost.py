"""The cost model: latency, memory, communication and energy of a policy on a fleet (pure functions).

Notation: N devices, L blocks, B batch, T prompt tokens, G generated tokens, d hidden width,
w_k device k's residual width, h_kl / f_kl its heads / neurons in block l, hd head size,
ab bytes per number (parameters, activations and KV cache share one precision).

Per device and block, every operator the sub-model runs (see ``modeling/submodel.py``) is costed
with a roofline plus weight streaming,
``max(FLOPs / matmul_flops, activation bytes / memory_bandwidth) + weight bytes / weight_bandwidth``,
and the device adds a fixed overhead per block and per forward (embedding, mask, export). The
products are compute-bound at prefill and weight-bound when decoding; LayerNorm, softmax, GELU
and residual adds are memory-bound passes. Each operator's FLOPs and bytes are linear in five
per-block features ``[w*h, w*f, h, f, w]``, so one (3 ops x 5) by (5 x N*L) product costs every
block of every device at once: no Python loop over units or devices.

A request is a prefill pass (T new tokens) and, for causal models, G decode passes (1 token
attending to T + t cached positions; costed at the mean context). The critical path follows the
sync regime (``executor.py``):

* s = 0: ``T = max_k(embed_k + blocks_k + comm_k) + merge + head``;
* s = k > 1: per segment of k blocks, ``max_k(segment_k + comm_k) + merge``, then the head;
* s = 1: per attention and per FFN of every block, ``max_k(partial_k + all-reduce_k) + reduce``.

Communication is a star through the aggregator: a one-way transfer costs ``rtt / 2 + bytes /
link_bandwidth`` (the inputs down, the final export up: one round trip per request at s = 0), an
exchange at a sync point a full round trip; the device that hosts the aggregator pays nothing.
The last export carries only the positions the head reads (``ModelDims.readout_tokens``: the
masked mean of a sentence embedding, a classifier's CLS), and the last merge and the head run on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from coformer.decompose import Policy
from coformer.decompose.builder import block_quotas
from coformer.errors import CoFormerError
from coformer.fleet.dims import ModelDims, Workload
from coformer.fleet.profile import DeviceProfile, Fleet
from coformer.modeling import sync_points
from coformer.modeling.submodel import Embeddings

__all__ = ["CostReport", "ModelDims", "UnitCounts", "Workload", "block_seconds", "block_work", "estimate", "estimate_pipeline"]

INPUT_BYTES_PER_TOKEN = 8  # int64 token ids sent to each device
SOFTMAX_BYTES = 3  # memory-bound passes over the (B, h, T, S) scores per element, in units of ab (scale, exp, normalise)


@dataclass(frozen=True, eq=False)
class UnitCounts:
    """What the cost model needs of a policy: how many units each device runs, not which."""

    heads: np.ndarray  # (N, L) heads per device per block
    neurons: np.ndarray  # (N, L) FFN neurons per device per block
    widths: np.ndarray  # (N,) residual width per device
    sync: int  # 0, 1 or k

    def __post_init__(self) -> None:
        heads, neurons, widths = (np.asarray(a, dtype=float) for a in (self.heads, self.neurons, self.widths))
        if heads.ndim != 2 or heads.shape != neurons.shape or widths.shape != heads.shape[:1]:
            raise CoFormerError(
                f"UnitCounts needs heads and neurons of shape (N, L) and widths of shape (N,), got "
                f"{heads.shape}, {neurons.shape}, {widths.shape}"
            )
        if min(heads.min(), neurons.min()) < 0 or widths.min() < 1:
            raise CoFormerError("UnitCounts: unit counts must be >= 0 and widths >= 1")
        object.__setattr__(self, "heads", heads)
        object.__setattr__(self, "neurons", neurons)
        object.__setattr__(self, "widths", widths)

    @classmethod
    def from_policy(cls, policy: Policy) -> UnitCounts:
        d = policy.shape.hidden_size
        return cls(
            heads=np.array([[len(b) for b in dev.heads] for dev in policy.devices]),
            neurons=np.array([[len(b) for b in dev.neurons] for dev in policy.devices]),
            widths=np.array([d if dev.channels is None else len(dev.channels) for dev in policy.devices]),
            sync=policy.sync,
        )

    @classmethod
    def full(cls, dims: ModelDims, sync: int = 0) -> UnitCounts:
        """The whole model on one device."""
        return cls.split(dims, [1.0], sync)

    @classmethod
    def split(
        cls, dims: ModelDims, shares: list[float], sync: int = 0, keep: float = 1.0, channels: list[float] | None = None
    ) -> UnitCounts:
        """Units dealt in proportion to ``shares`` exactly as ``build_policy`` counts them."""
        L = dims.num_layers
        heads = np.array(block_quotas(max(1, round(keep * dims.num_heads)), shares, L)).T  # (N, L)
        neurons = np.array(block_quotas(max(1, round(keep * dims.ffn_size)), shares, L)).T  # (N, L)
        widths = [max(1, round(c * dims.hidden_size)) for c in (channels or [1.0] * len(shares))]
        return cls(heads, neurons, np.array(widths), sync)


@dataclass
class CostReport:
    latency_s: float  # T for one request (prefill + decode)
    device_latency_s: np.ndarray  # (N,) compute + communication per device over the request
    memory_bytes: np.ndarray  # (N,) parameters + activations + KV cache (+ the aggregator's on its host)
    comm_bytes: float  # bytes sent per request, all devices, both directions
    energy_j: float  # sum of active power x busy time and idle power x the rest, devices and aggregator
    overflow: list[tuple[str, float]] = field(default_factory=list)  # (device, bytes over its memory)
    compute_s: np.ndarray | None = None  # (N,) busy time per device (aggregator work on its host included)
    aggregator_s: float = 0.0  # merge + head time on the aggregator

    @property
    def feasible(self) -> bool:
        return not self.overflow


# --- per-operator coefficients ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Passes:
    """Coefficients of every operator for the prefill and (if any) the mean decode pass."""

    repeat: np.ndarray  # (P,) how many times the pass runs per request (1, G)
    coef: np.ndarray  # (3 * P * O, 5) FLOPs, activation bytes, weight bytes per feature [w*h, w*f, h, f, w]
    groups: np.ndarray  # (2, O) 1 where operator o belongs to the attention (row 0) or FFN (row 1) sub-layer
    embed: np.ndarray  # (P, 3) FLOPs, activation bytes, weight bytes of the embedding per unit of width
    stream: np.ndarray  # (P,) bytes of one (B, T, 1) slice of a stream: B * tokens * ab
    last: np.ndarray  # (P,) the same of what the head reads of the last state (``Readout``): B * T' * ab
    inputs: np.ndarray  # (P,) bytes of the request's inputs sent to a device


def operators(dims: ModelDims, B: int, tn: int, s: float) -> list[tuple[str, int, list, list, list]]:
    """(name, sub-layer, FLOPs, activation bytes, weight bytes) per feature [w*h, w*f, h, f, w] of one block.

    B sequences of ``tn`` new tokens attending to ``s`` positions; M = B * tn rows per product.
    """
    ab, hd, M = dims.bytes_per_param, dims.head_dim, B * tn
    kv = 4 * ab * B * s * hd if tn == 1 and s > 1 else 0  # decoding: the cache is concatenated anew each step
    zero = [0, 0, 0, 0, 0]
    return [
        ("norm1", 0, zero, [0, 0, 0, 0, 3 * ab * M], zero),
        ("qkv", 0, [6 * M * hd, 0, 0, 0, 0], [0, 0, 3 * ab * M * hd, 0, 3 * ab * M], [3 * ab * hd, 0, 3 * ab * hd, 0, 0]),
        ("scores", 0, [0, 0, 4 * B * tn * s * hd, 0, 0], [0, 0, ab * B * hd * (2 * tn + 2 * s), 0, 0], zero),
        ("softmax", 0, zero, [0, 0, SOFTMAX_BYTES * ab * B * tn * s, 0, 0], zero),
        ("kv_append", 0, zero, [0, 0, kv, 0, 0], zero),
        ("context", 0, zero, [0, 0, 2 * ab * M * hd, 0, 0], zero),
        ("out", 0, [2 * M * hd, 0, 0, 0, 0], [0, 0, ab * M * hd, 0, ab * M], [ab * hd, 0, 0, 0, 0]),
        ("residual1", 0, zero, [0, 0, 0, 0, 5 * ab * M], zero),
        ("norm2", 1, zero, [0, 0, 0, 0, 3 * ab * M], zero),
        ("fc1", 1, [0, 2 * M, 0, 0, 0], [0, 0, 0, ab * M, ab * M], [0, ab, 0, ab, 0]),
        ("act", 1, zero, [0, 0, 0, 2 * ab * M, 0], zero),
        ("fc2", 1, [0, 2 * M, 0, 0, 0], [0, 0, 0, ab * M, ab * M], [0, ab, 0, 0, 0]),
        ("residual2", 1, zero, [0, 0, 0, 0, 5 * ab * M], zero),
    ]


@lru_cache(maxsize=256)
def passes(dims: ModelDims, workload: Workload) -> Passes:
    ab, B, T = dims.bytes_per_param, workload.batch, dims.tokens(workload)
    input_bytes = ab if dims.input_kind == "pixels" else INPUT_BYTES_PER_TOKEN
    shapes = [(T, T, 1)]
    if dims.causal and workload.decode_tokens > 0:
        G = workload.decode_tokens
        shapes.append((1, T + (G + 1) / 2, G))  # one token at a time, at the mean context length
    tables = [operators(dims, B, tn, s) for tn, s, _ in shapes]
    coef = np.array([[op[kind] for ops in tables for op in ops] for kind in (2, 3, 4)], dtype=float)  # (3, P*O, 5)
    ops = tables[0]
    return Passes(
        repeat=np.array([p[2] for p in shapes], dtype=float),
        coef=coef.reshape(-1, 5),
        groups=np.array([[op[1] == g for op in ops] for g in (0, 1)], dtype=float),
        embed=np.array([embedding_cost(dims, B * tn) for tn, _, _ in shapes], dtype=float),
        stream=np.array([B * tn * ab for tn, _, _ in shapes], dtype=float),
        last=np.array([B * (dims.readout_tokens or tn) * ab for tn, _, _ in shapes], dtype=float),
        inputs=np.array([B * dims.input_values(tn) * input_bytes for tn, _, _ in shapes], dtype=float),
    )


def embedding_cost(dims: ModelDims, M: int) -> tuple[float, float, float]:
    """(FLOPs, activation bytes, weight bytes) of the embedding per unit of width for M new tokens."""
    ab = dims.bytes_per_param
    k, rows, norms = Embeddings.work(dims.embedding_config)  # matmul inputs, gathered/added rows, LayerNorms
    return 2 * M * k, ab * M * (k + 2 * rows + 1 + 3 * norms), ab * k  # projection, gathers and adds, norm


def roofline(flops, bytes_, weights, rate, bandwidth, weight_bandwidth):
    """Compute or activation traffic, whichever binds, plus streaming the weights in."""
    return np.maximum(flops / rate, bytes_ / bandwidth) + weights / weight_bandwidth


@dataclass(frozen=True, eq=False)
class Context:
    """Everything about (fleet, model, request) that no policy changes: computed once per triple."""

    p: Passes
    a: dict[str, np.ndarray]  # the fleet's (N,) arrays
    per_flop: np.ndarray  # (N*L,) seconds per FLOP, repeated over blocks
    per_byte: np.ndarray  # (N*L,) seconds per activation byte
    per_weight_byte: np.ndarray  # (N*L,) seconds per weight byte
    overhead: np.ndarray  # (1, 1, N, 1) half the per-block overhead, charged to each sub-layer
    embed: np.ndarray  # (P, N) embedding seconds per unit of width (the roofline is linear in w)
    send_input: np.ndarray  # (P, N) seconds to send the request's inputs to every device (one way)
    rtt: np.ndarray  # (N,) round trip, 0 for the aggregator's host
    per_stream_width: np.ndarray  # (P, N) seconds to send one (B, T, 1) slice of a stream over the link
    per_last_width: np.ndarray  # (P, N) the same for what the head reads of the last state
    export: np.ndarray  # (P, N) seconds per unit of width of a pre-LN export's discount (0 for post-LN)
    head: np.ndarray  # (P,) seconds of the head on the aggregator
    merge: np.ndarray  # (4, P) a merge of total width W takes max(m0 W, m1 W + m2) + m3 W seconds
    last_merge: np.ndarray  # (4, P) the same for the last merge, of what the head reads
    memory: np.ndarray  # (2, 5) per-block parameters and activations (numbers) per feature
    embed_params: float  # embedding parameters per unit of width
    kv_bytes: float  # KV-cache bytes per head per block (0 unless generating)
    host: int  # device that hosts the aggregator, -1 for a gateway


CONTEXTS: dict[tuple, tuple[Fleet, Context]] = {}
LAST: dict[str, tuple] = {}  # the most recent (fleet, dims, workload, context), checked by identity


def context(fleet: Fleet, dims: ModelDims, workload: Workload) -> Context:
    hit = LAST.get("hit")
    if hit is not None and hit[0] is fleet and hit[1] is dims and hit[2] is workload:  # a search asks with the same objects
        return hit[3]
    key = (id(fleet), dims, workload)
    stored = CONTEXTS.get(key)
    if stored is None or stored[0] is not fleet:  # the stored reference keeps the id from being reused
        if len(CONTEXTS) > 256:
            CONTEXTS.clear()
        stored = CONTEXTS[key] = (fleet, build_context(fleet, dims, workload))
    LAST["hit"] = (fleet, dims, workload, stored[1])
    return stored[1]


def build_context(fleet: Fleet, dims: ModelDims, workload: Workload) -> Context:
    p = passes(dims, workload)
    a = fleet.arrays
    L, hd, B, T = dims.num_layers, dims.head_dim, workload.batch, dims.tokens(workload)
    generating = dims.causal and workload.decode_tokens > 0
    rates = (a["matmul_flops"], a["memory_bandwidth"], a["weight_bandwidth"])
    return Context(
        p=p,
        a=a,
        per_flop=np.repeat(1 / a["matmul_flops"], L),
        per_byte=np.repeat(1 / a["memory_bandwidth"], L),
        per_weight_byte=np.repeat(1 / a["weight_bandwidth"], L),
        overhead=(a["block_overhead_s"] / 2)[None, None, :, None],
        embed=roofline(*p.embed.T[:, :, None], *rates),
        send_input=a["remote"] * (a["link_rtt_s"] / 2 + p.inputs[:, None] / a["link_bandwidth"]),
        rtt=a["remote"] * a["link_rtt_s"],
        per_stream_width=a["remote"] * p.stream[:, None] / a["link_bandwidth"],
        per_last_width=a["remote"] * p.last[:, None] / a["link_bandwidth"],
        export=4 * p.stream[:, None] / a["memory_bandwidth"] * dims.pre_norm,
        head=head_time(dims, p.last / dims.bytes_per_param, B, fleet.aggregator),
        merge=merge_coefficients(dims, p.stream / dims.bytes_per_param, fleet.aggregator),
        last_merge=merge_coefficients(dims, p.last / dims.bytes_per_param, fleet.aggregator),
        memory=np.array(
            [
                [4 * hd, 2, 3 * hd, 1, 6],  # block parameters: q, k, v, o, fc1, fc2 (+biases), two LayerNorms
                [0, 0, 3 * hd * B * T + B * T * T, B * T, 4 * B * T],  # activations: q/k/v + scores, FFN hidden, stream copies
            ],
            dtype=float,
        ),
        embed_params=float(dims.embedding_params(1)),
        kv_bytes=2 * dims.bytes_per_param * B * (T + workload.decode_tokens) * hd if generating else 0.0,
        host=fleet.host_index,
    )


def features(counts: UnitCounts) -> np.ndarray:
    """(5, N*L): the per-block features [w*h, w*f, h, f, w] every operator's cost is linear in."""
    h, f = counts.heads, counts.neurons
    N, L = h.shape
    out = np.empty((5, N, L))
    w = counts.widths[:, None]
    np.multiply(w, h, out=out[0])
    np.multiply(w, f, out=out[1])
    out[2], out[3], out[4] = h, f, w
    return out.reshape(5, N * L)


def block_times(phi: np.ndarray, ctx: Context, N: int, L: int, sublayers: bool = True) -> np.ndarray:
    """(P, 2, N, L) seconds of the attention and the FFN sub-layer of every block, overhead included;
    (P, N, L) whole blocks with ``sublayers=False``."""
    p = ctx.p
    P = len(p.repeat)
    flops, traffic, weights = (p.coef @ phi).reshape(3, -1, N * L)  # each (P*O, N*L)
    per_op = np.maximum(flops * ctx.per_flop, traffic * ctx.per_byte)
    per_op += weights * ctx.per_weight_byte  # the roofline of every operator of every block
    per_op = per_op.reshape(P, -1, N * L)  # (P, O, N*L)
    if not sublayers:
        return per_op.sum(axis=1).reshape(P, N, L) + 2 * ctx.overhead[:, 0]
    return (p.groups @ per_op).reshape(P, 2, N, L) + ctx.overhead


def block_seconds(counts: UnitCounts, dims: ModelDims, fleet: Fleet, workload: Workload) -> np.ndarray:
    """(N, L) seconds every device spends in every block over the request (prefill + decode)."""
    ctx = context(fleet, dims, workload)
    N, L = counts.heads.shape
    return np.tensordot(ctx.p.repeat, block_times(features(counts), ctx, N, L, sublayers=False), axes=1)


def block_work(counts: UnitCounts, dims: ModelDims, workload: Workload) -> dict[str, np.ndarray]:
    """(N, L) FLOPs, activation bytes and weight bytes of every device's units in every block, per request."""
    p = passes(dims, workload)
    N, L = counts.heads.shape
    per_op = (p.coef @ features(counts)).reshape(3, len(p.repeat), -1, N * L).sum(axis=2)  # (3, P, N*L)
    work = np.tensordot(p.repeat, per_op, axes=([0], [1])).reshape(3, N, L)
    return dict(zip(("flops", "activation_bytes", "weight_bytes"), work))


def device_memory(phi: np.ndarray, ctx: Context, counts: UnitCounts, ab: int) -> np.ndarray:
    """(N,) bytes per device: parameters, the largest block's activations, and the KV cache."""
    N, L = counts.heads.shape
    per_block = (ctx.memory @ phi).reshape(2, N, L)
    memory = ab * (ctx.embed_params * counts.widths + per_block[0].sum(axis=1) + per_block[1].max(axis=1))
    if ctx.kv_bytes:
        memory += ctx.kv_bytes * counts.heads.sum(axis=1)
    return memory


def estimate(counts: UnitCounts, dims: ModelDims, fleet: Fleet, workload: Workload) -> CostReport:
    """Cost of one request under the policy described by ``counts`` (device k = ``fleet.devices[k]``)."""
    N, L = counts.heads.shape
    if N != len(fleet.devices):
        raise CoFormerError(
            f"the policy has {N} devices but fleet '{fleet.name}' has {len(fleet.devices)}; "
            "pass a sub-fleet (Fleet.subset) with one device per policy row"
        )
    if L != dims.num_layers:
        raise CoFormerError(f"the policy has {L} blocks but the model has {dims.num_layers}")
    sync, widths = counts.sync, counts.widths
    if not 0 <= sync <= L:
        raise CoFormerError(f"sync={sync} must be 0, 1 or 2..{L}")
    if sync == 1 and (widths != dims.hidden_size).any():
        raise CoFormerError("sync=1 shares one full-width stream: every width must equal hidden_size")
    ctx = context(fleet, dims, workload)
    p, a = ctx.p, ctx.a
    phi = features(counts)
    sub = block_times(phi, ctx, N, L, sublayers=sync == 1)  # (P, 2, N, L) for s = 1, else (P, N, L)
    embed = ctx.embed * widths + a["forward_overhead_s"]  # (P, N)
    stream = p.stream[:, None] * widths  # (P, N) bytes of one device's stream
    upload = ctx.per_stream_width * widths  # (P, N) seconds to send that stream
    last_upload = ctx.per_last_width * widths  # (P, N) seconds to send what the head reads of it
    agg = fleet.aggregator
    total_width = widths.sum()

    if sync == 1:
        partial = p.stream * dims.hidden_size  # (P,) bytes of one partial sum (B, T, d)
        all_reduce = ctx.rtt + 2 * ctx.per_stream_width * dims.hidden_size  # (P, N) send the partial, receive the sum
        reduce = (N + 1) * partial / agg.memory_bandwidth  # (P,) the aggregator sums N partials
        critical = (sub + all_reduce[:, None, :, None]).max(axis=2).sum(axis=(1, 2)) + 2 * L * reduce
        critical += (embed + ctx.send_input).max(axis=1) + ctx.head
        compute = sub.sum(axis=(1, 3)) + embed  # (P, N)
        comm = 2 * L * all_reduce + ctx.send_input
        sent = a["remote"] * (p.inputs[:, None] + 4 * L * partial[:, None])
        aggregator, merges = 2 * L * reduce + ctx.head, 0
    else:
        stops = sync_points(L, sync)
        merges = len(stops)
        merge, last_merge = (np.maximum(m[0] * total_width, m[1] * total_width + m[2]) + m[3] * total_width for m in (ctx.merge, ctx.last_merge))  # (P,) seconds
        merging = (merges - 1) * merge + last_merge
        export = ctx.export * widths  # (P, N) pre-LN exports subtract the share of the start state they duplicate
        if merges == 1:  # one segment: the general case below with S = 1, in fewer array operations
            compute = sub.sum(axis=2) + export + embed  # (P, N)
            comm = ctx.send_input + ctx.rtt / 2 + last_upload  # inputs down, the export up: one round trip
            critical = (compute + comm).max(axis=1) + merging + ctx.head
        else:
            segment = np.add.reduceat(sub, [0, *stops[:-1]], axis=2)  # (P, N, S) compute per segment
            segment += export[:, :, None]
            segment[:, :, 1:] += a["forward_overhead_s"][None, :, None]  # every later segment is a forward of its own
            segment[:, :, 0] += embed
            comm_seg = np.empty_like(segment)
            comm_seg[:] = (ctx.rtt + 2 * upload)[:, :, None]  # intermediate merge: send, get the merged state back
            comm_seg[:, :, -1] = ctx.rtt / 2 + last_upload  # the final export only goes up (the inputs came down)
            comm_seg[:, :, 0] += ctx.send_input
            critical = (segment + comm_seg).max(axis=1).sum(axis=1) + merging + ctx.head
            compute, comm = segment.sum(axis=2), comm_seg.sum(axis=2)
        sent = a["remote"] * (p.inputs[:, None] + (2 * merges - 2) * stream + p.last[:, None] * widths)
        aggregator = merging + ctx.head

    repeat = p.repeat
    compute_s = repeat @ compute  # (N,)
    return finish(
        fleet,
        ctx,
        latency=float(repeat @ critical),
        device_latency=compute_s + repeat @ comm,
        compute_s=compute_s,
        agg_busy=float(repeat @ aggregator),
        memory=device_memory(phi, ctx, counts, dims.bytes_per_param),
        agg_memory=aggregator_memory(dims, workload, total_width, merges),
        comm_bytes=float((repeat @ sent).sum()),
    )


def finish(fleet, ctx, latency, device_latency, compute_s, agg_busy, memory, agg_memory, comm_bytes) -> CostReport:
    """Place the aggregator's work and memory on its host (or the gateway), then energy and overflow."""
    a, host, agg = ctx.a, ctx.host, fleet.aggregator
    energy = 0.0
    if host >= 0:
        compute_s[host] += agg_busy
        memory[host] += agg_memory
    else:
        energy += agg.active_power_w * agg_busy + agg.idle_power_w * max(latency - agg_busy, 0.0)
    busy = np.minimum(compute_s, latency)
    energy += float(a["active_power_w"] @ busy + a["idle_power_w"] @ (latency - busy))
    over = memory - a["memory_bytes"]
    overflow = [(d.name, float(o)) for d, o in zip(fleet.devices, over) if o > 0] if (over > 0).any() else []
    if host < 0 and agg_memory > agg.memory_bytes:
        overflow.append((agg.name, agg_memory - agg.memory_bytes))
    return CostReport(latency, device_latency, memory, comm_bytes, energy, overflow, compute_s, agg_busy)


def merge_coefficients(dims: ModelDims, M: np.ndarray, agg: DeviceProfile) -> np.ndarray:
    """Feature matching ``W [y_1; ...; y_N] + b`` on the aggregator as a function of the total width.

    FLOPs 2 M d W, traffic ab (3 M W + M d) (concat written and read, the product's output),
    weights ab d W: returns (4, P) ``[m0, m1, m2, m3]`` with time ``max(m0 W, m1 W + m2) + m3 W``.
    """
    ab, d = dims.bytes_per_param, dims.hidden_size
    return np.stack(
        [2 * M * d / agg.matmul_flops, 3 * ab * M / agg.memory_bandwidth, ab * M * d / agg.memory_bandwidth, np.full_like(M, ab * d / weight_rate(agg))]
    )


def head_time(dims: ModelDims, M: np.ndarray, batch: int, agg: DeviceProfile) -> np.ndarray:
    """Final norm, pooling, pooler and output projection on the aggregator: (P,) seconds."""
    ab, d, V = dims.bytes_per_param, dims.hidden_size, dims.head_outputs
    rows = M if dims.causal else np.full_like(M, batch)  # LM: logits per token; others: one per sequence
    flops = 2 * rows * d * V + (2 * batch * d * d if dims.pooler else 0)
    traffic = ab * M * d * (3 * dims.final_norm + 1) + ab * rows * (V + d)  # norm, pooling, the projection's rows
    weights = ab * (V * d + (d * d if dims.pooler else 0))
    return roofline(flops, traffic, weights, agg.matmul_flops, agg.memory_bandwidth, weight_rate(agg))


def weight_rate(profile: DeviceProfile) -> float:
    return profile.weight_bandwidth or profile.memory_bandwidth


def aggregator_memory(dims: ModelDims, workload: Workload, total_width: float, merges: int) -> float:
    """Bytes of the feature-matching layers, the head, and their activations."""
    ab, B, T, d = dims.bytes_per_param, workload.batch, dims.tokens(workload), dims.hidden_size
    params = merges * (d * total_width + d) + dims.head_params()
    rows = B * T if dims.causal else B
    return float(ab * (params + B * T * (total_width + d) + rows * dims.head_outputs))


def estimate_pipeline(dims: ModelDims, fleet: Fleet, workload: Workload, layers_per_device: list[int]) -> CostReport:
    """Layer-wise pipeline partition [Pipe-Edge]: device k runs the next ``layers_per_device[k]`` full blocks.

    One request flows through the stages in turn (no micro-batching), so the latency is the sum of
    the stages plus every hop: aggregator -> stage 0 -> ... -> last stage -> aggregator, each hop
    costing half of both ends' round trips plus the bytes over the slower of the two links.
    """
    n, L = len(layers_per_device), dims.num_layers
    if n > len(fleet.devices) or sum(layers_per_device) != L or min(layers_per_device, default=0) < 1:
        raise CoFormerError(
            f"layers_per_device={layers_per_device} must give {L} blocks in total, at least one per stage, "
            f"to at most {len(fleet.devices)} devices (leave a device out rather than give it none)"
        )
    stages = fleet if n == len(fleet.devices) else fleet.subset(fleet.names[:n])
    d = dims.hidden_size
    full = UnitCounts(np.full((n, L), dims.num_heads), np.full((n, L), dims.ffn_size), np.full(n, d), sync=0)
    ctx = context(stages, dims, workload)
    p, a = ctx.p, ctx.a
    sub = block_times(features(full), ctx, n, L, sublayers=False)
    layers = np.array(layers_per_device)
    owner = np.repeat(np.arange(n), layers)  # block l runs on device owner[l]
    mask = (owner[None, :] == np.arange(n)[:, None]).astype(float)  # (N, L)
    compute = (sub * mask).sum(axis=2)  # (P, N)
    compute[:, 0] += roofline(*(p.embed.T * d), a["matmul_flops"][0], a["memory_bandwidth"][0], a["weight_bandwidth"][0])
    compute += a["forward_overhead_s"]  # every stage runs a forward of its own
    state = p.stream * d  # (P,) bytes of the hidden state (B, T, d)
    remote, bandwidth = a["remote"], a["link_bandwidth"]
    half_rtt = remote * a["link_rtt_s"] / 2
    # hop k delivers stage k's input: from the aggregator (k = 0) or from stage k - 1; hop n returns the result
    hop_rtt = np.concatenate([half_rtt[:1], half_rtt[:-1] + half_rtt[1:], half_rtt[-1:]])  # (n+1,)
    hop_remote = np.concatenate([remote[:1], np.maximum(remote[:-1], remote[1:]), remote[-1:]])
    hop_bandwidth = np.concatenate([bandwidth[:1], np.minimum(bandwidth[:-1], bandwidth[1:]), bandwidth[-1:]])
    hop_bytes = np.concatenate([p.inputs[:, None], np.repeat(state[:, None], n, axis=1)], axis=1) * hop_remote  # (P, n+1)
    hops = hop_rtt + hop_bytes / hop_bandwidth  # (P, n+1)
    comm = hops[:, :n].copy()  # each stage waits for its input
    comm[:, -1] += hops[:, n]
    critical = compute.sum(axis=1) + hops.sum(axis=1) + ctx.head
    repeat = p.repeat
    compute_s = repeat @ compute
    return finish(
        stages,
        ctx,
        latency=float(repeat @ critical),
        device_latency=compute_s + repeat @ comm,
        compute_s=compute_s,
        agg_busy=float(repeat @ ctx.head),
        memory=pipeline_memory(dims, workload, layers),
        agg_memory=aggregator_memory(dims, workload, total_width=0.0, merges=0),
        comm_bytes=float((repeat @ hop_bytes).sum()),
    )


def pipeline_memory(dims: ModelDims, workload: Workload, layers: np.ndarray) -> np.ndarray:
    """(N,) bytes per stage: its full blocks (the first also the embedding), activations, KV cache."""
    ab, B, T, d = dims.bytes_per_param, workload.batch, dims.tokens(workload), dims.hidden_size
    H, F = dims.num_heads, dims.ffn_size
    params = layers * dims.block_params(d, H, F) + np.where(np.arange(len(layers)) == 0, dims.embedding_params(d), 0)
    activations = B * T * (4 * d + 3 * H * dims.head_dim + F) + B * H * T * T
    memory = ab * (params + activations)
    if dims.causal and workload.decode_tokens > 0:
        memory = memory + 2 * ab * B * (T + workload.decode_tokens) * dims.head_dim * H * layers
    return memory.astype(float)
