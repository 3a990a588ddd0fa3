"""DVC stage ``search``: DeBo stage 1, the decomposition policy search (``coformer.stages.search``)."""

from pipelines.common import main

if __name__ == "__main__":
    main("coformer.stages.search")
