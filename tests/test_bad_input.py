"""Every bad input the scenario loader must reject: one clear message (file, key path, expectation), exit code 2."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import exosim
from conftest import SCENARIOS, single_well
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
    (
        "misspelt required key",
        "populations.cells",
        {"cell_line": "hnscc_pooled", "celss": 1e5, "medium": "well"},
        "populations.cells.celss",
        ["unknown key 'celss'", "did you mean 'cells'"],
    ),
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
        "hypothesis",
        {"statement": "s", "parameters": {"binding_rate_constant": "3e-10 mL/h"}},
        "hypothesis.parameters.binding_rate_constant",
        ["does not match", "mL/(h*site)"],
    ),
    (
        "unknown parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"binding_rate_constant_x": "1 mL/(h*site)"}},
        "hypothesis.parameters.binding_rate_constant_x",
        ["unknown parameter", "binding_rate_constant"],
    ),
    ("negative volume", "media.well.volume", "-2 mL", "media.well.volume", ["non-negative"]),
    ("event after score", "timeline.2.at", "100 h", "timeline[2].at", ["after the score"]),
    ("event before start", "start", "1 h", "timeline[0].at", ["before the start", "start: 1 h"]),
    (
        "parameter the medium does not have",
        "media.well.parameters",
        {"cells": "1e4"},
        "media.well.parameters.cells",
        ["'well' has no parameter 'cells'"],
    ),
    # non-finite and negative parameter overrides, in every place an override can be written
    (
        "NaN parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"internalisation_rate": "nan 1/h"}},
        "hypothesis.parameters.internalisation_rate",
        ["finite", "'nan 1/h'"],
    ),
    (
        "infinite parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"internalisation_rate": "inf 1/h"}},
        "hypothesis.parameters.internalisation_rate",
        ["finite", "'inf 1/h'"],
    ),
    (
        "infinite population parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"cells.internalisation_rate": "-inf 1/h"}},
        "hypothesis.parameters.cells.internalisation_rate",
        ["finite"],
    ),
    (
        "NaN cargo field",
        "hypothesis",
        {"statement": "s", "cargo": {"mir_22": {"copies_per_particle": "nan copies/particle"}}},
        "hypothesis.cargo.mir_22.copies_per_particle",
        ["finite"],
    ),
    (
        "negative parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"internalisation_rate": "-0.5 1/h"}},
        "hypothesis.parameters.internalisation_rate",
        ["non-negative", "-0.5 1/h", "documented range [0.1, 5] 1/h"],
    ),
    (
        "negative population parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"cells.internalisation_rate": "-0.5 1/h"}},
        "hypothesis.parameters.cells.internalisation_rate",
        ["non-negative"],
    ),
    (
        "negative medium parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"well.vesicle_decay_rate": "-0.01 1/h"}},
        "hypothesis.parameters.well.vesicle_decay_rate",
        ["non-negative", "[0.005, 10] 1/h"],
    ),
    (
        "negative cargo field",
        "hypothesis",
        {"statement": "s", "cargo": {"mir_22": {"copies_per_particle": "-1 copies/particle"}}},
        "hypothesis.cargo.mir_22.copies_per_particle",
        ["non-negative", "source: Chevillet"],
    ),
    (
        "negative arm parameter",
        "arms",
        [{"name": "treated", "hypothesis": {"statement": "s", "parameters": {"cells.internalisation_rate": "-1 1/h"}}}],
        "arms[0].hypothesis.parameters.cells.internalisation_rate",
        ["non-negative"],
    ),
    # biology outside a hypothesis block: named, with the catalogue and the block to use
    (
        "biological parameter outside a hypothesis",
        "populations.cells.parameters",
        {"internalisation_rate": "0.5 1/h"},
        "populations.cells.parameters.internalisation_rate",
        ["is biology, not protocol", "parameter table", "hypothesis", "cells.internalisation_rate"],
    ),
    (
        "cell-line parameter outside a hypothesis",
        "parameters",
        {"alpha0": "0.3 1/Gy"},
        "parameters.alpha0",
        ["is biology", "cell-line catalogue"],
    ),
    (
        "medium biology outside a hypothesis",
        "media.well.parameters",
        {"vesicle_decay_rate": "0.05 1/h"},
        "media.well.parameters.vesicle_decay_rate",
        ["media catalogue", "kind"],
    ),
    (
        "cargo field outside a hypothesis",
        "cargo.mir_22",
        {"copies_per_particle": "0.1 copies/particle"},
        "cargo.mir_22.copies_per_particle",
        ["by name only", "cargo catalogue", "hypothesis: {statement: ..., cargo: {mir_22"],
    ),
    (
        "arm biology outside a hypothesis",
        "arms",
        [{"name": "treated", "parameters": {"cells.binding_sites": "2e4 sites/cell"}}],
        "arms[0].parameters.cells.binding_sites",
        ["is biology", "arms[0].hypothesis"],
    ),
    ("hypothesis without a statement", "hypothesis", {"parameters": {}}, "hypothesis.statement", ["required"]),
    (
        "hypothesis naming an unknown population",
        "hypothesis",
        {"statement": "s", "parameters": {"cels.binding_sites": "2e4 sites/cell"}},
        "hypothesis.parameters.cels.binding_sites",
        ["unknown population or medium 'cels'", "'cells'"],
    ),
    ("unknown kind of medium", "media.well.kind", "bloood", "media.well.kind", ["unknown kind", "'blood'"]),
    (
        "unknown target in a hypothesis",
        "hypothesis",
        {"statement": "s", "cargo": {"mir_22": {"effects": {"nope": 0.1}}}},
        "hypothesis.cargo.mir_22.effects.nope",
        ["unknown target 'nope'"],
    ),
    # doses no clonogenic assay reaches
    ("grid dose above the limit", "dose_grid.values", [0, 2, 150], "dose_grid.values[2]", ["limit of 100 Gy"]),
    (
        "irradiation dose above the limit",
        "timeline.0.irradiate.dose",
        "101 Gy",
        "timeline[0].irradiate.dose",
        ["limit of 100 Gy"],
    ),
    (
        "oxygen above the physical range",
        "populations.cells.parameters",
        {"oxygen_pressure": "800 mmHg"},
        "populations.cells.parameters.oxygen_pressure",
        ["outside the physical range [0, 760] mmHg"],
    ),
    (
        "negative oxygen",
        "populations.cells.parameters",
        {"oxygen_pressure": "-1 mmHg"},
        "populations.cells.parameters.oxygen_pressure",
        ["outside the physical range"],
    ),
    ("variable dose above the limit", "variables", {"d": "500 Gy"}, "variables.d", ["limit of 100 Gy"]),
    # tumours and the immune arm
    ("zero tumour volume", "populations.cells.tumour_volume", "0 mm3", "populations.cells.tumour_volume", ["positive"]),
    ("immune arm without tumours", "immune", {"medium": "well"}, "immune", ["distant tumour", "tumour_volume"]),
    (
        "tumour that does not grow",
        "hypothesis",
        {"statement": "a dormant tumour", "parameters": {"tumour_growth_rate": "0 1/h"}},
        "hypothesis.parameters.tumour_growth_rate",
        ["expected a positive value"],
    ),
    ("immune arm in an unknown medium", "immune", {"medium": "blood"}, "immune.medium", ["unknown medium"]),
    (
        "checkpoint blockade without an immune arm",
        "arms",
        [{"name": "blocked", "events": [{"at": "0 h", "intervene": {"population": "cells", "agent": "anti_pd_l1"}}]}],
        "arms[0].events[0].intervene.population",
        ["tumour population", "immune arm"],
    ),
    # unbounded input is not formatted into the message
    ("huge value", "name", ["x" * 20_000] * 10, "name", ["valid string", "..."]),
    # the protocol's schedule: dose given at or after the score would silently not count
    (
        "course ends after the score",
        "timeline.2.irradiate",
        {"population": "cells", "dose": "grid", "fractions": 4, "interval": "24 h"},
        "timeline[2].irradiate",
        ["not over before the score at 72 h", "the last of its 4 fractions starts at 120 h"],
    ),
    (
        "exposure at a low dose rate ends after the score",
        "timeline.2.irradiate",
        {"population": "cells", "dose": "grid", "dose_rate": "0.1 Gy/h"},
        "timeline[2].irradiate",
        ["not over before the score at 72 h", "8 Gy at 0.1 Gy/h) ends at 128 h"],
    ),
    ("score at the grid irradiation", "timeline.3.at", "48 h", "timeline[2].irradiate", ["score at 48 h"]),
    (
        "a week's fractions overrun the week",
        "timeline.0.irradiate",
        {"population": "donors", "dose": "10 Gy", "fractions": 10, "interval": "48 h", "days_per_week": 5},
        "timeline[0].irradiate.interval",
        ["do not fit in a week"],
    ),
    (
        "protracted fraction longer than the interval",
        "timeline.0.irradiate",
        {"population": "donors", "dose": "4 Gy", "fractions": 2, "interval": "1 h", "dose_rate": "1 Gy/h"},
        "timeline[0].irradiate.dose_rate",
        ["takes 2 h, longer than the 1 h between fractions"],
    ),
    ("zero time step", "output", {"time_step": "0 h"}, "output.time_step", ["greater than 0"]),
    ("time beyond eleven years", "timeline.3.at", "1e12 h", "timeline[3].at", ["beyond the limit of 100000 h"]),
    ("time infinite in hours", "timeline.3.at", "1e308 d", "timeline[3].at", ["expected a finite time"]),
    (
        "cargo effect that is not a number",
        "hypothesis",
        {"statement": "s", "cargo": {"mir_22": {"effects": {"dsb_repair_activity": "abc"}}}},
        "hypothesis.cargo.mir_22.effects.dsb_repair_activity",
        ["expected a signed fractional strength"],
    ),
    (
        "cargo effect NaN",
        "hypothesis",
        {"statement": "s", "cargo": {"mir_22": {"effects": {"dsb_repair_activity": float("nan")}}}},
        "hypothesis.cargo.mir_22.effects.dsb_repair_activity",
        ["expected a finite number"],
    ),
    (
        "cargo effect removing the whole target",
        "hypothesis",
        {"statement": "s", "cargo": {"mir_22": {"effects": {"dsb_repair_activity": -5}}}},
        "hypothesis.cargo.mir_22.effects.dsb_repair_activity",
        ["removes 100 % or more of the target"],
    ),
    ("name with a path", "name", "../../escaped", "name", ["it names the output folder"]),
    ("empty name", "name", "", "name", ["it names the output folder"]),
    (
        "override no population or medium has",
        "arms",
        [{"name": "treated", "parameters": {"checkpoint_factor": 0.1}}],
        "arms[0].parameters.checkpoint_factor",
        ["no population, medium or link", "change nothing"],
    ),
    (
        "hypothesis value for a parameter the population lacks",
        "hypothesis",
        {"statement": "s", "parameters": {"donors.damage_max_rate": "0 DSB/cell/h"}},
        "hypothesis.parameters.donors.damage_max_rate",
        ["'donors' has no parameter 'damage_max_rate'"],
    ),
    ("grid out of order", "dose_grid.values", [0, 4, 2], "dose_grid.values", ["increasing order (2 follows 4)"]),
    ("grid dose twice", "dose_grid.values", [0, 2, 2, 4], "dose_grid.values", ["dose 2 is listed twice"]),
    (
        "cargo packaged twice",
        "populations.donors.packages",
        ["mir_22", "mir_22"],
        "populations.donors.packages[1]",
        ["'mir_22' is listed twice"],
    ),
    ("link to itself", "links", [{"from": "flask", "to": "flask", "rate": 1.0}], "links[0]", ["two different media"]),
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
    assert len(err) < 1000, err[:2000]  # input is never formatted unbounded
    for w in words:
        assert w in err, err
    assert not out.exists()
    assert main(["validate", str(f)]) == 2
    assert capsys.readouterr().err.strip() == err


def test_a_grid_irradiation_in_one_arm_only_is_refused(tmp_path, capsys):
    """The other arms would be reported at grid doses they never received."""
    data = mutate(
        "arms", [{"name": "control", "control": True}, {"name": "grid here", "events": [BASE["timeline"][2]]}]
    )
    del data["timeline"][2]
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0 and "arms[1].events[0].irradiate: the grid irradiation belongs in the main timeline" in err
    )


def test_a_transfer_from_a_medium_nothing_was_put_into_is_refused(tmp_path, capsys):
    """A cell-free medium holds only what events put into it: a transfer from it before its harvest moves nothing."""
    data = mutate("media.tube", {"volume": "1 mL"})
    data["timeline"][1:2] = [
        {"at": "24 h", "transfer": {"from": "tube", "to": "well"}},
        {"at": "25 h", "harvest": {"from": "flask", "to": "tube"}},
    ]
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "timeline[1].at: transfer from 'tube' at 24 h" in err and "first content arrives at 25 h" in err, err
    data["timeline"][1:3] = data["timeline"][2:0:-1]  # harvest first, then transfer: fine
    data["timeline"][1]["at"], data["timeline"][2]["at"] = "24 h", "25 h"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(f)]) == 0, capsys.readouterr().err


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
        (b"", ["expected a YAML mapping"]),  # an empty file
        (b"name: caf\xe9\n", ["not a text (UTF-8) YAML file"]),  # Latin-1, not UTF-8
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
_ICCM_RANGE = "recipients.bystander_susceptible_fraction=0.03:0.9"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", _SLOW],
        ["figures", _SLOW, _SLOW],
        ["sensitivity", _SLOW, "--method", "local", "--group", "uptake"],
        ["fit", _ICCM, _ICCM_DATA, "--params", "recipients.bystander_susceptible_fraction", "--range", _ICCM_RANGE],
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
    # scenario warnings (a parameter outside its documented range) may come first, one line each
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if not line.startswith("exosim: warning: "))
    assert err.startswith("exosim: error: cannot write to output folder") and err.count("\n") == 0, err
    assert repr(str(out)) in err, err
    assert elapsed < 2.5, elapsed  # the fractionated run alone takes several seconds
    assert blocker.read_text() == "not a folder"


# ---------------------------------------------------------------------- YAML that is bad as text
def base_text() -> str:
    return yaml.safe_dump(BASE, sort_keys=False)


def line_of(text: str, fragment: str) -> int:
    """1-based number of the first line containing ``fragment``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def alias_bomb() -> str:
    """'Billion laughs': ten levels of nine aliases (9**10 strings) aliased into ``name``."""
    levels = ["laughs: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"laughs{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(levels) + "\n" + base_text().replace("name: single_well", "name: *a9")


def many_aliases() -> str:
    return base_text() + "references: &r [one]\nassumptions: [" + ", ".join(["*r"] * 100_001) + "]\n"


def duplicate_block() -> str:
    return base_text().replace("    volume: 2 mL\n", "    volume: 2 mL\n    volume: 3 mL\n")


def duplicate_inline() -> str:
    return base_text().replace("timeline:\n", "timeline:\n- {at: 0 h, change_medium: {medium: well, medium: flask}}\n")


def duplicate_top() -> str:
    return base_text() + "name: another_name\n"


def too_large() -> str:
    return base_text() + "# " + "x" * 5_000_000 + "\n"


def too_deep() -> str:
    return base_text() + "variables: {d: " + "[" * 100 + "1" + "]" * 100 + "}\n"


def recursive() -> str:
    return base_text() + "references: &r [a, *r]\n"


TEXT_CASES = [
    # (id, text, expected key path, expected words (a callable of the text for line numbers), isolated)
    ("alias bomb", alias_bomb, "", lambda t: ["too many YAML values", "100000"], True),
    ("a hundred thousand aliases", many_aliases, "", lambda t: ["too many YAML values"], True),
    (
        "duplicate key, block style",
        duplicate_block,
        "media.well",
        lambda t: ["duplicate key 'volume'", f"lines {line_of(t, 'volume: 2 mL')} and {line_of(t, 'volume: 3 mL')}"],
        False,
    ),
    (
        "duplicate key, inline style",
        duplicate_inline,
        "timeline[0].change_medium",
        lambda t: ["duplicate key 'medium'", f"line {line_of(t, 'medium: well, medium')}, columns"],
        False,
    ),
    (
        "duplicate top-level key",
        duplicate_top,
        "",
        lambda t: ["duplicate key 'name'", f"and {line_of(t, 'another_name')}"],
        False,
    ),
    ("file too large", too_large, "", lambda t: ["too large", "5 MB"], False),
    ("nested too deep", too_deep, "", lambda t: ["nested deeper than 64 levels"], False),
    ("recursive alias", recursive, "", lambda t: ["recursive YAML alias"], False),
]


@pytest.mark.parametrize("case", TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_bad_yaml_text_gives_one_clear_error_and_exit_2(tmp_path, capsys, case):
    _, make, key_path, words, isolated = case
    text = make()
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    out = tmp_path / "out"
    for args in (["run", str(f), "-o", str(out)], ["validate", str(f)]):
        if isolated:  # a regression would hang or eat memory: a process of its own, killed after 20 s
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "exosim.cli", *args], capture_output=True, text=True, timeout=20
            )
            assert time.perf_counter() - start < 20
            code, err = proc.returncode, proc.stderr.strip()
        else:
            code, err = main(args), capsys.readouterr().err.strip()
        assert code == 2, err
        assert err.count("\n") == 0 and len(err) < 1000, err[:2000]
        assert err.startswith(f"exosim: error: {f}: {key_path + ': ' if key_path else ''}"), err
        for w in words(text):
            assert w in err, err
        assert not out.exists()


# ---------------------------------------------------------------------- parameters outside their documented range
RANGE_CASES = [
    # (id, mutation path, value, key path, shown value, parameter key)
    ("medium volume", "media.well.volume", "0.001 mL", "media.well.volume", "0.001 mL", "volume"),
    ("cells of a population", "populations.cells.cells", 50, "populations.cells.cells", "50 cells", "cells"),
    (
        "scenario parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"internalisation_rate": "50 1/h"}},
        "hypothesis.parameters.internalisation_rate",
        "50 1/h",
        "internalisation_rate",
    ),
    (
        "population parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"cells.internalisation_rate": "0.01 1/h"}},
        "hypothesis.parameters.cells.internalisation_rate",
        "0.01 1/h",
        "internalisation_rate",
    ),
    (
        "medium parameter",
        "hypothesis",
        {"statement": "s", "parameters": {"well.vesicle_decay_rate": "50 1/h"}},
        "hypothesis.parameters.well.vesicle_decay_rate",
        "50 1/h",
        "vesicle_decay_rate",
    ),
    (
        "cargo field",
        "hypothesis",
        {"statement": "s", "cargo": {"mir_22": {"copies_per_particle": "10 copies/particle"}}},
        "hypothesis.cargo.mir_22.copies_per_particle",
        "10 copies/particle",
        "copies_per_particle",
    ),
    (
        "arm parameter",
        "arms",
        [{"name": "treated", "hypothesis": {"statement": "s", "parameters": {"cells.internalisation_rate": "9 1/h"}}}],
        "arms[0].hypothesis.parameters.cells.internalisation_rate",
        "9 1/h",
        "internalisation_rate",
    ),
]


@pytest.mark.parametrize("case", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_parameter_outside_its_documented_range_warns_and_strict_makes_it_an_error(tmp_path, capsys, case):
    from exosim.model.catalogue import parameter_table

    _, path, value, key_path, shown, key = case
    entry = parameter_table()[key]
    low, high = (float(x) for x in entry["range"])
    origin = f"source: {entry['source']}" if entry.get("source") else "assumed: " + " ".join(entry["reason"].split())
    f = tmp_path / "odd.yaml"
    f.write_text(yaml.safe_dump(mutate(path, value), sort_keys=False))

    assert main(["validate", str(f)]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"exosim: warning: {f}: {key_path}: {shown} is outside the documented range "), err
    assert f"[{low:g}, {high:g}]" in err and origin[:60] in err, err
    assert f"{f}: ok" in captured.out

    out = tmp_path / "out"
    for args in (["validate", "--strict", str(f)], ["run", "--strict", str(f), "-o", str(out)]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        assert err.startswith(f"exosim: error: {f}: {key_path}: {shown} is outside the documented range "), err
        assert not out.exists()


WARNING_CASES = [
    # (id, mutation path, value, key path, words, an error with --strict)
    ("grid without 0 Gy", "dose_grid.values", [1, 2, 4], "dose_grid.values", ["no 0 dose", "SF2 and D10"], False),
    (
        "arms without a control",
        "arms",
        [{"name": "a"}, {"name": "b"}],
        "arms",
        ["no arm is the control", "dose-modifying factor"],
        False,
    ),
    (
        "scored population without cells",
        "populations.cells.cells",
        0,
        "populations.cells.cells",
        ["has no cells", "survival means nothing"],
        False,
    ),
    (
        "inhibitor efficacy outside its documented range",
        "arms",
        [
            {"name": "c", "control": True},
            {
                "name": "h",
                "events": [{"at": "1 h", "intervene": {"population": "cells", "agent": "heparin", "efficacy": 1.0}}],
            },
        ],
        "arms[1].events[0].intervene.efficacy",
        ["efficacy 1 of heparin is outside its documented range [0.3, 0.95]"],
        True,
    ),
]


@pytest.mark.parametrize("case", WARNING_CASES, ids=[c[0] for c in WARNING_CASES])
def test_protocols_whose_summary_cannot_mean_much_warn(tmp_path, capsys, case):
    _, path, value, key_path, words, strict_error = case
    f = tmp_path / "odd.yaml"
    f.write_text(yaml.safe_dump(mutate(path, value), sort_keys=False))
    assert main(["validate", str(f)]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and err.startswith(f"exosim: warning: {f}: {key_path}: "), err
    for w in words:
        assert w in err, err
    assert main(["validate", "--strict", str(f)]) == (2 if strict_error else 0)
    capsys.readouterr()


def test_run_prints_the_range_warning_and_still_runs(tmp_path, capsys):
    f = tmp_path / "odd.yaml"
    f.write_text(
        yaml.safe_dump(
            mutate("hypothesis", {"statement": "s", "parameters": {"internalisation_rate": "6 1/h"}}), sort_keys=False
        )
    )
    out = tmp_path / "out"
    assert main(["run", str(f), "-o", str(out), "--no-timecourses", "--no-figure"]) == 0
    err = capsys.readouterr().err
    assert f"exosim: warning: {f}: hypothesis.parameters.internalisation_rate: 6 1/h is outside" in err, err
    assert (out / "survival.csv").exists()


def test_the_python_api_warns_about_a_parameter_outside_its_range_and_strict_raises(tmp_path):
    import exosim
    from exosim.scenario.schema import ScenarioError, ScenarioWarning

    f = tmp_path / "odd.yaml"
    f.write_text(
        yaml.safe_dump(
            mutate("hypothesis", {"statement": "s", "parameters": {"internalisation_rate": "50 1/h"}}), sort_keys=False
        )
    )
    with pytest.warns(ScenarioWarning, match=r"hypothesis\.parameters\.internalisation_rate: 50 1/h is outside"):
        exosim.load_scenario(f)
    with pytest.raises(ScenarioError, match=r"hypothesis\.parameters\.internalisation_rate: 50 1/h is outside"):
        exosim.load_scenario(f, strict=True)


def test_no_warning_for_values_in_range_or_an_arm_without_donor_cells(tmp_path, capsys):
    data = mutate("hypothesis", {"statement": "s", "parameters": {"internalisation_rate": "0.5 1/h"}})
    data["arms"] = [
        {"name": "no donors", "control": True, "parameters": {"donors.cells": "0 cells"}},
        {"name": "donors"},
    ]
    f = tmp_path / "fine.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", "--strict", str(f)]) == 0
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------- validate checks every file
def test_validate_reports_every_bad_file_one_line_each(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(base_text())
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump(mutate("timeline.2.irradiate.doze", "2 Gy"), sort_keys=False))
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text(duplicate_block())
    odd = tmp_path / "odd.yaml"
    odd.write_text(
        yaml.safe_dump(
            mutate("hypothesis", {"statement": "s", "parameters": {"internalisation_rate": "50 1/h"}}), sort_keys=False
        )
    )
    missing = tmp_path / "missing.yaml"

    assert main(["validate", str(unknown), str(good), str(duplicate), str(missing), str(odd)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith(f"exosim: error: {unknown}: timeline[2].irradiate.doze: unknown key")
    assert lines[1].startswith(f"exosim: error: {duplicate}: media.well: duplicate key 'volume'")
    assert lines[2].startswith(f"exosim: error: {missing}: cannot read")
    assert lines[3].startswith(f"exosim: warning: {odd}: hypothesis.parameters.internalisation_rate:")
    assert f"{good}: ok" in captured.out and f"{odd}: ok" in captured.out

    assert main(["validate", str(good), str(odd)]) == 0
    assert main(["validate", "--strict", str(good), str(odd)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"exosim: error: {odd}: hypothesis.parameters.internalisation_rate:"), lines


# ------------------------------------------------------------------ option values on the command line
HNSCC = str(Path(__file__).resolve().parents[1] / "scenarios" / "hnscc_exosome_radioresistance.yaml")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["run", HNSCC, "--bands", "0"], ["--bands", "expected an integer >= 20"]),
        (["run", HNSCC, "--bands", "1"], ["--bands", "expected an integer >= 20"]),
        (["run", HNSCC, "--seed", "-1"], ["--seed", "from 0 to 2**32 - 1"]),
        (["sensitivity", HNSCC, "--method", "morris", "-N", "0"], ["-N", "expected an integer >= 1"]),
        (["sensitivity", HNSCC, "--method", "sobol", "--seed", "x"], ["--seed", "'x'"]),
        (["sensitivity", HNSCC, "--workers", "0"], ["--workers", "expected a positive integer or 'auto'"]),
        (["calibrate", "--params", "alpha0", "--seed", "-3"], ["--seed", "from 0 to 2**32 - 1"]),
        (["calibrate", "--params", "alpha0", "--profile-points", "-1"], ["--profile-points", "0 (no profiles)"]),
        (["calibrate", "--params", "alpha0", "--profile-points", "1"], ["--profile-points", ">= 3"]),
        (["calibrate", "--params", "alpha0", "--sample", "-5"], ["--sample", "expected an integer >= 0"]),
    ],
)
def test_bad_option_values_are_one_message_and_exit_2(tmp_path, capsys, argv, words):
    """argparse rejects them before anything runs: usage and one error line, exit 2."""
    with pytest.raises(SystemExit) as exc:
        main([*argv, "-o", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("exosim")
    assert all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, env, words",
    [
        (["--method", "morris", "-N", "1"], None, ["Morris needs at least 2 trajectories"]),
        (["--method", "sobol", "-N", "1"], None, ["power of two of at least 2", "got 1"]),
        (["--method", "sobol", "-N", "8"], "abc", ["EXOSIM_SENSITIVITY_MAX_N", "positive integer", "'abc'"]),
        (["--method", "sobol", "-N", "8"], "1", ["-N 8 capped at 1 by EXOSIM_SENSITIVITY_MAX_N", "got 1"]),
        (["--method", "local", "--doses", "2,200"], None, ["error: --doses 2,200 [1]: dose 200 Gy is above"]),
    ],
)
def test_bad_sample_sizes_are_one_message_and_exit_2(tmp_path, capsys, monkeypatch, argv, env, words):
    if env is not None:
        monkeypatch.setenv("EXOSIM_SENSITIVITY_MAX_N", env)
    assert main(["sensitivity", HNSCC, "--group", "uptake", *argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words), err
    assert not list((tmp_path / "out").glob("*.csv"))


def test_a_sobol_n_capped_by_the_environment_stays_a_power_of_two(tmp_path, capsys, monkeypatch):
    """EXOSIM_SENSITIVITY_MAX_N=6 caps Sobol's N at 4, the power of two below (the user never
    typed 6: refusing it was an error about a number they had not given)."""
    monkeypatch.setenv("EXOSIM_SENSITIVITY_MAX_N", "6")
    argv = ["sensitivity", HNSCC, "--params", "binding_sites", "--method", "sobol", "-N", "8", "--workers", "1"]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 0
    assert "-N 8 capped at 4 by EXOSIM_SENSITIVITY_MAX_N" in capsys.readouterr().err
    assert len((tmp_path / "out" / "samples.csv").read_text().splitlines()) == 1 + 4 * (1 + 2)


@pytest.mark.parametrize("dose, words", [("nan", "finite"), ("inf", "finite"), ("-1", "non-negative")])
def test_bad_export_dose_is_one_message_and_exit_2(tmp_path, capsys, dose, words):
    pytest.importorskip("libsbml")
    out = tmp_path / "m.xml"
    assert main(["export", HNSCC, "--dose", dose, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exosim: error: --dose:") and words in err and not out.exists()


def test_a_medium_without_volume_is_an_error_before_any_run(tmp_path, capsys):
    """Concentrations divide by the volume: 0 mL is refused (it failed every member, or raised
    ZeroDivisionError in the compiled solver)."""
    f = tmp_path / "dry.yaml"
    f.write_text(yaml.safe_dump(mutate("media.well.volume", "0 mL"), sort_keys=False))
    out = tmp_path / "out"
    assert main(["run", str(f), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"exosim: error: {f}: media.well.volume: expected a positive value, got 0 mL"), err
    assert err.count("\n") == 0 and not out.exists()


def test_validate_checks_what_running_needs_beyond_the_schema(tmp_path, capsys):
    """A calibration block's data and a record too large for memory fail `validate`, as they would fail
    `exosim figures` and `exosim run`; the record's message names the output time step that makes it large."""
    calib = tmp_path / "calib.yaml"
    calib.write_text(yaml.safe_dump(mutate("calibration", {"data": "nope.csv", "params": ["alpha0"]}), sort_keys=False))
    fine = tmp_path / "steps.yaml"
    fine.write_text(yaml.safe_dump(mutate("output", {"time_step": "0.0001 h"}), sort_keys=False))
    assert main(["validate", str(calib), str(fine)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(f"exosim: error: {calib}: calibration: {tmp_path / 'nope.csv'}: no such data"), lines
    assert lines[1].startswith(f"exosim: error: {fine}: output.time_step: the run would record about"), lines


def test_messages_for_an_empty_file_a_dose_without_grid_and_a_parameter_named_twice(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["validate", str(empty)]) == 2
    assert "the file is empty (or only comments)" in capsys.readouterr().err
    nogrid = tmp_path / "nogrid.yaml"
    data = mutate("timeline.2.irradiate.dose", "2 Gy")
    del data["dose_grid"]
    nogrid.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["export", str(nogrid), "--dose", "2", "-o", str(tmp_path / "m.xml")]) == 2
    assert "--dose 2: the scenario has no dose grid" in capsys.readouterr().err
    iccm = SCENARIOS / "iccm_bystander_medium_transfer.yaml"
    data_file = tmp_path / "d.csv"
    data_file.write_text("arm,dose,survival,sd\nICCM,0.05,0.6,0.05\n")
    key = "recipients.bystander_susceptible_fraction"
    argv = ["export-petab", str(iccm), str(data_file), "--params", f"{key},{key}", "-o", str(tmp_path / "p")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"exosim: error: --params: {key} given twice", err


def test_a_long_timeline_without_aliases_is_read(tmp_path):
    """A thousand and a half plain events are a protocol, not an alias bomb."""
    data = copy.deepcopy(BASE)
    data["timeline"][3:3] = [
        {"at": f"{60 + i * 0.001:.3f} h", "change_medium": {"medium": "flask"}} for i in range(1500)
    ]
    f = tmp_path / "long.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert len(exosim.load_scenario(f).timeline) == 1504


def test_cargos_that_together_repress_a_target_below_zero_are_named(tmp_path, capsys):
    """Each effect above -1, their sum not: one message naming every contributing cargo's effect
    (and where the values were written: the hypothesis)."""
    data = mutate("cargo", {"mir_22": {}, "mir_9": {}})
    effect = {"effects": {"dsb_repair_activity": -0.5}}  # each within its documented range
    data["hypothesis"] = {"statement": "both repress repair", "cargo": {"mir_22": effect, "mir_9": effect}}
    f = tmp_path / "two.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert ": hypothesis.cargo: " in err and "sums to -1;" in err, err
    assert "mir_22.effects.dsb_repair_activity = -0.5" in err and "mir_9.effects.dsb_repair_activity = -0.5" in err
