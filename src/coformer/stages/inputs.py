"""What a stage reads from the stages before it, or (the CLI, without those folders) from params.

The DVC scripts always pass the upstream folders that ``dvc.yaml`` declares; a CLI user may leave
them out, and then gets the same data read from ``params.yaml`` on the spot: the prepare stage is
deterministic and a catalog fleet is what the profile stage would copy.
"""

from __future__ import annotations

from pathlib import Path

from coformer.data.prepared import Prepared, prepare_data
from coformer.errors import CoFormerError
from coformer.fleet.profile import Fleet, load_fleet
from coformer.modeling import SubModelConfig
from coformer.params import Params


def read_prepared(folder: Path | None, params: Params, config: SubModelConfig) -> Prepared:
    if folder is not None:
        prepared = Prepared.load(folder)
        if prepared.kind != config.input_kind:
            raise CoFormerError(f"{folder} holds {prepared.kind} data but {params.base.model} takes {config.input_kind}; run prepare again")
        return prepared
    data = params.data
    return prepare_data(
        config.input_kind, data.source, data.text_field, params.base.seed, data.calibration_limit, data.eval_limit, config.image_size or 224
    )


def read_fleet(path: Path | None, params: Params) -> Fleet:
    if path is not None:
        return load_fleet(path)
    if params.base.fleet == "local":
        raise CoFormerError("base.fleet is 'local': run `coformer profile` (or the profile stage) and give its fleet.json with --fleet")
    return load_fleet(params.base.fleet)
