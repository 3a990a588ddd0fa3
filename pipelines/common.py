"""What every stage script shares: validated parameters, the paths dvc.yaml passes, errors as one line.

A stage runs as ``python -m pipelines.<stage> name=path ...`` from the repository root. Its
paths are written once, in ``dvc.yaml`` (the ``dirs`` variables), and arrive here as arguments
named after the stage function's parameters; the work itself is one function of
``coformer.stages`` that the ``coformer`` CLI calls too. Running as a module (not a script) keeps
``pipelines/profile.py`` from shadowing the standard library's ``profile``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from coformer.errors import CoFormerError
from coformer.params import load_params


def paths(arguments: list[str]) -> dict[str, Path]:
    named = {}
    for argument in arguments:
        name, sep, path = argument.partition("=")
        if not sep or not path:
            raise CoFormerError(f"stage argument {argument!r} must look like name=path (dvc.yaml passes them)")
        named[name] = Path(path)
    return named


def main(stage: str) -> None:
    """Run ``<stage module>.run(params, **paths)``; our own errors become one line on stderr and exit
    code 2. The parameters are read before the stage's module is imported, so a bad params.yaml
    is reported in a second or two rather than after Lightning or Ray has loaded."""
    try:
        params, named = load_params(), paths(sys.argv[1:])
        importlib.import_module(stage).run(params, **named)
    except CoFormerError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
