"""Torch-only modules that run on the devices and the aggregator (no transformers needed)."""

from coformer.modeling.aggregator import Aggregator, AggregatorConfig, sync_points
from coformer.modeling.artifacts import load_aggregator, load_submodel, save_module
from coformer.modeling.heads import HeadConfig, OutputHead, Readout
from coformer.modeling.submodel import KVCache, SubModel, SubModelConfig

__all__ = [
    "Aggregator",
    "AggregatorConfig",
    "HeadConfig",
    "KVCache",
    "OutputHead",
    "Readout",
    "SubModel",
    "SubModelConfig",
    "load_aggregator",
    "load_submodel",
    "save_module",
    "sync_points",
]
