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
from coformer.adapters import Canonical
from coformer.params import Params


def read_prepared(folder: Path | None, params: Params, canonical: Canonical) -> Prepared:
    config = canonical.config
    if folder is not None:
        prepared = Prepared.load(folder)
        if prepared.kind != config.input_kind:
            raise CoFormerError(f"{folder} holds {prepared.kind} data but {params.base.model} takes {config.input_kind}; run prepare again")
    else:
        data = params.data
        prepared = prepare_data(
            config.input_kind, data.source, data.text_field, params.base.seed, data.calibration_limit, data.eval_limit,
            config.image_size or 224, data.label_field,
        )  # fmt: skip
    check_labels(prepared, canonical.head.config, params.base.model)
    return prepared


def check_labels(prepared: Prepared, head, model: str) -> None:
    """Class ids only for a classifier, and only ids it has: anything else would be scored wrongly."""
    if not prepared.labels:
        return
    if head.projection != "classifier":
        raise CoFormerError(f"data.label_field is set but {model} has no classifier head; set data.label_field: null")
    largest = max(max(labels, default=0) for labels in prepared.labels.values())
    if largest >= head.num_outputs:
        raise CoFormerError(
            f"the data has class id {largest} but {model} has {head.num_outputs} classes; give data whose label ids are the model's "
            "(its config's id2label)"
        )


def read_fleet(path: Path | None, params: Params) -> Fleet:
    if path is not None:
        return load_fleet(path)
    if params.base.fleet == "local":
        raise CoFormerError("base.fleet is 'local': run `coformer profile` (or the profile stage) and give its fleet.json with --fleet")
    return load_fleet(params.base.fleet)
