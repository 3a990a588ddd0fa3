"""``params.yaml``: one validated pydantic model per section, the single source of every knob.

The DVC stages and the ``coformer`` CLI read parameters through ``load_params`` only, so the same
file gives the same run either way. Defaults here equal the values shipped in ``params.yaml``
(``tests/test_params.py`` compares them). Any problem — an unknown key, a wrong type, a value
out of range, an unknown fleet — is one ``ParamsError`` line naming the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coformer.calibrate.config import CalibrationConfig
from coformer.errors import CoFormerError
from coformer.evaluation.config import EvaluateConfig
from coformer.search.config import SearchConfig
from coformer.serving.config import PackageConfig

PARAMS_FILE = Path("params.yaml")
INHERITED = {"seed"}  # keys of stage sections filled from ``base`` instead of written twice


class ParamsError(CoFormerError):
    """params.yaml (or a --set override) has an unknown key or a bad value."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseParams(Section):
    seed: int = 0  # seeds data order, the search sampler and calibration
    model: str = "all-MiniLM-L6-v2"  # hub id, local folder, or the embedded default
    fleet: str = "default"  # a catalog fleet name, "local" (this machine's cores), or a fleet YAML/JSON path
    tracking_uri: str = "sqlite:///mlflow.db"  # MLflow tracking store (a server URL works too)
    experiment: str = Field(default="coformer", min_length=1)  # MLflow experiment; registered models are named after it

    @field_validator("fleet")
    @classmethod
    def _known_fleet(cls, fleet: str) -> str:
        from coformer.fleet.catalog import fleet_names

        names = fleet_names()
        if fleet != "local" and fleet not in names and not Path(fleet).is_file():
            raise ParamsError(f"base.fleet {fleet!r} is not a catalog fleet ({', '.join([*names, 'local'])}) nor a fleet file")
        return fleet


class DataParams(Section):
    source: str = "builtin"  # builtin (Python's own documentation) | hub dataset id | local .txt/.jsonl/.csv file or image folder
    text_field: str = "text"  # column holding the text in a dataset or file source
    label_field: str | None = None  # column of class ids (an image folder's: label): classifiers then report accuracy and may use calibrate.task_weight
    calibration_limit: int | None = Field(default=None, ge=1)  # keep at most this many calibration texts/images (null: all)
    eval_limit: int | None = Field(default=None, ge=1)  # keep at most this many held-out texts and pairs (null: all)
    max_length: int = Field(default=128, ge=1)  # tokens per text when evaluating


class ProfileParams(Section):
    batch: int = Field(default=1, ge=1)  # request shape this machine is measured at: sequences
    seq_len: int = Field(default=128, ge=1)  # tokens per sequence
    core: int | None = Field(default=None, ge=0)  # core the one-core device is pinned to (null: the last one)
    whole_machine: bool = True  # also measure all cores together as one device (metrics only)
    repeats: int = Field(default=7, ge=2)  # timed repeats of every measurement
    statistic: Literal["min", "median"] = "min"  # min (robust on a shared machine) | median (a dedicated board)
    active_power_w: float = Field(default=0.0, ge=0)  # this machine's power while computing (0: unknown, energy 0)
    idle_power_w: float = Field(default=0.0, ge=0)  # and while idle
    local_devices: int | None = Field(default=None, ge=1)  # with base.fleet: local, how many one-core devices (null: one per core)

    @model_validator(mode="after")
    def _power(self) -> ProfileParams:
        if self.idle_power_w > self.active_power_w:
            raise ParamsError(f"profile.idle_power_w {self.idle_power_w} exceeds profile.active_power_w {self.active_power_w}")
        return self


class Params(Section):
    base: BaseParams = BaseParams()
    data: DataParams = DataParams()
    profile: ProfileParams = ProfileParams()
    search: SearchConfig = SearchConfig()
    calibrate: CalibrationConfig = CalibrationConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    package: PackageConfig = PackageConfig()

    @model_validator(mode="before")
    @classmethod
    def _inherit(cls, values):
        """Stage sections take ``seed`` from ``base`` (written once in params.yaml)."""
        if not isinstance(values, dict):
            return values
        seed = (values.get("base") or {}).get("seed", 0)
        values = dict(values)
        for name, field in cls.model_fields.items():
            if name == "base":
                continue
            section = values.get(name)
            if section is None:
                values[name] = section = {}
            if isinstance(section, dict) and "seed" in field.annotation.model_fields:
                if "seed" in section:
                    raise ParamsError(f"{name}.seed is set by base.seed; remove {name}.seed")
                values[name] = {**section, "seed": seed}
        return values


def describe(error: dict) -> str:
    """One pydantic error as ``key: problem (got value)``, naming the allowed keys for a typo."""
    key = ".".join(map(str, error["loc"]))
    if error["type"] == "extra_forbidden":
        section = error["loc"][0] if len(error["loc"]) > 1 else None
        fields = Params.model_fields[section].annotation.model_fields if section in Params.model_fields else Params.model_fields
        known = ", ".join(f for f in fields if f not in INHERITED)
        return f"{key} is not a parameter (known: {known})"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def validate(values: dict, origin: str) -> Params:
    try:
        return Params.model_validate(values)
    except ValidationError as e:
        raise ParamsError(f"{origin}: " + "; ".join(describe(x) for x in e.errors())) from None
    except ParamsError as e:
        raise ParamsError(f"{origin}: {e}") from None
    except CoFormerError as e:  # a section's own validator (search, calibrate, ...) names its key
        raise ParamsError(f"{origin}: {e}") from None


def set_key(values: dict, assignment: str) -> None:
    """Apply one ``section.key=value`` override (the value read as YAML, as ``dvc exp run -S`` does)."""
    key, sep, raw = assignment.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot:
        raise ParamsError(f"--set {assignment!r} must look like section.key=value, e.g. calibrate.lr=5e-4")
    values.setdefault(section, {})
    if not isinstance(values[section], dict):
        raise ParamsError(f"--set {assignment!r}: {section} is not a params section")
    values[section][name] = yaml.safe_load(raw)


def load_params(path: str | Path | None = PARAMS_FILE, overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Validated parameters from ``path`` (None: the defaults) with ``section.key=value`` overrides on top."""
    values: dict = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ParamsError(f"no params file at {path}; run from the project root or give --params")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ParamsError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the line it names") from None
        if not isinstance(values, dict):
            raise ParamsError(f"{path} must map section names to sections, got {type(values).__name__}")
        origin = str(path)
    for assignment in overrides:
        set_key(values, assignment)
    return validate(values, origin)
