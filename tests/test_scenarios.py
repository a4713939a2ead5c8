"""Every shipped scenario runs and shows the published direction; interventions remove it.

Directions come from the cargo catalogue (docs/model.md section 6): resistance raises the
recipients' survival above control, sensitisation and bystander damage lower it.  Runs are
reduced to two grid doses to keep CI fast.
"""

from __future__ import annotations

import numpy as np
import pytest

import exosim
from conftest import SCENARIOS
from exosim.model import catalogue as cat

FILES = sorted(SCENARIOS.glob("*.yaml"))
#: arm-name fragments of interventions that remove the effect (published controls)
REMOVING = ("heated", "RNase with detergent", "destabilised", "heparin", "GW4869")
SIGN = {"resistance": 1.0, "sensitisation": -1.0, "bystander damage": -1.0, "bystander autophagy": 1.0}
#: published controls the model does NOT reproduce, each stated in its scenario's description:
#: GW4869 (95 %) leaves enough signal above the all-or-none threshold at 5 Gy donors
NOT_REPRODUCED = {("iccm_bystander_medium_transfer", "GW4869")}


def reduced(path):
    sc = exosim.load_scenario(path)
    if sc.dose_grid is None:
        return sc, None
    values = sc.dose_grid.values
    keep = [0.0, 4.0] if "recipient" in sc.dose_grid.label and 4.0 in values else [values[0], values[-1]]
    return sc.model_copy(update={"dose_grid": sc.dose_grid.model_copy(update={"values": keep})}), keep[-1]


@pytest.fixture(scope="module")
def results():
    out = {}
    for path in FILES:
        sc, dose = reduced(path)
        out[path.stem] = (sc, dose, exosim.run(sc, time_courses=False))
    return out


#: directions read from another readout than survival: the scored cells' reported modifier
READOUT = {"bystander autophagy": "autophagy"}


def effects(sc, dose, res, readout: str | None = None):
    """ln(SF_arm / SF_control) at the evaluated grid dose, per arm name (or ln of the ratio of the
    scored cells' ``readout`` modifier, for directions published as that readout)."""
    ctrl = next(i for i, a in enumerate(sc.arms) if a.control)
    at = (res.grid == dose) if dose is not None else np.ones(res.grid.size, bool)
    values = res.surviving_fraction if readout is None else np.array([r[readout] for r in res.survival_rows()])
    sf = {a.name: values[(res.arm_index == i) & at][0] for i, a in enumerate(sc.arms)}
    return {k: float(np.log(v / sf[sc.arms[ctrl].name])) for k, v in sf.items()}, sc.arms[ctrl].name


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_scenario_runs_and_has_the_published_direction(path, results):
    sc, dose, res = results[path.stem]
    assert np.all(res.status == 0), res.messages
    if sc.immune is not None:
        # the endpoint is tumour volume (growth delay), not survival: its published directions
        # (radiotherapy and PD-L1 blockade delay the distant tumour) are tested in test_immune.py
        volumes = [v for r in res.summary_rows() for k, v in r.items() if k.endswith("_volume_at_scoring_mm3")]
        assert volumes and np.all(np.isfinite(volumes)) and min(volumes) > 0
        return
    cargo = res.model.cargos[0]
    direction = cat.cargo_catalogue()[cargo]["direction"]
    eff, control = effects(sc, dose, res, READOUT.get(direction))
    main = max((k for k in eff if k != control), key=lambda k: abs(eff[k]))
    delivered = res.reference[f"{cargo}_delivered_at_scoring"][res.arm_index == [a.name for a in sc.arms].index(main)]
    if abs(eff[main]) < 1e-5:
        # no resolvable effect: only acceptable when exosome delivery is far below the
        # order-10^3 copies per cell needed for repression (docs/model.md 3.3); the report says so
        assert delivered.max() < 1.0, (main, eff[main], delivered)
        return
    assert np.sign(eff[main]) == SIGN[direction], (main, eff[main], direction)
    for name, e in eff.items():
        if name != control and any(f in name for f in REMOVING):
            if any(sc.name == n and f in name for n, f in NOT_REPRODUCED):
                assert "not reproduced" in sc.description and abs(e) > 0.35 * abs(eff[main]), (name, e)
                continue
            assert abs(e) < 0.35 * abs(eff[main]), (name, e, eff[main])
        if "RNase without detergent" in name:  # vesicle membranes protect RNA cargo
            assert abs(e) > 0.9 * abs(eff[main]), (name, e, eff[main])


def test_every_cargo_row_of_the_catalogue_has_a_scenario(results):
    used = set()
    for sc, _, _ in results.values():
        used |= set(sc.cargo)
    missing = set(cat.cargo_catalogue()) - used
    assert not missing, f"cargo without a scenario: {sorted(missing)}"


def test_partial_field_out_of_field_killing_is_all_or_none(results):
    # above threshold the out-of-field cells lose their susceptible share whatever the field
    # size (McMahon et al. 2013); the scenario says the smaller-field claim is not reproduced
    sc, dose, res = results["partial_field_bystander"]
    eff, _ = effects(sc, dose, res)
    plateau = np.log(1 - cat.parameter_table()["bystander_susceptible_fraction"]["value"])
    assert eff["half the flask in field"] == pytest.approx(plateau, abs=0.01)
    assert eff["quarter of the flask in field"] == pytest.approx(plateau, abs=0.01)
    assert "not reproduced" in sc.description
    in_field = res.reference["surviving_fraction__in_field"]
    assert np.all(np.isfinite(in_field))
    # in-field cells at 4 Gy die far more than their shielded neighbours
    at = res.grid == dose
    assert np.all(in_field[at] < 0.5 * res.surviving_fraction[at])


def test_systemic_scenario_delivers_through_blood_with_fast_clearance(results):
    sc, dose, res = results["systemic_mir208a_abscopal"]
    # blood's clearance comes from the media catalogue (half-life 8 min), not from the scenario
    from exosim.scenario.runner import compile_scenario

    assert sc.media["blood"].kind == "blood" and not sc.media["blood"].parameters
    compiled = compile_scenario(sc)
    rates = {q.name: compiled.parameters[0, j] for j, q in enumerate(compiled.model.parameters)}
    assert rates["blood__vesicle_decay_rate"] == pytest.approx(np.log(2) / 0.13, rel=0.01)
    assert rates["distant_site__vesicle_decay_rate"] == 0.05
    d = res.reference["mir_208a_delivered_at_scoring"]
    names = [a.name for a in sc.arms]
    irradiated = d[res.arm_index == names.index("primary 10 Gy")]
    sham = d[res.arm_index == names.index("primary not irradiated")]
    inhibited = d[res.arm_index == names.index("primary 10 Gy, release inhibited (GW4869)")]
    assert np.all(irradiated > 2 * sham) and np.all(inhibited < sham)


def test_fractionated_course_builds_up_exosomes_and_protects():
    sc = exosim.load_scenario(SCENARIOS / "fractionated_course_exosome_buildup.yaml")
    res = exosim.run(sc)
    m = res.model
    comm = [a.name for a in sc.arms].index("exosome communication")
    factor = res.states[comm, :, m.state_index["tumour__hnscc_irradiated_exosome_factor_cytosolic"]]

    def at(hours):
        return factor[np.searchsorted(res.times, hours)]

    # fractions Monday to Friday at 0, 24, ..., 96 h, then from 168 h: the factor builds up over the
    # first fractions (each raises release before the last one's vesicles are gone), then falls as the
    # doomed cells die (mean 72 h, two stages) and over the weekend
    dead = res.states[comm, :, m.state_index["tumour__dead_share"]]
    assert at(72.0) > 1.2 * at(24.0)
    assert dead[np.searchsorted(res.times, 96.0)] > 0.3
    assert at(120.0) < at(72.0)
    assert at(168.0) < 0.9 * at(120.0)
    assert res.surviving_fraction[comm] > res.surviving_fraction[1 - comm]
    # 30 x 2 Gy: survival is of the order of SF2^30 (about 1e-7), not of one fraction
    assert 1e-10 < res.surviving_fraction.min() < 1e-5
