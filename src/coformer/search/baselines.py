"""The hand-made baseline the search must beat: shares proportional to device speed, s = 0, rho = 1.

Which devices? The sensible rule a person with the cost model would apply: of the k fastest
devices (k = 1..N), the set with the lowest predicted latency among those that fit in memory
(every device if none fits, which then shows up as infeasible).
"""

from __future__ import annotations

from coformer.search.evaluate import Pricer
from coformer.search.space import Candidate, SearchSpace


def heuristic(space: SearchSpace, pricer: Pricer) -> Candidate:
    fleet = space.fleet
    by_speed = sorted(fleet.names, key=lambda n: -fleet.devices[fleet.names.index(n)].matmul_flops)
    fitting = []
    for k in range(1, len(by_speed) + 1):
        candidate = space.proportional(by_speed[:k])
        report = pricer.cost(candidate)
        if report.feasible:
            fitting.append((report.latency_s, k, candidate))
    return min(fitting, key=lambda f: f[:2])[2] if fitting else space.proportional(fleet.names)
