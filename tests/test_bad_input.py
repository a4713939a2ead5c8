"""Every bad input the scenario loader must reject: one clear message (file, key path, expectation), exit code 2."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from conftest import single_well
from exosim.cli import main

BASE = {
    **single_well(),
    "media": {"flask": {"volume": "10 mL"}, "well": {"volume": "2 mL"}},
    "populations": {
        "donors": {"cell_line": "hnscc_pooled", "cells": 1e6, "medium": "flask", "packages": ["mir_22"]},
        "cells": {"cell_line": "hnscc_pooled", "cells": 1e5, "medium": "well"},
    },
    "cargo": {"mir_22": {}},
    "timeline": [
        {"at": "0 h", "irradiate": {"population": "donors", "dose": "2 Gy"}},
        {"at": "24 h", "harvest": {"from": "flask", "to": "well"}},
        {"at": "48 h", "irradiate": {"population": "cells", "dose": "grid"}},
        {"at": "72 h", "score": {"population": "cells"}},
    ],
}


def mutate(path: str, value) -> dict:
    data = copy.deepcopy(BASE)
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    target = data
    for k in keys[:-1]:
        target = target[k]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


DELETE = object()

CASES = [
    # (id, mutation path, value, expected key path, expected words)
    ("unknown key", "timeline.2.irradiate.doze", "2 Gy", "timeline[2].irradiate.doze", ["unknown key", "'dose'"]),
    ("unknown top key", "dose_grd", {"values": [1]}, "dose_grd", ["did you mean 'dose_grid'"]),
    ("missing field", "populations.cells.medium", DELETE, "populations.cells.medium", ["required"]),
    ("wrong unit", "timeline.0.irradiate.dose", "2 mL", "timeline[0].irradiate.dose", ["not a dose unit", "Gy"]),
    ("missing unit", "timeline.1.at", 24, "timeline[1].at", ["missing unit", "h"]),
    ("negative dose", "timeline.0.irradiate.dose", "-1 Gy", "timeline[0].irradiate.dose", ["non-negative"]),
    ("NaN dose", "timeline.0.irradiate.dose", "nan Gy", "timeline[0].irradiate.dose", ["finite"]),
    ("negative grid dose", "dose_grid.values", [0, -2], "dose_grid.values", ["non-negative"]),
    ("empty grid", "dose_grid.values", [], "dose_grid.values", ["empty"]),
    ("harvest before irradiation", "timeline.1.at", "-1 h", "timeline[1].at", ["before the irradiation"]),
    ("unknown cargo", "cargo", {"mir_2222": {}}, "cargo.mir_2222", ["unknown cargo"]),
    (
        "unknown cell line",
        "populations.cells.cell_line",
        "helaa",
        "populations.cells.cell_line",
        ["unknown cell line", "'hela'"],
    ),
    (
        "unknown population",
        "timeline.2.irradiate.population",
        "cels",
        "timeline[2].irradiate.population",
        ["unknown population", "'cells'"],
    ),
    (
        "parameter with wrong unit",
        "parameters",
        {"binding_rate_constant": "3e-10 mL/h"},
        "parameters.binding_rate_constant",
        ["does not match", "mL/(h*site)"],
    ),
    (
        "unknown parameter",
        "parameters",
        {"binding_rate_constant_x": "1 mL/(h*site)"},
        "parameters.binding_rate_constant_x",
        ["unknown parameter", "binding_rate_constant"],
    ),
    ("negative volume", "media.well.volume", "-2 mL", "media.well.volume", ["non-negative"]),
    ("event after score", "timeline.2.at", "100 h", "timeline[2].at", ["after the score"]),
    ("event before start", "start", "1 h", "timeline[0].at", ["before the start", "start: 1 h"]),
    (
        "parameter the medium does not have",
        "media.well.parameters",
        {"binding_sites": "1e4 sites/cell"},
        "media.well.parameters.binding_sites",
        ["'well' has no parameter 'binding_sites'"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_scenario_gives_one_clear_error_and_exit_2(tmp_path, capsys, case):
    _, path, value, key_path, words = case
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(mutate(path, value), sort_keys=False))
    out = tmp_path / "out"
    assert main(["run", str(f), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one message
    assert str(f) in err and key_path in err, err
    for w in words:
        assert w in err, err
    assert not out.exists()
    assert main(["validate", str(f)]) == 2
    assert capsys.readouterr().err.strip() == err


def test_the_base_of_the_bad_cases_is_valid(tmp_path):
    f = tmp_path / "good.yaml"
    f.write_text(yaml.safe_dump(BASE, sort_keys=False))
    assert main(["validate", str(f)]) == 0


@pytest.mark.parametrize(
    "content,words",
    [
        ("media: [unclosed", ["not valid YAML", "line"]),
        ("- just\n- a list\n", ["expected a YAML mapping"]),
        ("!!python/object/apply:os.system ['echo hacked']", ["not valid YAML"]),
        (b"\xff\xfe\x00binary", ["not"]),
    ],
)
def test_non_yaml_and_unsafe_yaml_are_rejected(tmp_path, capsys, content, words):
    f = tmp_path / "x.yaml"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["run", str(f), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_unreadable_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["validate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "cannot read" in err


def test_unwritable_output_path_is_a_clear_error(tmp_path, capsys):
    f = tmp_path / "good.yaml"
    f.write_text(yaml.safe_dump(BASE, sort_keys=False))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", str(f), "-o", str(blocker / "out"), "--no-timecourses"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to output folder" in err and str(blocker / "out") in err
    assert blocker.read_text() == "not a folder"


def test_failed_output_write_leaves_no_partial_files(tmp_path, monkeypatch):
    import exosim
    from exosim.io import figures
    from exosim.io.outputs import write_outputs

    f = tmp_path / "good.yaml"
    f.write_text(yaml.safe_dump(BASE, sort_keys=False))
    res = exosim.run(exosim.load_scenario(f), time_courses=False)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "plot_survival", broken)
    out = tmp_path / "out"
    with pytest.raises(exosim.OutputError):
        write_outputs(res, out)
    assert list(Path(out).iterdir()) == []


def test_figures_to_an_unwritable_folder_is_one_error_and_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = str(Path(__file__).resolve().parents[1] / "scenarios" / "mir22_exosome_radiosensitisation.yaml")
    assert main(["figures", path, "-o", str(blocker / "figs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("exosim: error: cannot write") and err.count("\n") == 0, err
    assert blocker.read_text() == "not a folder"


_SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
_SLOW = str(_SCENARIOS / "fractionated_course_exosome_buildup.yaml")  # several seconds of simulation
_ICCM = str(_SCENARIOS / "iccm_bystander_medium_transfer.yaml")
_ICCM_DATA = str(_SCENARIOS / "data" / "iccm_relative_survival.csv")
_ICCM_RANGE = "recipients.damage_max_rate=0.3:30"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", _SLOW],
        ["figures", _SLOW, _SLOW],
        ["sensitivity", _SLOW, "--method", "local", "--group", "uptake"],
        ["fit", _ICCM, _ICCM_DATA, "--params", "recipients.damage_max_rate", "--range", _ICCM_RANGE],
    ],
    ids=lambda a: a[0],
)
def test_unwritable_output_folder_is_reported_before_any_simulation(tmp_path, capsys, argv):
    from time import perf_counter

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    start = perf_counter()
    assert main([*argv, "-o", str(out)]) == 2
    elapsed = perf_counter() - start
    err = capsys.readouterr().err
    assert err.startswith("exosim: error: cannot write to output folder") and err.count("\n") == 1, err
    assert repr(str(out)) in err, err
    assert elapsed < 2.5, elapsed  # the fractionated run alone takes several seconds
    assert blocker.read_text() == "not a folder"
