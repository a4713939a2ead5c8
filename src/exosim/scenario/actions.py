"""Timeline events, each declared once as assignments.

An event changes states or parameters at one time.  Every event type is written
here as a list of :class:`Assignment` s: a symbol (qualified state or parameter)
and an expression of the values just before the event and of per-member
constants (the dose of each member, for instance).  The same declaration is
rendered

* for the numpy batch (:meth:`Action.apply`): every expression evaluated on the
  pre-event batch, then written to the members the event acts on; and
* for SBML (:meth:`Action.sbml_trees`, :meth:`Action.sbml_assignments`): event
  assignments of one member, its constants written as numbers,

so the simulator and the exported SBML cannot drift apart.  A new event type is
a new function here returning assignments (and a schema class in
:mod:`exosim.scenario.schema`).

Medium content changed by events (particles and cargo copies added or removed)
is booked in a ledger from the same assignments, so conservation is checkable.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from exosim.model import catalogue as cat
from exosim.model import expr as _expr
from exosim.model.assemble import Model
from exosim.model.declare import SEP
from exosim.model.modules import ACUTE_DOSE

if TYPE_CHECKING:  # pragma: no cover
    from exosim.scenario.schema import Add, Intervene, Transfer, Treat

__all__ = [
    "Assignment",
    "Action",
    "PROCESS_PARAMETER",
    "irradiation",
    "dose_rate_change",
    "transfer",
    "add",
    "intervene",
    "treat",
    "change_medium",
    "medium_content",
]

#: intervention process -> factor parameter it lowers
PROCESS_PARAMETER = {
    "release": "ilv_formation_factor",
    "fusion": "fusion_factor",
    "binding": "binding_factor",
    "internalisation": "internalisation_factor",
    "checkpoint": "checkpoint_factor",
}


@dataclass(frozen=True)
class Assignment:
    """``symbol := expr`` at the event; ``expr`` uses pre-event values of qualified model
    symbols and the event's per-member constants (bare names)."""

    symbol: str
    expr: ast.expr
    #: numpy rendering only: results smaller than this in magnitude become 0 (a dose rate switched
    #: on and off again leaves rounding residue of order 1e-17 Gy/h otherwise)
    zero_below: float = 0.0

    @classmethod
    def of(cls, symbol: str, text: str, zero_below: float = 0.0) -> Assignment:
        """Parse the expression text of an assignment."""
        return cls(symbol, _expr.parse(text), zero_below)


@dataclass(eq=False)
class Action:
    """One event at one time for the whole batch.

    Attributes
    ----------
    time : h, timeline time
    order : position in the timeline (events at one time run in this order)
    kind : event type (``irradiate``, ``transfer``, ...)
    path : key path of the event in the scenario file
    assignments : the declaration
    constants : name -> per-member value (N,), for bare names in the expressions
    acts : bool (N,), members the event changes
    record : whether the runner keeps the batch just before this event as the
        reference state of the scored population (the grid irradiation)
    label : the event's ``label`` in the scenario file ("" without one)
    detail : which part of the event this is ("fraction 2/3"; "" for a whole event)
    """

    time: float
    order: int
    kind: str
    path: str
    assignments: list[Assignment]
    constants: dict[str, np.ndarray]
    acts: np.ndarray
    record: bool = False
    label: str = ""
    detail: str = ""

    @property
    def title(self) -> str:
        """What the event is, for people: ``irradiate: donors 6 Gy (timeline[0], fraction 2/3)``."""
        where = ", ".join(t for t in (self.path, self.detail) if t)
        return f"{self.kind}{': ' + self.label if self.label else ''} ({where})"

    def apply(self, model: Model, y: np.ndarray, p: np.ndarray, ledger: dict[str, np.ndarray]) -> None:
        """Render the assignments for the batch: change ``y`` and ``p`` in place, book the ledger."""
        rows = self.acts
        if not rows.any():
            return
        old = y[rows].copy()
        y_rows, p_rows = y[rows], p[rows]
        constants = {k: v[rows] for k, v in self.constants.items()}
        observed: dict = {}  # the rules at the pre-event values, computed once for all assignments
        values = [model.evaluate_tree(a.expr, y_rows, p_rows, constants, observed) for a in self.assignments]
        for a, v in zip(self.assignments, values):
            if a.zero_below:
                v[np.abs(v) < a.zero_below] = 0.0
            kind = model.kinds[a.symbol]
            if kind == "state":
                y[rows, model.state_index[a.symbol]] = v
            elif kind == "parameter":
                p[rows, model.parameter_index[a.symbol]] = v
            else:  # pragma: no cover - the builders only assign states and parameters
                raise ValueError(f"event assigns {kind} {a.symbol!r}")
        _book(model, ledger, rows, old, y[rows])

    def sbml_trees(self, member: int) -> list[tuple[str, ast.expr]]:
        """The assignments of one member as (symbol, expression of pre-event values), the
        per-member constants replaced by their numbers."""
        if not self.acts[member]:
            return []
        numbers = {k: float(v[member]) for k, v in self.constants.items()}

        class _Numbers(ast.NodeTransformer):
            def visit_Name(self, node: ast.Name) -> ast.expr:
                return ast.Constant(numbers[node.id]) if node.id in numbers else node

        return [(a.symbol, _Numbers().visit(copy.deepcopy(a.expr))) for a in self.assignments]

    def sbml_assignments(self, member: int) -> list[tuple[str, str]]:
        """The assignments of one member as (symbol, SBML formula of pre-event values); the
        export renders :meth:`sbml_trees` itself, to put units on the numbers."""
        return [(symbol, _expr.to_sbml_formula(tree)) for symbol, tree in self.sbml_trees(member)]


def medium_content(model: Model, medium: str) -> list[tuple[str, str | None, str]]:
    """(state, cargo or None, ``vesicles`` | ``vesicular`` | ``free``) of a medium's movable content."""
    out = [(f"{medium}{SEP}vesicles", None, "vesicles")]
    for c in model.cargos:
        out += [(f"{medium}{SEP}{c}_vesicular", c, "vesicular"), (f"{medium}{SEP}{c}_free", c, "free")]
    return out


def _book(model: Model, ledger: dict[str, np.ndarray], rows: np.ndarray, old: np.ndarray, new: np.ndarray) -> None:
    """Book what entered or left the media: per cargo (and ``particles`` for vesicles), the net
    change summed over every medium and form (vesicular, free), as ``<name>_added`` or
    ``<name>_removed``.  Moving content between media or forms books nothing."""
    n = rows.size
    net: dict[str, np.ndarray] = {}
    for med in model.media:
        for state, cargo, _ in medium_content(model, med):
            i = model.state_index[state]
            name = cargo or "particles"
            net.setdefault(name, np.zeros(n))
            net[name][rows] += new[:, i] - old[:, i]
    for name, delta in net.items():
        for key, amount in (("added", np.maximum(delta, 0.0)), ("removed", np.maximum(-delta, 0.0))):
            if amount.any():
                ledger.setdefault(f"{name}_{key}", np.zeros(n))
                ledger[f"{name}_{key}"] += amount


# ---------------------------------------------------------------------- event types
def irradiation(model: Model, population: str) -> list[Assignment]:
    """Acute dose ``D`` (per member, Gy) to ``population``: the repair module's acute increments."""
    out = []
    for state, text in ACUTE_DOSE.items():
        sym = f"{population}{SEP}{state}"
        tree = _expr.rename(_expr.parse(text), lambda n: n if (SEP in n or n == "D") else f"{population}{SEP}{n}")
        out.append(Assignment(sym, ast.BinOp(left=ast.Name(id=sym, ctx=ast.Load()), op=ast.Add(), right=tree)))
    return out


def dose_rate_change(population: str) -> list[Assignment]:
    """Protracted irradiation starts or stops: the dose rate changes by ``delta`` (per member, Gy/h)."""
    sym = f"{population}{SEP}dose_rate"
    return [Assignment.of(sym, f"{sym} + delta", zero_below=1e-12)]


def transfer(model: Model, act: Transfer) -> list[Assignment]:
    """Harvest: a fraction of a medium's content moves to another medium (losses in purification,
    recovery and dilution; ``replace`` discards the target's content first)."""
    out = []
    for (s, _, what), (d, _, _) in zip(medium_content(model, act.source), medium_content(model, act.target)):
        keep = 0.0 if (what == "free" and act.purify) else (1.0 if what == "free" else act.recovery) / act.dilution
        kept = "0" if act.replace else d
        out.append(Assignment.of(d, f"{kept} + {s}*{float(act.fraction * keep)!r}"))
        out.append(Assignment.of(s, f"{s}*{float(1.0 - act.fraction)!r}"))
    return out


def add(act: Add) -> list[Assignment]:
    """Vesicles (with cargo copies per particle) added to a medium: ``particles``, or a
    ``concentration`` times the member's own volume of the medium (an arm may change it)."""
    volume = f"{act.medium}{SEP}volume"

    def amount(per_particle: float) -> str:  # one literal per term: its SBML unit follows from the context
        if act.particles is not None:
            return repr(float(act.particles) * per_particle)
        return f"{volume} * {float(act.concentration) * per_particle!r}"

    ves = f"{act.medium}{SEP}vesicles"
    out = [Assignment.of(ves, f"{ves} + {amount(1.0)}")]
    for c, q in act.cargo.items():
        name = f"{act.medium}{SEP}{c}_vesicular"
        out.append(Assignment.of(name, f"{name} + {amount(float(q))}"))
    return out


def intervene(act: Intervene) -> tuple[list[Assignment], str]:
    """An inhibitor lowers the factor of the process it blocks by its efficacy; also returns
    the factor's key."""
    agent = cat.agents()[act.agent]
    efficacy = act.efficacy if act.efficacy is not None else float(agent["efficacy"])
    name = f"{act.population}{SEP}{PROCESS_PARAMETER[agent['process']]}"
    return [Assignment.of(name, f"{name}*{float(1.0 - efficacy)!r}")], name


def treat(model: Model, cargo_records: dict, act: Treat) -> list[Assignment]:
    """A medium treatment (RNase, detergent, heat, ...) destroys cargo by kind and location and
    may lyse vesicles, releasing their cargo as free cargo (catalogue ``treatments``)."""
    rule = cat.treatments()[act.treatment]
    destroys = rule.get("destroys") or {}
    lyse = bool(rule.get("lyses_vesicles"))
    med = act.medium
    out = []
    for c in model.cargos:
        where = destroys.get(cargo_records[c].get("kind", "rna"), [])
        v, f = f"{med}{SEP}{c}_vesicular", f"{med}{SEP}{c}_free"
        free_left = "0" if "free" in where else f
        freed = v if (lyse and "vesicular" not in where) else "0"
        out.append(Assignment.of(f, f"{free_left} + {freed}"))
        if lyse or "vesicular" in where:
            out.append(Assignment.of(v, "0"))
    if lyse:
        out.append(Assignment.of(f"{med}{SEP}vesicles", "0"))
    return out


def change_medium(model: Model, medium: str) -> list[Assignment]:
    """Fresh medium: the medium's vesicles and cargo are discarded."""
    return [Assignment.of(name, "0") for name, _, _ in medium_content(model, medium)]
