"""Fail before searching when no policy can fit: the clear error of the search stage.

The smallest policy we can ask for keeps the lowest rho and the narrowest streams the search
allows and deals units in proportion to device memory. Which devices should carry it? Adding a
device with more memory never hurts more than adding one with less, so only the k devices with
the most memory (k = 1..N) need trying, under each allowed sync interval.
"""

from __future__ import annotations

from coformer.adapters import Canonical
from coformer.decompose import compute_importance, shape_of
from coformer.errors import InfeasibleFleetError
from coformer.fleet.profile import Fleet
from coformer.search.config import SearchConfig
from coformer.search.evaluate import MIB, Pricer
from coformer.search.space import SearchSpace


def size(n: float) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB / 10 else f"{n / 1024:.1f} KiB"


def check_fleet(canonical: Canonical, fleet: Fleet, config: SearchConfig) -> None:
    """``check_fits`` from the model alone (no calibration data): call it before loading any."""
    pricer = Pricer(canonical, fleet, config.workload(), compute_importance(canonical.body, "magnitude"))
    check_fits(SearchSpace(fleet, shape_of(canonical), config), pricer)


def check_fits(space: SearchSpace, pricer: Pricer) -> None:
    """Return if some smallest policy fits; else raise naming each overflowing device and its shortfall."""
    fleet = space.fleet
    by_memory = sorted(fleet.names, key=lambda n: -fleet.devices[fleet.names.index(n)].memory_bytes)
    groups = [by_memory[:k] for k in range(1, len(by_memory) + 1)] if space.choose_devices else [fleet.names]
    worst = None
    for names in groups:
        for sync in space.sync:
            candidate = space.smallest(names, sync)
            if not candidate.shares:
                continue
            report = pricer.cost(candidate)
            if report.feasible:
                return
            if names == groups[-1]:
                total = sum(over for _, over in report.overflow)
                if worst is None or total < worst[0]:
                    worst = (total, candidate, report)
    _, candidate, report = worst
    memory = {d.name: d.memory_bytes for d in [*fleet.devices, fleet.aggregator]}  # a gateway can overflow too
    shortfalls = "; ".join(f"'{name}' needs {size(over)} more than its {size(memory[name])}" for name, over in report.overflow)
    raise InfeasibleFleetError(
        f"no decomposition policy fits fleet '{fleet.name}': even the smallest one (devices {'+'.join(candidate.names)}, "
        f"rho={candidate.keep:g}, channels={candidate.shares[0].channels:g}, s={candidate.sync}, units in proportion "
        f"to memory) overflows: {shortfalls}. Use devices with more memory or more devices, or lower "
        "search.keep_min / search.channels_min."
    )
