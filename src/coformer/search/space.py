"""The search space over decomposition policies for one fleet, and its decoding into policies.

A point holds, per fleet device, whether it takes part and its relative shares of heads and of
FFN neurons (normalised across the devices that take part) and the fraction of hidden channels
its stream keeps; plus the kept fraction rho, the sync interval s and the dealing rule. Every
parameter is always sampled (a flat space suits multivariate TPE); a value that does not apply
(the shares of a device left out, narrower channels under s = 1, which shares one full-width
stream) is ignored when decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray import tune

from coformer.decompose import DeviceShare, ModelShape
from coformer.decompose.builder import block_quotas
from coformer.fleet.profile import Fleet
from coformer.search.config import SearchConfig, SearchConfigError

SHARE_RANGE = (0.05, 1.0)  # relative share of units a taking-part device may draw


def uniform(low: float, high: float):
    """A Tune domain even for an empty range (Optuna drops plain constants from its space)."""
    return tune.uniform(low, high) if low < high else tune.choice([high])


@dataclass(frozen=True)
class Candidate:
    """A decoded point: the arguments of ``build_policy`` plus the devices that take part."""

    shares: tuple[DeviceShare, ...]  # devices that take part, in fleet order
    keep: float  # rho
    sync: int  # s
    dealing: str  # balanced | grouped

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.shares]

    @property
    def method(self) -> str:
        return method(len(self.shares), self.sync)


METHODS = {  # the CoFormer paper's names for what a policy is (DESIGN section 7)
    "Single-Edge": "compressed single model",
    "Distri-Edge": "tensor parallelism (s = 1)",
    "Aggregate-Edge": "CoFormer: own streams, aggregated once (s = 0)",
    "Aggregate-Edge/s=k": "own streams merged every k blocks",
}


def method(devices: int, sync: int) -> str:
    """The method a policy amounts to: one device is a compressed single model, whatever its s."""
    if devices == 1:
        return "Single-Edge"
    if sync == 1:
        return "Distri-Edge"
    return "Aggregate-Edge" if sync == 0 else f"Aggregate-Edge/s={sync}"


def kept_units(keep: float, size: int) -> int:
    """How many units of a block a kept fraction leaves (as ``build_policy`` counts them)."""
    return max(1, round(keep * size))


class SearchSpace:
    def __init__(self, fleet: Fleet, shape: ModelShape, config: SearchConfig):
        self.fleet, self.shape, self.config = fleet, shape, config
        self.sync = [s for s in config.sync if s <= shape.num_layers]
        if not self.sync:
            raise SearchConfigError(
                f"search.sync {config.sync}: no interval fits a model of {shape.num_layers} blocks; use 0..{shape.num_layers}"
            )
        self.choose_devices = config.choose_devices and len(fleet.devices) > 1
        slashed = [n for n in fleet.names if "/" in n]
        if slashed:
            raise SearchConfigError(f"device names {slashed} contain '/', which Tune uses to nest parameters; rename them")

    def param_space(self) -> dict:
        """Ray Tune domains, nested as ``{"devices": {name: {...}}, "keep", "sync", "dealing"}``."""
        c = self.config
        per_device = {
            "heads": uniform(*SHARE_RANGE),
            "neurons": uniform(*SHARE_RANGE),
            "channels": uniform(c.channels_min, 1.0),
            "use": tune.choice([True, False] if self.choose_devices else [True]),
        }
        return {
            "devices": {name: dict(per_device) for name in self.fleet.names},
            "keep": uniform(c.keep_min, 1.0),
            "sync": tune.choice(self.sync),
            "dealing": tune.choice(list(c.dealing)),
        }

    def decode(self, params: dict) -> Candidate:
        """A sampled point as a candidate; devices whose shares round to no unit do not take part."""
        sync = int(params["sync"])
        keep = float(params["keep"])
        shares = []
        for name in self.fleet.names:
            p = params["devices"][name]
            if not p["use"]:
                continue
            channels = 1.0 if sync == 1 else float(p["channels"])
            shares.append(DeviceShare(name=name, heads=p["heads"], neurons=p["neurons"], channels=channels))
        return self.candidate(shares, keep, sync, str(params["dealing"]))

    def candidate(self, shares: list[DeviceShare], keep: float, sync: int, dealing: str) -> Candidate:
        """The devices that hold units; one of them alone is a compressed single model: no merge,
        the full stream (as ``Policy`` makes it), so its s and channels are not left to chance."""
        shares = self.holding_units(shares, keep)
        if len(shares) == 1:
            shares, sync = [shares[0].model_copy(update={"channels": 1.0})], 1
        return Candidate(tuple(shares), keep, sync, dealing)

    def holding_units(self, shares: list[DeviceShare], keep: float) -> list[DeviceShare]:
        """The shares whose devices ``build_policy`` would give at least one unit in some block."""
        units = [0] * len(shares)
        for kind, size in (("heads", self.shape.num_heads), ("neurons", self.shape.ffn_size)):
            for counts in block_quotas(kept_units(keep, size), [getattr(s, kind) for s in shares], self.shape.num_layers):
                units = [u + c for u, c in zip(units, counts)]
        return [s for s, u in zip(shares, units) if u > 0]

    def smallest(self, names: list[str], sync: int) -> Candidate:
        """The least memory we can ask of ``names``: lowest rho, narrowest streams, units by memory."""
        keep, channels = self.config.keep_min, 1.0 if sync == 1 else self.config.channels_min
        shares = [
            DeviceShare(name=d.name, heads=d.memory_bytes, neurons=d.memory_bytes, channels=channels)
            for d in self.fleet.devices
            if d.name in names
        ]
        return self.candidate(shares, keep, sync, "balanced")

    def proportional(self, names: list[str]) -> Candidate:
        """The heuristic: shares proportional to device speed, s = 0, rho = 1, full streams."""
        shares = [
            DeviceShare(name=d.name, heads=d.matmul_flops, neurons=d.matmul_flops) for d in self.fleet.devices if d.name in names
        ]
        return self.candidate(shares, 1.0, 0, "balanced")
