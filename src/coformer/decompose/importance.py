"""How much every head, FFN neuron and hidden channel matters; decides what to keep and deal out.

Two scores:

* ``activation`` (data-driven): the mean norm of what the unit writes into the residual stream on
  calibration data — for head h, ``||attn_h(x) W_O[h]||``; for neuron j, ``|act_j(x)| * ||w2[:, j]||``;
  for channel c, the mean magnitude of the stream there after every block.
* ``magnitude`` (data-free): the norms of the weights that read and write the unit.

Both are deterministic for given weights and data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch

from coformer.errors import CoFormerError
from coformer.modeling import SubModel

ImportanceMethod = Literal["magnitude", "activation"]


@dataclass
class Importance:
    heads: torch.Tensor  # (L, H), higher = more important
    neurons: torch.Tensor  # (L, F)
    channels: torch.Tensor  # (d,)
    method: str


def magnitude_importance(body: SubModel) -> Importance:
    hd = body.config.head_dim
    heads, neurons, channels = [], [], torch.zeros(body.config.width)
    for block in body.blocks:
        a, f = block.attn, block.ffn
        reads = sum(p.weight.view(a.heads, hd, -1).pow(2).sum((1, 2)) for p in (a.q, a.k, a.v))  # (H,)
        writes = a.o.weight.view(-1, a.heads, hd).pow(2).sum((0, 2))  # (H,)
        heads.append((reads + writes).sqrt())
        neurons.append(f.fc1.weight.norm(dim=1) * f.fc2.weight.norm(dim=0))  # (F,)
        channels += a.o.weight.pow(2).sum(1) + f.fc2.weight.pow(2).sum(1)
    channels += body.embed.input_weights().pow(2).sum(1)  # (d, k): token table rows or patch pixels
    return Importance(torch.stack(heads).detach(), torch.stack(neurons).detach(), channels.sqrt().detach(), "magnitude")


@torch.no_grad()
def activation_importance(body: SubModel, batches: Iterable[dict[str, torch.Tensor]]) -> Importance:
    L, d = body.config.num_layers, body.config.width
    H, hd = body.config.heads_per_block[0], body.config.head_dim
    heads = torch.zeros(L, H)
    neurons = torch.zeros(L, body.config.neurons_per_block[0])
    channels = torch.zeros(d)
    tokens = 0.0
    state: dict[str, torch.Tensor] = {}

    def head_hook(i):
        def hook(module, args, ctx):  # ctx: (B, T, H*hd)
            B, T, _ = ctx.shape
            w_o = body.blocks[i].attn.o.weight.view(d, H, hd)  # (d, H, hd)
            out = torch.einsum("bthe,dhe->bthd", ctx.view(B, T, H, hd), w_o).norm(dim=-1)  # (B, T, H)
            heads[i] += (out * state["mask"]).sum((0, 1))

        return hook

    def neuron_hook(i):
        def hook(module, args, act):  # act: (B, T, F)
            neurons[i] += (act.abs() * state["mask"]).sum((0, 1)) * body.blocks[i].ffn.fc2.weight.norm(dim=0)

        return hook

    def stream_hook(module, args, out):  # out: (B, T, d) after a block
        channels.add_((out.abs() * state["mask"]).sum((0, 1)))

    handles = []
    for i, block in enumerate(body.blocks):
        handles += [
            block.attn.context.register_forward_hook(head_hook(i)),
            block.ffn.activation.register_forward_hook(neuron_hook(i)),
            block.register_forward_hook(stream_hook),
        ]
    try:
        for inputs in batches:
            x = body.embed(inputs)
            mask = inputs.get("attention_mask")
            state["mask"] = (torch.ones(x.shape[:2]) if mask is None else mask.float()).unsqueeze(-1)  # (B, T, 1)
            tokens += float(state["mask"].sum())
            body.run_blocks(x, 0, L, body.attention_bias(inputs))
    finally:
        for h in handles:
            h.remove()
    return Importance(heads / tokens, neurons / tokens, channels / (tokens * L), "activation")


def compute_importance(body: SubModel, method: ImportanceMethod, batches: Iterable[dict[str, torch.Tensor]] | None = None):
    if method == "magnitude":
        return magnitude_importance(body)
    if method == "activation":
        if batches is None:
            raise CoFormerError("activation importance needs calibration batches; pass data or use 'magnitude'")
        return activation_importance(body, batches)
    raise CoFormerError(f"unknown importance method {method!r}; use 'activation' or 'magnitude'")
