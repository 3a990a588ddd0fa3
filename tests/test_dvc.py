"""dvc.yaml declares what each stage runs: every module its script can import is a dependency.

The closure is read statically from the stage script's ``import`` statements (function-level ones
included) and from module names written as strings (``coformer.search`` imports lazily), so a
module added to a stage's code path without being declared fails here, not as a stale
``dvc status`` months later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

SRC = ROOT / "src"
# modules that read files beside the code: the fleet catalog, and the services `bentoml build` packs
DATA_FILES = {"src/coformer/fleet/catalog.py": "src/coformer/catalog", "src/coformer/serving/packaging.py": "bento"}


def module_file(name: str) -> Path | None:
    base = (SRC if name.startswith("coformer") else ROOT) / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = path.relative_to(SRC if SRC in path.parents else ROOT).parent.parts
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(package[: len(package) - node.level + 1] + ((module,) if module else ()))
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("coformer."):
            names.add(node.value)
    return {n for n in names if n.split(".")[0] in ("coformer", "pipelines")}


def closure(script: Path) -> set[str]:
    """Repository-relative files the script can execute, package ``__init__``s included."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path):
            parts = name.split(".")
            todo += [f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i]))) and f not in seen]
    files = {str(p.relative_to(ROOT)) for p in seen}
    return files | {DATA_FILES[f] for f in files if f in DATA_FILES}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_declares_the_code_it_runs(stage):
    script = ROOT / "pipelines" / f"{stage}.py"
    assert f"pipelines.{stage}" in STAGES[stage]["cmd"]
    missing = sorted(f for f in closure(script) if not covered(f, STAGES[stage]["deps"]) and not f.endswith("pipelines/__init__.py"))
    assert not missing, f"dvc.yaml stage {stage!r} runs but does not depend on {missing}"


def test_closure_follows_lazy_and_function_level_imports():
    files = closure(ROOT / "pipelines" / "search.py")
    assert "src/coformer/search/run.py" in files  # through coformer.search's lazy EXPORTS
    assert "src/coformer/catalog" in files  # the fleet catalog's YAML files
