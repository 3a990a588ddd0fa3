"""When does decomposition pay? The cost model's answer over model size x fleet x link x workload.

For every combination it prices, at equal quality (every unit kept), the competing methods of
DESIGN section 7 with ``coformer.fleet.compare``: the whole model on the fastest device that holds
it [Single-Edge], CoFormer's own streams merged once [Aggregate-Edge, s = 0], tensor parallelism
[Distri-Edge, s = 1] and a layer-wise pipeline [Pipe-Edge], all with units in proportion to device
speed, and prints the predicted latency of each and the winner as a Markdown table (the README's
"When does decomposition pay"). Memory budgets are left out (every board's full memory), so the
table answers the question of speed alone; the search adds memory and quality.

    .venv/bin/python benchmarks/search_when_pays.py
"""

from __future__ import annotations

from coformer.fleet import ModelDims, Workload, load_fleet
from coformer.fleet.compare import compare_regimes
from coformer.fleet.profile import Fleet

MODELS = {  # name -> shapes (no weights): the embedded MiniLM, BERT-base and GPT-2 sizes
    "MiniLM-L6 (23 M)": "all-MiniLM-L6-v2",
    "GPT-2 (124 M)": "gpt2",
    "GPT2-XL (1.6 B)": "gpt2-xl",
}
FLEETS = ["default", "jetson"]  # catalog fleets: 3 Pi 5 + Pi 4 on Ethernet; Jetsons + Pis on Ethernet/WiFi
LINKS = {"as catalogued": None, "all on WiFi 5": (1.25e7, 3e-3)}  # bytes/s, round trip (catalog: wifi5)
WORKLOADS = {"1 x 128 tokens": Workload(batch=1, seq_len=128), "16 x 128 tokens": Workload(batch=16, seq_len=128)}
METHODS = {"full model on": "Single-Edge", "CoFormer (s=0)": "Aggregate-Edge", "tensor parallel": "Distri-Edge", "pipeline": "Pipe-Edge"}


def on_link(fleet: Fleet, link: tuple[float, float] | None) -> Fleet:
    """The fleet with every device's link replaced (None: as the catalog gives it), memory unbounded."""
    update = {"memory_bytes": 1e12} | ({} if link is None else {"link_bandwidth": link[0], "link_rtt_s": link[1]})
    devices = [d.model_copy(update=update) for d in fleet.devices]
    host = fleet.names.index(fleet.aggregator.name) if fleet.aggregator.name in fleet.names else None
    aggregator = devices[host] if host is not None else fleet.aggregator.model_copy(update=update)
    return Fleet(name=fleet.name, devices=devices, aggregator=aggregator)


def main() -> None:
    print("| model | fleet | links | request | Single-Edge | Aggregate-Edge | Distri-Edge | Pipe-Edge | wins |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, spec in MODELS.items():
        dims = ModelDims.named(spec)
        for fleet_name in FLEETS:
            for link_name, link in LINKS.items():
                fleet = on_link(load_fleet(fleet_name), link)
                for workload_name, workload in WORKLOADS.items():
                    rows = compare_regimes(dims, fleet, workload)
                    latency = {METHODS[next(k for k in METHODS if r.name.startswith(k))]: r.report.latency_s * 1e3 for r in rows}
                    winner = min(latency, key=latency.get)
                    cells = " | ".join(f"{latency[m]:,.0f} ms" if latency[m] >= 10 else f"{latency[m]:.1f} ms" for m in METHODS.values())
                    print(f"| {model} | {fleet_name} | {link_name} | {workload_name} | {cells} | **{winner}** |")


if __name__ == "__main__":
    main()
