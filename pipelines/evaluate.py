"""DVC stage ``evaluate``: every method as real device processes, side by side (``coformer.stages.evaluate``)."""

from pipelines.common import main

if __name__ == "__main__":
    main("coformer.stages.evaluate")
