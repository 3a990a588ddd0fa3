"""One device's sub-model: a narrower transformer sliced from the original weights.

The same class also holds the *full* original body (every head, neuron and channel): adapters
convert a Hugging Face model into it, and decomposition slices it. It needs only torch.

Notation: B batch, T new tokens, S attended tokens (past + new), w the sub-model's residual
width (its kept hidden channels), h its heads in a block, hd the head size, f its FFN neurons in
a block, V vocabulary.

A block can run in two ways:

* as its own residual stream (``block``), which is what every device does between sync points;
* as one shard of a tensor-parallel block (``attention_partial`` / ``merge_attention`` and the
  FFN twins): the partial outputs of all devices are summed, then the output bias, the residual
  and (post-LN) the norm are applied once, as Megatron-LM does with row-parallel layers.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field, field_validator
from torch import nn

from coformer.errors import ArtifactError, ModelError

EmbeddingKind = Literal["gpt2", "bert", "vit"]
InputKind = Literal["tokens", "pixels"]
NormPosition = Literal["pre", "post"]

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


class SubModelConfig(BaseModel):
    """Shapes of one sub-model; everything needed to rebuild it from its safetensors."""

    family: str  # model family it was sliced from ("gpt2", "bert", "vit"); informational
    embedding: EmbeddingKind  # how inputs become the residual stream
    norm_position: NormPosition  # "pre": x + f(LN(x)) (GPT-2, ViT); "post": LN(x + f(x)) (BERT)
    activation: str  # FFN activation, a key of ACTIVATIONS
    causal: bool  # causal self-attention (GPT-2) with a KV cache for decoding
    layer_norm_eps: float
    hidden_size: int  # width d of the *original* model's residual stream
    channels: list[int]  # original channels this sub-model's stream keeps (len w, sorted)
    head_dim: int  # hd
    heads_per_block: list[int]  # h for every block (0 allowed)
    neurons_per_block: list[int]  # f for every block (0 allowed)
    vocab_size: int = 0  # token embeddings (gpt2, bert)
    max_positions: int = 0  # learned position embeddings (gpt2, bert)
    type_vocab_size: int = 0  # token type embeddings (bert)
    padding_idx: int | None = None  # bert: positions count non-padding ids from padding_idx + 1 (RoBERTa); None: 0, 1, ...
    image_size: int = 0  # vit
    patch_size: int = 0  # vit
    num_channels: int = 0  # vit input colour channels
    class_tokens: int = 1  # vit: learned tokens ahead of the patches (CLS; DeiT adds its distillation token)
    qkv_bias: bool = True  # q, k and v projections have biases (ViT qkv_bias=False: none)
    scale_attention: bool = True  # scores divided by sqrt(hd) (GPT-2 scale_attn_weights)
    inverse_depth_scale: bool = False  # block i also divides its scores by i + 1 (GPT-2 scale_attn_by_inverse_layer_idx)
    upcast_attention: bool = False  # scores and softmax in float32 whatever the compute dtype (GPT-2 reorder_and_upcast_attn)
    discount: bool = False  # pre-LN export subtracts the share of the start state it duplicates
    name: str = Field(default="full")  # device name

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, name: str) -> str:
        if name not in ACTIVATIONS:
            raise ModelError(f"activation {name!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
        return name

    @property
    def width(self) -> int:
        return len(self.channels)

    @property
    def num_layers(self) -> int:
        return len(self.heads_per_block)

    @property
    def input_kind(self) -> InputKind:
        """What a request carries: token ids (``input_ids``...) or images (``pixel_values``)."""
        return "pixels" if self.embedding == "vit" else "tokens"

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2 if self.input_kind == "pixels" else 0

    @property
    def max_tokens(self) -> int:
        """Longest token input the position table covers (0: no limit, or an image model)."""
        if self.input_kind == "pixels" or not self.max_positions:
            return 0
        return self.max_positions - (0 if self.padding_idx is None else self.padding_idx + 1)

    def tokens(self, seq_len: int) -> int:
        """T for a request of ``seq_len`` tokens (image models: their patches and class tokens)."""
        return self.patches + self.class_tokens if self.input_kind == "pixels" else seq_len

    def attention_scale(self, i: int) -> float:
        """Factor on block i's q.k scores, computed as transformers computes it."""
        scale = self.head_dim**-0.5 if self.scale_attention else 1.0
        return scale / float(i + 1) if self.inverse_depth_scale else scale


def example_inputs(c: SubModelConfig, batch: int, tokens: int) -> dict[str, torch.Tensor]:
    """Zero inputs of the kind the model reads: ``tokens`` ids per item (unmasked), or one image each."""
    if c.input_kind == "pixels":
        return {"pixel_values": torch.zeros(batch, c.num_channels, c.image_size, c.image_size)}
    ids = torch.zeros(batch, tokens, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class KVCache:
    """Keys and values of one device's heads for every block, grown one step at a time."""

    def __init__(self, num_layers: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]

    def extend(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past = self.layers[i]
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, h, S, hd)
            v = torch.cat([past[1], v], dim=2)
        self.layers[i] = (k, v)
        return k, v


def attention_bias(
    attention_mask: torch.Tensor | None, new: int, past: int, causal: bool, dtype: torch.dtype
) -> torch.Tensor | None:
    """Additive mask (B|1, 1, T, S): 0 where a query may attend, the dtype's minimum elsewhere.

    A large finite value rather than -inf keeps fully padded query rows finite.
    """
    total = past + new
    allowed = None
    if causal:
        q = torch.arange(past, total).unsqueeze(1)
        allowed = (torch.arange(total).unsqueeze(0) <= q)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        keys = attention_mask[:, None, None, :total].bool()  # (B, 1, 1, S)
        allowed = keys if allowed is None else allowed & keys
    if allowed is None:
        return None
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


class Embeddings(nn.Module):
    """Token/position(/type) embeddings, or ViT's patch embedding, at the sub-model's width.

    The one place that knows what each embedding kind holds: downstream code asks it (or
    ``SubModelConfig``) for the input kind, the parameters per channel, the vocabulary table and
    the weights that write inputs into the stream, never for the family.
    """

    def __init__(self, c: SubModelConfig):
        super().__init__()
        self.kind = c.embedding
        self.padding_idx = c.padding_idx
        w = c.width
        if c.embedding == "vit":
            self.patch = nn.Conv2d(c.num_channels, w, c.patch_size, stride=c.patch_size)
            self.cls = nn.Parameter(torch.zeros(1, c.class_tokens, w))  # CLS (then DeiT's distillation token)
            self.position = nn.Parameter(torch.zeros(1, c.patches + c.class_tokens, w))
            return
        self.word = nn.Embedding(c.vocab_size, w)
        self.position = nn.Embedding(c.max_positions, w)
        if c.embedding == "bert":
            self.token_type = nn.Embedding(c.type_vocab_size, w)
            self.norm = nn.LayerNorm(w, eps=c.layer_norm_eps)

    @staticmethod
    def parameters_per_channel(c: SubModelConfig) -> int:
        """Parameters per residual channel (every embedding weight has one row or column per channel)."""
        with torch.device("meta"):
            one = Embeddings(c.model_copy(update={"channels": [0]}))
        return sum(p.numel() for p in one.parameters())

    @staticmethod
    def work(c: SubModelConfig) -> tuple[int, int, int]:
        """Per token and channel: (inputs read by a matmul, table rows gathered or added, LayerNorms)."""
        if c.embedding == "vit":
            return c.num_channels * c.patch_size**2, 2, 0  # patch projection; class-token concat, position add
        return 0, 3 if c.embedding == "bert" else 2, int(c.embedding == "bert")  # word, position (, type); norm

    @property
    def vocabulary(self) -> nn.Embedding | None:
        """The token table (the large weight every full-width device duplicates); None for images."""
        return getattr(self, "word", None)

    def input_weights(self) -> torch.Tensor:
        """(w, k): how each channel reads the raw input (token table rows or patch pixels)."""
        return self.patch.weight.flatten(1) if self.kind == "vit" else self.word.weight.t()

    def positions(self, ids: torch.Tensor, past: int) -> torch.Tensor:
        """Position ids (B|1, T); with a padding index, as RoBERTa counts them from the ids."""
        if self.padding_idx is None:
            return torch.arange(past, past + ids.shape[1]).unsqueeze(0)
        real = ids.ne(self.padding_idx).long()  # (B, T)
        return (real.cumsum(1) + past) * real + self.padding_idx

    def forward(self, inputs: dict[str, torch.Tensor], past: int = 0) -> torch.Tensor:
        if self.kind == "vit":
            x = self.patch(inputs["pixel_values"]).flatten(2).transpose(1, 2)  # (B, N, w)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, c+N, w)
            return x + self.position
        ids = inputs["input_ids"]  # (B, T)
        positions = inputs.get("position_ids")
        if positions is None:
            positions = self.positions(ids, past)
        x = self.word(ids) + self.position(positions)  # (B, T, w)
        if self.kind == "bert":
            types = inputs.get("token_type_ids")
            types = torch.zeros_like(ids) if types is None else types
            x = self.norm(x + self.token_type(types))
        return x


class Attention(nn.Module):
    def __init__(self, w: int, h: int, hd: int, scale: float, qkv_bias: bool = True, upcast: bool = False):
        super().__init__()
        self.heads, self.head_dim = h, hd
        self.scale, self.upcast = scale, upcast
        self.q, self.k, self.v = (nn.Linear(w, h * hd, bias=qkv_bias) for _ in range(3))
        self.o = nn.Linear(h * hd, w)  # its bias is added once, after the partials are summed
        self.context = nn.Identity()  # probe point: per-head context (B, T, h*hd), for importance hooks

    def partial(self, x: torch.Tensor, bias: torch.Tensor | None, cache: KVCache | None, i: int):
        """This shard's heads projected back to the stream, without the output bias: (B, T, w)."""
        B, T, _ = x.shape
        if self.heads == 0:
            return torch.zeros_like(x)
        q, k, v = (p(x).view(B, T, self.heads, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        if cache is not None:
            k, v = cache.extend(i, k, v)  # (B, h, S, hd)
        if self.upcast:  # scores and softmax in float32, as transformers' reorder_and_upcast_attn
            with torch.autocast(x.device.type, enabled=False):
                ctx = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias, scale=self.scale)
            ctx = ctx.to(v.dtype)  # (B, h, T, hd)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)  # (B, h, T, hd)
        ctx = self.context(ctx.transpose(1, 2).reshape(B, T, -1))  # (B, T, h*hd)
        return F.linear(ctx, self.o.weight)


class FeedForward(nn.Module):
    def __init__(self, w: int, f: int, activation: str):
        super().__init__()
        self.fc1 = nn.Linear(w, f)
        self.fc2 = nn.Linear(f, w)  # its bias is added once, after the partials are summed
        self.act = ACTIVATIONS[activation]
        self.activation = nn.Identity()  # probe point: neuron activations (B, T, f), for importance hooks

    def partial(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.activation(self.act(self.fc1(x))), self.fc2.weight)  # (B, T, w)


class Block(nn.Module):
    def __init__(self, c: SubModelConfig, i: int):
        super().__init__()
        w = c.width
        self.pre = c.norm_position == "pre"
        self.norm1 = nn.LayerNorm(w, eps=c.layer_norm_eps)
        self.attn = Attention(w, c.heads_per_block[i], c.head_dim, c.attention_scale(i), c.qkv_bias, c.upcast_attention)
        self.norm2 = nn.LayerNorm(w, eps=c.layer_norm_eps)
        self.ffn = FeedForward(w, c.neurons_per_block[i], c.activation)

    def attention_partial(self, x, bias, cache, i):
        return self.attn.partial(self.norm1(x) if self.pre else x, bias, cache, i)

    def merge_attention(self, x, reduced):
        x = x + reduced + self.attn.o.bias
        return x if self.pre else self.norm1(x)

    def ffn_partial(self, x):
        return self.ffn.partial(self.norm2(x) if self.pre else x)

    def merge_ffn(self, x, reduced):
        x = x + reduced + self.ffn.fc2.bias
        return x if self.pre else self.norm2(x)

    def forward(self, x, bias, cache, i):
        x = self.merge_attention(x, self.attention_partial(x, bias, cache, i))
        return self.merge_ffn(x, self.ffn_partial(x))


class SubModel(nn.Module):
    """Embeddings and blocks of one device; the aggregator owns the final norm and the head."""

    def __init__(self, config: SubModelConfig):
        super().__init__()
        self.config = config
        self.embed = Embeddings(config)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        # Per channel, the fraction of the segment's start state (and of the biases every stream
        # adds) that other devices carry too; subtracted on export so a plain sum counts it once.
        self.register_buffer("discount", torch.zeros(config.width))
        self.register_buffer("channel_index", torch.tensor(config.channels, dtype=torch.long), persistent=False)

    @classmethod
    def from_state_dict(cls, config: SubModelConfig, state: dict[str, torch.Tensor]) -> SubModel:
        """Build without initialising random weights first (fast for large models)."""
        with torch.device("meta"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")  # devices without heads
            model = cls(config)
        expected = model.state_dict()
        wrong = [f"{k} is not in the config" for k in state if k not in expected] + [
            f"{k} is {tuple(v.shape)}, the config says {tuple(expected[k].shape)}"
            for k, v in state.items()
            if k in expected and v.shape != expected[k].shape
        ]
        if wrong:
            raise ArtifactError(f"sub-model '{config.name}' weights do not match its config ({'; '.join(wrong[:3])}); re-export it")
        model.load_state_dict(state, strict=False, assign=True)
        model.channel_index = torch.tensor(config.channels, dtype=torch.long)
        missing = [n for n, p in model.state_dict().items() if p.is_meta]
        if missing:
            raise ArtifactError(f"sub-model '{config.name}' weights lack {missing[:5]}; re-export it")
        return model

    def attention_bias(self, inputs: dict[str, torch.Tensor], past: int = 0) -> torch.Tensor | None:
        new = inputs["input_ids"].shape[1] if "input_ids" in inputs else 0
        return attention_bias(inputs.get("attention_mask"), new, past, self.config.causal, self.discount.dtype)

    def run_blocks(self, x, start: int, stop: int, bias, cache: KVCache | None = None) -> torch.Tensor:
        for i in range(start, stop):
            x = self.blocks[i](x, bias, cache, i)
        return x

    def export(self, x: torch.Tensor, start_state: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """What the device sends at a sync point: its stream minus the duplicated share."""
        if not self.config.discount:
            return x
        added = sum(b.attn.o.bias + b.ffn.fc2.bias for b in self.blocks[start:stop])
        return x - self.discount * (start_state + added)

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        cache: KVCache | None = None,
        hidden: torch.Tensor | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> torch.Tensor:
        """Run blocks [start, stop) on the own stream and export it: (B, T, w).

        ``hidden`` is the synchronised full-width state at a sync point (None: embed the inputs).
        """
        stop = self.config.num_layers if stop is None else stop
        past = 0 if cache is None else cache.length
        x = self.embed(inputs, past) if hidden is None else hidden[..., self.channel_index]
        h = self.run_blocks(x, start, stop, self.attention_bias(inputs, past), cache)
        return self.export(h, x, start, stop)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.num_layers)
