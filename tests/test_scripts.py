"""The scripts shipped beside the package (examples, benchmarks) import only names that exist."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    p
    for p in sorted((ROOT / "examples").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    if "import exosim" in p.read_text() or "from exosim" in p.read_text()  # bench_cli.py runs the command
]


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(ROOT)) for p in SCRIPTS])
def test_script_imports_resolve(script):
    tree = ast.parse(script.read_text())
    checked = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "exosim":
                    importlib.import_module(alias.name)
                    checked += 1
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "exosim":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    f"{script.name}: {node.module} has no {alias.name}"
                )
                checked += 1
    assert checked
