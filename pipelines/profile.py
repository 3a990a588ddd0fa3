"""DVC stage ``profile``: this machine measured, and the fleet resolved (``coformer.stages.profile``)."""

from pipelines.common import main

if __name__ == "__main__":
    main("coformer.stages.profile")
