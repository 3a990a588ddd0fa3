"""DVC stage ``profile``: this machine measured, and the fleet resolved (``coformer.stages.profile``)."""

from coformer.stages import profile
from pipelines.common import main

if __name__ == "__main__":
    main(profile.run)
