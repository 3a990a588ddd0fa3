"""params.yaml against its pydantic models: the same keys and defaults, one line per bad value."""

from __future__ import annotations

import pytest
import yaml

from coformer.params import INHERITED, Params, ParamsError, load_params
from conftest import ROOT


def test_params_yaml_has_every_key_with_the_models_defaults():
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(shipped) == set(Params.model_fields)
    for name, field in Params.model_fields.items():
        defaults = field.annotation().model_dump(by_alias=True)
        inherited = INHERITED if name != "base" else set()
        assert set(shipped[name]) == set(defaults) - inherited, name
        for key, value in shipped[name].items():
            assert defaults[key] == value, f"{name}.{key}: params.yaml {value!r}, model default {defaults[key]!r}"


def test_every_key_in_params_yaml_has_a_comment():
    lines = (ROOT / "params.yaml").read_text().splitlines()
    keys = [line for line in lines if line.startswith("  ") and ":" in line and not line.lstrip().startswith("#")]
    assert keys and all("#" in line for line in keys), [line for line in keys if "#" not in line]


def test_seed_comes_from_base():
    params = load_params(None, ["base.seed=7"])
    assert params.search.seed == params.calibrate.seed == 7


@pytest.mark.parametrize(
    "override, names",
    [
        ("calibrate.lrr=1e-3", ["calibrate.lrr is not a parameter", "lr,"]),
        ("calibrate.final_steps=-5", ["calibrate.final_steps", "greater than or equal to 0", "-5"]),
        ("search.trials=many", ["search.trials", "integer", "'many'"]),
        ("base.fleet=moonbase", ["base.fleet 'moonbase'", "default"]),
        ("calibrate.hidden_loss=l1", ["calibrate.hidden_loss", "'mse' or 'cosine'"]),
        ("nosuch.key=1", ["nosuch is not a parameter", "calibrate"]),
        ("calibrate.seed=3", ["calibrate.seed is set by base.seed"]),
    ],
)
def test_bad_values_are_one_line_naming_the_key(override, names):
    with pytest.raises(ParamsError) as raised:
        load_params(ROOT / "params.yaml", [override])
    message = str(raised.value)
    assert "\n" not in message and message.startswith(str(ROOT / "params.yaml"))
    for name in names:
        assert name in message, message


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(ParamsError, match="no params file"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("base: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
