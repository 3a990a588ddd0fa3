"""Device profiles, the catalog of edge devices, fleets, and the cost model."""

from coformer.fleet.catalog import catalog_profile, device_types, fleet_names, link_types
from coformer.fleet.cost import CostReport, UnitCounts, estimate, estimate_pipeline
from coformer.fleet.dims import ModelDims, Workload
from coformer.fleet.profile import DeviceProfile, Fleet, FleetError, load_fleet, load_profile

__all__ = [
    "CostReport",
    "DeviceProfile",
    "Fleet",
    "FleetError",
    "ModelDims",
    "UnitCounts",
    "Workload",
    "catalog_profile",
    "device_types",
    "estimate",
    "estimate_pipeline",
    "fleet_names",
    "link_types",
    "load_fleet",
    "load_profile",
]
