"""DVC stage ``package``: the calibrated sub-models and aggregator as BentoML bentos (``coformer.stages.package``)."""

from pipelines.common import main

if __name__ == "__main__":
    main("coformer.stages.package")
