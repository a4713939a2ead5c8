"""Import direction between the stages of the package.

The stages, lowest first::

    exosim.util < exosim.model < exosim.simulate < exosim.scenario
                < exosim.analysis < exosim.io < exosim.cli

A module may import from its own stage or a lower one, never from a higher one.
``exosim.api`` (the Python counterpart of the CLI, when present) belongs to the top stage,
beside ``exosim.cli``.
``exosim._version`` is below every stage (anyone may import it; it imports nothing
from exosim).  The top-level ``exosim/__init__.py`` is the public API: it may import
anything, and no module inside the package may import from it (``import exosim`` or
``from exosim import Model``); importing submodules (``from exosim.model import expr``,
``from exosim import _version``) is fine.

Every ``.py`` file under ``src/exosim`` is parsed with :mod:`ast`; module-level,
function-level, conditional (``if TYPE_CHECKING:``) and relative imports all count, and
so do ``importlib.import_module("exosim...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import exosim

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "exosim"

#: the stages, lowest first; every one but ``cli`` is a subpackage
STAGES = ("util", "model", "simulate", "scenario", "analysis", "io", "cli")
VERSION = "exosim._version"
TOP = "exosim"
#: top-level modules that belong to another stage: the Python API sits beside the CLI
PEERS = {"api": "cli"}
RANK = {f"exosim.{s}": i for i, s in enumerate(STAGES)}
RANK[VERSION] = -1


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported (a submodule where the imported name is one)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    """Dotted name -> file of every module (and package ``__init__``) under ``src/exosim``."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def stage_of(module: str) -> str | None:
    """``exosim.<stage>`` for a module of a known stage, ``exosim._version``, ``exosim``, or None."""
    if module in (TOP, VERSION):
        return module
    parts = module.split(".")
    if parts[0] == "exosim" and len(parts) > 1:
        stage = PEERS.get(parts[1], parts[1])
        if stage in STAGES:
            return f"exosim.{stage}"
    return None


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> list[Import]:
    """Every import of an ``exosim`` module by ``module`` (whose source is ``source``).

    ``from A import x`` imports the module ``A.x`` when that is a module in ``known``, else ``A``
    itself; relative imports are resolved against the package of ``module``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def add(target: str, node: ast.AST) -> None:
        if target == TOP or target.startswith(TOP + "."):
            found.append(Import(module, target, node.lineno))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level - 1 > len(base_parts) - 1:
                    raise AssertionError(f"{module}:{node.lineno}: relative import beyond the top-level package")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                if node.module:
                    base = f"{base}.{node.module}"
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                add(candidate if candidate in known else base, node)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
        ):
            add(node.args[0].value, node)
    return found


def all_imports() -> list[Import]:
    modules = source_modules()
    known = set(modules)
    out: list[Import] = []
    for name, path in modules.items():
        out.extend(imports_of(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", known))
    return out


def _format(pairs: list[tuple[str, str, int, str]]) -> str:
    return "\n".join(f"  {m} -> {t}  (line {line}; {why})" for m, t, line, why in sorted(set(pairs)))


# -- the checker itself ---------------------------------------------------------------------


def test_import_resolution_handles_relative_function_level_and_from_package_imports():
    known = {
        "exosim",
        "exosim._version",
        "exosim.model",
        "exosim.model.expr",
        "exosim.model.modules",
        "exosim.model.modules.release",
        "exosim.io",
        "exosim.io.outputs",
    }
    source = (
        "import numpy\n"
        "from . import release\n"  # -> exosim.model.modules.release
        "from .. import expr\n"  # -> exosim.model.expr
        "from ..expr import parse\n"  # -> exosim.model.expr
        "from exosim import Model, _version\n"  # -> exosim (top level) and exosim._version
        "def f():\n"
        "    from exosim.io.outputs import write\n"  # function-level
        "    import exosim.model.expr\n"
        "    importlib.import_module('exosim.io')\n"
    )
    got = [i.target for i in imports_of("exosim.model.modules", source, True, known)]
    assert got.count("exosim.model.modules.release") == 1
    assert got.count("exosim.model.expr") == 3
    assert got.count("exosim") == 1 and got.count("exosim._version") == 1
    assert got.count("exosim.io.outputs") == 1 and got.count("exosim.io") == 1
    assert "numpy" not in got
    # the same relative import from a plain module resolves one package higher up
    got = [i.target for i in imports_of("exosim.model.modules.release", "from .. import expr\n", False, known)]
    assert got == ["exosim.model.expr"]


# -- the package ----------------------------------------------------------------------------


def test_layout_every_stage_is_a_package():
    for stage in STAGES[:-1]:
        assert (PACKAGE / stage / "__init__.py").is_file(), f"src/exosim/{stage}/__init__.py missing"
        mod = importlib.import_module(f"exosim.{stage}")
        assert hasattr(mod, "__path__"), f"exosim.{stage} is not a package"
    assert (PACKAGE / "cli.py").is_file()
    assert callable(importlib.import_module("exosim.cli").main)
    assert (PACKAGE / "_version.py").is_file()
    assert exosim.__version__ == importlib.import_module(VERSION).__version__


def test_every_module_belongs_to_a_stage():
    strays = [m for m in source_modules() if stage_of(m) is None]
    assert not strays, f"modules outside the stages {STAGES}: {strays}"


def test_imports_go_to_the_same_or_a_lower_stage():
    violations = []
    for imp in all_imports():
        if imp.module == TOP or imp.target == TOP:
            continue  # the public API may import anything; imports of it are checked below
        src, dst = stage_of(imp.module), stage_of(imp.target)
        if dst is None:
            violations.append((imp.module, imp.target, imp.line, "not a module of any stage"))
        elif src is not None and RANK[dst] > RANK[src]:
            violations.append((imp.module, imp.target, imp.line, f"{src} may not import from {dst}"))
    assert not violations, (
        f"{len(set(violations))} imports against the stage order "
        f"({' < '.join(STAGES)}; exosim._version below all):\n" + _format(violations)
    )


def test_no_module_imports_the_top_level_package():
    offending = [
        (imp.module, imp.target, imp.line, "imports the public API exosim/__init__.py")
        for imp in all_imports()
        if imp.target == TOP and imp.module != TOP
    ]
    assert not offending, (
        "modules inside the package import from the top-level exosim package; import from the "
        "submodule instead (e.g. from exosim.model.assemble import Model):\n" + _format(offending)
    )


def test_public_api_all_names_only_existing_things():
    assert isinstance(exosim.__all__, list) and exosim.__all__
    assert all(isinstance(name, str) for name in exosim.__all__)
    duplicates = sorted({n for n in exosim.__all__ if exosim.__all__.count(n) > 1})
    assert not duplicates, f"exosim.__all__ lists names twice: {duplicates}"
    missing = [name for name in exosim.__all__ if not hasattr(exosim, name)]
    assert not missing, f"exosim.__all__ names things that do not exist: {missing}"
    namespace: dict = {}
    exec("from exosim import *", namespace)  # noqa: S102 - the star import users would write
    assert set(exosim.__all__) <= set(namespace)
