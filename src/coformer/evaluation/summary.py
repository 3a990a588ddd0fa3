"""From timed series to the figures a reader compares: per method, per device process, and the
issue's targets (each with its value, its threshold and whether it was met)."""

from __future__ import annotations

from coformer.evaluation.config import EvaluateConfig
from coformer.evaluation.methods import Method


def series_key(row: dict) -> str:
    """``b8`` on the loopback, ``b1_20mbit_fp16`` on a shaped link, ``b8_stream`` for micro-batches."""
    key = f"b{row['batch']}"
    if row["link"] != "loopback":
        key += f"_{row['link'].split()[0]}mbit_{row['wire']}"
    return key + ("_stream" if row["micro_batches"] > 1 else "")


def find(rows: list[dict], method: str, key: str) -> dict | None:
    return next((r for r in rows if r["method"] == method and series_key(r) == key), None)


def device_params(result) -> int:
    """The largest parameter bytes held by a device process (a gateway is not a device)."""
    return max(p for p, role in zip(result.param_bytes, result.roles) if role != "gateway")


def method_metrics(methods: list[Method], rows: list[dict], runs, scores: dict, config: EvaluateConfig) -> dict[str, dict]:
    loopback = {m.key: r for m, rate, r in runs if rate is None}
    full_bytes = device_params(loopback["full"]) if "full" in loopback else None
    largest = max(config.batch_sizes)
    full_row = find(rows, "full", f"b{largest}")
    out = {}
    for m in methods:
        entry = {"label": m.label, "budget": m.budget, "devices": m.devices, "measured": m.measurable, "exact": m.exact} | scores[m.key]
        result = loopback.get(m.key)
        if result is not None:
            entry["param_bytes_max"] = device_params(result)
            entry["rss_mb_max"] = max(result.rss_bytes) / 1e6
            if full_bytes:
                entry["param_ratio"] = entry["param_bytes_max"] / full_bytes
            if "gateway" in result.roles:
                entry["gateway_param_bytes"] = result.param_bytes[result.roles.index("gateway")]
        for r in rows:
            if r["method"] != m.key:
                continue
            key = series_key(r)
            if r["measured"]:
                entry |= {f"latency_ms_{key}": r["latency_ms"], f"p90_ms_{key}": r["p90_ms"], f"bytes_per_device_{key}": r["bytes_per_device"]}
                entry[f"throughput_seq_s_{key}"] = r["throughput_seq_s"]
            if r.get("predicted_ms") is not None:
                entry[f"predicted_ms_{key}"] = r["predicted_ms"]
        mine = find(rows, m.key, f"b{largest}")
        if full_row and mine and mine["measured"]:
            entry[f"speedup_b{largest}"] = full_row["latency_ms"] / mine["latency_ms"]
        out[m.key] = entry
    return out


def memory_rows(runs) -> list[dict]:
    """Per device process of every loopback run: its role, core, parameter bytes and peak RSS."""
    return [
        {"method": m.key, "rank": rank, "role": role, "core": core, "param_bytes": p, "rss_bytes": rss}
        for m, rate, r in runs
        if rate is None
        for rank, (role, core, p, rss) in enumerate(zip(r.roles, r.cores, r.param_bytes, r.rss_bytes))
    ]


def target(value: float | None, threshold: float, at_least: bool) -> dict:
    met = None if value is None else (value >= threshold if at_least else value <= threshold)
    return {"value": value, ("at_least" if at_least else "at_most"): threshold, "met": met}


def targets(metrics: dict, config: EvaluateConfig) -> dict:
    """The issue's three measured targets (None where a row was not measured)."""
    methods, b = metrics["methods"], max(config.batch_sizes)
    agg, tp = methods.get("aggregate-edge", {}), methods.get("distri-edge", {})
    out = {"s0_speedup": target(agg.get(f"speedup_b{b}"), 1.6, True)}
    out["param_ratio_gateway"] = target(methods.get("coformer-gateway", {}).get("param_ratio"), 0.6, False)
    slowest = min(config.links_mbit, default=None)
    if slowest is not None:
        for wire in config.wires:
            key = f"latency_ms_b{config.shaped_batch}_{slowest:g}mbit_{wire}"
            ratio = tp[key] / agg[key] if key in tp and key in agg else None
            out[f"tp_over_s0_{slowest:g}mbit_{wire}"] = target(ratio, 3.0, True)
    return out
