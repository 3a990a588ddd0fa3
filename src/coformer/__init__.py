"""CoFormer: decompose a transformer into independent sub-models for unequal edge devices.

Importing the package is cheap on purpose: the serving side imports ``coformer.modeling`` alone
and must not pull in ``transformers``.
"""

__version__ = "0.1.0"
