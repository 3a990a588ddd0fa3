"""Retrieval with sentence embeddings: encode texts with any model, recall@k of query -> document.

Notation: n pairs, d embedding width. For each query, documents are ranked by cosine similarity;
recall@k is the fraction of queries whose own document (same index) is among the top k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from coformer.data import RetrievalPair, text_batches

Encoder = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # batch -> (B, d) embeddings


@torch.no_grad()
def encode(model: Encoder, tokenizer, texts: Sequence[str], batch_size: int = 64, max_length: int = 128) -> torch.Tensor:
    """Embeddings (n, d) in the order of ``texts``; batches are length-sorted so padding stays small."""
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    parts = [model(batch) for batch in text_batches(tokenizer, [texts[i] for i in order], batch_size, max_length)]
    sorted_embeddings = torch.cat(parts)  # (n, d) in length order
    embeddings = torch.empty_like(sorted_embeddings)
    embeddings[torch.tensor(order)] = sorted_embeddings
    return embeddings


def recall_at_k(queries: torch.Tensor, documents: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of queries (n, d) whose own document (row i of documents (n, d)) ranks in the top k."""
    scores = F.normalize(queries, dim=-1) @ F.normalize(documents, dim=-1).T  # (n, n) cosine
    own = scores.diagonal().unsqueeze(1)  # (n, 1)
    rank = (scores > own).sum(1)  # (n,) documents strictly better than the right one
    return {k: float((rank < k).float().mean()) for k in ks}


def encode_pairs(model: Encoder, tokenizer, pairs: Sequence[RetrievalPair], max_length: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of the pairs' queries and of their documents: (n, d) each."""
    queries = encode(model, tokenizer, [p.query for p in pairs], max_length=max_length)
    return queries, encode(model, tokenizer, [p.document for p in pairs], max_length=max_length)


def retrieval_recall(
    model: Encoder, tokenizer, pairs: Sequence[RetrievalPair], ks: Sequence[int] = (1, 5), max_length: int = 128
) -> dict[int, float]:
    """recall@k of ``model`` on summary -> body pairs."""
    return recall_at_k(*encode_pairs(model, tokenizer, pairs, max_length), ks)
