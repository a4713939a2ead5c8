"""CLI outputs and provenance; every public name documented; scenario catalogue complete."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import exosim
from conftest import SCENARIOS
from exosim.cli import main


def test_run_writes_tables_provenance_and_figure(tmp_path, capsys):
    scenario = SCENARIOS / "mir22_exosome_radiosensitisation.yaml"
    assert main(["run", str(scenario), "-o", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["provenance.json", "summary.csv", "survival.csv", "survival.png", "timecourses.csv"]
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["exosim_version"] == exosim.__version__
    assert prov["scenario"]["sha256"] == hashlib.sha256(scenario.read_bytes()).hexdigest()
    assert prov["seed"] is None and prov["solver"]["rtol"] > 0
    # every dependency's version (None: not installed), and the commit of a checkout
    from importlib.metadata import version

    from exosim.io.provenance import DEPENDENCIES

    assert {"python", "platform", *DEPENDENCIES} <= set(prov["environment"])
    assert prov["environment"]["numpy"] == version("numpy") and prov["environment"]["pydantic"] == version("pydantic")
    checkout = Path(exosim.__file__).resolve().parents[2]
    if (checkout / ".git").exists():
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert prov["source"]["git_commit"] == head.stdout.strip()
        assert isinstance(prov["source"]["uncommitted_changes"], bool)
    else:  # an installed wheel: no commit to name
        assert prov["source"] is None
    units = {p["key"]: p["unit"] for p in prov["parameters"]}
    assert units["alpha0"] == "1/Gy" and units["binding_rate_constant"] == "mL/(h*site)"
    assert all(p["source"] for p in prov["parameters"])
    with open(tmp_path / "survival.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * 9 and {r["status"] for r in rows} == {"ok"}
    assert (tmp_path / "survival.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "timecourses.csv") as fh:
        header = next(csv.reader(fh))
    assert "cancer_cells.dsb [DSB/cell]" in header and "well.vesicle_concentration [particles/mL]" in header
    assert "DMF" in capsys.readouterr().out


def test_validate_accepts_every_shipped_scenario(capsys):
    files = sorted(SCENARIOS.glob("*.yaml"))
    assert len(files) >= 3
    assert main(["validate", *map(str, files)]) == 0
    assert capsys.readouterr().out.count(": ok") == len(files)


def test_every_scenario_is_listed_in_the_scenario_index():
    index = (SCENARIOS / "README.md").read_text()
    for f in SCENARIOS.glob("*.yaml"):
        assert f.name in index, f.name


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["validate", "--help"]])
def test_help_shows_an_example(args):
    out = subprocess.run([sys.executable, "-m", "exosim.cli", *args], capture_output=True, text=True)
    assert out.returncode == 0 and "example" in out.stdout and "exosim" in out.stdout


def test_every_public_name_is_documented():
    for name in exosim.__all__:
        if name == "__version__":
            continue
        obj = getattr(exosim, name)
        assert obj.__doc__ and obj.__doc__.strip(), name


def test_every_model_parameter_has_unit_and_source_or_assumption():
    from exosim.model.catalogue import parameter_table

    for key, row in parameter_table().items():
        assert row.get("unit") not in (None, ""), key
        assert len(row["range"]) == 2 and row["range"][0] <= row["value"] <= row["range"][1], key
        assert row.get("source") or (row.get("assumed") and row.get("reason")), key


def test_every_catalogue_cargo_moves_its_declared_modifiers():
    """Catalogue consistency: each cargo acts (effects, DSB induction, a sponge, the bystander
    signal or a role in the immune arm) and every
    target it reaches, directly or through a sponged repressor, feeds at least one modifier."""
    from exosim.model.catalogue import cargo_catalogue, repressors, targets

    for name, rec in cargo_catalogue().items():
        effects = rec.get("effects") or {}
        sponged = rec.get("sponges") or {}
        assert (
            effects
            or sponged
            or rec.get("damage_max_rate", 0) > 0
            or rec.get("bystander_signal")
            or rec.get("immune_role") in ("sting_agonist", "checkpoint_ligand")
        ), name
        reached = list(effects) + [t for r in sponged for t in repressors()[r]["represses"]]
        for t in reached:
            assert any(w != 0 for w in targets()[t]["modifiers"].values()), (name, t)


def test_model_source_is_generated_from_the_declarations():
    m = exosim.Model([exosim.PopulationSpec("cells", "well", "hela")], ["well"])
    assert "cells__dsb" in m.source and "def rhs" in m.source
    p = m.default_parameters()[None]
    y = m.initial_state(p)
    dy = m.rhs(0.0, y, p)[0]
    cell_states = [i for i, n in enumerate(m.state_names) if n.startswith("cells__")]
    assert np.allclose(dy[cell_states], 0.0)  # cells start at their unperturbed steady state
    # the empty medium fills at N*J0 (parameter table: 1e5 cells, 60 particles/cell/h)
    assert dy[m.state_index["well__vesicles"]] == pytest.approx(1e5 * 60)


def test_run_backend_comes_from_the_scenario_or_the_command_line(tmp_path):
    """``solver: {backend: auto}`` picks numba where installed; ``exosim run --backend`` overrides
    the scenario's choice, and provenance names the backend that ran."""
    from conftest import single_well
    from exosim.simulate.solver import numba_available

    data = single_well(solver={"backend": "auto"}, dose_grid={"values": [0, 2], "unit": "Gy"})
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    used = {}
    for flag in ([], ["--backend", "numpy"]):
        out = tmp_path / ("cli" if flag else "scenario")
        assert main(["run", str(path), "-o", str(out), "--no-figure", "--no-timecourses", *flag]) == 0
        used[bool(flag)] = json.loads((out / "provenance.json").read_text())["solver"]["backend"]
    assert used == {False: "numba" if numba_available() else "numpy", True: "numpy"}


def test_progress_is_drawn_on_a_terminal_only(monkeypatch):
    """figures, delivery and evidence loop through exosim.util.progress: a bar on a terminal,
    nothing in logs and pipes."""
    import io
    import sys

    from exosim.util.progress import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    assert list(progress(range(3), total=3, desc="exosim figures", unit="scenario")) == [0, 1, 2]
    assert "exosim figures" in screen.getvalue() and "/3 " in screen.getvalue()
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert list(progress(range(3), total=3, desc="exosim figures")) == [0, 1, 2]
    assert log.getvalue() == ""
