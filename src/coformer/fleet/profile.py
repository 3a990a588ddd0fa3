"""Device profiles and fleets: what the cost model knows about each edge device and its link.

A profile is either measured where the device stands (``coformer profile``, the edge node's
``/profile``) or taken from the catalog of published specs. A fleet is a list of profiles, each
with its link to the aggregator, plus the aggregator itself (one of the devices or a gateway).

Both are validated pydantic models; files that fail validation raise ``FleetError`` naming the
field (``devices.2.link_bandwidth: ...``) and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from coformer.errors import CoFormerError


class FleetError(CoFormerError):
    """A device profile or fleet is invalid, or a catalog name is unknown."""


class Memo(dict):
    """Derived values cached on a frozen model; never part of its equality or its JSON."""

    def __eq__(self, other) -> bool:
        return isinstance(other, Memo)

    __hash__ = None


class DeviceProfile(BaseModel):
    """One device as the cost model sees it; every rate is what the device reaches in practice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)  # unique within a fleet
    matmul_flops: float = Field(gt=0)  # effective FLOP/s of matrix products at the model's shapes
    memory_bandwidth: float = Field(gt=0)  # bytes/s of memory-bound operators (norms, activation, residual adds, softmax)
    memory_bytes: float = Field(gt=0)  # memory usable by the sub-model (params, activations, KV cache)
    link_bandwidth: float = Field(gt=0)  # bytes/s to the aggregator (each direction)
    link_rtt_s: float = Field(ge=0)  # round-trip time to the aggregator, seconds
    active_power_w: float = Field(ge=0)  # board power while computing, watts
    idle_power_w: float = Field(ge=0)  # board power while waiting (incl. while the radio transfers), watts
    weight_bandwidth: float | None = Field(default=None, gt=0)  # bytes/s a matrix product takes to stream its weights in, on top of its compute; None: memory_bandwidth
    block_overhead_s: float = Field(default=0.0, ge=0)  # fixed cost per transformer block per forward (dispatch, launches)
    forward_overhead_s: float = Field(default=0.0, ge=0)  # fixed cost per sub-model forward outside its blocks (embedding, mask, export)
    source: str = Field(min_length=1)  # "measured on <host> <date>" or "catalog: <device type>"

    @model_validator(mode="after")
    def _idle_below_active(self) -> DeviceProfile:
        if self.idle_power_w > self.active_power_w:
            raise FleetError(
                f"device '{self.name}': idle_power_w={self.idle_power_w} exceeds active_power_w={self.active_power_w}; "
                "idle power must not exceed active power"
            )
        return self


class Fleet(BaseModel):
    """Devices that each run one sub-model, and the aggregator that merges them and runs the head."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    devices: list[DeviceProfile] = Field(min_length=1)  # device k runs row k of a policy
    aggregator: DeviceProfile  # where merging and the head run; if its name is a device's, it is that device
    _memo: Memo = PrivateAttr(default_factory=Memo)

    @model_validator(mode="after")
    def _unique_names(self) -> Fleet:
        names = [d.name for d in self.devices]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FleetError(f"fleet '{self.name}': devices: names must be unique, {duplicates} appear more than once")
        host = self.host_index
        if host >= 0 and self.devices[host] != self.aggregator:
            raise FleetError(
                f"fleet '{self.name}': aggregator '{self.aggregator.name}' has a device's name but other figures; "
                "name the device (aggregator: <name>) or give the gateway its own name"
            )
        return self

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.devices]

    @property
    def host_index(self) -> int:
        """Index of the device that also hosts the aggregator, or -1 for a separate gateway."""
        if "host" not in self._memo:
            names = self.names
            self._memo["host"] = names.index(self.aggregator.name) if self.aggregator.name in names else -1
        return self._memo["host"]

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Per-device figures as (N,) arrays, computed once: the cost model's hot path reads these."""
        if "arrays" not in self._memo:
            self._memo["arrays"] = self._arrays()
        return self._memo["arrays"]

    def _arrays(self) -> dict[str, np.ndarray]:
        fields = ("matmul_flops", "memory_bandwidth", "memory_bytes", "link_bandwidth", "link_rtt_s")
        fields += ("active_power_w", "idle_power_w", "block_overhead_s", "forward_overhead_s")
        out = {f: np.array([getattr(d, f) for d in self.devices], dtype=float) for f in fields}
        out["weight_bandwidth"] = np.array([d.weight_bandwidth or d.memory_bandwidth for d in self.devices], dtype=float)
        local = np.zeros(len(self.devices), dtype=bool)
        if self.host_index >= 0:
            local[self.host_index] = True
        out["remote"] = (~local).astype(float)  # 0 for the device that hosts the aggregator: no network hop
        return out

    def subset(self, names: list[str], aggregator: str | None = None) -> Fleet:
        """A sub-fleet in the given order; the aggregator stays unless it is renamed to a kept device."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise FleetError(f"fleet '{self.name}' has no device {missing}; it has {self.names}")
        devices = [self.devices[self.names.index(n)] for n in names]
        agg = self.aggregator if aggregator is None else devices[names.index(aggregator)]
        return Fleet(name=f"{self.name}[{','.join(names)}]", devices=devices, aggregator=agg)

    def single(self, name: str) -> Fleet:
        """One device that also aggregates: the full-model-on-one-device baseline."""
        return self.subset([name], aggregator=name)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=1))
        return path


def describe(error: ValidationError, what: str) -> FleetError:
    """One readable line per bad field: ``devices.1.link_bandwidth: Input should be greater than 0``."""
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    return FleetError(f"{what} is invalid: " + "; ".join(lines))


def validate_profile(data: dict, what: str = "device profile") -> DeviceProfile:
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as e:
        raise describe(e, what) from None


def validate_fleet(data: dict, what: str = "fleet") -> Fleet:
    try:
        return Fleet.model_validate(data)
    except ValidationError as e:
        raise describe(e, what) from None


def load_profile(path: str | Path) -> DeviceProfile:
    path = Path(path)
    if not path.is_file():
        raise FleetError(f"no device profile at {path}; run `coformer profile --out {path}`")
    return validate_profile(read_mapping(path), str(path))


def load_fleet(spec: str | Path) -> Fleet:
    """A fleet by catalog name ("default", "paper", ...) or from a YAML/JSON file.

    A file may list resolved profiles (as ``Fleet.save`` writes them) or catalog references
    (``type: raspberry-pi-5``, ``link: wifi5``), like the catalog's own fleets.
    """
    from coformer.fleet.catalog import fleet_names, resolve_fleet

    text = str(spec)
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise FleetError(f"no fleet file at {path}; give a catalog fleet ({', '.join(fleet_names())}) or a YAML/JSON path")
        return resolve_fleet(read_mapping(path), str(path))
    return resolve_fleet(text, f"catalog fleet '{text}'")


def read_mapping(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise FleetError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise FleetError(f"{path} must hold a mapping with name, devices and aggregator, got {type(data).__name__}")
    return data
