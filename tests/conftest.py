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


def as_hypothesis(data: dict, statement: str = "test of the model's mechanics") -> dict:
    """``data`` with its biological overrides (every parameter the table does not mark
    ``protocol``, and cargo fields) moved into ``hypothesis:`` blocks, as a scenario file must
    state them; protocol overrides stay where they are."""
    from exosim.model.catalogue import is_protocol, parameter_table

    table = parameter_table()

    def biology(key: str) -> bool:
        key = key.split(".", 1)[-1]
        return key in table and not is_protocol(key)

    out = dict(data)
    hyp = dict(out.get("hypothesis") or {"statement": statement})
    params = dict(hyp.get("parameters", {}))
    cargo = {c: dict(v) for c, v in hyp.get("cargo", {}).items()}
    top = dict(out.get("parameters", {}))
    for k in [k for k in top if biology(k)]:
        params[k] = top.pop(k)
    out["parameters"] = top
    for group in ("populations", "media"):
        items = {}
        for name, spec in out.get(group, {}).items():
            spec = dict(spec)
            own = dict(spec.get("parameters", {}))
            for k in [k for k in own if biology(k)]:
                params[f"{name}.{k}"] = own.pop(k)
            if "parameters" in spec:
                spec["parameters"] = own
            items[name] = spec
        out[group] = items
    given = {}
    for c, fields in out.get("cargo", {}).items():
        if fields:
            cargo.setdefault(c, {}).update(fields)
        given[c] = {}
    out["cargo"] = given
    arms = []
    for arm in out.get("arms", []):
        arm = dict(arm)
        own = dict(arm.get("parameters", {}))
        moved = {k: own.pop(k) for k in [k for k in own if biology(k)]}
        if moved:
            arm["parameters"] = own
            arm["hypothesis"] = {"statement": statement, "parameters": moved}
        arms.append(arm)
    if "arms" in out:
        out["arms"] = arms
    if params or cargo:
        hyp["parameters"], hyp["cargo"] = params, cargo
        out["hypothesis"] = hyp
    return {k: v for k, v in out.items() if k in data or k == "hypothesis"}


def scenario_from(data: dict, source: str = "<test>") -> exosim.Scenario:
    """Validate a scenario dict (through YAML text, as a file would be); biological overrides
    of a test scenario are stated as a hypothesis (:func:`as_hypothesis`)."""
    return exosim.parse_scenario(yaml.safe_dump(as_hypothesis(data), sort_keys=False), source=source)


def errors_of(stderr: str) -> str:
    """stderr without the scenario warning lines (a shipped scenario may override a parameter
    outside its documented range, and every command says so first)."""
    return "".join(line + "\n" for line in stderr.splitlines() if not line.startswith("exosim: warning: "))


def model_batch(model, n: int):
    """``n`` members of the two-population ``model`` fixture over 72 h: donor loading rising and
    acute damage shifting from recipients to donors across the batch; (y0, p, state scales)."""
    import numpy as np

    p = np.tile(model.default_parameters(), (n, 1))
    p[:, model.parameter_index["donors__mir_22_copies_per_particle"]] = np.linspace(0.01, 10, n)
    y0 = model.initial_state(p)
    y0[:, model.state_index["donors__dsb"]] += 35 * np.linspace(0, 8, n)
    y0[:, model.state_index["recipients__dsb"]] += 35 * np.linspace(8, 0, n)
    return y0, p, np.array([s.scale for s in model.states])


def assert_matches_reference(model, y_end, y0, p, scale, t1: float = 72.0) -> None:
    """Each member's end state within 1e-7 relative (1e-9 x scale absolute) of scipy's DOP853 at
    rtol 1e-12, one member at a time."""
    import numpy as np
    from scipy.integrate import solve_ivp

    for i in range(len(y0)):
        ref = solve_ivp(
            lambda t, y, i=i: model.rhs(t, y[None], p[i : i + 1])[0],
            (0.0, t1),
            y0[i],
            method="DOP853",
            rtol=1e-12,
            atol=1e-15 * scale,
        )
        err = np.abs(y_end[i] - ref.y[:, -1]) / (1e-7 * np.abs(ref.y[:, -1]) + 1e-9 * scale)
        assert err.max() <= 1.0, (model.state_names[err.argmax()], err.max())
