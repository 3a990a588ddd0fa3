"""DVC stage ``package``: the calibrated sub-models and aggregator as BentoML bentos (``coformer.stages.package``)."""

from coformer.stages import package
from pipelines.common import main

if __name__ == "__main__":
    main(package.run)
