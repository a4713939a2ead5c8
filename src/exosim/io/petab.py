"""PEtab export of a fit problem: one SBML model and the PEtab v1 tables (``exosim export-petab``),
and the way back (``exosim fit --petab``, :func:`read_petab`).

A fit problem (a scenario, data files in exosim's formats, the parameters to estimate) is
written as a PEtab v1 problem [1]_ that pyPESTO, AMICI, COPASI or Data2Dynamics can solve:

* ``model.xml``: one flat SBML Level 3 Version 2 model (:mod:`exosim.io.sbml.build`) serving
  every member (arm, dose) the data use. What differs between members is a parameter, not a
  literal: arm settings are the model parameters themselves; an event's dose, dose-rate
  change or trigger time that differs between members is a constant ``event_<k>_<name>``; an
  event that only some members have carries a switch ``event_<k>_active`` in its trigger.
  An estimated key with an instance per population (``internalisation_rate``) is one SBML
  parameter that sets the instances by initial assignments. The entities the tables set are
  named by their ids (COPASI's PEtab importer finds them by name);
* ``conditions.tsv``: one condition per member used by the data, setting those values;
* ``measurements.tsv``: the observations, at SBML time (exosim time minus the first event time);
* ``observables.tsv``: the scored population's surviving fraction (divided by the reference
  survival for relative data), expected colony counts, or model states and rules for time courses;
* ``parameters.tsv``: the estimated parameters with the catalogue's (or the given) range as
  bounds, log10 scale where the range is positive, nominal values from the scenario; the
  reference survivals, plating efficiencies, dispersions and relative scales;
* ``problem.yaml``, ``parameter_map.csv`` (exosim keys and scenario paths -> SBML and PEtab ids)
  and ``README.md`` (what the problem contains and what PEtab v1 cannot express).

The export records in the ``exosim`` block of ``problem.yaml`` (:data:`METADATA_KEY`; PEtab v1
ignores keys it does not define) the scenario (absolute path, path relative to the folder,
sha256), likelihood, normalisation, time offset, each condition's arm, dose and values, each
observable's kind and formulas and each data set's kind and units. :func:`read_petab` uses it
to map a problem, with edited measurement, condition and parameter tables, back to exosim's fit
inputs: conditions to members (arm, dose), measurements to the data formats of ``exosim fit``,
estimated parameters to exosim keys through ``parameter_map.csv``. What it cannot map is a
:class:`PetabImportError` naming the file, the row or key and what was expected; a recorded
scenario whose sha256 changed is refused, a scenario given instead is fitted with a
:class:`PetabImportWarning`.

What PEtab v1 cannot express, and how the export handles it:

* **Survival relative to another member** (the control arm at dose 0, or each arm's dose 0):
  an observable sees one simulation only. The reference survival is exported as a fixed
  parameter, which is exact when the reference does not depend on the estimated parameters;
  the export checks this by simulating the reference at the nominal values and near the
  ends of the bounds (each parameter alone and all together) and refuses
  (:class:`PetabExportError`) when it varies by more than :data:`REFERENCE_RTOL`.
* **Poisson and quasi-Poisson colony counts**: PEtab v1 has normal and Laplace noise only.
  Counts are exported as normal with the Poisson variance ``phi * mu`` (``mu = seeded * PE *
  SF``); the plating efficiency is an estimated parameter (exosim profiles it out in closed
  form) and the quasi-Poisson dispersion ``phi`` an estimated parameter (exosim: the Pearson
  statistic over its degrees of freedom). The estimates approximate exosim's, they are not
  equal.
* **Relative time-course data**: the closed-form scale factor (Loos et al. 2018 [2]_) is an
  estimated parameter; the optimum is the same.
* **Values at event times**: exosim reports the value just before an event at that time,
  SBML simulators the value just after it; such measurements are listed in the README.
* The likelihoods differ by a constant: PEtab's negative log-likelihood includes
  ``0.5 * log(2 pi sd^2)`` per Gaussian observation, exosim's leaves it out.

References
----------
.. [1] Schmiester L, et al. (2021) PEtab -- Interoperable specification of parameter
   estimation problems in systems biology. PLoS Comput Biol 17:e1008646.
   doi:10.1371/journal.pcbi.1008646
.. [2] Loos C, et al. (2018) Hierarchical optimization for the efficient parametrization of
   ODE models. Bioinformatics 34:4266. doi:10.1093/bioinformatics/bty514
.. [3] Braselmann H, et al. (2015) CFAssay: statistical analysis of the colony formation
   assay. Radiat Oncol 10:223. doi:10.1186/s13014-015-0529-y
"""

from __future__ import annotations

import ast
import logging
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exosim._version import __version__
from exosim.analysis.fit import FitError, FitProblem, Observations, default_likelihood, read_observations
from exosim.model import catalogue as cat
from exosim.model import expr as _expr
from exosim.model.declare import SEP
from exosim.model.units import UNITS
from exosim.scenario import observables
from exosim.scenario.actions import Action
from exosim.scenario.runner import CompiledScenario
from exosim.scenario.schema import Scenario

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "PETAB_FILES",
    "REFERENCE_RTOL",
    "METADATA_KEY",
    "PetabExport",
    "PetabExportError",
    "PetabImport",
    "PetabImportError",
    "PetabImportWarning",
    "petab_problem",
    "export_petab",
    "read_petab",
]

#: key of the ``problem.yaml`` block with what :func:`read_petab` needs (PEtab v1 ignores it)
METADATA_KEY = "exosim"

#: every file the export writes into its folder (a re-export replaces them all)
PETAB_FILES = (
    "model.xml",
    "conditions.tsv",
    "measurements.tsv",
    "observables.tsv",
    "parameters.tsv",
    "problem.yaml",
    "parameter_map.csv",
    "README.md",
)

#: largest relative change of a reference survival over the parameter bounds for which it is
#: exported as a fixed parameter
REFERENCE_RTOL = 1e-9

#: unit of each per-member constant of the event declarations (:mod:`exosim.scenario.actions`)
CONSTANT_UNITS = {"D": "Gy", "delta": "Gy/h"}

#: what a per-member constant is, for names and notes
CONSTANT_NAMES = {"D": "dose", "delta": "dose-rate change"}


class PetabExportError(ValueError):
    """A fit problem that PEtab v1 cannot express, or an exported problem that fails validation."""


def _absolute(source: str) -> str:
    """A scenario's source as an absolute path where it is a file (else as it is: ``<scenario>``)."""
    path = Path(source)
    return str(path.resolve()) if path.is_file() else source


def _sid(text: str, prefix: str = "x") -> str:
    """A valid SBML/PEtab identifier from free text (``ICCM heated to 70 C`` -> ``ICCM_heated_to_70_C``)."""
    out = re.sub(r"\W+", "_", text).strip("_") or prefix
    return out if re.match(r"[A-Za-z_]", out) else f"{prefix}_{out}"


def _number(v: float) -> str:
    """A dose as part of an id: ``0.05`` -> ``0p05``."""
    return f"{v:g}".replace(".", "p").replace("-", "m").replace("+", "")


# ---------------------------------------------------------------------- events of all members
@dataclass
class _Slot:
    """One SBML event standing for one action of each member that has it.

    ``actions`` maps member -> the :class:`Action` it replays; the actions share the
    event type and the declaration, and may differ in time and per-member constants.
    """

    key: tuple
    actions: dict[int, Action] = field(default_factory=dict)

    @property
    def first(self) -> Action:
        return next(iter(self.actions.values()))


def _signature(a: Action) -> tuple:
    """Event type and declaration of an action (what must agree for members to share an SBML event)."""
    return (a.kind, tuple((x.symbol, ast.dump(x.expr)) for x in a.assignments), tuple(sorted(a.constants)))


def _slots(compiled: CompiledScenario, members: list[int]) -> list[_Slot]:
    """The SBML events of all members, in priority order (highest first).

    Each member's actions up to scoring are taken in the order exosim applies them; the
    ``j``-th action of one timeline entry (key path) of one declaration is the same SBML
    event in every member.  Events at one time keep exosim's order through priorities; an
    order that no single ranking satisfies is an error.
    """
    t_end = compiled.score_event.at
    slots: dict[tuple, _Slot] = {}
    sequences = []
    for m in members:
        seen: dict[tuple, int] = {}
        sequence = []
        for a in compiled.actions:  # sorted by (time, timeline order)
            if a.time > t_end or not a.acts[m]:
                continue
            base = (a.path, _signature(a))
            j = seen.get(base, 0)
            seen[base] = j + 1
            key = (*base, j)
            slots.setdefault(key, _Slot(key)).actions[m] = a
            sequence.append((a.time, key))
        sequences.append(sequence)
    # exosim's order at equal times -> edges "before"; rank by Kahn's algorithm, earliest first
    after: dict[tuple, set] = {k: set() for k in slots}
    indegree = dict.fromkeys(slots, 0)
    for sequence in sequences:
        for (t1, k1), (t2, k2) in zip(sequence, sequence[1:]):
            if t1 == t2 and k2 not in after[k1]:
                after[k1].add(k2)
                indegree[k2] += 1
    first_seen = {}
    for a_pos, a in enumerate(compiled.actions):
        for k, s in slots.items():
            if any(x is a for x in s.actions.values()):
                first_seen.setdefault(k, (a.time, a_pos))
    ready = sorted((k for k, d in indegree.items() if d == 0), key=first_seen.get)
    order = []
    while ready:
        k = ready.pop(0)
        order.append(k)
        for k2 in after[k]:
            indegree[k2] -= 1
            if indegree[k2] == 0:
                ready.append(k2)
        ready.sort(key=first_seen.get)
    if len(order) != len(slots):
        raise PetabExportError(
            f"scenario {compiled.scenario.name!r}: the members apply simultaneous events in orders that no "
            "single SBML priority ranking reproduces; export the members separately (exosim export)"
        )
    return [slots[k] for k in order]


@dataclass
class _Events:
    """SBML events of the shared model, their constants and the per-member values of those."""

    events: list  # SBMLEvent
    constants: list  # SBMLConstant
    event_parameters: set[str]
    per_member: dict[str, dict[int, float]]  # constant sid -> member -> value
    rows: list[dict]  # parameter_map rows


def _events(compiled: CompiledScenario, members: list[int], t0: float) -> _Events:
    from exosim.io.sbml.build import SBMLConstant, SBMLEvent

    model = compiled.model
    slots = _slots(compiled, members)
    events, constants, event_params, per_member, rows = [], [], set(), {}, []
    for k, slot in enumerate(slots):
        sid, a0 = f"event_{k}", slot.first
        where = f"{a0.kind} ({a0.path})"
        times = {m: a.time - t0 for m, a in slot.actions.items()}
        literal = trigger_time = repr(float(a0.time - t0))
        if len(set(times.values())) > 1:
            trigger_time = f"{sid}_time"
            constants.append(
                SBMLConstant(
                    trigger_time,
                    times[members[0]] if members[0] in times else next(iter(times.values())),
                    "h",
                    f"time of {where}",
                    f"SBML time (h) of event {sid}: {where}; set per condition",
                )
            )
            per_member[trigger_time] = {m: times.get(m, next(iter(times.values()))) for m in members}
            rows.append(_map_row(f"{a0.path}.at", "event time", trigger_time, "h", f"trigger time of {where}"))
        names = {}
        for name in sorted(a0.constants):
            values = {m: float(a.constants[name][m]) for m, a in slot.actions.items()}
            if len(set(values.values())) == 1:
                names[name] = f"({next(iter(values.values()))!r})"
                continue
            if name not in CONSTANT_UNITS:
                raise PetabExportError(f"event constant {name!r} of {where} has no unit in CONSTANT_UNITS")
            cid = f"{sid}_{name}"
            names[name] = cid
            what = CONSTANT_NAMES.get(name, name)
            constants.append(
                SBMLConstant(
                    cid,
                    float(a0.constants[name][members[0]]),
                    CONSTANT_UNITS[name],
                    f"{what} of {where}",
                    f"{what} ({CONSTANT_UNITS[name]}) of event {sid}: {where}; set per condition",
                )
            )
            per_member[cid] = {m: float(a0.constants[name][m]) for m in members}  # inactive: their own value
            key = f"{a0.path}.{what.replace(' ', '_')}"
            rows.append(_map_row(key, "event value", cid, CONSTANT_UNITS[name], where))
        trigger = None if trigger_time == literal else f"time >= {trigger_time}"
        if set(slot.actions) != set(members):
            flag = f"{sid}_active"
            constants.append(
                SBMLConstant(
                    flag,
                    1.0 if members[0] in slot.actions else 0.0,
                    "1",
                    f"event {sid} on (1) or off (0)",
                    f"1 where the member has event {sid} ({where}), else 0; set per condition",
                )
            )
            per_member[flag] = {m: 1.0 if m in slot.actions else 0.0 for m in members}
            trigger = f"(time >= {trigger_time}) && ({flag} > 0.5)"
            rows.append(_map_row(a0.path, "event switch", flag, "1", f"1 in the conditions that have {where}"))
        assignments = [
            (x.symbol, _expr.to_sbml_formula(x.expr, lambda n, names=names: names.get(n, n))) for x in a0.assignments
        ]
        for sym, _ in assignments:
            if sym in model.parameter_index:
                event_params.add(sym)
        events.append(
            SBMLEvent(sid, float(a0.time - t0), assignments, priority=len(slots) - k, name=where, trigger=trigger)
        )
    return _Events(events, constants, event_params, per_member, rows)


def _map_row(key: str, role: str, sbml: str, unit: str, note: str, petab: str = "", **extra) -> dict:
    row = {"exosim_key": key, "role": role, "petab_id": petab, "sbml_ids": sbml, "unit": unit}
    row.update(
        {
            "scale": extra.get("scale", ""),
            "lower": extra.get("lower", ""),
            "upper": extra.get("upper", ""),
            "nominal": extra.get("nominal", ""),
            "note": note,
        }
    )
    return row


# ---------------------------------------------------------------------- the problem
@dataclass
class PetabExport:
    """A PEtab v1 problem of an exosim fit problem, in memory.

    Attributes
    ----------
    fit_problem : FitProblem
        The exosim fit problem it expresses (scenario subset, data, parameters, bounds).
    sbml : str
        The SBML document (text), validated.
    conditions, measurements, observables, parameters : pandas.DataFrame
        The PEtab tables (condition table indexed by nothing: ``conditionId`` is a column).
    parameter_map : list of dict
        exosim key or scenario path -> role, PEtab id, SBML ids, unit, bounds.
    notes : str
        The problem folder's README.md.
    members : dict
        Condition id -> member of the compiled scenario subset (``fit_problem.batch.template``).
    petab_ids : dict
        Estimated exosim parameter -> PEtab parameter id.
    files : list of Path
        Files written (empty until :func:`export_petab` writes them).
    metadata : dict
        What :func:`read_petab` needs to map the problem back to an exosim fit: the scenario
        (name, path, sha256), likelihood, normalisation, time offset, each condition's arm and
        dose, each observable's kind and formulas, each data set's kind and units. Written as the
        ``exosim`` block of ``problem.yaml`` (PEtab v1 ignores keys it does not define).
    """

    fit_problem: FitProblem
    sbml: str
    conditions: pandas.DataFrame
    measurements: pandas.DataFrame
    observables: pandas.DataFrame
    parameters: pandas.DataFrame
    parameter_map: list[dict]
    notes: str
    members: dict[str, int]
    petab_ids: dict[str, str]
    files: list[Path] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def write_to(self, folder: Path) -> None:
        """Write every file of :data:`PETAB_FILES` into an existing folder (not atomically: see
        :func:`export_petab`)."""
        import yaml

        from exosim.io.tables import rows_csv

        (folder / "model.xml").write_text(self.sbml, encoding="utf-8")
        for name, df in (
            ("conditions.tsv", self.conditions),
            ("measurements.tsv", self.measurements),
            ("observables.tsv", self.observables),
            ("parameters.tsv", self.parameters),
        ):
            cells = df.astype(object).map(lambda v: repr(float(v)) if isinstance(v, (float, np.floating)) else v)
            (folder / name).write_text(cells.to_csv(sep="\t", index=False), encoding="utf-8")
        problem = {
            "format_version": 1,
            "parameter_file": "parameters.tsv",
            "problems": [
                {
                    "sbml_files": ["model.xml"],
                    "condition_files": ["conditions.tsv"],
                    "measurement_files": ["measurements.tsv"],
                    "observable_files": ["observables.tsv"],
                }
            ],
        }
        if self.metadata:
            problem[METADATA_KEY] = self.metadata
        (folder / "problem.yaml").write_text(yaml.safe_dump(problem, sort_keys=False), encoding="utf-8")
        (folder / "parameter_map.csv").write_text(rows_csv(self.parameter_map), encoding="utf-8")
        (folder / "README.md").write_text(self.notes, encoding="utf-8")


# ---------------------------------------------------------------------- table rows
def _obs(oid: str, name: str, formula: str, noise: str | None = None) -> dict:
    """A row of the observable table (normal noise; default sd: the measurement's noise parameter)."""
    return {
        "observableId": oid,
        "observableName": name,
        "observableFormula": formula,
        "observableTransformation": "lin",
        "noiseFormula": noise or f"noiseParameter1_{oid}",
        "noiseDistribution": "normal",
    }


def _meas(oid: str, condition: str, time: float, value: float, obs_par: str, noise: object, dataset: str) -> dict:
    """A row of the measurement table."""
    return {
        "observableId": oid,
        "simulationConditionId": condition,
        "time": float(time),
        "measurement": float(value),
        "observableParameters": obs_par,
        "noiseParameters": noise if isinstance(noise, str) else repr(float(noise)),
        "datasetId": dataset,
    }


def _param(pid: str, name: str, scale: str, lo: float, hi: float, nominal: float, estimate: bool) -> dict:
    """A row of the parameter table."""
    return {
        "parameterId": pid,
        "parameterName": name,
        "parameterScale": scale,
        "lowerBound": float(lo),
        "upperBound": float(hi),
        "nominalValue": float(nominal),
        "estimate": int(estimate),
    }


# ---------------------------------------------------------------------- building the problem
def _bounds(params: list[str], ranges: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Bounds of the estimated parameters: the given range or the parameter table's documented one."""
    table = cat.parameter_table()
    unknown = set(ranges) - set(params)
    if unknown:
        raise FitError(f"--range names {sorted(unknown)}, which are not estimated (--params {','.join(params)})")
    out = {}
    for name in params:
        key = name.split(".")[-1]
        if key not in table:
            continue  # FitProblem names the unknown key
        lo, hi = (float(v) for v in ranges.get(name, table[key]["range"]))
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise FitError(f"--range {name}: expected finite bounds 0 <= low < high, got [{lo:g}, {hi:g}]")
        out[name] = (lo, hi)
    return out


def _fit_problem(
    scenario: Scenario,
    datasets: list[Observations],
    params: list[str],
    likelihood: str,
    normalise: str,
    bounds: dict[str, tuple[float, float]],
    backend: str,
) -> FitProblem:
    """exosim's fit problem of the export: the scenario subset and members ``exosim fit`` simulates.

    FitProblem estimates on a log scale and so requires positive ranges; PEtab also has a
    linear scale, so a parameter whose range starts at 0 is given a positive stand-in range
    here (the export never uses FitProblem's bounds).
    """
    ranges = {n: (lo, hi) if lo > 0 else (hi * 1e-6, hi) for n, (lo, hi) in bounds.items()}
    return FitProblem(
        scenario, datasets, params, likelihood=likelihood, normalise=normalise, ranges=ranges, backend=backend
    )


def _theta_samples(nominal: np.ndarray, bounds: list[tuple[float, float]]) -> np.ndarray:
    """Parameter sets spanning the bounds: the nominal values (moved inside), each parameter near
    either end with the others nominal, and all near their lower and all near their upper ends
    (2 % of the range, in log10 for positive ranges, from each end)."""
    lo = np.array([b[0] for b in bounds], dtype=float)
    hi = np.array([b[1] for b in bounds], dtype=float)
    pos = lo > 0
    ratio = hi / np.where(pos, lo, 1.0)
    near_lo = np.where(pos, lo * ratio**0.02, lo + 0.02 * (hi - lo))
    near_hi = np.where(pos, hi / ratio**0.02, hi - 0.02 * (hi - lo))
    x0 = np.clip(nominal, near_lo, near_hi)
    rows = [x0, near_lo, near_hi]
    for j in range(x0.size):
        for end in (near_lo, near_hi):
            r = x0.copy()
            r[j] = end[j]
            rows.append(r)
    return np.vstack(rows)


def _references(problem: FitProblem, bounds: list[tuple[float, float]]) -> tuple[dict[int, float], np.ndarray]:
    """The survival of each reference member (fixed in the export) and each member's reference
    (:func:`exosim.scenario.observables.reference_members`).

    Raises :class:`PetabExportError` when a reference survival changes over the bounds.
    """
    compiled = problem.batch.template
    control = observables.control_arm(compiled.scenario.arms)
    ref = observables.reference_members(compiled.arm_index, compiled.grid, problem.normalise, control)
    if all(d.kind == "timecourse" for d in problem.datasets) or problem.normalise == "none":
        return {}, np.full(ref.size, -1)
    if np.any(ref == -2):
        raise PetabExportError(f"--normalise {problem.normalise}: an arm of the data has no member at dose 0")
    used = sorted({int(r) for r in ref if r >= 0})
    if not used:
        return {}, ref
    theta = _theta_samples(np.asarray(problem.nominal, float), bounds)
    res = problem.simulate(theta)
    sf = np.where(res.status == 0, res.surviving_fraction, np.nan).reshape(theta.shape[0], -1)
    arms = [a.name for a in compiled.arms]
    out = {}
    for r in used:
        values = sf[:, r]
        where = f"arm {arms[compiled.arm_index[r]]!r} at dose 0"
        if not (np.all(np.isfinite(values)) and values[0] > 0):
            raise PetabExportError(f"the reference survival ({where}) could not be simulated over the bounds")
        spread = float(np.max(np.abs(values - values[0])) / values[0])
        if spread > REFERENCE_RTOL:
            raise PetabExportError(
                f"--normalise {problem.normalise}: the reference survival ({where}) changes by {spread:.3g} "
                f"(relative) over the bounds of {', '.join(problem.params)}; a PEtab v1 observable sees one "
                "simulation, so survival relative to another member is expressible only while the reference "
                "is fixed: give absolute survival with --normalise none, or estimate other parameters"
            )
        out[r] = float(values[0])
    return out, ref


def _conditions(compiled: CompiledScenario, members: list[int]) -> tuple[dict[int, str], dict[int, str]]:
    """Condition id (``<arm>_D<dose>``) and name (``<arm>, <dose> <unit>``) of each member."""
    sc = compiled.scenario
    unit = sc.dose_grid.unit if sc.dose_grid else "Gy"
    per_gray = UNITS["dose"][unit]
    ids, names = {}, {}
    for m in members:
        arm = compiled.arms[compiled.arm_index[m]].name
        g = compiled.grid[m]
        base = _sid(arm, "arm") + ("" if math.isnan(g) else f"_D{_number(g / per_gray)}")
        ids[m] = base if base not in ids.values() else f"{base}_{m}"
        names[m] = arm + ("" if math.isnan(g) else f", {g / per_gray:g} {unit}")
    return ids, names


def _tie(doc, tied: dict[str, tuple[list[str], str, float, str]]) -> None:
    """Add one constant SBML parameter per estimated key with several instances and set every
    instance from it by an initial assignment (``pid -> (instance ids, unit, nominal, key)``)."""
    import libsbml

    from exosim.io.sbml.units import unit_id

    model = doc.getModel()
    for pid, (ids, unit, nominal, key) in tied.items():
        par = model.createParameter()
        par.setId(pid)
        par.setName(pid)
        par.setValue(nominal)
        par.setUnits(unit_id(unit))
        par.setConstant(True)
        par.setSBOTerm("SBO:0000002")
        par.setNotes(
            f'<body xmlns="http://www.w3.org/1999/xhtml"><p>exosim parameter {key!r} ({unit}), estimated: '
            f"sets {', '.join(ids)} (initial assignments)</p></body>"
        )
        for sid in ids:
            ia = model.createInitialAssignment()
            ia.setSymbol(sid)
            ia.setMath(libsbml.parseL3Formula(pid))


def _observable_id(label: str) -> str:
    """Observable id of a time-course label (``a.b`` -> ``tc_a_b``, ``a.b + c.d`` -> ``tc_a_b_plus_c_d``)."""
    return "tc_" + _sid(label.replace(".", "_").replace("+", " plus "))


def petab_problem(
    scenario: Scenario | str | Path,
    data: Sequence[str | Path],
    params: Sequence[str],
    *,
    likelihood: str = "auto",
    normalise: str = "control",
    ranges: Mapping[str, tuple[float, float]] | None = None,
    backend: str = "auto",
) -> PetabExport:
    """The PEtab v1 problem of an exosim fit problem, in memory (SBML validated; not linted or written).

    Parameters
    ----------
    scenario : Scenario, str or Path
        The scenario or the path of its file.
    data : sequence of str or Path
        Data files in exosim's formats (survival points, colony counts, time courses).
    params : sequence of str
        Parameters to estimate: ``key`` (every instance) or ``population.key``.
    likelihood : str
        ``auto``, ``normal``, ``poisson`` or ``quasipoisson``, as for :func:`exosim.fit`.
    normalise : str
        ``control``, ``within_arm`` or ``none``, as for :func:`exosim.fit`.
    ranges : mapping, optional
        Bounds, ``name -> (low, high)``; default the parameter table's documented range.
        A positive lower bound gives a log10 scale, 0 a linear one.
    backend : str
        Integrator of the reference-survival check (``auto``: numba when installed).

    Returns
    -------
    PetabExport

    Raises
    ------
    FitError
        A bad data file, parameter or range (reported as ``exosim fit`` reports them).
    PetabExportError
        What PEtab v1 cannot express (a reference survival that depends on the estimated
        parameters), or an SBML document with validation errors.
    """
    import libsbml
    import pandas as pd

    from exosim.io.sbml.build import FlatSpec, build_flat, to_document
    from exosim.io.sbml.validate import validate
    from exosim.scenario.load import load_scenario

    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    datasets = [read_observations(path, sc) for path in data]
    lik = default_likelihood(datasets) if likelihood == "auto" else likelihood
    params = list(params)
    bounds = _bounds(params, dict(ranges or {}))
    problem = _fit_problem(sc, datasets, params, lik, normalise, bounds, backend)  # checks the request first
    zero = [n for n, (lo, _) in bounds.items() if lo == 0]
    if zero:
        warnings.warn(
            f"{', '.join(zero)}: lower bound 0, written on a linear scale; exosim fit --petab estimates in "
            "log10 and will refuse it (other tools fit it as written): give --range KEY=LOW:HIGH with LOW > 0 "
            "to fit the export with exosim",
            stacklevel=2,
        )
    compiled = problem.batch.template
    model = compiled.model
    t0 = compiled.scenario.timeline_start
    arms = [a.name for a in compiled.arms]
    references, ref_of = _references(problem, [bounds[n] for n in problem.params])
    scored = compiled.score_event.score.population
    sf_id = f"{scored}{SEP}surviving_fraction"
    t_score = compiled.score_event.at - t0

    # every observation's member; one condition per member used
    row_members = [
        [observables.member_index(compiled.arm_index, compiled.grid, arms.index(a), d) for a, d in zip(ds.arm, ds.dose)]
        for ds in datasets
    ]
    members = sorted({m for rows in row_members for m in rows})
    cond_id, cond_name = _conditions(compiled, members)

    def reference_id(m: int) -> str:
        r = int(ref_of[m])
        if problem.normalise == "control":
            return "reference_survival"
        return "reference_survival_" + _sid(arms[compiled.arm_index[r]], "arm")

    # estimated parameters: their PEtab ids, the SBML id where one SBML parameter holds the value;
    # a key with several instances (every population's) becomes one SBML parameter that sets the
    # instances by initial assignments, as exosim sets every instance to the one estimated value
    names = [q.name for q in model.parameters]
    taken = set(names) | set(model.state_names) | set(model.observable_names)
    estimated_cols: set[int] = set()
    petab_ids, tied, map_rows = {}, {}, []
    for name, cols, nominal in zip(problem.params, problem.batch.columns, problem.nominal):
        lo, hi = bounds[name]
        estimated_cols |= set(cols)
        ids = [names[c] for c in cols]
        direct = len(cols) == 1 and model.parameters[cols[0]].key != "volume"
        pid = ids[0] if direct else _sid(name.replace(".", SEP), "p")
        if not direct and pid in taken:
            pid = f"{pid}_estimated"
        petab_ids[name] = pid
        q = model.parameters[cols[0]]
        if not direct:
            tied[pid] = (ids, q.unit, float(nominal), name)
        map_rows.append(
            _map_row(
                name,
                "estimated",
                ";".join(ids),
                q.unit,
                f"source: {q.source}",
                petab=pid,
                scale="log10" if lo > 0 else "lin",
                lower=lo,
                upper=hi,
                nominal=float(nominal),
            )
        )

    # what differs between the members: condition-table columns
    p = compiled.parameters[members]
    varying = [j for j in range(p.shape[1]) if j not in estimated_cols and not np.all(p[:, j] == p[0, j])]
    ev = _events(compiled, members, t0)
    columns: dict[str, dict[int, object]] = {}
    for j in varying:
        q = model.parameters[j]
        columns[q.name] = {m: float(compiled.parameters[m, j]) for m in members}
        map_rows.append(
            _map_row(q.name.replace(SEP, ".", 1), "arm setting", q.name, q.unit, "model parameter set per condition")
        )
    columns.update(ev.per_member)
    map_rows += ev.rows

    # the SBML model at the first member's values, event values as named constants
    notes = (
        f"exosim scenario {sc.name!r} ({sc.source}, sha256 {sc.sha256}): one model for the "
        f"{len(members)} members (arm, dose) of the PEtab problem of {', '.join(str(d) for d in data)}. "
        f"Values that differ between members (arm settings, event doses, trigger times and switches) are "
        f"parameters the PEtab condition table sets. SBML time = exosim time - ({t0:g} h). Survival of the "
        f"scored population {scored!r} at SBML time {t_score:g} h is {sf_id}. "
        f"References: {'; '.join(sc.references)}"
    )
    spec = FlatSpec(
        _sid(f"{sc.name}_petab"),
        f"{sc.name}: PEtab model of {len(members)} members",
        notes,
        compiled.parameters[members[0]].copy(),
        ev.events,
        ev.event_parameters,
        ev.constants,
    )
    doc = to_document(build_flat(model, spec))
    _tie(doc, tied)
    # COPASI's PEtab importer finds the entities the tables set by their display name: those
    # are named by their ids (every other entity keeps its descriptive name)
    for sid in [*columns, *petab_ids.values()]:
        element = doc.getModel().getElementBySId(sid)
        if element is not None:
            element.setName(sid)
    check = validate(doc)
    if not check.ok:
        raise PetabExportError("SBML validation failed, nothing written:\n  " + "\n  ".join(check.errors[:10]))
    sbml = libsbml.writeSBMLToString(doc)

    # observables, measurements and the parameters of the observation model
    obs_rows: dict[str, dict] = {}
    meas, extra, at_events = [], [], []
    ds_meta: list[dict] = []
    obs_meta: dict[str, dict] = {}
    event_times = {a.time for a in compiled.actions}
    nominal = np.asarray(problem.nominal, float)[None, :]
    pred0, scales0 = problem.evaluate(nominal)
    for i, (ds, rows) in enumerate(zip(datasets, row_members)):
        dataset_id = _sid(Path(ds.source).stem, "data") + (f"_{i}" if len(datasets) > 1 else "")
        refs = [reference_id(m) for m in rows] if references else [""] * len(rows)
        ds_meta.append({"id": dataset_id, "source": str(ds.source), "kind": ds.kind})
        if ds.kind == "survival":
            oid = "relative_survival" if references else "surviving_fraction"
            formula = f"{sf_id} / observableParameter1_{oid}" if references else sf_id
            what = f"surviving fraction of {scored}" + (" relative to the reference" if references else "")
            obs_rows[oid] = _obs(oid, what, formula)
            obs_meta[oid] = {"kind": "survival"}
            meas += [_meas(oid, cond_id[m], t_score, ds.y[n], refs[n], ds.w[n], dataset_id) for n, m in enumerate(rows)]
        elif ds.kind == "colonies":
            oid = f"colonies_{dataset_id}"
            rel = f" / observableParameter3_{oid}" if references else ""
            mean = f"observableParameter1_{oid} * observableParameter2_{oid} * {sf_id}{rel}"
            noise_rel = f" / noiseParameter4_{oid}" if references else ""
            noise = f"sqrt(noiseParameter1_{oid} * noiseParameter2_{oid} * noiseParameter3_{oid} * {sf_id}{noise_rel})"
            obs_rows[oid] = _obs(oid, f"colonies of {scored} ({ds.source})", mean, noise)
            obs_meta[oid] = {"kind": "colonies", "dataset": dataset_id}
            pe_id = f"plating_efficiency_{dataset_id}"
            pe0 = float(np.sum(ds.y) / np.sum(ds.w * pred0[0, problem.slices[i]]))
            # a plating efficiency is at most 1; data that put it near or above 1 at the nominal
            # parameters keep their estimate inside the bounds (exosim's closed form is unbounded)
            pe_lo, pe_hi = 1e-4, max(1.0, 2 * pe0)
            extra.append(_param(pe_id, f"plating efficiency ({ds.source})", "log10", pe_lo, pe_hi, pe0, True))
            map_rows.append(
                _map_row(
                    problem.plating_key(ds),
                    "nuisance",
                    "",
                    "1",
                    "exosim profiles it out in closed form (sum colonies / sum seeded*SF); here it is estimated",
                    petab=pe_id,
                    scale="log10",
                    lower=pe_lo,
                    upper=pe_hi,
                    nominal=pe0,
                )
            )
            phi = "1"
            if lik == "quasipoisson":
                phi = f"dispersion_{dataset_id}"
                extra.append(_param(phi, f"quasi-Poisson dispersion ({ds.source})", "log10", 1.0, 1e3, 1.0, True))
                map_rows.append(
                    _map_row(
                        f"dispersion[{ds.source}]",
                        "nuisance",
                        "",
                        "1",
                        "exosim: Pearson chi-square over its degrees of freedom (at least 1); here it is estimated",
                        petab=phi,
                        scale="log10",
                        lower=1.0,
                        upper=1e3,
                        nominal=1.0,
                    )
                )
            ds_meta[-1].update(plating_efficiency=pe_id, dispersion=phi)
            for n, m in enumerate(rows):
                seeded = repr(float(ds.w[n]))
                tail = [refs[n]] if references else []
                meas.append(
                    _meas(
                        oid,
                        cond_id[m],
                        t_score,
                        ds.y[n],
                        ";".join([seeded, pe_id, *tail]),
                        ";".join([phi, seeded, pe_id, *tail]),
                        dataset_id,
                    )
                )
        else:
            for label in dict.fromkeys(ds.observable):
                oid = _observable_id(label)
                terms = " + ".join(
                    model.state_names[idx] if kind == "state" else model.observable_names[idx]
                    for kind, idx, _ in ds.terms[label]
                )
                unit = ds.terms[label][0][2]
                obs_rows[oid] = _obs(oid, f"{label} [{unit}] times a factor", f"observableParameter1_{oid} * ({terms})")
                obs_meta[oid] = {"kind": "timecourse", "label": label, "unit": unit}
                ds_meta[-1].setdefault("units", {})[label] = sorted(
                    {u for o, u in zip(ds.observable, ds.unit) if o == label}
                )
                if label not in ds.groups:
                    continue
                s0 = float(scales0[i][label][0])
                if not (math.isfinite(s0) and s0 > 0):
                    raise PetabExportError(
                        f"{ds.source}: relative observable {label!r} has no positive scale factor at the nominal "
                        "values (the model is zero there), so the scale's bounds cannot be set"
                    )
                sid = f"scale_{dataset_id}_{oid}"
                extra.append(_param(sid, f"scale of {label} ({ds.source})", "log10", s0 / 1e3, s0 * 1e3, s0, True))
                map_rows.append(
                    _map_row(
                        problem.scale_key(ds, label),
                        "nuisance",
                        "",
                        "relative",
                        "exosim solves it in closed form (Loos et al. 2018); here it is estimated",
                        petab=sid,
                        scale="log10",
                        lower=s0 / 1e3,
                        upper=s0 * 1e3,
                        nominal=s0,
                    )
                )
            for n, m in enumerate(rows):
                label = ds.observable[n]
                oid = _observable_id(label)
                factor = f"scale_{dataset_id}_{oid}" if label in ds.groups else repr(float(ds.factor[n]))
                t = float(ds.time[n])
                if t in event_times:
                    at_events.append(f"{ds.source}: {label} at {t:g} h ({cond_name[m]})")
                meas.append(_meas(oid, cond_id[m], t - t0, ds.y[n], factor, ds.w[n], dataset_id))
    for r, value in references.items():
        arm = arms[compiled.arm_index[r]]
        pid = reference_id(r) if problem.normalise != "control" else "reference_survival"
        extra.append(_param(pid, f"survival of {arm!r} at dose 0 (fixed)", "lin", value, value, value, False))
        map_rows.append(
            _map_row(
                f"reference[{arm}, dose 0]",
                "reference survival",
                "",
                "1",
                f"survival of arm {arm!r} at dose 0, the same over the bounds (to {REFERENCE_RTOL:g} relative); fixed",
                petab=pid,
                scale="lin",
                nominal=value,
            )
        )

    estimated = [
        _param(petab_ids[n], n, "log10" if bounds[n][0] > 0 else "lin", *bounds[n], float(v), True)
        for n, v in zip(problem.params, problem.nominal)
    ]
    conditions = pd.DataFrame(
        [
            {"conditionId": cond_id[m], "conditionName": cond_name[m], **{c: v[m] for c, v in columns.items()}}
            for m in members
        ]
    )
    readme = _readme(sc, data, problem, lik, members, cond_name, columns, references, at_events, t0)
    unit = sc.dose_grid.unit if sc.dose_grid else "Gy"
    metadata = {
        "exosim_version": __version__,
        "scenario": {"name": sc.name, "path": _absolute(sc.source), "sha256": sc.sha256},
        "likelihood": lik,
        "normalise": problem.normalise,
        "time_offset": float(t0),
        "score_time": float(t_score),
        "dose_unit": unit,
        "conditions": {
            cond_id[m]: {
                "arm": arms[compiled.arm_index[m]],
                "dose": None if math.isnan(compiled.grid[m]) else float(compiled.grid[m] / UNITS["dose"][unit]),
                **({"reference": reference_id(m)} if references else {}),
                "values": {c: float(v[m]) for c, v in columns.items()},
            }
            for m in members
        },
        "observables": {
            oid: {
                **obs_meta[oid],
                "formula": row["observableFormula"],
                "noise_formula": row["noiseFormula"],
                "transformation": row["observableTransformation"],
                "distribution": row["noiseDistribution"],
            }
            for oid, row in obs_rows.items()
        },
        "datasets": ds_meta,
    }
    return PetabExport(
        problem,
        sbml,
        conditions,
        pd.DataFrame(meas),
        pd.DataFrame(list(obs_rows.values())),
        pd.DataFrame(estimated + extra),
        map_rows,
        readme,
        {cond_id[m]: m for m in members},
        petab_ids,
        metadata=metadata,
    )


def _readme(sc, data, problem, lik, members, cond_name, columns, references, at_events, t0) -> str:
    """README.md of the problem folder: contents, conventions and what PEtab v1 cannot express."""
    kinds = sorted({d.kind for d in problem.datasets})
    lines = [
        f"# PEtab problem: {sc.name}",
        "",
        f"Exported by exosim from `{sc.source}` (sha256 {sc.sha256}) and {', '.join(f'`{d}`' for d in data)} "
        f"({', '.join(kinds)}; likelihood {lik}, survival normalised: {problem.normalise}).",
        f"Estimated: {', '.join(f'`{p}`' for p in problem.params)} (`parameters.tsv`; `parameter_map.csv` maps "
        "exosim keys and scenario paths to SBML and PEtab ids).",
        "`exosim fit --petab problem.yaml` fits the problem, as its tables are, with exosim (the `exosim` block "
        "of `problem.yaml` records the scenario and how the tables map back to it).",
        "",
        "## Files",
        "",
        "| file | content |",
        "|---|---|",
        "| `problem.yaml` | the PEtab v1 problem |",
        f"| `model.xml` | one SBML L3V2 model for all {len(members)} conditions; what differs between them is a "
        "parameter the condition table sets |",
        f"| `conditions.tsv` | one condition per member (arm, dose) the data use; columns: "
        f"{', '.join(f'`{c}`' for c in columns) or 'none'} |",
        "| `measurements.tsv`, `observables.tsv`, `parameters.tsv` | the data, observation model and parameters |",
        "| `parameter_map.csv` | exosim key or scenario path -> role, PEtab id, SBML ids, unit, bounds |",
        "",
        "Conditions: " + "; ".join(cond_name[m] for m in members) + ".",
        "",
        "## Conventions",
        "",
        f"- SBML time = exosim time - ({t0:g} h): time 0 is the scenario's start (its `start`, else "
        "the earliest event of any of its arms, exported or not, else 0).",
        "- Parameters with a positive lower bound are estimated in log10, others linearly; bounds are "
        "the parameter table's documented range unless a range was given.",
        "- PEtab's negative log-likelihood includes 0.5 log(2 pi sd^2) per Gaussian observation; exosim's "
        "leaves that constant out. Estimates are unaffected.",
        "- An estimated key with an instance per population is one SBML parameter (its PEtab id) that sets "
        "every instance by an initial assignment, as exosim sets every instance to the one value.",
        "- The SBML entities the tables set carry their ids as names (COPASI's PEtab importer finds them by "
        "name); every other entity keeps its descriptive name.",
        "",
        "## What PEtab v1 cannot express",
        "",
    ]
    if references:
        lines.append(
            "- **Survival relative to another member** (here: "
            + ("the control arm at dose 0" if problem.normalise == "control" else "each arm at dose 0")
            + "). An observable sees one simulation, so the reference survival is the fixed parameter "
            "`reference_survival*` (" + ", ".join(f"{v:.10g}" for v in references.values()) + "). This is exact "
            f"because the reference does not depend on the estimated parameters (checked over their bounds to "
            f"{REFERENCE_RTOL:g} relative); exosim refuses the export where it does."
        )
    else:
        lines.append(
            "- **Survival relative to another member** (the control arm, or each arm, at dose 0): an observable "
            "sees one simulation. Not needed here (absolute survival or time courses only); exosim exports it "
            "as a fixed reference where that reference does not depend on the estimated parameters."
        )
    if "colonies" in kinds:
        lines.append(
            "- **Poisson / quasi-Poisson colony counts** (CFAssay's model): PEtab v1 has normal and Laplace noise "
            "only. The counts are normal here with the Poisson variance phi * mu (mu = seeded * PE * SF), "
            "the plating efficiency PE an estimated parameter (exosim profiles it out in closed form) and, for "
            "quasi-Poisson, the dispersion phi estimated too (exosim: Pearson chi-square / dof). Estimates are "
            "close to exosim's, not equal."
        )
    else:
        lines.append(
            "- **Poisson / quasi-Poisson colony counts**: not in this problem; exosim would export them as normal "
            "with the Poisson variance (an approximation)."
        )
    lines.append(
        "- **Relative time-course data**: exosim solves each scale factor in closed form; PEtab estimates it "
        "(`scale_*` parameters). Same optimum."
        if any(d.groups for d in problem.datasets if d.kind == "timecourse")
        else "- **Relative time-course data**: not in this problem (PEtab would estimate the scale factor that "
        "exosim solves in closed form)."
    )
    lines.append(
        "- **Values at event times**: exosim reports the value just before an event at that time, SBML "
        "simulators the one just after it. "
        + (
            "Measurements at event times: " + "; ".join(at_events) + "."
            if at_events
            else "No measurement of this problem is at an event time."
        )
    )
    lines.append(
        "- **Profile-likelihood intervals, multi-start and quasi-Poisson re-weighting** of `exosim fit` are "
        "procedures, not part of a problem: run them in the tool of your choice."
    )
    return "\n".join(lines) + "\n"


def lint(folder: str | Path) -> list[str]:
    """PEtab's own checks (``petab.v1.lint_problem``) of a problem folder; the messages of errors found.

    Needs the ``petab`` package (the ``petab`` extra).
    """
    import petab.v1 as petab

    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                messages.append(record.getMessage())

    handler = _Collect()
    logger = logging.getLogger("petab")
    logger.addHandler(handler)
    try:
        problem = petab.Problem.from_yaml(str(Path(folder) / "problem.yaml"))
        failed = petab.lint_problem(problem)
    except Exception as exc:  # a table petab cannot even read: the export is broken
        return [f"{type(exc).__name__}: {exc}"]
    finally:
        logger.removeHandler(handler)
    return messages or (["petab.lint_problem reported errors"] if failed else [])


def export_petab(
    scenario: Scenario | str | Path,
    data: Sequence[str | Path],
    params: Sequence[str],
    outdir: str | Path,
    *,
    likelihood: str = "auto",
    normalise: str = "control",
    ranges: Mapping[str, tuple[float, float]] | None = None,
    backend: str = "auto",
) -> PetabExport:
    """Write the PEtab v1 problem of an exosim fit problem into ``outdir`` (``exosim export-petab``).

    The files of :data:`PETAB_FILES` are written into a staging folder, checked with
    ``petab.v1.lint_problem`` and moved into ``outdir`` together; files of an earlier export
    that this one does not write are removed, other files are left alone. A problem that fails
    the checks is not written. See :func:`petab_problem` for the arguments and the module
    docstring for what PEtab v1 cannot express.

    Returns
    -------
    PetabExport
        With ``files``, the files written.

    Raises
    ------
    FitError
        A bad data file, parameter or range.
    PetabExportError
        What PEtab v1 cannot express, or an export that fails SBML validation or PEtab's checks.
    OutputError
        ``outdir`` cannot be written.

    Examples
    --------
    >>> export_petab("scenarios/iccm_bystander_medium_transfer.yaml",  # doctest: +SKIP
    ...              ["scenarios/data/iccm_relative_survival.csv"],
    ...              ["recipients.bystander_susceptible_fraction"], "results/iccm-petab",
    ...              ranges={"recipients.bystander_susceptible_fraction": (0.05, 0.6)})
    """
    from exosim.util.atomic import staged_outputs

    export = petab_problem(
        scenario, data, params, likelihood=likelihood, normalise=normalise, ranges=ranges, backend=backend
    )
    recorded = export.metadata["scenario"]
    if Path(recorded["path"]).is_file():  # also relative to the folder, for a folder moved with its scenario
        recorded["relative_path"] = Path(os.path.relpath(recorded["path"], Path(outdir).resolve())).as_posix()
    stage = staged_outputs(outdir, PETAB_FILES)
    with stage as tmp:
        export.write_to(tmp)
        errors = lint(tmp)
        if errors:
            raise PetabExportError("PEtab checks failed, nothing written:\n  " + "\n  ".join(errors[:10]))
    export.files = list(stage.written)
    return export


# ---------------------------------------------------------------------- import: PEtab -> exosim fit
class PetabImportError(FitError):
    """A PEtab problem that exosim cannot map back to its own fit; the message names the file,
    the key or row, and what was expected."""


class PetabImportWarning(UserWarning):
    """The scenario given for a PEtab problem is not the file the problem was exported from."""


#: columns each table must have for the import (PEtab v1 names)
_COLUMNS = {
    "measurement": ("observableId", "simulationConditionId", "time", "measurement"),
    "condition": ("conditionId",),
    "observable": ("observableId", "observableFormula"),
    "parameter": ("parameterId", "lowerBound", "upperBound", "nominalValue", "estimate"),
    "parameter_map": ("exosim_key", "role", "petab_id"),
}

#: measurement-table column of each column of exosim's data formats (for error messages)
_PETAB_COLUMN = {
    "arm": "simulationConditionId",
    "dose": "simulationConditionId",
    "survival": "measurement",
    "colonies": "measurement",
    "value": "measurement",
    "sd": "noiseParameters",
    "seeded": "observableParameters",
    "unit": "observableParameters",
    "time": "time",
    "observable": "observableId",
}

#: roles of parameter_map.csv whose parameters PEtab may estimate and exosim solves in closed form
#: (plating efficiencies, relative scales) or from the residuals (quasi-Poisson dispersion)
_NUISANCE = "nuisance"


@dataclass
class PetabImport:
    """An exosim fit read back from a PEtab problem written by ``exosim export-petab``.

    Attributes
    ----------
    problem_yaml : Path
        The problem file read.
    scenario : Scenario
        The scenario the problem was exported from (or the one given instead).
    datasets : list of Observations
        One per ``datasetId`` of the measurement table that has measurements, in the order
        of the export; ``source`` is ``<measurement file>:<datasetId>``.
    params : list of str
        exosim keys of the parameters the parameter table estimates (``estimate`` 1).
    ranges : dict
        Their bounds, ``key -> (lowerBound, upperBound)`` of the parameter table.
    likelihood, normalise : str
        As recorded by the export (``exosim fit --likelihood``, ``--normalise``).
    csv : dict
        ``datasetId`` -> the data set in the CSV format ``exosim fit`` reads (what was fitted).
    files : list of Path
        The PEtab files read (for provenance).
    notes : list of str
        What the PEtab problem states that exosim's fit does its own way (parameters PEtab
        estimates and exosim solves in closed form, fixed reference survivals).
    """

    problem_yaml: Path
    scenario: Scenario
    datasets: list[Observations]
    params: list[str]
    ranges: dict[str, tuple[float, float]]
    likelihood: str
    normalise: str
    csv: dict[str, str]
    files: list[Path]
    notes: list[str] = field(default_factory=list)

    def fit_problem(
        self,
        *,
        likelihood: str | None = None,
        ranges: Mapping[str, tuple[float, float]] | None = None,
        backend: str = "auto",
    ) -> FitProblem:
        """exosim's fit problem of the PEtab problem.

        Parameters
        ----------
        likelihood : str, optional
            Overrides the recorded likelihood (``poisson`` or ``quasipoisson`` for colony counts).
        ranges : mapping, optional
            Bounds replacing those of the parameter table, ``key -> (low, high)``.
        backend : str
            Integrator (``auto``: numba when installed).

        Returns
        -------
        FitProblem
        """
        bounds = {**self.ranges, **dict(ranges or {})}
        return FitProblem(
            self.scenario,
            self.datasets,
            list(self.params),
            likelihood=likelihood or self.likelihood,
            normalise=self.normalise,
            ranges=bounds,
            backend=backend,
        )


def _problem_path(problem: str | Path) -> Path:
    """``problem.yaml`` of a problem given as its file or its folder."""
    path = Path(problem)
    if path.is_dir():
        path = path / "problem.yaml"
    if not path.is_file():
        raise PetabImportError(f"{path}: no such PEtab problem file (give problem.yaml or its folder)")
    return path


def _read_table(path: Path, kind: str, sep: str = "\t") -> list[dict[str, str]]:
    """Rows of a PEtab table (or of parameter_map.csv) as text; missing file or columns are errors."""
    import csv

    if not path.is_file():
        what = (
            "exosim maps the estimated parameters back to its keys through it (written by exosim export-petab)"
            if kind == "parameter_map"
            else f"the {kind} table named in problem.yaml"
        )
        raise PetabImportError(f"{path}: no such file: {what}")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter=sep)
            rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
            header = list(reader.fieldnames or [])
    except UnicodeDecodeError as exc:
        raise PetabImportError(f"{path}: not a UTF-8 text file (byte {exc.start}): a PEtab {kind} table") from None
    missing = [c for c in _COLUMNS[kind] if c not in header]
    if missing:
        raise PetabImportError(
            f"{path}: missing column {missing[0]!r} (a PEtab v1 {kind} table has {list(_COLUMNS[kind])})"
        )
    if not rows and kind == "measurement":
        raise PetabImportError(f"{path}: no measurements (the table has its header only)")
    return rows


def _files(yaml_doc: dict, path: Path, key: str) -> list[Path]:
    """The files of one ``problems[0]`` (or top-level ``parameter_file``) entry of problem.yaml."""
    if key == "parameter_file":
        value = yaml_doc.get(key)
    else:
        problems = yaml_doc.get("problems")
        if not (isinstance(problems, list) and len(problems) == 1 and isinstance(problems[0], dict)):
            raise PetabImportError(f"{path}: key 'problems': expected one problem (as exosim export-petab writes)")
        value = problems[0].get(key)
    names = [value] if isinstance(value, str) else value
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise PetabImportError(f"{path}: key {key!r}: expected a file name or a list of file names")
    return [path.parent / n for n in names]


def _scenario_for(meta: dict, path: Path, scenario: Scenario | str | Path | None) -> Scenario:
    """The scenario of an exported problem: the one given (a warning if it is not the exported
    file) or the recorded one, found by its path relative to the problem folder or its absolute
    path, with the recorded sha256."""
    import hashlib
    import warnings

    from exosim.scenario.load import load_scenario

    recorded = meta["scenario"]
    if not (isinstance(recorded, dict) and {"path", "sha256"} <= set(recorded)):
        raise PetabImportError(f"{path}: key '{METADATA_KEY}.scenario': expected a mapping with 'path' and 'sha256'")
    if scenario is not None:
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if sc.sha256 != recorded["sha256"]:
            warnings.warn(
                PetabImportWarning(
                    f"{sc.source}: sha256 {sc.sha256[:12]}... is not that of the scenario {path} was exported from "
                    f"({recorded['path']}, sha256 {str(recorded['sha256'])[:12]}...); fitting {sc.source} as given"
                ),
                stacklevel=3,
            )
        return sc
    candidates = [path.parent / recorded["relative_path"]] if recorded.get("relative_path") else []
    candidates.append(Path(recorded["path"]))
    found = [c for c in candidates if c.is_file()]
    if not found:
        raise PetabImportError(
            f"{path}: key '{METADATA_KEY}.scenario.path': the scenario {recorded['path']!r} the problem was exported "
            "from is not there; give it: exosim fit SCENARIO.yaml --petab PROBLEM"
        )
    for candidate in found:
        if hashlib.sha256(candidate.read_bytes()).hexdigest() == recorded["sha256"]:
            return load_scenario(candidate)
    raise PetabImportError(
        f"{found[0]}: sha256 differs from key '{METADATA_KEY}.scenario.sha256' of {path} "
        f"({str(recorded['sha256'])[:12]}...): the scenario changed since the export; export again, or give the "
        "scenario to fit it as it is now: exosim fit SCENARIO.yaml --petab PROBLEM"
    )


def _float(text: str, where: str) -> float:
    """A finite number of a table cell, or an error naming the cell."""
    try:
        value = float(text)
    except ValueError:
        raise PetabImportError(f"{where}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise PetabImportError(f"{where}: expected a finite number, got {text!r}")
    return value


def _estimated(
    map_rows: list[dict[str, str]], par_rows: list[dict[str, str]], map_path: Path, par_path: Path
) -> tuple[list[str], dict[str, tuple[float, float]], list[str]]:
    """exosim keys estimated (``estimate`` 1), their bounds, and notes on the nuisance parameters."""
    by_id = {}
    for n, row in enumerate(par_rows, start=2):
        by_id[row["parameterId"]] = (n, row)
    roles = {r["petab_id"]: r for r in map_rows if r["petab_id"]}
    params, ranges, notes = [], {}, []
    for row in map_rows:
        if row["role"] != "estimated":
            continue
        key, pid = row["exosim_key"], row["petab_id"]
        if pid not in by_id:
            raise PetabImportError(
                f"{par_path}: no row for parameterId {pid!r}, which {map_path.name} maps to the exosim key {key!r}"
            )
        n, par = by_id[pid]
        where = f"{par_path}: row {n} ({pid})"
        estimate = par["estimate"]
        if estimate not in ("0", "1"):
            raise PetabImportError(f"{where}, column 'estimate': expected 0 or 1, got {estimate!r}")
        if estimate == "0":
            value = _float(par["nominalValue"], f"{where}, column 'nominalValue'")
            nominal = _float(row.get("nominal", ""), f"{map_path}: {key}, column 'nominal'")
            if not math.isclose(value, nominal, rel_tol=1e-9, abs_tol=0.0):
                raise PetabImportError(
                    f"{where}: estimate 0 with nominalValue {value:g}, but exosim fixes {key!r} at the scenario's "
                    f"value {nominal:g}; estimate it, or set the value in the scenario"
                )
            notes.append(f"{key}: not estimated (estimate 0), the scenario's value {nominal:g}")
            continue
        lo = _float(par["lowerBound"], f"{where}, column 'lowerBound'")
        hi = _float(par["upperBound"], f"{where}, column 'upperBound'")
        if not 0 < lo < hi:
            raise PetabImportError(
                f"{where}: bounds [{lo:g}, {hi:g}]: exosim estimates {key!r} on a log10 scale and needs "
                "0 < lowerBound < upperBound (set the bounds, or give --range KEY=LOW:HIGH)"
            )
        params.append(key)
        ranges[key] = (lo, hi)
    for pid, (n, par) in by_id.items():
        role = roles.get(pid, {}).get("role", "")
        if par["estimate"] != "1" or role == "estimated":
            continue
        if role != _NUISANCE:
            raise PetabImportError(
                f"{par_path}: row {n} ({pid}): estimate 1, but exosim cannot estimate it: "
                + (
                    f"it is a {role} in {map_path.name}"
                    if role
                    else f"{map_path.name} does not map it to an exosim key"
                )
                + "; set estimate to 0"
            )
        notes.append(f"{pid}: {roles[pid]['note']}")
    if not params:
        raise PetabImportError(f"{par_path}: no parameter that {map_path.name} maps to an exosim key has estimate 1")
    return params, ranges, notes


def _check_observables(obs_rows: list[dict[str, str]], meta: dict, obs_path: Path, used: set[str]) -> None:
    """Every observable the measurements use is one the export wrote, unchanged."""
    fields = {
        "formula": "observableFormula",
        "noise_formula": "noiseFormula",
        "transformation": "observableTransformation",
        "distribution": "noiseDistribution",
    }
    defaults = {"observableTransformation": "lin", "noiseDistribution": "normal"}
    table = {r["observableId"]: (n, r) for n, r in enumerate(obs_rows, start=2)}
    for oid in sorted(used):
        if oid not in table:
            raise PetabImportError(f"{obs_path}: no observable {oid!r}, which the measurement table uses")
        n, row = table[oid]
        if oid not in meta:
            raise PetabImportError(
                f"{obs_path}: row {n}: exosim cannot map observable {oid!r}: not one exosim export-petab wrote "
                f"(exosim maps {sorted(meta)})"
            )
        for key, col in fields.items():
            value = row.get(col) or defaults.get(col, "")
            if value != meta[oid][key]:
                raise PetabImportError(
                    f"{obs_path}: row {n} ({oid}), column {col!r}: {value!r} is not the exported {meta[oid][key]!r}; "
                    "exosim cannot map a changed observable"
                )


def _check_conditions(cond_rows: list[dict[str, str]], meta: dict, cond_path: Path) -> set[str]:
    """Condition ids of the condition table; those the export wrote must set their exported values."""
    ids = set()
    for n, row in enumerate(cond_rows, start=2):
        cid = row["conditionId"]
        ids.add(cid)
        if cid not in meta:
            continue
        for col, value in meta[cid].get("values", {}).items():
            if col not in row:
                raise PetabImportError(f"{cond_path}: missing column {col!r} of the exported conditions")
            got = _float(row[col], f"{cond_path}: row {n} ({cid}), column {col!r}")
            if not math.isclose(got, value, rel_tol=1e-12, abs_tol=1e-300):
                raise PetabImportError(
                    f"{cond_path}: row {n} ({cid}), column {col!r}: {got!r} is not the exported {value!r}; exosim "
                    f"sets condition {cid!r} from the scenario (arm {meta[cid]['arm']!r}, dose {meta[cid]['dose']}), "
                    "so a changed condition cannot be mapped"
                )
    return ids


def _sbml_time(t: float, offset: float) -> float:
    """exosim time of an SBML time, without the rounding noise of the offset (``0.1 + 24 - 24``)."""
    x = t + offset
    r = round(x, 9)
    return r if abs(x - r) <= 4 * math.ulp(max(abs(x), abs(offset), 1.0)) else x


def _measurement_rows(
    rows: list[dict[str, str]], meta: dict, meas_path: Path, conditions: set[str]
) -> dict[str, list[tuple[int, dict[str, str]]]]:
    """The measurements as rows of exosim's CSV formats, per data set: (line in the measurement
    table, CSV row)."""
    from exosim.model.units import QuantityError, conversion_factor

    datasets = {d["id"]: d for d in meta["datasets"]}
    cond_meta, obs_meta = meta["conditions"], meta["observables"]
    t_score, offset = float(meta["score_time"]), float(meta["time_offset"])
    out: dict[str, list[tuple[int, dict[str, str]]]] = {d: [] for d in datasets}
    for n, row in enumerate(rows, start=2):
        where = f"{meas_path}: row {n}"
        if row.get("preequilibrationConditionId"):
            raise PetabImportError(f"{where}, column 'preequilibrationConditionId': exosim has no pre-equilibration")
        oid, cid = row["observableId"], row["simulationConditionId"]
        if cid not in conditions:
            raise PetabImportError(f"{where}, column 'simulationConditionId': unknown condition id {cid!r}")
        if cid not in cond_meta:
            raise PetabImportError(
                f"{where}, column 'simulationConditionId': condition {cid!r} is not one exosim export-petab wrote; "
                f"exosim maps only the exported conditions (arm, dose): {sorted(cond_meta)}"
            )
        kind = obs_meta[oid]["kind"]
        did = row.get("datasetId", "")
        if not did:
            fits = [
                d for d in datasets.values() if d["kind"] == kind and obs_meta[oid].get("dataset", d["id"]) == d["id"]
            ]
            if len(fits) != 1:
                raise PetabImportError(
                    f"{where}, column 'datasetId': empty, and observable {oid!r} belongs to "
                    f"{len(fits)} exported data sets; name one of {[d['id'] for d in fits]}"
                )
            did = fits[0]["id"]
        ds = datasets.get(did)
        if ds is None:
            raise PetabImportError(
                f"{where}, column 'datasetId': unknown data set {did!r} (exported: {sorted(datasets)})"
            )
        if ds["kind"] != kind or obs_meta[oid].get("dataset", did) != did:
            raise PetabImportError(f"{where}: observable {oid!r} does not belong to data set {did!r} ({ds['kind']})")
        cond = cond_meta[cid]
        dose = "" if cond["dose"] is None else repr(float(cond["dose"]))
        t = _float(row["time"], f"{where}, column 'time'")
        obs_par = (
            [p.strip() for p in row.get("observableParameters", "").split(";")]
            if row.get("observableParameters")
            else []
        )
        noise_par = [p.strip() for p in row.get("noiseParameters", "").split(";")] if row.get("noiseParameters") else []
        ref = [cond["reference"]] if "reference" in cond and kind != "timecourse" else []
        if kind != "timecourse" and not math.isclose(t, t_score, rel_tol=1e-12, abs_tol=1e-9):
            raise PetabImportError(
                f"{where}, column 'time': {t!r}: exosim scores survival at SBML time {t_score!r} only"
            )
        value = row["measurement"]
        if kind == "survival":
            if obs_par != ref:
                raise PetabImportError(
                    f"{where}, column 'observableParameters': expected {';'.join(ref)!r} (the reference survival of "
                    f"condition {cid!r}), got {row.get('observableParameters', '')!r}"
                )
            if len(noise_par) != 1:
                raise PetabImportError(f"{where}, column 'noiseParameters': expected one standard deviation")
            csv_row = {"arm": cond["arm"], "dose": dose, "survival": value, "sd": noise_par[0]}
        elif kind == "colonies":
            seeded = obs_par[0] if obs_par else ""
            expected = [seeded, ds["plating_efficiency"], *ref]
            if obs_par != expected or noise_par != [ds["dispersion"], *expected]:
                raise PetabImportError(
                    f"{where}: observableParameters and noiseParameters: expected 'SEEDED;{';'.join(expected[1:])}' "
                    f"and '{ds['dispersion']};SEEDED;{';'.join(expected[1:])}' (the cells seeded, then the exported "
                    "parameters)"
                )
            csv_row = {"arm": cond["arm"], "dose": dose, "colonies": value, "seeded": seeded}
        else:
            label, model_unit = obs_meta[oid]["label"], obs_meta[oid]["unit"]
            if len(obs_par) != 1 or len(noise_par) != 1:
                raise PetabImportError(
                    f"{where}: expected one observableParameters entry (a unit factor or the scale parameter) "
                    "and one noiseParameters entry (the standard deviation)"
                )
            if obs_par[0] == f"scale_{did}_{oid}":
                unit = "relative"
            else:
                factor = _float(obs_par[0], f"{where}, column 'observableParameters'")
                units = []
                for u in ds.get("units", {}).get(label, []):
                    try:
                        if math.isclose(conversion_factor(model_unit, u), factor, rel_tol=1e-12):
                            units.append(u)
                    except QuantityError:
                        continue
                if not units:
                    raise PetabImportError(
                        f"{where}, column 'observableParameters': factor {factor!r} is not the conversion from "
                        f"{model_unit!r} to a unit of {label!r} in the exported data "
                        f"({ds.get('units', {}).get(label)}), "
                        f"nor the scale parameter 'scale_{did}_{oid}'"
                    )
                unit = units[0]
            csv_row = {
                "arm": cond["arm"],
                "dose": dose,
                "time": repr(_sbml_time(t, offset)),
                "observable": label,
                "value": value,
                "sd": noise_par[0],
                "unit": unit,
            }
        out[did].append((n, csv_row))
    return out


def _observations(
    rows: dict[str, list[tuple[int, dict[str, str]]]], scenario: Scenario, meas_path: Path
) -> tuple[list[Observations], dict[str, str]]:
    """Read each data set's CSV rows as ``exosim fit`` reads a data file; errors name the
    measurement table's rows."""
    import tempfile

    from exosim.io.tables import rows_csv

    datasets, texts = [], {}
    with tempfile.TemporaryDirectory(prefix="exosim-petab-") as tmp:
        for did, items in rows.items():
            if not items:
                continue
            texts[did] = rows_csv([r for _, r in items])
            csv_path = Path(tmp) / f"{did}.csv"
            csv_path.write_text(texts[did], encoding="utf-8")
            lines = {k + 2: n for k, (n, _) in enumerate(items)}  # CSV line -> measurement table line
            try:
                obs = read_observations(csv_path, scenario)
            except FitError as exc:
                message = re.sub(
                    r"\brow (\d+)", lambda m, lines=lines: f"row {lines.get(int(m.group(1)), m.group(1))}", str(exc)
                )
                message = message.replace(str(csv_path), f"{meas_path} (data set {did})")
                message = re.sub(
                    r"column '(\w+)'", lambda m: f"column {_PETAB_COLUMN.get(m.group(1), m.group(1))!r}", message
                )
                raise PetabImportError(message) from None
            obs.source = f"{meas_path}:{did}"
            datasets.append(obs)
    if not datasets:
        raise PetabImportError(f"{meas_path}: no measurements")
    return datasets, texts


def read_petab(problem: str | Path, scenario: Scenario | str | Path | None = None) -> PetabImport:
    """Read a PEtab problem written by ``exosim export-petab`` back into exosim's fit inputs.

    The measurement and condition tables may be edited (values, standard deviations, rows
    removed or repeated, the cells seeded); the parameter table's ``estimate`` and bounds choose
    what is estimated and its range. Conditions map back to the scenario's members (arm, dose)
    and observables to exosim's data formats through the ``exosim`` block of ``problem.yaml``;
    PEtab parameter ids to exosim keys through ``parameter_map.csv``.

    Parameters
    ----------
    problem : str or Path
        ``problem.yaml`` or its folder.
    scenario : Scenario, str or Path, optional
        The scenario to fit; default the file recorded by the export (its path relative to the
        problem folder, else its absolute path), which must have the recorded sha256. A scenario
        given here that is not that file is fitted with a :class:`PetabImportWarning`.

    Returns
    -------
    PetabImport
        The scenario, data sets, parameters, bounds, likelihood and normalisation; its
        :meth:`PetabImport.fit_problem` is the problem ``exosim fit`` solves.

    Raises
    ------
    PetabImportError
        A problem not written by exosim export-petab (no ``exosim`` block in problem.yaml, no
        parameter_map.csv), a recorded scenario that is missing or changed, or a measurement,
        condition, observable or estimated parameter exosim cannot map (the message names the
        file, the row or key, and what was expected).
    ScenarioError
        The scenario file is not a valid scenario.
    """
    import yaml

    path = _problem_path(problem)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PetabImportError(f"{path}: not a YAML file: {exc}") from None
    if not isinstance(doc, dict):
        raise PetabImportError(f"{path}: expected a YAML mapping (a PEtab problem file)")
    if str(doc.get("format_version")) not in ("1", "1.0", "1.0.0"):
        raise PetabImportError(
            f"{path}: format_version {doc.get('format_version')!r}: exosim reads PEtab version 1 problems only"
        )
    meta = doc.get(METADATA_KEY)
    if not isinstance(meta, dict):
        raise PetabImportError(
            f"{path}: no key {METADATA_KEY!r}: not a problem written by exosim export-petab, the only PEtab "
            "problems exosim maps back to its scenarios"
        )
    required = (
        "scenario",
        "likelihood",
        "normalise",
        "time_offset",
        "score_time",
        "conditions",
        "observables",
        "datasets",
    )
    for key in required:
        if key not in meta:
            raise PetabImportError(f"{path}: key '{METADATA_KEY}.{key}' missing (written by exosim export-petab)")
    map_path = path.parent / "parameter_map.csv"
    map_rows = _read_table(map_path, "parameter_map", sep=",")
    tables = {
        "measurement": _files(doc, path, "measurement_files"),
        "condition": _files(doc, path, "condition_files"),
        "observable": _files(doc, path, "observable_files"),
        "parameter": _files(doc, path, "parameter_file"),
    }
    rows = {kind: [] for kind in tables}
    for kind, files in tables.items():
        for f in files:
            rows[kind] += _read_table(f, kind)
    meas_path, par_path = tables["measurement"][0], tables["parameter"][0]
    sc = _scenario_for(meta, path, scenario)
    params, ranges, notes = _estimated(map_rows, rows["parameter"], map_path, par_path)
    _check_observables(
        rows["observable"],
        meta["observables"],
        tables["observable"][0],
        {r["observableId"] for r in rows["measurement"]},
    )
    conditions = _check_conditions(rows["condition"], meta["conditions"], tables["condition"][0])
    csv_rows = _measurement_rows(rows["measurement"], meta, meas_path, conditions)
    datasets, texts = _observations(csv_rows, sc, meas_path)
    if any(r["role"] == "reference survival" for r in map_rows):
        notes.append("reference survivals: exosim simulates them (PEtab fixes them at the exported values)")
    return PetabImport(
        path,
        sc,
        datasets,
        params,
        ranges,
        str(meta["likelihood"]),
        str(meta["normalise"]),
        texts,
        [path, map_path, *(f for files in tables.values() for f in files)],
        notes,
    )
