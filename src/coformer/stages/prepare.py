"""Stage ``prepare``: materialise the calibration and evaluation splits every later stage reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from coformer.data.prepared import Prepared
from coformer.loading import load_model
from coformer.params import Params
from coformer.stages.inputs import read_prepared
from coformer.tracking import log_outputs, stage_run


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    return np.array([len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]) if texts else np.zeros(0)


def statistics(prepared: Prepared, tokenizer, max_length: int) -> dict[str, float]:
    """Counts per split, and token lengths of the texts with the model's own tokenizer."""
    metrics: dict[str, float] = {f"{split}_items": len(items) for split, items in prepared.splits.items()}
    metrics["evaluation_pairs"] = len(prepared.pairs)
    metrics |= {f"{split}_classes": len(set(labels)) for split, labels in prepared.labels.items()}
    if prepared.kind == "pixels":
        return metrics | {"image_side_px": float(np.mean([a.shape[0] for a in prepared.splits["calibration"]]))}
    for split, texts in prepared.splits.items():
        lengths = token_lengths(tokenizer, texts)
        metrics |= {
            f"{split}_tokens_mean": float(lengths.mean()),
            f"{split}_tokens_p50": float(np.percentile(lengths, 50)),
            f"{split}_tokens_p95": float(np.percentile(lengths, 95)),
            f"{split}_tokens_max": int(lengths.max()),
            f"{split}_truncated_share": float((lengths > max_length).mean()),  # cut at data.max_length when evaluated
        }
    return metrics


def run(params: Params, out: Path, metrics: Path) -> dict:
    """Write the splits of ``data.source`` into the folder ``out`` (see ``coformer.data.prepared``)
    and their counts and token-length statistics to the JSON file ``metrics``."""
    data = params.data
    loaded = load_model(params.base.model)
    config = loaded.canonical.config
    with stage_run(params, "prepare"):
        print(f"prepare: reading {data.source!r} for {loaded.name} ({config.input_kind})", flush=True)
        prepared = read_prepared(None, params, loaded.canonical)
        files = prepared.save(out)
        stats = statistics(prepared, loaded.processor, data.max_length)
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps(stats, indent=1))
        log_outputs(stats, [metrics])
    counts = ", ".join(f"{len(v)} {k}" for k, v in prepared.splits.items())
    print(f"prepare: {counts}, {len(prepared.pairs)} retrieval pairs -> {', '.join(str(f) for f in files)}", flush=True)
    return stats
