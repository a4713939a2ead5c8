"""Shared fixtures: paths, scenario runs cached per session, a minimal scenario builder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import exosim

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"


@pytest.fixture(scope="session")
def model():
    """A two-population model (miR-22 donors, HeLa recipients) sharing one well."""
    return exosim.Model(
        [
            exosim.PopulationSpec("donors", "well", "hnscc_pooled", ("mir_22",)),
            exosim.PopulationSpec("recipients", "well", "hela"),
        ],
        ["well"],
        ["mir_22"],
    )


@pytest.fixture(scope="session")
def runs():
    """Results of the shipped scenarios, run once per test session."""
    cache: dict[str, exosim.RunResult] = {}

    def get(name: str) -> exosim.RunResult:
        if name not in cache:
            cache[name] = exosim.run(exosim.load_scenario(SCENARIOS / f"{name}.yaml"))
        return cache[name]

    return get


def single_well(**changes) -> dict:
    """A minimal one-well scenario (one population, dose grid, no exosome cargo) as a dict."""
    base = {
        "exosim": 1,
        "name": "single_well",
        "type": "custom",
        "description": "recipient cells irradiated over a dose grid",
        "media": {"well": {"volume": "2 mL"}},
        "populations": {"cells": {"cell_line": "hnscc_pooled", "cells": 1e5, "medium": "well"}},
        "dose_grid": {"values": [0, 1, 2, 4, 6, 8], "unit": "Gy"},
        "timeline": [
            {"at": "0 h", "irradiate": {"population": "cells", "dose": "grid"}},
            {"at": "24 h", "score": {"population": "cells"}},
        ],
    }
    base.update(changes)
    return base


def scenario_from(data: dict, source: str = "<test>") -> exosim.Scenario:
    """Validate a scenario dict (through YAML text, as a file would be)."""
    return exosim.parse_scenario(yaml.safe_dump(data, sort_keys=False), source=source)


def errors_of(stderr: str) -> str:
    """stderr without the scenario warning lines (a shipped scenario may override a parameter
    outside its documented range, and every command says so first)."""
    return "".join(line + "\n" for line in stderr.splitlines() if not line.startswith("exosim: warning: "))
