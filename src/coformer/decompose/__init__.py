"""Importance, policies and slicing: from the original model to per-device sub-models."""

from coformer.decompose.builder import DeviceShare, build_policy, quotas
from coformer.decompose.importance import Importance, compute_importance
from coformer.decompose.policy import DevicePolicy, ModelShape, Policy
from coformer.decompose.slicing import decompose, shape_of

__all__ = [
    "DevicePolicy",
    "DeviceShare",
    "Importance",
    "ModelShape",
    "Policy",
    "build_policy",
    "compute_importance",
    "decompose",
    "quotas",
    "shape_of",
]
