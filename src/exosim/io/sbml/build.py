"""SBML export, generated with sbmlutils from the same declarations the simulator runs.

Mapping of an assembled :class:`~exosim._assemble.Model` to SBML Level 3 Version 2:

* each medium is a compartment whose size *is* the medium volume (mL): the
  symbol ``<medium>__volume`` of the rate laws is the compartment id;
* each population has a unit-size compartment ``<population>__cell`` (per-cell
  quantities are amounts in one representative cell);
* states counted in items (vesicles, cargo copies, DSBs, binding sites) are
  species with ``hasOnlySubstanceUnits=true``; other states (drives, dose,
  target levels, lesions) are non-constant parameters; every state has one
  rate rule, the sum of the rate terms all modules declare for it;
* derived constants are initial assignments, rules are assignment rules
  (including ``alpha_eff``, ``beta_eff`` and ``surviving_fraction``);
* the Hill function is a function definition; ``pos(x)`` is ``max(x, 0)``;
* scenario events are SBML events with ``time >= t`` triggers, executed in
  timeline order (priorities, values from execution time).

sbmlutils 0.15 (Python 3.11) does not raise on invalid SBML, so every document
is checked with libsbml's consistency checks (units included) and a document
with errors is never written.

References
----------
.. [1] Hucka M, et al. (2019) The Systems Biology Markup Language (SBML): Language
   Specification for Level 3 Version 2 Core. J Integr Bioinform 16:20190021.
   doi:10.1515/jib-2019-0021
.. [2] Smith LP, et al. (2015) SBML Level 3 package: Hierarchical Model
   Composition, Version 1 Release 3. J Integr Bioinform 12:268. doi:10.2390/biecoll-jib-2015-268
.. [3] Koenig M (2021) sbmlutils: Python utilities for SBML. Zenodo. doi:10.5281/zenodo.597149
"""

from __future__ import annotations

import ast
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exosim.model import expr as _expr
from exosim.model.assemble import Model
from exosim.model.declare import SEP

__all__ = ["SBMLExportError", "SBMLEvent", "unit_kinds", "build_flat", "validate", "write_validated",
           "export_member"]

#: counted material (vesicles, cargo copies, binding sites) maps to the SBML base unit ``item``
_COUNTS = {"particles", "particle", "copies", "copy", "sites", "site"}
#: symbol -> (SBML kind or None for dimensionless, multiplier to that kind); DSBs and lethal
#: lesions are mean numbers per cell (Poisson means), hence dimensionless, which makes
#: alpha (1/Gy), beta (1/Gy^2) and the argument of exp(-(L + A)) check out
_SYMBOLS = {"h": ("second", 3600.0), "min": ("second", 60.0), "s": ("second", 1.0),
            "Gy": ("gray", 1.0), "mL": ("litre", 1e-3), "L": ("litre", 1.0), "uL": ("litre", 1e-6),
            "cell": (None, 1.0), "cells": (None, 1.0), "DSB": (None, 1.0), "1": (None, 1.0)}
_FUNCTIONS = {"hill": _expr.hill_sbml_lambda()}
SBO_COMPARTMENT = "SBO:0000290"  # physical compartment
SBO_MATERIAL = "SBO:0000240"  # material entity
SBO_PARAMETER = "SBO:0000002"  # quantitative systems description parameter
SBO_KINETIC = "SBO:0000009"  # kinetic constant
SBO_HILL = "SBO:0000190"  # Hill coefficient


class SBMLExportError(RuntimeError):
    """An SBML document failed validation or could not be written."""


@dataclass
class SBMLEvent:
    """A timed event: at ``time`` (h, SBML time) assign each formula to its symbol."""

    sid: str
    time: float
    assignments: list[tuple[str, str]]
    priority: int
    name: str = ""


# ------------------------------------------------------------------ units
def unit_kinds(text: str) -> tuple[dict[str, float], float]:
    """Parse a unit string (``mL/(h*site)``, ``1/Gy^2``) into SBML base-unit exponents.

    Returns
    -------
    (exponents, multiplier) : dict kind -> exponent, and the factor to SBML base units
    """
    tokens = re.findall(r"[A-Za-z]+|\d+(?:\.\d+)?|[*/()^]", text.replace(" ", ""))
    pos = 0

    def atom() -> tuple[dict[str, float], float]:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            out = expr()
            pos += 1  # ')'
        elif tok in _COUNTS:
            out = ({"item": 1.0}, 1.0)
        elif tok in _SYMBOLS:
            kind, mult = _SYMBOLS[tok]
            out = ({kind: 1.0} if kind else {}, mult)
        else:
            raise SBMLExportError(f"unit symbol {tok!r} in {text!r} has no SBML mapping")
        if pos < len(tokens) and tokens[pos] == "^":
            e = float(tokens[pos + 1])
            pos += 2
            out = ({k: v * e for k, v in out[0].items()}, out[1] ** e)
        return out

    def expr() -> tuple[dict[str, float], float]:
        nonlocal pos
        kinds, mult = atom()
        kinds = dict(kinds)
        while pos < len(tokens) and tokens[pos] in "*/":
            op = tokens[pos]
            pos += 1
            k2, m2 = atom()
            sign = 1.0 if op == "*" else -1.0
            for k, v in k2.items():
                kinds[k] = kinds.get(k, 0.0) + sign * v
            mult *= m2 ** sign
        return {k: v for k, v in kinds.items() if v != 0}, mult

    result = expr()
    if pos != len(tokens):
        raise SBMLExportError(f"cannot parse unit {text!r}")
    return result


def unit_id(text: str) -> str:
    """A valid, readable UnitDefinition id for a unit string."""
    sid = text.replace("/", "_per_").replace("*", "_").replace("^", "").replace("(", "").replace(")", "")
    sid = re.sub(r"[^A-Za-z0-9_]", "_", sid)
    return "u_" + ("dimensionless" if text == "1" else sid)


def _unit_definitions(texts: set[str]):
    from sbmlutils.factory import Unit, UnitDefinition
    out = []
    for text in sorted(texts):
        kinds, mult = unit_kinds(text)
        if not kinds:
            units = [Unit("dimensionless", 1.0, 0, mult)]
        else:
            items = sorted(kinds.items())
            # the multiplier goes to the first unit, raised to 1/exponent
            first, e0 = items[0]
            units = [Unit(first, e0, 0, mult ** (1.0 / e0))]
            units += [Unit(k, e, 0, 1.0) for k, e in items[1:]]
        out.append(UnitDefinition(unit_id(text), name=text, units=units))
    return out


# ------------------------------------------------------------------ flat model
def _is_species(unit: str) -> bool:
    kinds, _ = unit_kinds(unit)
    return kinds == {"item": 1.0}


def _compartment_of(model: Model, state: str) -> str:
    ns = state.split(SEP, 1)[0]
    if ns in model.media:
        return f"{ns}{SEP}volume"
    return f"{ns}{SEP}cell"


def _sbo_for(key: str, unit: str) -> str:
    if key.endswith("hill"):
        return SBO_HILL
    if unit == "1/h":
        return SBO_KINETIC
    return SBO_PARAMETER


def _notes(q) -> str:
    """Notes of a model parameter: key, unit, range and source or assumption."""
    return (f"{q.key}: {q.unit}, range [{q.low:g}, {q.high:g}]. "
            f"{'Assumed. ' if q.assumed else ''}Source: {q.source}")


@dataclass
class FlatSpec:
    """What to put in a flat SBML model besides the model structure."""

    sid: str
    name: str
    notes: str
    parameters: np.ndarray
    events: list[SBMLEvent] = field(default_factory=list)
    event_parameters: set[str] = field(default_factory=set)


def _describe(model: Model, name: str) -> str:
    """Description of a state, derived constant or rule."""
    for item in list(model.states) + list(model.derived) + list(model.rules):
        if item.name == name:
            return f"{item.description} [{item.unit}]"
    return name


def build_flat(model: Model, spec: FlatSpec):
    """sbmlutils ``Model`` of an assembled exosim model with given parameter values and events."""
    from sbmlutils.factory import (AssignmentRule, Compartment, Event, Function, InitialAssignment,
                                   Model as SbModel, ModelUnits, Parameter, RateRule, Species)

    sf = lambda tree: _expr.to_sbml_formula(tree)  # noqa: E731
    values = np.asarray(spec.parameters, dtype=float)
    units: set[str] = {"h", "mL", "1", "particles"}
    compartments, species, parameters, assignments, rules, rate_rules = [], [], [], [], [], []
    for med in model.media:
        v = values[model.parameter_index[f"{med}{SEP}volume"]]
        compartments.append(Compartment(f"{med}{SEP}volume", float(v), unit=unit_id("mL"), constant=True,
                                        spatialDimensions=3, name=f"medium {med}", sboTerm=SBO_COMPARTMENT))
    for pop in model.populations:
        compartments.append(Compartment(f"{pop.name}{SEP}cell", 1.0, unit=unit_id("1"), constant=True,
                                        spatialDimensions=0, name=f"one cell of {pop.name} ({pop.cell_line})",
                                        sboTerm=SBO_COMPARTMENT))
    constant = {}
    for j, q in enumerate(model.parameters):
        if q.key == "volume":
            continue
        is_const = q.name not in spec.event_parameters
        constant[q.name] = is_const
        units.add(q.unit)
        parameters.append(Parameter(q.name, float(values[j]), unit=unit_id(q.unit), constant=is_const,
                                    sboTerm=_sbo_for(q.key, q.unit), notes=_notes(q), name=q.key))
    for d in model.derived:
        units.add(d.unit)
        deps = _expr.names(d.expr)
        if all(constant.get(n, True) for n in deps):
            parameters.append(Parameter(d.name, None, unit=unit_id(d.unit), constant=True, sboTerm=SBO_PARAMETER,
                                        notes=d.description, name=d.name.split(SEP, 1)[-1]))
            assignments.append(InitialAssignment(d.name, sf(d.expr), unit=unit_id(d.unit), name=d.description))
        else:
            parameters.append(Parameter(d.name, None, unit=unit_id(d.unit), constant=False, notes=d.description,
                                        name=d.name.split(SEP, 1)[-1], sboTerm=SBO_PARAMETER))
            rules.append(AssignmentRule(d.name, sf(d.expr), unit=unit_id(d.unit), name=d.description))
    for r in model.rules:
        units.add(r.unit)
        parameters.append(Parameter(r.name, None, unit=unit_id(r.unit), constant=False, sboTerm=SBO_PARAMETER,
                                    notes=r.description, name=r.name.split(SEP, 1)[-1]))
        rules.append(AssignmentRule(r.name, sf(r.expr), unit=unit_id(r.unit), name=r.description))
    for s in model.states:
        units.add(s.unit)
        init = s.initial
        numeric = isinstance(init, ast.Constant)
        value = float(init.value) if numeric else None
        if _is_species(s.unit):
            species.append(Species(s.name, _compartment_of(model, s.name), initialAmount=value,
                                   substanceUnit=unit_id(s.unit), hasOnlySubstanceUnits=True, constant=False,
                                   boundaryCondition=False, name=s.description, sboTerm=SBO_MATERIAL))
        else:
            parameters.append(Parameter(s.name, value, unit=unit_id(s.unit), constant=False,
                                        sboTerm=SBO_PARAMETER, notes=s.description, name=s.description))
        if not numeric:
            assignments.append(InitialAssignment(s.name, sf(init), unit=unit_id(s.unit),
                                                 name=f"initial {s.description}"))
        rate_unit = f"{s.unit}/h" if s.unit != "1" else "1/h"
        units.add(rate_unit)
        rate_rules.append(RateRule(s.name, sf(model.rate_expression(s.name)), unit=unit_id(rate_unit),
                                   name=f"d/dt {s.description}"))
    events = [Event(e.sid, trigger=f"time >= {e.time!r}", trigger_initialValue=False, trigger_persistent=True,
                    useValuesFromTriggerTime=False, priority=str(e.priority), assignments=dict(e.assignments),
                    name=e.name or None)
              for e in spec.events]
    return SbModel(
        spec.sid, name=spec.name, notes=spec.notes,
        units=_unit_definitions(units),
        model_units=ModelUnits(time=unit_id("h"), extent=unit_id("particles"), substance=unit_id("particles"),
                               volume=unit_id("mL")),
        functions=[Function(k, v, name="Hill function of max(x, 0)") for k, v in _FUNCTIONS.items()],
        compartments=compartments, species=species, parameters=parameters, assignments=assignments,
        rules=rules, rate_rules=rate_rules, events=events)


# ------------------------------------------------------------------ validation and writing
@dataclass
class Validation:
    """libsbml consistency check result."""

    errors: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        """True if there are no errors (warnings allowed)."""
        return not self.errors


def validate(doc, *, units: bool = True) -> Validation:
    """Run libsbml's consistency checks (units included) on a document."""
    import libsbml
    doc.setConsistencyChecks(libsbml.LIBSBML_CAT_UNITS_CONSISTENCY, units)
    doc.setConsistencyChecks(libsbml.LIBSBML_CAT_MODELING_PRACTICE, False)
    doc.checkConsistency()
    errors, warnings = _missing_math(doc), []
    for i in range(doc.getNumErrors()):
        e = doc.getError(i)
        text = f"{e.getErrorId()} {e.getShortMessage()}: {e.getMessage().strip()[:300]}"
        (errors if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR else warnings).append(text)
    return Validation(errors, warnings)


def _missing_math(doc) -> list[str]:
    """Rules, initial assignments and event assignments without math (sbmlutils drops
    formulas it cannot parse and L3V2 validation accepts the absence)."""
    model = doc.getModel()
    out = []
    if model is None:
        return ["document has no model"]
    items = [(r.getVariable(), r) for r in model.getListOfRules()]
    items += [(a.getSymbol(), a) for a in model.getListOfInitialAssignments()]
    for e in model.getListOfEvents():
        items += [(f"{e.getId()}:{a.getVariable()}", a) for a in e.getListOfEventAssignments()]
    for name, item in items:
        if item.getMath() is None:
            out.append(f"missing math for {name} (formula could not be parsed)")
    return out


def to_document(sbml_model):
    """libsbml document (Level 3 Version 2) of an sbmlutils model."""
    from sbmlutils.factory import Document
    return Document(sbml_model, sbml_level=3, sbml_version=2).create_sbml()


def write_validated(doc, path: str | Path) -> Validation:
    """Validate ``doc``; write it atomically to ``path`` only if it has no errors.

    Raises
    ------
    SBMLExportError
        On validation errors (nothing is written) or an unwritable path.
    """
    import libsbml
    result = validate(doc)
    if not result.ok:
        raise SBMLExportError("SBML validation failed, nothing written:\n  " + "\n  ".join(result.errors[:10]))
    text = libsbml.writeSBMLToString(doc)
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".exosim-", suffix=".xml", dir=path.parent if str(path.parent) else ".")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        raise SBMLExportError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    return result


# ------------------------------------------------------------------ scenario members
def export_member(compiled, member: int):
    """Flat SBML of one member (arm, grid dose) of a compiled scenario, with its timeline as events.

    SBML time 0 is the scenario's first event time (exosim time ``t0``); the
    shift is stated in the model notes.
    """
    sc, m = compiled.scenario, compiled.model
    t0 = sc.timeline_start
    events, event_params = [], set()
    n_actions = len(compiled.actions)
    for k, action in enumerate(compiled.actions):
        assigns = action.sbml_assignments(member)
        if not assigns:
            continue
        for sym, _ in assigns:
            if sym in m.parameter_index:
                event_params.add(sym)
        events.append(SBMLEvent(f"event_{k}", action.time - t0, assigns, priority=n_actions - k,
                                name=f"{action.kind} ({action.path})"))
    arm = compiled.arms[compiled.arm_index[member]].name
    grid = compiled.grid[member]
    sid = re.sub(r"\W", "_", f"{sc.name}")
    grid_text = "" if math.isnan(grid) else f", grid dose {grid:g} Gy"
    notes = (f"exosim scenario {sc.name!r} ({sc.source}, sha256 {sc.sha256}), arm {arm!r}{grid_text}. "
             f"{sc.description} SBML time = exosim time - ({t0:g} h). Survival of the scored population "
             f"{compiled.score_event.score.population!r} at SBML time {compiled.score_event.at - t0:g} h is "
             f"{compiled.score_event.score.population}{SEP}surviving_fraction. "
             f"References: {'; '.join(sc.references)}")
    spec = FlatSpec(sid, f"{sc.name}: {arm}{grid_text}", notes, compiled.parameters[member], events, event_params)
    return to_document(build_flat(m, spec)), t0


# ------------------------------------------------------------------ modules and composition
#: the configuration of the shipped composed model: donors and recipients sharing one medium
#: (co-culture), one cargo that exercises targets, modifiers and bystander damage
CANONICAL = {"populations": [("donors", "medium", "hnscc_pooled", ("mir_1246_bystander",)),
                             ("recipients", "medium", "hnscc_pooled", ())],
             "media": ["medium"], "cargos": ["mir_1246_bystander"]}
#: module file name -> (module, namespace) of the canonical block it is generated from
MODULE_FILES = {"exosim_release": ("release", "donors"), "exosim_uptake": ("transport", "recipients"),
                "exosim_medium": ("transport", "medium"), "exosim_cargo": ("cargo_effects", "recipients"),
                "exosim_repair": ("repair", "recipients")}


def canonical_model() -> Model:
    """The assembled model the files in models/ are generated from."""
    from exosim.model.assemble import PopulationSpec
    return Model([PopulationSpec(*p) for p in CANONICAL["populations"]], CANONICAL["media"], CANONICAL["cargos"])


class _Ownership:
    """Which block owns, uses and contributes to which symbol of an assembled model."""

    def __init__(self, model: Model):
        self.model = model
        self.owner: dict[str, int] = {}
        self.uses: dict[int, set[str]] = {}
        self.contrib: dict[int, dict[str, list]] = {}
        for i, b in enumerate(model.blocks):
            q = b.qualify
            own = [q(n) for n in b.parameters] + [q(s.name) for s in b.states] + \
                  [q(d.name) for d in b.derived] + [q(r.name) for r in b.rules]
            for n in own:
                self.owner.setdefault(n, i)
        for i, b in enumerate(model.blocks):
            q = b.qualify
            used: set[str] = set()
            exprs = [d.expr for d in b.derived] + [r.expr for r in b.rules] + [s.initial for s in b.states]
            for e in exprs:
                used |= _expr.names(_expr.rename(_expr.parse(e), q))
            self.contrib[i] = {}
            for rate in b.rates:
                tree = _expr.rename(_expr.parse(rate.expr), q)
                used |= _expr.names(tree)
                self.contrib[i].setdefault(q(rate.state), []).append(tree)
            self.uses[i] = {n for n in used if n in model.kinds}

    def owned(self, i: int) -> list[str]:
        return [n for n, o in self.owner.items() if o == i]

    def foreign(self, i: int) -> set[str]:
        """Symbols block i uses but does not own (placeholders in its module definition)."""
        return {n for n in self.uses[i] if self.owner.get(n) != i}

    def external_contributors(self, state: str) -> list[int]:
        return [i for i, c in self.contrib.items() if state in c and self.owner[state] != i]


def _sum(trees: list) -> str:
    return " + ".join(f"({_expr.to_sbml_formula(t)})" for t in trees) if trees else "0"


def _module_definition(model: Model, own: _Ownership, i: int, values: np.ndarray, *, standalone: bool):
    """sbmlutils (Model|ModelDefinition) of block i: owned elements, placeholders, ports."""
    from sbmlutils.factory import (AssignmentRule, Compartment, Function, InitialAssignment, Model as SbModel,
                                   ModelDefinition, ModelUnits, Parameter, Port, RateRule, Species)

    b = model.blocks[i]
    sid = f"{b.module}_{b.namespace}"
    # baseline values: placeholders start where the full model starts (modifiers 1, drives 0)
    y0 = model.initial_state(values[None])[0]
    obs0 = model.observe(y0[None], values[None])[0]
    baseline = {**{s.name: y0[k] for k, s in enumerate(model.states)},
                **{n: obs0[k] for k, n in enumerate(model.observable_names)}}
    states = {s.name: s for s in model.states}
    params = {q.name: (j, q) for j, q in enumerate(model.parameters)}
    derived = {d.name: d for d in model.derived}
    rules = {r.name: r for r in model.rules}
    units: set[str] = {"h", "mL", "1", "particles"}
    comps, species, parameters, assigns, arules, rrules, ports = {}, [], [], [], [], [], []

    def port(x: str) -> None:
        ports.append(Port(f"{x}_port", idRef=x))

    def compartment_for(name: str) -> str:
        cid = _compartment_of(model, name)
        if cid not in comps:
            if cid.endswith(f"{SEP}volume"):
                j = model.parameter_index[cid]
                comps[cid] = Compartment(cid, float(values[j]), unit=unit_id("mL"), spatialDimensions=3,
                                         sboTerm=SBO_COMPARTMENT)
            else:
                comps[cid] = Compartment(cid, 1.0, unit=unit_id("1"), spatialDimensions=0, sboTerm=SBO_COMPARTMENT)
            port(cid)
        return cid

    def element(name: str, placeholder: bool) -> None:
        if name in states:
            s = states[name]
            units.add(s.unit)
            init = s.initial
            numeric = isinstance(init, ast.Constant)
            value = float(baseline[name])
            if _is_species(s.unit):
                species.append(Species(name, compartment_for(name), initialAmount=value,
                                       substanceUnit=unit_id(s.unit), hasOnlySubstanceUnits=True,
                                       sboTerm=SBO_MATERIAL, name=s.description))
            else:
                parameters.append(Parameter(name, value, unit=unit_id(s.unit), constant=False,
                                            sboTerm=SBO_PARAMETER, notes=s.description, name=s.description))
            if not placeholder and not numeric:
                assigns.append(InitialAssignment(name, _expr.to_sbml_formula(init), unit=unit_id(s.unit),
                                                 name=f"initial {s.description}"))
        elif name in params:
            j, q = params[name]
            if q.key == "volume":
                compartment_for(name.split(SEP)[0] + f"{SEP}vesicles")
                return
            units.add(q.unit)
            parameters.append(Parameter(name, float(values[j]), unit=unit_id(q.unit),
                                        constant=q.key not in ("dose_rate",) and not q.key.endswith("_factor"),
                                        sboTerm=_sbo_for(q.key, q.unit), notes=_notes(q), name=q.key))
        else:
            item = derived.get(name) or rules[name]
            units.add(item.unit)
            parameters.append(Parameter(name, float(baseline[name]) if placeholder else None, unit=unit_id(item.unit),
                                        constant=name in derived and not placeholder,
                                        sboTerm=SBO_PARAMETER, notes=item.description,
                                        name=name.split(SEP, 1)[-1]))
            if not placeholder:
                if name in derived:
                    assigns.append(InitialAssignment(name, _expr.to_sbml_formula(item.expr), unit=unit_id(item.unit),
                                                     name=item.description))
                else:
                    arules.append(AssignmentRule(name, _expr.to_sbml_formula(item.expr), unit=unit_id(item.unit),
                                                 name=item.description))
        if name not in comps:
            port(name)

    for name in own.owned(i):
        element(name, placeholder=False)
    for name in sorted(own.foreign(i)):
        element(name, placeholder=True)
    for target, trees in own.contrib[i].items():
        unit = states[target].unit
        rate_unit = f"{unit}/h" if unit != "1" else "1/h"
        units.add(rate_unit)
        if own.owner[target] == i:
            terms = _sum(trees)
            if own.external_contributors(target):
                inflow = f"{target}_inflow"
                parameters.append(Parameter(inflow, 0.0, unit=unit_id(rate_unit), constant=False,
                                            sboTerm=SBO_PARAMETER, notes=f"rate terms of other modules for {target}",
                                            name=f"inflow to {target}"))
                port(inflow)
                terms = f"{terms} + {inflow}"
            rrules.append(RateRule(target, terms, unit=unit_id(rate_unit), name=f"d/dt {target}"))
        else:
            flux = f"{target}_from_{sid}"
            parameters.append(Parameter(flux, None, unit=unit_id(rate_unit), constant=False, sboTerm=SBO_PARAMETER,
                                        notes=f"this module's rate terms for {target}", name=f"{sid} terms of {target}"))
            arules.append(AssignmentRule(flux, _sum(trees), unit=unit_id(rate_unit), name=f"{sid} terms of {target}"))
            port(flux)
    # owned states without any rate term of their own still need their inflow
    for name in own.owned(i):
        if name in states and name not in own.contrib[i] and own.external_contributors(name):
            s = states[name]
            rate_unit = f"{s.unit}/h" if s.unit != "1" else "1/h"
            units.add(rate_unit)
            inflow = f"{name}_inflow"
            parameters.append(Parameter(inflow, 0.0, unit=unit_id(rate_unit), constant=False,
                                        sboTerm=SBO_PARAMETER, name=f"inflow to {name}"))
            port(inflow)
            rrules.append(RateRule(name, inflow, unit=unit_id(rate_unit), name=f"d/dt {name}"))
    cls = SbModel if standalone else ModelDefinition
    kwargs = dict(units=_unit_definitions(units),
                  model_units=ModelUnits(time=unit_id("h"), extent=unit_id("particles"),
                                         substance=unit_id("particles"), volume=unit_id("mL")),
                  functions=[Function(k, v) for k, v in _FUNCTIONS.items()],
                  compartments=list(comps.values()), species=species, parameters=parameters,
                  assignments=assigns, rules=arules, rate_rules=rrules, ports=ports)
    if standalone:
        from sbmlutils.factory import Package
        kwargs["packages"] = [Package.COMP_V1]
        kwargs["notes"] = (f"exosim module {b.module!r} for {b.namespace!r}, generated from "
                           f"src/exosim/modules/{b.module}.py. Placeholders (parameters or species with ports, at "
                           f"their baseline values) stand for symbols other modules provide; the composed model "
                           f"replaces them.")
    return cls(sid, name=f"exosim {b.module} module ({b.namespace})", **kwargs)


def composed_document(model: Model | None = None):
    """Hierarchical (comp) document: one submodel per module instance, shared symbols replaced."""
    from sbmlutils.factory import (AssignmentRule, Compartment, Model as SbModel, ModelUnits, Package, Parameter,
                                   ReplacedElement, Species, Submodel)

    model = model or canonical_model()
    values = model.default_parameters()
    own = _Ownership(model)
    defs = [_module_definition(model, own, i, values, standalone=False) for i in range(len(model.blocks))]
    subs = [Submodel(f"sub_{d.sid}", modelRef=d.sid) for d in defs]
    states = {s.name: s for s in model.states}
    # every symbol that appears in more than one definition lives in the parent
    holders: dict[str, list[int]] = {}
    for i in range(len(model.blocks)):
        for n in set(own.owned(i)) | own.foreign(i):
            holders.setdefault(n, []).append(i)
    shared = set(holders)  # every symbol lives in the parent, so flattened ids equal exosim's names
    comps_needed = {_compartment_of(model, n) for n in shared if n in states and _is_species(states[n].unit)}
    comps_needed |= {n for n in shared if n.endswith(f"{SEP}volume")}
    units: set[str] = {"h", "mL", "1", "particles"}
    compartments, species, parameters, rules, replaced = [], [], [], [], []

    def replace(parent_id: str, local_id: str, blocks: list[int]) -> None:
        for i in blocks:
            replaced.append(ReplacedElement(sid=None, elementRef=parent_id, submodelRef=subs[i].sid,
                                            portRef=f"{local_id}_port"))

    comp_holders: dict[str, list[int]] = {}
    for i, d in enumerate(defs):
        for c in d.compartments or []:
            comp_holders.setdefault(c.sid, []).append(i)
    for cid, blocks in comp_holders.items():
        if cid.endswith(f"{SEP}volume"):
            compartments.append(Compartment(cid, float(values[model.parameter_index[cid]]), unit=unit_id("mL"),
                                            spatialDimensions=3, sboTerm=SBO_COMPARTMENT))
        else:
            compartments.append(Compartment(cid, 1.0, unit=unit_id("1"), spatialDimensions=0, sboTerm=SBO_COMPARTMENT))
        replace(cid, cid, blocks)
    for n in sorted(shared - comps_needed - set(comp_holders)):
        init = states[n].initial if n in states else None
        start = float(init.value) if isinstance(init, ast.Constant) else 0.0
        if n in states and _is_species(states[n].unit):
            units.add(states[n].unit)
            species.append(Species(n, _compartment_of(model, n), initialAmount=start,
                                   substanceUnit=unit_id(states[n].unit), hasOnlySubstanceUnits=True,
                                   sboTerm=SBO_MATERIAL, name=states[n].description))
        else:
            unit = states[n].unit if n in states else next(
                (x.unit for x in list(model.derived) + list(model.rules) if x.name == n),
                next((q.unit for q in model.parameters if q.name == n), "1"))
            units.add(unit)
            j = model.parameter_index.get(n)
            val = float(values[j]) if j is not None else start
            info = model.parameters[j] if j is not None else None
            parameters.append(Parameter(n, val, unit=unit_id(unit), constant=False,
                                        sboTerm=_sbo_for(info.key, info.unit) if info else SBO_PARAMETER,
                                        notes=_notes(info) if info else _describe(model, n),
                                        name=info.key if info else n.split(SEP, 1)[-1]))
        replace(n, n, holders[n])
    # rate contributions across modules: parent fluxes and inflows
    for target in states:
        contributors = own.external_contributors(target)
        if not contributors:
            continue
        unit = states[target].unit
        rate_unit = f"{unit}/h" if unit != "1" else "1/h"
        units.add(rate_unit)
        names = []
        for i in contributors:
            local = f"{target}_from_{defs[i].sid}"
            parameters.append(Parameter(local, 0.0, unit=unit_id(rate_unit), constant=False, sboTerm=SBO_PARAMETER,
                                        name=f"{defs[i].sid} terms of {target}"))
            replace(local, local, [i])
            names.append(local)
        inflow = f"{target}_inflow"
        parameters.append(Parameter(inflow, 0.0, unit=unit_id(rate_unit), constant=False, sboTerm=SBO_PARAMETER,
                                    name=f"inflow to {target}"))
        rules.append(AssignmentRule(inflow, " + ".join(names), unit=unit_id(rate_unit), name=f"inflow to {target}"))
        replace(inflow, inflow, [own.owner[target]])
    top = SbModel("exosim_composed", name="exosim composed model (donors and recipients in co-culture)",
                  notes=("Hierarchical composition of the exosim modules (SBML comp): one submodel per module "
                         "instance, symbols shared between modules replaced by the parent's elements, rate terms "
                         "of one module for another module's state passed through *_from_* and *_inflow "
                         "parameters. Configuration: donors (packaging mir_1246_bystander) and recipients, "
                         "both hnscc_pooled, sharing one medium."),
                  packages=[Package.COMP_V1], units=_unit_definitions(units),
                  model_units=ModelUnits(time=unit_id("h"), extent=unit_id("particles"),
                                         substance=unit_id("particles"), volume=unit_id("mL")),
                  model_definitions=defs, submodels=subs, compartments=compartments, species=species,
                  parameters=parameters, rules=rules, replaced_elements=replaced)
    return to_document(top)


def flatten(doc):
    """Flatten a comp document with libsbml's CompFlatteningConverter."""
    import libsbml
    props = libsbml.ConversionProperties()
    props.addOption("flatten comp", True)
    props.addOption("leave_ports", False)
    clone = doc.clone()
    status = clone.convert(props)
    if status != libsbml.LIBSBML_OPERATION_SUCCESS:
        msgs = [clone.getError(i).getMessage() for i in range(clone.getNumErrors())]
        raise SBMLExportError("comp flattening failed: " + "; ".join(msgs[:5]))
    return clone


def module_documents() -> dict[str, object]:
    """Standalone SBML document of each module (file name -> document)."""
    model = canonical_model()
    values = model.default_parameters()
    own = _Ownership(model)
    out = {}
    for fname, (module, ns) in MODULE_FILES.items():
        i = next(k for k, b in enumerate(model.blocks) if b.module == module and b.namespace == ns)
        out[fname] = to_document(_module_definition(model, own, i, values, standalone=True))
    return out


def flat_document(model: Model | None = None):
    """The canonical composed model assembled directly (no comp), for comparison."""
    model = model or canonical_model()
    spec = FlatSpec("exosim_flat", "exosim model assembled directly (reference for the comp flattening)",
                    "Generated by exosim from the same module declarations as the composed model.",
                    model.default_parameters())
    return to_document(build_flat(model, spec))


def write_models(outdir: str | Path = "models") -> list[tuple[Path, Validation]]:
    """Regenerate models/: module files, the comp model and its flattened form; all validated."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    docs = dict(module_documents())
    comp = composed_document()
    docs["exosim_composed_comp"] = comp
    docs["exosim_composed_flat"] = flatten(comp)
    results = []
    checked = {name: validate(doc) for name, doc in docs.items()}
    bad = {n: r.errors for n, r in checked.items() if not r.ok}
    if bad:
        raise SBMLExportError("SBML validation failed, nothing written: " +
                              "; ".join(f"{n}: {e[0]}" for n, e in bad.items()))
    for name, doc in docs.items():
        results.append((outdir / f"{name}.xml", write_validated(doc, outdir / f"{name}.xml")))
    return results
