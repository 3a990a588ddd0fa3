"""DVC stage ``prepare``: the calibration and evaluation splits every later stage reads (``coformer.stages.prepare``)."""

from pipelines.common import main

if __name__ == "__main__":
    main("coformer.stages.prepare")
