"""Packaging: the calibrated folder into the BentoML model store and both bentos built offline."""

from __future__ import annotations

import json

import pytest
import yaml
from serving_fleet import saved_student

from coformer.serving.config import Deployment, PackageConfig
from coformer.serving.packaging import RESULT, package


@pytest.mark.slow
def test_package_stores_the_artifacts_and_builds_both_bentos(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    folder, _ = saved_student(tmp_path / "calibrated", "bert", 0)
    config = PackageConfig(deployment=Deployment(failure_mode="degraded"))
    result = package(folder, tmp_path / "out", config)
    assert json.loads((tmp_path / "out" / RESULT).read_text()) == result
    assert result["node"]["tag"].startswith("coformer-node:") and result["aggregator"]["tag"].startswith("coformer-aggregator:")
    assert all(entry["bytes"] > 0 for entry in result.values())
    import bentoml

    stored = bentoml.models.get(result["model"]["tag"]).path
    assert yaml.safe_load(open(f"{stored}/deployment.yaml"))["failure_mode"] == "degraded"
    bento = yaml.safe_load(open(f"{bentoml.bentos.get(result['node']['tag']).path}/bento.yaml"))
    assert [m["tag"] for m in bento["models"]] == [result["model"]["tag"]]


def test_package_config_refuses_unknown_keys():
    with pytest.raises(Exception, match="extra"):
        PackageConfig.model_validate({"modle_name": "x"})
