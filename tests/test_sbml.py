"""SBML: committed models are current and valid; comp flattening and scenario exports
simulate in libRoadRunner as exosim does; export picks the requested member and files
are written atomically."""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest

libsbml = pytest.importorskip("libsbml", reason="SBML tests need the 'test' extra (python-libsbml)")
roadrunner = pytest.importorskip("roadrunner", reason="SBML tests need the 'test' extra (libroadrunner)")

import exosim  # noqa: E402
from conftest import ROOT, SCENARIOS  # noqa: E402
from exosim.cli import main  # noqa: E402
from exosim.io.sbml import SBMLExportError, export, export_member, validate, write_models, write_validated  # noqa: E402
from exosim.io.sbml.build import flat_document  # noqa: E402
from exosim.io.sbml.compose import MODULE_FILES  # noqa: E402
from exosim.io.sbml.crosscheck import crosscheck_member  # noqa: E402
from exosim.io.sbml.units import unit_kinds  # noqa: E402
from exosim.scenario.runner import compile_scenario  # noqa: E402
from exosim.scenario.schema import ScenarioError  # noqa: E402
from exosim.util.atomic import atomic_write  # noqa: E402

MODELS = ROOT / "models"
FILES = [*MODULE_FILES, "exosim_composed_comp", "exosim_composed_flat"]


def test_committed_models_are_current(tmp_path):
    write_models(tmp_path)
    for name in FILES:
        committed = (MODELS / f"{name}.xml").read_text()
        assert (tmp_path / f"{name}.xml").read_text() == committed, f"models/{name}.xml is stale: exosim export-sbml"


def test_export_sbml_writes_the_models_together_and_refuses_a_bad_folder_in_one_line(tmp_path, capsys):
    """export-sbml claims its folder as the other commands do: a file, a path under a file or an
    empty path is one message and exit 2, nothing written; the files appear together."""
    afile = tmp_path / "afile"
    afile.write_text("")
    for target, words in ((afile, "is a file, not a folder"), (afile / "sub", "Not a directory")):
        assert main(["export-sbml", "-o", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("exosim: error: ") and words in err[0], err
    with pytest.raises(SystemExit) as stop:
        main(["export-sbml", "-o", ""])
    assert stop.value.code == 2 and "expected a path, got an empty string" in capsys.readouterr().err
    out = tmp_path / "models"
    assert main(["export-sbml", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.xml" for name in FILES)  # no staging left
    printed = capsys.readouterr().out
    assert all(f"wrote {out / name}.xml" in printed for name in FILES)


@pytest.mark.parametrize("name", FILES)
def test_models_validate_without_errors_and_have_units_and_sbo(name):
    doc = libsbml.readSBMLFromFile(str(MODELS / f"{name}.xml"))
    assert doc.getLevel() == 3 and doc.getVersion() == 2
    result = validate(doc)
    assert result.errors == []
    # every literal carries its unit (sbml:units), so libsbml checks the units of every formula
    assert result.warnings == [], result.warnings[:3]
    model = doc.getModel()
    for p in model.getListOfParameters():
        assert p.isSetUnits(), p.getId()
    for s in model.getListOfSpecies():
        assert s.isSetSubstanceUnits() and s.getSBOTermID(), s.getId()
    for c in model.getListOfCompartments():
        assert c.isSetUnits() and c.getSBOTermID() == "SBO:0000290", c.getId()


@pytest.mark.parametrize("name", FILES)
def test_display_names_are_unique_and_name_their_population(name):
    """COPASI builds its names from display names: duplicates would show as alpha0_2. Every
    parameter and species of a population or medium says which, and the model declares length
    and area units (COPASI warns on import otherwise)."""
    model = libsbml.readSBMLFromFile(str(MODELS / f"{name}.xml")).getModel()
    items = list(model.getListOfParameters()) + list(model.getListOfSpecies())
    names = [x.getName() for x in items]
    assert len(set(names)) == len(names)
    for x in items:
        namespace = x.getId().split("__", 1)[0]
        if "__" in x.getId():
            assert namespace in x.getName(), (x.getId(), x.getName())
    assert model.isSetLengthUnits() and model.isSetAreaUnits()


def test_parameter_notes_carry_sources():
    model = libsbml.readSBMLFromFile(str(MODELS / "exosim_composed_flat.xml")).getModel()
    notes = model.getParameter("recipients__alpha0").getNotesString()
    assert "Qi XS" in notes and "1/Gy" in notes
    assert "Assumed" in model.getParameter("recipients__binding_rate_constant").getNotesString()


def test_lq_outputs_are_assignment_rules():
    model = libsbml.readSBMLFromFile(str(MODELS / "exosim_composed_flat.xml")).getModel()
    for sym in ("recipients__alpha_eff", "recipients__beta_eff", "recipients__surviving_fraction"):
        rule = model.getRule(sym)
        assert rule is not None and rule.isAssignment(), sym


def _rr(text: str):
    rr = roadrunner.RoadRunner(text)
    rr.integrator.relative_tolerance = 1e-10
    rr.integrator.absolute_tolerance = 1e-12
    return rr


def test_flattened_comp_model_simulates_like_the_directly_assembled_model():
    flat = _rr((MODELS / "exosim_composed_flat.xml").read_text())
    direct = _rr(libsbml.writeSBMLToString(flat_document()))
    ids = [
        "recipients__surviving_fraction",
        "medium__vesicles",
        "recipients__LIG4_level",
        "recipients__mir_1246_bystander_cytosolic",
        "donors__secretion_drive",
        "recipients__alpha_eff",
    ]
    runs = []
    for rr in (flat, direct):
        rr.setValue("donors__dsb", 35 * 6.0)
        rr.setValue("donors__dose_received", 6.0)
        rr.setValue("recipients__dsb", 35 * 2.0)
        runs.append(np.asarray(rr.simulate(0, 96, 9, ["time", *ids])))
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-8, atol=1e-12)
    assert runs[0][-1, 1] < 1.0  # the recipients were irradiated and hit by bystander cargo


def test_repair_module_alone_is_the_kinetic_lq_model():
    """The standalone repair file (modifiers at baseline) with one repair class (its complex
    share set to 0 in the file): SF after an acute dose equals the closed form of
    dB/dt = -mu B - k B^2 (see test_lq_closed_forms)."""
    text = (MODELS / "exosim_repair.xml").read_text()
    one_class = re.sub(r'(id="recipients__slow_repair_share"[^>]*value=")[^"]*"', r'\g<1>0"', text)
    assert one_class != text
    rr = _rr(one_class)
    dose = 6.0
    rr.setValue("recipients__dsb", 35 * dose)
    rr.setValue("recipients__lipid_peroxides", dose)
    rr.simulate(0, 48, 2)
    lam, beta0, alpha0, share, share_f = math.log(2) / 0.28, 0.0272, 0.22, 0.2, 0.1
    kappa, gamma = 2 * lam * beta0 / 35**2, share * alpha0 * lam / 35
    mis = (1 - share - share_f) * alpha0 / 35
    b0 = 35 * dose
    integral = math.log1p(kappa * b0 / lam) / kappa
    expected = math.exp(-(mis * lam * integral + b0 - lam * integral + gamma * integral + share_f * alpha0 * dose))
    assert rr.getValue("recipients__surviving_fraction") == pytest.approx(expected, rel=1e-7)


@pytest.fixture(scope="module")
def tight_runs():
    """Scenario runs at rtol 1e-11, computed on first use (so a selection runs only its own).

    One order tighter than libRoadRunner: the numpy backend shares its steps across the batch,
    and a member whose state hangs on a steep switch (the bystander response near threshold,
    partial field with GW4869) then carries a global error of about 1e-6 at rtol 1e-10 when
    another member's fast foci marking sets the steps (2e-10 at rtol 1e-11; 2e-9 per member)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            sc = exosim.load_scenario(SCENARIOS / f"{name}.yaml")
            sc = sc.model_copy(update={"solver": sc.solver.model_copy(update={"rtol": 1e-11, "atol": 1e-14})})
            compiled = exosim.compile_scenario(sc)
            cache[name] = (compiled, compiled.run())
        return cache[name]

    return get


#: the scenarios cross-checked in every test run: medium transfer with cargo, bystander factor with
#: pre-treatment, partial field (two scored populations, foci), systemic wiring (links between
#: media), a sponge (repressor titration), hypoxic donors with ferroptosis and the immune arm
#: (tumour volumes, dendritic and T cells);
#: every other shipped scenario is marked slow (``python -m pytest -m slow`` runs them all)
CROSSCHECK_EVERY_RUN = {
    "hnscc_exosome_radioresistance",
    "iccm_bystander_medium_transfer",
    "partial_field_bystander",
    "systemic_mir208a_abscopal",
    "circmetrn_gbm_exosome_radioresistance",
    "angptl4_nsclc_hypoxic_exosome_ferroptosis",
    "exosomal_dsdna_abscopal_immune",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(f.stem, marks=() if f.stem in CROSSCHECK_EVERY_RUN else pytest.mark.slow)
        for f in sorted(SCENARIOS.glob("*.yaml"))
    ],
)
def test_exported_scenarios_simulate_identically_in_libroadrunner(tight_runs, name):
    """Every arm at the largest grid dose: states at all non-event output times and the scored
    survival agree to 1e-6 relative (libRoadRunner CVODE at rtol 1e-10 vs exosim DOPRI5 at 1e-11)."""
    compiled, result = tight_runs(name)
    n_grid = int(np.sum(compiled.arm_index == 0))
    for a in range(len(compiled.arms)):
        dev = crosscheck_member(compiled, result, a * n_grid + n_grid - 1)
        assert dev.states < 1e-6, dev
        assert dev.survival < 1e-6, dev


@pytest.mark.parametrize("name", sorted(CROSSCHECK_EVERY_RUN))
def test_exported_scenarios_simulate_identically_in_copasi(tight_runs, name):
    """COPASI (LSODA through basico, amounts as numbers) reads the same exports: every arm at
    the largest grid dose agrees with exosim to 1e-6 relative (measured: 4e-9 states, 4e-10 SF)."""
    pytest.importorskip("basico", reason="the COPASI cross-check needs the 'test' extra (copasi-basico)")
    compiled, result = tight_runs(name)
    n_grid = int(np.sum(compiled.arm_index == 0))
    for a in range(len(compiled.arms)):
        dev = crosscheck_member(compiled, result, a * n_grid + n_grid - 1, simulator="copasi")
        assert dev.states < 1e-6, dev
        assert dev.survival < 1e-6, dev


def test_export_cli_writes_valid_sbml(tmp_path, capsys):
    out = tmp_path / "hnscc.xml"
    args = [
        "export",
        str(SCENARIOS / "hnscc_exosome_radioresistance.yaml"),
        "-o",
        str(out),
        "--arm",
        "exosomes from 6 Gy donors",
        "--dose",
        "4",
    ]
    assert main(args) == 0
    doc = libsbml.readSBMLFromFile(str(out))
    assert validate(doc).ok and doc.getModel().getNumEvents() >= 4
    assert "exosomes from 6 Gy donors" in doc.getModel().getName()


def test_export_of_an_invalid_scenario_gives_the_validate_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (SCENARIOS / "mir22_exosome_radiosensitisation.yaml").read_text().replace("volume: 2 mL", "volume: 2")
    )
    assert main(["validate", str(bad)]) == 2
    expected = capsys.readouterr().err
    assert main(["export", str(bad), "-o", str(tmp_path / "x.xml")]) == 2
    assert capsys.readouterr().err == expected
    assert not (tmp_path / "x.xml").exists()


def test_export_to_unwritable_path_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "no" / "such" / "dir" / "x.xml"
    assert main(["export", str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml"), "-o", str(target)]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_an_invalid_document_is_never_written(tmp_path):
    doc = flat_document()
    next(r for r in doc.getModel().getListOfRules() if r.isRate()).setVariable("no_such_symbol")
    with pytest.raises(SBMLExportError, match="validation failed"):
        write_validated(doc, tmp_path / "bad.xml")
    assert list(tmp_path.iterdir()) == []


HNSCC = SCENARIOS / "hnscc_exosome_radioresistance.yaml"


def test_export_of_an_arm_and_dose_is_export_member_of_that_member_and_writes_atomically(tmp_path):
    compiled = exosim.compile_scenario(exosim.load_scenario(HNSCC))
    arm = [a.name for a in compiled.arms].index("exosomes from 6 Gy donors")
    member = int(np.flatnonzero((compiled.arm_index == arm) & (compiled.grid == 4.0))[0])
    expected = libsbml.writeSBMLToString(export_member(compiled, member)[0])
    out = tmp_path / "hnscc.xml"
    doc = export(HNSCC, arm="exosomes from 6 Gy donors", dose=4, path=out)
    assert libsbml.writeSBMLToString(doc) == expected
    assert out.read_text() == expected
    assert validate(libsbml.readSBMLFromFile(str(out))).ok
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_exported_events_are_named_by_the_scenarios_labels_and_fractions():
    """An event's SBML name says what it is: its type, the scenario's label and key path, and for a
    fractionated irradiation which fraction (the ids only count)."""
    sc = exosim.load_scenario(HNSCC)
    doc = export(sc, arm="exosomes from 6 Gy donors", dose=4)  # held: the model lives in the document
    names = [e.getName() for e in doc.getModel().getListOfEvents()]
    labels = [ev.label for ev in sc.timeline if ev.label and ev.score is None]
    assert labels and all(any(f": {label} (" in n for n in names) for label in labels), names
    course = exosim.load_scenario(SCENARIOS / "fractionated_course_exosome_buildup.yaml")
    fractions = course.timeline[0].irradiate.fractions
    doc = export(course)
    names = [e.getName() for e in doc.getModel().getListOfEvents()]
    assert fractions > 1 and sum(n.endswith(f"/{fractions})") for n in names) == fractions
    assert f"fraction 2/{fractions})" in " ".join(names)


def test_export_defaults_to_the_first_arm_at_the_largest_grid_dose():
    doc = export(exosim.load_scenario(HNSCC))
    assert doc.getModel().getName().endswith(": no exosomes, grid dose 8 Gy")


def test_export_of_an_unknown_arm_or_off_grid_dose_is_a_scenario_error():
    scenario = exosim.load_scenario(HNSCC)
    with pytest.raises(ScenarioError, match="arms: no arm named 'nope'; arms:\n  no exosomes\n  exosomes from 0 Gy"):
        export(scenario, arm="nope")
    with pytest.raises(ScenarioError, match="dose_grid: dose 4.5 Gy is not on the grid"):
        export(scenario, dose=4.5)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_replaces_the_file_with_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write(target, "first\n")
    atomic_write(target, "second \u03b1\n")
    assert target.read_text(encoding="utf-8") == "second \u03b1\n"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    atomic_write(target, b"\x00\x01", mode=0o600)
    assert target.read_bytes() == b"\x00\x01" and target.stat().st_mode & 0o777 == 0o600
    assert list(tmp_path.iterdir()) == [target]


def test_a_failing_atomic_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    with pytest.raises(OSError):
        atomic_write(tmp_path / "no" / "such" / "dir" / "x.txt", "new")
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize(
    "text,kinds,mult",
    [
        ("mL/(h*site)", {"litre": 1, "second": -1, "item": -1}, 1e-3 / 3600),
        ("1/Gy^2", {"gray": -2}, 1.0),
        ("particles/cell/h", {"item": 1, "second": -1}, 1 / 3600),
        ("DSB/Gy/cell", {"gray": -1}, 1.0),
        ("1", {}, 1.0),
    ],
)
def test_unit_strings_map_to_sbml_base_units(text, kinds, mult):
    got, m = unit_kinds(text)
    assert got == kinds and m == pytest.approx(mult)


@pytest.mark.parametrize("name", [f.stem for f in sorted(SCENARIOS.glob("*.yaml"))])
def test_scenario_exports_have_consistent_units_and_no_unverifiable_literal(name):
    """Units of every literal are inferred from its context (exosim.io.sbml.literals): libsbml
    then verifies the units of every rule, rate, event assignment and trigger of each arm,
    finding neither an inconsistency (10513, 10563, ...) nor an undeclared unit (99505)."""
    compiled = compile_scenario(exosim.load_scenario(SCENARIOS / f"{name}.yaml"))
    for a in range(len(compiled.arms)):
        member = int(np.flatnonzero(compiled.arm_index == a)[-1])
        doc, _ = export_member(compiled, member)
        result = validate(doc)
        assert result.errors == [] and result.warnings == [], (compiled.arms[a].name, result.warnings[:3])


@pytest.mark.parametrize(
    "text, declared, literals",
    [
        ("log(2)/T", "1/h", [()]),  # inside log: dimensionless
        ("1 - s", "1", [()]),
        ("dsb + y*8", "DSB/cell", [(("gray", 1.0),)]),  # the dose of an irradiation event
        ("x + 8", "Gy", [(("gray", 1.0),)]),
        ("2/T", "1/h", [()]),  # 2/T must be 1/h with T in h
        ("(1 - s)**2/(2*k)", "h", [(), (), ()]),  # k in 1/h; the exponent is dimensionless
        ("v*1.5", "particles", [()]),
    ],
)
def test_literal_units_follow_from_their_context(text, declared, literals):
    import ast

    from exosim.io.sbml.literals import infer_literal_units, kinds_of
    from exosim.model.expr import parse

    units = {"T": "h", "x": "Gy", "y": "DSB/cell/Gy", "s": "1", "dsb": "DSB/cell", "k": "1/h", "v": "particles"}
    tree = parse(text)
    found = infer_literal_units(tree, kinds_of(declared), lambda n: kinds_of(units[n]) if n in units else None)
    got = [found[id(n)][0] for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert sorted(got) == sorted(literals)


def test_the_zero_of_pos_and_hill_carries_the_unit_of_their_argument():
    from exosim.io.sbml.literals import infer_literal_units, kinds_of
    from exosim.model.expr import parse

    units = {"x": "particles", "K": "particles", "n": "1"}
    for text in ("pos(x - K)", "hill(x, K, n)"):
        tree = parse(text)
        found = infer_literal_units(tree, None, lambda n: kinds_of(units[n]))
        assert found[id(tree)] == kinds_of("particles")
