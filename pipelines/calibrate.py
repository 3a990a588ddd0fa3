"""DVC stage ``calibrate``: DeBo stage 2, progressive calibration of the searched policy (``coformer.stages.calibrate``)."""

from pipelines.common import main

if __name__ == "__main__":
    main("coformer.stages.calibrate")
