"""Options every stage command shares: the params file and ``section.key=value`` overrides.

A stage command reads the same ``params.yaml`` the DVC pipeline reads, through the same
``coformer.params.load_params``, and calls the same ``coformer.stages`` function: the CLI and
``dvc repro`` cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

import typer

from coformer.params import PARAMS_FILE, Params, load_params

PARAMS = typer.Option(PARAMS_FILE, "--params", help="params.yaml to read (every section is validated)")
SET = typer.Option([], "--set", help="override one parameter, e.g. --set calibrate.final_steps=200 (repeatable)")
PREPARED = typer.Option(None, help="the prepare stage's data folder; default: read data.source now, as prepare would")
FLEET = typer.Option(None, help="the profile stage's fleet.json; default: base.fleet from the catalog")


def read_params(path: Path, overrides: list[str]) -> Params:
    """``path`` if it exists (else the defaults, when it is the default name) with the overrides on top."""
    return load_params(path if path.is_file() or path != PARAMS_FILE else None, overrides)
