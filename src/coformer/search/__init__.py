"""DeBo stage 1: search decomposition policies for a fleet with Ray Tune and Optuna.

Minimise ``T(pi) + lambda * D(pi)`` subject to ``M_k(pi) <= Mem_k``: ``T`` and ``M_k`` from the
cost model, ``D`` measured through the reference executor after a closed-form refit, an estimate
of what calibration will restore (``refit.py``; the uncalibrated ``D`` is reported beside it).

Names are imported on first use, so ``coformer.search.config`` (read by the CLI at start-up)
does not pull in Ray and Optuna.
"""

import os

from coformer.lazy import lazy_exports

# Before Ray is imported anywhere: no usage stats, the plain (quiet) Tune output, and the
# experiment state snapshotted every 5 s (default: adaptive, >= 10 s) so that an interrupted
# search loses at most a few trials when it is resumed.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")

EXPORTS = {
    "Candidate": "coformer.search.space",
    "Evaluator": "coformer.search.evaluate",
    "SearchConfig": "coformer.search.config",
    "SearchConfigError": "coformer.search.config",
    "SearchResult": "coformer.search.run",
    "SearchSpace": "coformer.search.space",
    "check_fleet": "coformer.search.feasibility",
    "run_search": "coformer.search.run",
}
__all__ = sorted(EXPORTS)

__getattr__ = lazy_exports(__name__, EXPORTS)
