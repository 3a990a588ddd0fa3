"""One request's data flow as seen by one rank, over ``Wire``: the executor's calls, other transport.

Notation: N devices, L blocks, B batch, T tokens, d original width, w_k device k's width.

The math is ``coformer.executor``'s: ``DeviceRun`` on every device, ``Aggregator.merge`` /
``scatter`` / ``forward`` on the aggregator's rank. This module only decides who sends what to whom:

* inputs: rank 0 (where requests arrive) sends each device the request, or with a gateway the
  device's embedded stream (B, T, w_k) and the mask;
* s = 1: the two partial sums of every block are all-reduced among the devices;
* s = 0 and s = k: at every sync point the devices send their exports to the aggregator, which
  merges them and (before the last point) sends every device its channels of the merged state;
* the last state: only what the head reads of it travels (``Readout``: the masked mean of a
  sentence embedding, the CLS position of a classifier), reduced where it is made;
* pipeline: stage k runs its blocks and hands the stream (and the mask) to stage k + 1, one
  micro-batch after another without waiting, so stages overlap on a stream of micro-batches.
"""

from __future__ import annotations

import torch

from coformer.executor import DeviceRun, segments
from coformer.runtime.parts import Role
from coformer.runtime.wire import Wire

Inputs = dict[str, torch.Tensor]


KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "pixel_values", "inputs_embeds")


def send_inputs(wire: Wire, inputs: Inputs, dst: int, wait: bool = True) -> None:
    """A dict of tensors as a count, then (key number, tensor) pairs; ``wait=False``: see ``Wire.send``."""
    wire.send(torch.tensor(len(inputs)), dst, wait)
    for key, value in inputs.items():
        wire.send(torch.tensor(KEYS.index(key)), dst, wait)
        wire.send(value, dst, wait)


def recv_inputs(wire: Wire, src: int) -> Inputs:
    return {KEYS[int(wire.recv(src))]: wire.recv(src) for _ in range(int(wire.recv(src)))}


def embedded(stream: torch.Tensor, mask: torch.Tensor | None) -> Inputs:
    """What a device whose embedding ran elsewhere sees: the stream, the mask, the ids' shape."""
    inputs = {"inputs_embeds": stream, "input_ids": torch.zeros(stream.shape[:2], dtype=torch.long)}  # (B, T) shape only
    return inputs if mask is None else inputs | {"attention_mask": mask}


def device_inputs(role: Role, wire: Wire, request: Inputs | None) -> Inputs | None:
    """This rank's device inputs; rank 0 hands every other device its own first."""
    plan = role.plan
    if role.rank == 0:
        cache: dict[int, torch.Tensor] = {}  # devices sharing an embedding get one lookup
        for k in range(plan.devices):
            dst = plan.device_rank(k)
            if plan.gateway:
                embed = role.embeddings[k]
                stream = cache.setdefault(id(embed), embed(request))  # (B, T, w_k)
                send_inputs(wire, embedded(stream, request.get("attention_mask")), dst)
            elif dst != 0:
                send_inputs(wire, request, dst)
        return None if plan.gateway else request
    return recv_inputs(wire, 0)


def ensemble(role: Role, wire: Wire, request: Inputs | None) -> torch.Tensor | None:
    """One request under the policy's sync interval; the model output on rank 0, else None."""
    inputs = device_inputs(role, wire, request)
    run = None if role.model is None else DeviceRun(role.model, inputs)
    hidden = tensor_parallel(role, wire, run) if role.sync == 1 else streams(role, wire, run)
    if role.rank != 0:
        return None
    return role.aggregator(hidden, role.readout.head_mask(request.get("attention_mask")))[1]


def tensor_parallel(role: Role, wire: Wire, run: DeviceRun | None) -> torch.Tensor | None:
    """What the head reads of the full-width hidden state, (B, T', d), on rank 0."""
    if run is not None:
        for i in range(role.num_layers):
            run.merge_attention(i, wire.all_reduce(run.attention_partial(i), role.group))  # (B, T, d) summed
            run.merge_ffn(i, wire.all_reduce(run.ffn_partial(i), role.group))
    if not role.plan.gateway:
        return role.readout.reduce(run.x, run.mask) if role.rank == 0 else None
    first = role.plan.device_rank(0)  # every device holds the same state; the first hands it over
    if role.rank == first:
        wire.send(role.readout.reduce(run.x, run.mask), 0)
    return wire.recv(first) if role.rank == 0 else None


def streams(role: Role, wire: Wire, run: DeviceRun | None) -> torch.Tensor | None:
    """Own streams merged at every sync point; what the head reads of the last merged state,
    (B, T', d), on rank 0."""
    ranks = [role.plan.device_rank(k) for k in range(role.plan.devices)]
    spans = segments(role.num_layers, role.sync)
    merged = None
    for point, (start, stop) in enumerate(spans):
        export = None if run is None else run.segment(start, stop)  # (B, T, w_k)
        last = stop == spans[-1][1]
        if last and export is not None:
            export = role.readout.reduce(export, run.mask)  # (B, T', w_k)
        if role.rank != 0:
            wire.send(export, 0)
            if not last:
                run.receive(wire.recv(0))
            continue
        exports = [export if r == 0 else wire.recv(r) for r in ranks]
        merged = role.aggregator.merge(point, exports)  # (B, T, d)
        if not last:
            for r, channels in zip(ranks, role.aggregator.scatter(merged)):  # (B, T, w_k) each
                if r == 0:
                    run.receive(channels)
                else:
                    wire.send(channels, r)
    return merged


def pipeline(role: Role, wire: Wire, request: Inputs | None, micro_batches: int) -> torch.Tensor | None:
    """Contiguous blocks per stage; the model output (B, ...) on the last stage, else None."""
    last = role.rank == role.plan.world - 1
    if role.rank == 0:  # the request, cut along the batch
        chunks = [dict(zip(request, values)) for values in zip(*(v.chunk(micro_batches) for v in request.values()))]
    outputs = []
    for m in range(micro_batches):
        if role.rank == 0:
            inputs = chunks[m]
        else:
            received = recv_inputs(wire, role.rank - 1)
            inputs = embedded(received["inputs_embeds"], received.get("attention_mask"))
        run = DeviceRun(role.model, inputs)
        for i in role.blocks:
            run.block(i)
        mask = inputs.get("attention_mask")
        if last:
            outputs.append(role.aggregator(run.x, mask)[1])
        else:
            stream = {"inputs_embeds": run.x} | ({} if mask is None else {"attention_mask": mask})
            send_inputs(wire, stream, role.rank + 1, wait=False)  # on to the next micro-batch
    wire.flush()
    return torch.cat(outputs) if last else None

