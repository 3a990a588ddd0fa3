"""Our own exception types: every message names the bad value and how to fix it.

They deliberately do not subclass ``ValueError`` so that pydantic validators can raise them
unchanged instead of folding them into a generic ``ValidationError``.
"""


class CoFormerError(Exception):
    """Base class for errors a user can act on; the CLI prints them as one line."""


class PolicyError(CoFormerError):
    """A decomposition policy is inconsistent with itself or with the model."""


class ModelError(CoFormerError):
    """A model cannot be loaded or has an architecture we do not support."""


class ArtifactError(CoFormerError):
    """A saved sub-model, aggregator or policy on disk is missing or corrupt."""


class DataError(CoFormerError):
    """A dataset cannot be loaded or does not have the expected fields."""


class InfeasibleFleetError(CoFormerError):
    """Not even the smallest decomposition policy fits the memory of the fleet's devices."""
