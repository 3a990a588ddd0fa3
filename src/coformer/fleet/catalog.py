"""The catalog: published device specs and named fleets (YAML shipped in ``coformer/catalog/``).

A fleet entry either references a device type (``type: raspberry-pi-5``, ``link: wifi5``,
``precision: fp32``, plus any profile field to override, e.g. a smaller ``memory_bytes`` budget)
or gives a full profile inline. ``aggregator`` names one of the devices or is an entry itself
(a gateway that runs no sub-model).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml

from coformer.fleet.profile import DeviceProfile, Fleet, FleetError, validate_fleet, validate_profile

REFERENCE_KEYS = {"type", "link", "precision"}


@lru_cache(maxsize=None)
def read_catalog(name: str) -> dict:
    return yaml.safe_load(resources.files("coformer").joinpath("catalog", name).read_text())


def device_types() -> dict[str, dict]:
    return read_catalog("devices.yaml")["device_types"]


def link_types() -> dict[str, dict]:
    return read_catalog("devices.yaml")["links"]


def fleet_names() -> list[str]:
    return sorted(read_catalog("fleets.yaml")["fleets"])


def catalog_profile(name: str, device_type: str, link: str | dict, precision: str = "fp32", **overrides) -> DeviceProfile:
    """A profile from published figures (see the header of devices.yaml for the formulas)."""
    return validate_profile(catalog_entry({"name": name, "type": device_type, "link": link, "precision": precision, **overrides}, name), name)


def catalog_entry(entry: dict, where: str) -> dict:
    """Turn a reference entry into the fields of a DeviceProfile; errors name ``where.<key>``."""
    types, links = device_types(), link_types()
    kind = entry["type"]
    if kind not in types:
        raise FleetError(f"{where}.type: unknown device type {kind!r}; the catalog has {', '.join(sorted(types))}")
    spec = types[kind]
    precision = entry.get("precision", "fp32")
    if precision not in spec["peak_flops"]:
        raise FleetError(f"{where}.precision: {precision!r} is not one of {sorted(spec['peak_flops'])} for {kind}")
    link = entry.get("link")
    if isinstance(link, str):
        if link not in links:
            raise FleetError(f"{where}.link: unknown link {link!r}; the catalog has {', '.join(sorted(links))} or give {{bandwidth, rtt_s}}")
        link = links[link]
    if not isinstance(link, dict) or not {"bandwidth", "rtt_s"} <= set(link):
        raise FleetError(f"{where}.link: give a catalog link name or a mapping with bandwidth (bytes/s) and rtt_s")
    fields = {
        "name": entry.get("name", kind),
        "matmul_flops": spec["peak_flops"][precision] * spec["matmul_efficiency"],
        "memory_bandwidth": spec["peak_memory_bandwidth"] * spec["bandwidth_efficiency"],
        "memory_bytes": spec["memory_total_bytes"] - spec["memory_reserved_bytes"],
        "link_bandwidth": link["bandwidth"],
        "link_rtt_s": link["rtt_s"],
        "active_power_w": spec["active_power_w"],
        "idle_power_w": spec["idle_power_w"],
        "block_overhead_s": spec.get("block_overhead_s", 0.0),
        "forward_overhead_s": spec.get("forward_overhead_s", 0.0),
        "source": f"catalog: {kind} ({precision})",
    }
    return fields | {k: v for k, v in entry.items() if k not in REFERENCE_KEYS}


def resolve_entry(entry, where: str) -> dict:
    if not isinstance(entry, dict):
        raise FleetError(f"{where}: a device entry must be a mapping, got {entry!r}")
    return catalog_entry(entry, where) if "type" in entry else entry


def resolve_fleet(spec: str | dict, what: str) -> Fleet:
    """A catalog fleet by name, or a fleet mapping (references resolved, then validated)."""
    if isinstance(spec, str):
        fleets = read_catalog("fleets.yaml")["fleets"]
        if spec not in fleets:
            raise FleetError(
                f"unknown fleet {spec!r}: the catalog has {', '.join(fleet_names())}; or give a path to a YAML/JSON fleet file"
            )
        spec = {"name": spec} | fleets[spec]
    data = {k: v for k, v in spec.items() if k != "description"}
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices:
        raise FleetError(f"{what}: devices: give a non-empty list of device entries")
    data["devices"] = [resolve_entry(d, f"devices.{i}") for i, d in enumerate(devices)]
    aggregator = data.get("aggregator")
    if isinstance(aggregator, str):
        match = [d for d in data["devices"] if d.get("name") == aggregator]
        if not match:
            names = [d.get("name") for d in data["devices"]]
            raise FleetError(f"{what}: aggregator: {aggregator!r} is not a device of the fleet ({names}); name one or give a gateway entry")
        data["aggregator"] = match[0]
    elif aggregator is not None:
        data["aggregator"] = resolve_entry(aggregator, "aggregator")
    return validate_fleet(data, what)
