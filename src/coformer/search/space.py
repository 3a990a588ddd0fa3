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

from coformer.decompose import DeviceShare, ModelShape, quotas
from coformer.fleet.profile import Fleet
from coformer.search.config import SearchConfig, SearchConfigError

SHARE_RANGE = (0.05, 1.0)  # relative share of units a taking-part device may draw


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

    def param_space(self) -> dict:
        """Ray Tune domains, nested as ``{"devices": {name: {...}}, "keep", "sync", "dealing"}``."""
        c = self.config
        per_device = {
            "heads": tune.uniform(*SHARE_RANGE),
            "neurons": tune.uniform(*SHARE_RANGE),
            "channels": tune.uniform(c.channels_min, 1.0) if c.channels_min < 1 else 1.0,
        }
        if self.choose_devices:
            per_device["use"] = tune.choice([True, False])
        space = {
            "devices": {name: dict(per_device) for name in self.fleet.names},
            "keep": tune.uniform(c.keep_min, 1.0) if c.keep_min < 1 else 1.0,
            "sync": tune.choice(self.sync) if len(self.sync) > 1 else self.sync[0],
            "dealing": tune.choice(list(c.dealing)) if len(c.dealing) > 1 else c.dealing[0],
        }
        return space

    def decode(self, params: dict) -> Candidate:
        """A sampled point as a candidate; devices whose shares round to no unit do not take part."""
        sync = int(params["sync"])
        keep = float(params["keep"])
        shares = []
        for name in self.fleet.names:
            p = params["devices"][name]
            if self.choose_devices and not p["use"]:
                continue
            channels = 1.0 if sync == 1 else float(p["channels"])
            shares.append(DeviceShare(name=name, heads=p["heads"], neurons=p["neurons"], channels=channels))
        return Candidate(tuple(self.holding_units(shares, keep)), keep, sync, str(params["dealing"]))

    def holding_units(self, shares: list[DeviceShare], keep: float) -> list[DeviceShare]:
        heads = quotas(kept_units(keep, self.shape.num_heads), [s.heads for s in shares])
        neurons = quotas(kept_units(keep, self.shape.ffn_size), [s.neurons for s in shares])
        return [s for s, h, n in zip(shares, heads, neurons) if h + n > 0]

    def smallest(self, names: list[str], sync: int) -> Candidate:
        """The least memory we can ask of ``names``: lowest rho, narrowest streams, units by memory."""
        keep, channels = self.config.keep_min, 1.0 if sync == 1 else self.config.channels_min
        shares = []
        for name in names:
            memory = self.fleet.devices[self.fleet.names.index(name)].memory_bytes
            shares.append(DeviceShare(name=name, heads=memory, neurons=memory, channels=channels))
        return Candidate(tuple(self.holding_units(shares, keep)), keep, sync, "balanced")

    def proportional(self, names: list[str]) -> Candidate:
        """The heuristic: shares proportional to device speed, s = 0, rho = 1, full streams."""
        shares = []
        for name in names:
            speed = self.fleet.devices[self.fleet.names.index(name)].matmul_flops
            shares.append(DeviceShare(name=name, heads=speed, neurons=speed))
        return Candidate(tuple(self.holding_units(shares, 1.0)), 1.0, 0, "balanced")
