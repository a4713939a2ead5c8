"""Flat SBML models: one assembled exosim model, with given parameter values and events.

Mapping of an assembled :class:`~exosim.model.assemble.Model` to SBML Level 3 Version 2:

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

The helpers for compartments, SBO terms and notes are shared with the modular
models of :mod:`exosim.io.sbml.compose`.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field

import numpy as np

from exosim.io.sbml.literals import LiteralUnits
from exosim.io.sbml.units import _is_species, _unit_definitions, model_units, rate_unit, unit_id
from exosim.model import expr as _expr
from exosim.model.assemble import Model
from exosim.model.declare import SEP

__all__ = ["FlatSpec", "SBMLConstant", "SBMLEvent", "build_flat", "export_member", "flat_document", "to_document"]

#: function definitions every model carries: id -> SBML lambda
_FUNCTIONS = {"hill": _expr.hill_sbml_lambda()}
SBO_COMPARTMENT = "SBO:0000290"  # physical compartment
SBO_MATERIAL = "SBO:0000240"  # material entity
SBO_PARAMETER = "SBO:0000002"  # quantitative systems description parameter
SBO_KINETIC = "SBO:0000009"  # kinetic constant
SBO_HILL = "SBO:0000190"  # Hill coefficient


@dataclass
class SBMLEvent:
    """A timed event: at ``time`` (h, SBML time) assign each formula to its symbol.

    Attributes
    ----------
    sid : str
        SBML id of the event.
    time : float
        Trigger time, h of SBML time.
    assignments : list of (str, str or ast.expr)
        (symbol, SBML infix formula) pairs, evaluated at execution time; an expression tree is
        rendered with units on its literals (those of the symbol it assigns).
    priority : int
        SBML priority; simultaneous events run in decreasing priority.
    name : str
        Human-readable name (empty: none).
    trigger : str, optional
        SBML infix trigger formula replacing ``time >= <time>`` (e.g. a trigger time that is
        a parameter, or a condition that switches the event off); default: the literal time.
    """

    sid: str
    time: float
    assignments: list[tuple[str, str | ast.expr]]
    priority: int
    name: str = ""
    trigger: str | None = None


@dataclass
class SBMLConstant:
    """A constant parameter that is not a model parameter (an event's trigger time or dose, or
    a switch), so that one document can serve several members with different values.

    Attributes
    ----------
    sid : str
        SBML id.
    value : float
        Default value.
    unit : str
        exosim unit string (``h``, ``Gy``, ``1``).
    name : str
        Display name.
    notes : str
        What the value is and where it is used.
    """

    sid: str
    value: float
    unit: str
    name: str
    notes: str


def _compartment_of(model: Model, state: str) -> str:
    """Compartment of a symbol: its medium's volume, or one cell of its population."""
    ns = state.split(SEP, 1)[0]
    if ns in model.media:
        return f"{ns}{SEP}volume"
    return f"{ns}{SEP}cell"


def _sbo_for(key: str, unit: str) -> str:
    """SBO term of a model parameter: Hill coefficient, kinetic constant (1/h) or parameter."""
    if key.endswith("hill"):
        return SBO_HILL
    if unit == "1/h":
        return SBO_KINETIC
    return SBO_PARAMETER


def variable(
    sid: str,
    value: float | None,
    unit: str,
    *,
    name: str,
    notes: str | None = None,
    constant: bool = False,
    sbo: str = SBO_PARAMETER,
):
    """An SBML parameter (sbmlutils) with exosim's unit string, SBO term and notes."""
    from sbmlutils.factory import Parameter

    return Parameter(sid, value, unit=unit_id(unit), constant=constant, sboTerm=sbo, notes=notes, name=name)


def display_name(sid: str, text: str) -> str:
    """A display name that carries its population or medium (``alpha0 (recipients)``), so tools
    that build names from display names (COPASI) show no ``alpha0_2``."""
    namespace, sep, _ = sid.partition(SEP)
    return f"{text} ({namespace})" if sep else text


def _notes(q) -> str:
    """Notes of a model parameter: key, unit, range and source or assumption."""
    return f"{q.key}: {q.unit}, range [{q.low:g}, {q.high:g}]. {'Assumed. ' if q.assumed else ''}Source: {q.source}"


@dataclass
class FlatSpec:
    """What to put in a flat SBML model besides the model structure.

    Attributes
    ----------
    sid, name, notes : str
        SBML id, name and notes of the model.
    parameters : numpy.ndarray
        Values of the model parameters, in the order of ``model.parameters``.
    events : list of SBMLEvent
        Timed events.
    event_parameters : set of str
        Parameters the events assign to (made non-constant).
    constants : list of SBMLConstant
        Further constant parameters, declared after the model parameters (default none).
    """

    sid: str
    name: str
    notes: str
    parameters: np.ndarray
    events: list[SBMLEvent] = field(default_factory=list)
    event_parameters: set[str] = field(default_factory=set)
    constants: list[SBMLConstant] = field(default_factory=list)


def _describe(model: Model, name: str) -> str:
    """Description of a state, derived constant or rule."""
    for item in list(model.states) + list(model.derived) + list(model.rules):
        if item.name == name:
            return f"{item.description} [{item.unit}]"
    return name


def build_flat(model: Model, spec: FlatSpec):
    """sbmlutils ``Model`` of an assembled exosim model with given parameter values and events.

    Parameters
    ----------
    model : Model
        The assembled model.
    spec : FlatSpec
        Id, name, notes, parameter values and events.

    Returns
    -------
    sbmlutils.factory.Model
        Turn it into a libsbml document with :func:`to_document`.
    """
    from sbmlutils.factory import (
        AssignmentRule,
        Compartment,
        Event,
        Function,
        InitialAssignment,
        RateRule,
        Species,
    )
    from sbmlutils.factory import (
        Model as SbModel,
    )

    values = np.asarray(spec.parameters, dtype=float)
    units: set[str] = {"h", "mL", "1", "particles"}
    sf = LiteralUnits(model, spec.constants)
    compartments, species, parameters, assignments, rules, rate_rules = [], [], [], [], [], []
    for med in model.media:
        v = values[model.parameter_index[f"{med}{SEP}volume"]]
        compartments.append(
            Compartment(
                f"{med}{SEP}volume",
                float(v),
                unit=unit_id("mL"),
                constant=True,
                spatialDimensions=3,
                name=f"medium {med}",
                sboTerm=SBO_COMPARTMENT,
            )
        )
    for pop in model.populations:
        compartments.append(
            Compartment(
                f"{pop.name}{SEP}cell",
                1.0,
                unit=unit_id("1"),
                constant=True,
                spatialDimensions=0,
                name=f"one cell of {pop.name} ({pop.cell_line})",
                sboTerm=SBO_COMPARTMENT,
            )
        )
    constant = {}
    for j, q in enumerate(model.parameters):
        if q.key == "volume":
            continue
        is_const = q.name not in spec.event_parameters
        constant[q.name] = is_const
        units.add(q.unit)
        parameters.append(
            variable(
                q.name,
                float(values[j]),
                q.unit,
                name=display_name(q.name, q.name.split(SEP, 1)[-1]),
                notes=_notes(q),
                constant=is_const,
                sbo=_sbo_for(q.key, q.unit),
            )
        )
    for c in spec.constants:
        units.add(c.unit)
        parameters.append(variable(c.sid, float(c.value), c.unit, name=c.name, notes=c.notes, constant=True))
    for d in model.derived:
        units.add(d.unit)
        # a constant of constant parameters is an initial assignment; of event-changed ones, a rule
        constant_deps = all(constant.get(n, True) for n in _expr.names(d.expr))
        parameters.append(
            variable(
                d.name,
                None,
                d.unit,
                name=display_name(d.name, d.name.split(SEP, 1)[-1]),
                notes=d.description,
                constant=constant_deps,
            )
        )
        target = assignments if constant_deps else rules
        kind = InitialAssignment if constant_deps else AssignmentRule
        target.append(kind(d.name, sf(d.expr, d.unit), unit=unit_id(d.unit), name=d.description))
    for r in model.rules:
        units.add(r.unit)
        parameters.append(
            variable(r.name, None, r.unit, name=display_name(r.name, r.name.split(SEP, 1)[-1]), notes=r.description)
        )
        rules.append(AssignmentRule(r.name, sf(r.expr, r.unit), unit=unit_id(r.unit), name=r.description))
    for s in model.states:
        units.add(s.unit)
        init = s.initial
        numeric = isinstance(init, ast.Constant)
        value = float(init.value) if numeric else None
        if _is_species(s.unit):
            species.append(
                Species(
                    s.name,
                    _compartment_of(model, s.name),
                    initialAmount=value,
                    substanceUnit=unit_id(s.unit),
                    hasOnlySubstanceUnits=True,
                    constant=False,
                    boundaryCondition=False,
                    name=display_name(s.name, s.description),
                    sboTerm=SBO_MATERIAL,
                )
            )
        else:
            parameters.append(
                variable(s.name, value, s.unit, name=display_name(s.name, s.description), notes=s.description)
            )
        if not numeric:
            assignments.append(
                InitialAssignment(s.name, sf(init, s.unit), unit=unit_id(s.unit), name=f"initial {s.description}")
            )
        rate = rate_unit(s.unit)
        units.add(rate)
        rate_rules.append(
            RateRule(s.name, sf(model.rate_expression(s.name), rate), unit=unit_id(rate), name=f"d/dt {s.description}")
        )
    events = [
        Event(
            e.sid,
            trigger=e.trigger if e.trigger is not None else f"time >= {e.time!r} {unit_id('h')}",
            trigger_initialValue=False,
            trigger_persistent=True,
            useValuesFromTriggerTime=False,
            priority=f"{e.priority} {unit_id('1')}",
            assignments={
                symbol: formula if isinstance(formula, str) else sf(formula, sf.unit_of_symbol(symbol))
                for symbol, formula in e.assignments
            },
            name=e.name or None,
        )
        for e in spec.events
    ]
    return SbModel(
        spec.sid,
        name=spec.name,
        notes=spec.notes,
        units=_unit_definitions(units | sf.texts, sf.extra),
        model_units=model_units(),
        functions=[Function(k, v, name="Hill function of max(x, 0)") for k, v in _FUNCTIONS.items()],
        compartments=compartments,
        species=species,
        parameters=parameters,
        assignments=assignments,
        rules=rules,
        rate_rules=rate_rules,
        events=events,
    )


def to_document(sbml_model):
    """libsbml document (Level 3 Version 2) of an sbmlutils model (not validated)."""
    from sbmlutils.factory import Document

    return Document(sbml_model, sbml_level=3, sbml_version=2).create_sbml()


def flat_document(model: Model | None = None):
    """The canonical composed model assembled directly (no comp), for comparison.

    Parameters
    ----------
    model : Model, optional
        Default :func:`exosim.io.sbml.compose.canonical_model`.

    Returns
    -------
    libsbml.SBMLDocument
        At the default parameter values, without events.
    """
    if model is None:
        from exosim.io.sbml.compose import canonical_model  # compose builds on this module

        model = canonical_model()
    spec = FlatSpec(
        "exosim_flat",
        "exosim model assembled directly (reference for the comp flattening)",
        "Generated by exosim from the same module declarations as the composed model.",
        model.default_parameters(),
    )
    return to_document(build_flat(model, spec))


def export_member(compiled, member: int):
    """Flat SBML of one member (arm, grid dose) of a compiled scenario, with its timeline as events.

    SBML time 0 is the scenario's first event time (exosim time ``t0``); the
    shift is stated in the model notes.

    Parameters
    ----------
    compiled : CompiledScenario
        The compiled scenario (:func:`exosim.scenario.runner.compile_scenario`).
    member : int
        Row of the member in ``compiled.arm_index`` and ``compiled.grid``.

    Returns
    -------
    doc : libsbml.SBMLDocument
        The document (not yet validated; see :func:`exosim.io.sbml.validate.write_validated`).
    t0 : float
        exosim time (h) of SBML time 0.
    """
    sc, m = compiled.scenario, compiled.model
    t0 = sc.timeline_start
    events, event_params = [], set()
    n_actions = len(compiled.actions)
    for k, action in enumerate(compiled.actions):
        assigns = action.sbml_trees(member)
        if not assigns:
            continue
        for sym, _ in assigns:
            if sym in m.parameter_index:
                event_params.add(sym)
        events.append(  # consecutive ids over the events this member has; priority keeps timeline order
            SBMLEvent(
                f"event_{len(events)}",
                action.time - t0,
                assigns,
                priority=n_actions - k,
                name=action.title,
            )
        )
    arm = compiled.arms[compiled.arm_index[member]].name
    grid = compiled.grid[member]
    sid = re.sub(r"\W", "_", f"{sc.name}")
    grid_text = "" if math.isnan(grid) else f", grid dose {grid:g} Gy"
    notes = (
        f"exosim scenario {sc.name!r} ({sc.source}, sha256 {sc.sha256}), arm {arm!r}{grid_text}. "
        f"{sc.description} SBML time = exosim time - ({t0:g} h). Survival of the scored population "
        f"{compiled.score_event.score.population!r} at SBML time {compiled.score_event.at - t0:g} h is "
        f"{compiled.score_event.score.population}{SEP}surviving_fraction. "
        f"References: {'; '.join(sc.references)}"
    )
    spec = FlatSpec(sid, f"{sc.name}: {arm}{grid_text}", notes, compiled.parameters[member], events, event_params)
    return to_document(build_flat(m, spec)), t0
