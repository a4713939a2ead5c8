"""Which quantities of one member can depend on some parameters: a value-aware dependency analysis.

An analysis that runs a scenario for many parameter sets (:class:`exosim.analysis.batch.BatchModel`)
need not integrate a member whose trajectory cannot depend on the parameters it varies: the
control arm of a medium transfer has no donor cells, so no vesicles and no cargo ever reach its
recipients, and their survival cannot depend on uptake parameters.  This module finds such
members from the expression trees of the model (:mod:`exosim.model.assemble`) and the events of
the member, never from the names of arms.

The analysis follows one member through its timeline with an abstract value per symbol
(parameter, derived constant, state, rule): provably ``0``, provably ``1``, or unknown.

* Parameters take their value in the member's row; the varied ones are unknown.  Derived
  constants, rules, rates, initial values and event assignments are evaluated by the rules
  of :func:`value`: a product with a zero factor is zero, a sum drops zero terms, ``x - x`` of
  two known equal values is zero, ``0 / x`` and ``0**n`` (``n`` provably positive) are zero,
  ``x**0 = 1**x = exp(0) = 1``, ``pos(0) = sqrt(0) = log(1) = 0``, ``hill(0, K, n) = 0``;
  anything not provable is unknown (conservative).  Tracking ``1`` besides ``0`` covers
  modifiers at rest (``1 + s * activity`` with no cargo, ``exp(-0)`` in a survival term).
* Between two event times a state keeps a known value while its rate is provably zero: the
  greatest fixpoint (start from every state known at the segment start, drop those whose rate
  is not provably zero under the current assumption, repeat).  Every other state is unknown.
* An event (irradiation, harvest or transfer of medium, addition, treatment, inhibitor) is a
  list of assignments of pre-event values (:mod:`exosim.scenario.actions`); its results become
  the new values, so an event that moves a nonzero medium into a well, adds vesicles or
  irradiates makes the states it assigns unknown.

Along the way every symbol collects the symbols its value depends on through terms that are not
provably constant (rates, rules, derived constants, initial values, event assignments), over the
whole timeline.  A symbol is *tainted* when this graph reaches a varied parameter.  Outputs
(states and rules) are independent of the varied parameters (:meth:`Dependence.independent`)
when none of them is tainted through a state: states integrated with any values of the varied
parameters then give them, the rules being evaluated with the member's own parameters.  Values
are taken to be finite (``0 * x = 0``): a non-finite value fails a member anyway.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from exosim.model.assemble import Model

__all__ = ["Dependence", "MemberEvent", "member_dependence", "value", "dependencies"]

#: one event acting on the member: (time, assignments (symbol, expression of pre-event values)
#: with the member's per-event constants written as numbers), in the order the runner applies them
MemberEvent = tuple[float, Sequence[tuple[str, ast.expr]]]

#: the known values (others are unknown)
_KNOWN = (0.0, 1.0)


@dataclass(frozen=True)
class Dependence:
    """Which symbols of one member may depend on the varied parameters.

    Attributes
    ----------
    varied : the varied parameters (qualified names)
    tainted : every symbol (parameter, derived constant, state, rule) whose value may depend on
        a varied parameter
    through_states : the tainted states and the rules computed from a tainted state: the
        symbols that change when the member is integrated with other values of the varied
        parameters (a rule that reads a varied parameter only directly is not among them: it
        is recomputed from the member's own parameters)
    """

    varied: frozenset[str]
    tainted: frozenset[str]
    through_states: frozenset[str]

    def independent(self, outputs: Iterable[str] | None = None) -> bool:
        """Whether ``outputs`` (qualified states and rules; None: all of them) do not depend on the
        varied parameters through any state, so that states integrated with any values of the
        varied parameters give them."""
        if outputs is None:
            return not self.through_states
        return self.through_states.isdisjoint(outputs)


def _positive(node: ast.expr, positive: Collection[str]) -> bool:
    """Provably positive: a positive literal or a parameter of ``positive``."""
    if isinstance(node, ast.Constant):
        return float(node.value) > 0
    return isinstance(node, ast.Name) and node.id in positive


def value(node: ast.expr, known: Mapping[str, float], positive: Collection[str] = ()) -> float | None:
    """The value of an expression, ``0.0`` or ``1.0``, when provable from ``known`` values; else None.

    Parameters
    ----------
    node : an expression tree of :mod:`exosim.model.expr`
    known : symbol -> its known value (0.0 or 1.0); symbols not in it are unknown
    positive : symbols known to be positive (exponents of ``0**n`` and ``hill(0, K, n)``)
    """
    if isinstance(node, ast.Constant):
        v = float(node.value)
        return v if v in _KNOWN else None
    if isinstance(node, ast.Name):
        return known.get(node.id)
    if isinstance(node, ast.UnaryOp):
        v = value(node.operand, known, positive)
        return v if isinstance(node.op, ast.UAdd) or v == 0.0 else None
    if isinstance(node, ast.BinOp):
        return _binop(node, value(node.left, known, positive), value(node.right, known, positive), positive)
    if isinstance(node, ast.Call):
        return _call(node, [value(a, known, positive) for a in node.args], positive)
    return None


def _call(node: ast.Call, args: list[float | None], positive: Collection[str]) -> float | None:
    name = node.func.id
    if name == "exp":
        return 1.0 if args[0] == 0.0 else None
    if name == "log":
        return 0.0 if args[0] == 1.0 else None
    if name in ("sqrt", "pos"):
        return args[0]
    if name == "hill":  # x^n / (K^n + x^n) of max(x, 0)
        return 0.0 if args[0] == 0.0 and _positive(node.args[2], positive) else None
    return None


def _binop(node: ast.BinOp, a: float | None, b: float | None, positive: Collection[str]) -> float | None:
    op = type(node.op)
    if op is ast.Add:
        return b if a == 0.0 else (a if b == 0.0 else None)
    if op is ast.Sub:
        return a if b == 0.0 else (0.0 if a is not None and a == b else None)
    if op is ast.Mult:
        return 0.0 if 0.0 in (a, b) else (b if a == 1.0 else (a if b == 1.0 else None))
    if op is ast.Div:
        return None if b == 0.0 else (0.0 if a == 0.0 else (a if b == 1.0 else None))
    if op is ast.Pow:
        if b == 0.0 or a == 1.0:
            return 1.0
        if b == 1.0:
            return a
        return 0.0 if a == 0.0 and _positive(node.right, positive) else None
    return None


def dependencies(
    node: ast.expr, known: Mapping[str, float], positive: Collection[str] = (), out: set[str] | None = None
) -> set[str]:
    """The symbols the value of an expression depends on: none when its value is known, else those
    of its operands whose values are not (the terms that are provably constant drop out)."""
    out = set() if out is None else out
    _depend(node, known, positive, out)
    return out


def _depend(node: ast.expr, known: Mapping[str, float], positive: Collection[str], out: set[str]) -> float | None:
    """:func:`value` of ``node``, the symbols it depends on added to ``out`` (one walk for both)."""
    names: list[str] = []
    v = _collect(node, known, positive, names)
    out.update(names)
    return v


def _collect(node: ast.expr, known: Mapping[str, float], positive: Collection[str], names: list[str]) -> float | None:
    """:func:`value` of ``node``, appending to ``names`` the symbols it depends on (none if known)."""
    mark = len(names)
    if isinstance(node, ast.Name):
        v = known.get(node.id)
        if v is None:
            names.append(node.id)
        return v
    if isinstance(node, ast.UnaryOp):
        v = _collect(node.operand, known, positive, names)
        v = v if isinstance(node.op, ast.UAdd) or v == 0.0 else None
    elif isinstance(node, ast.BinOp):
        a = _collect(node.left, known, positive, names)
        v = _binop(node, a, _collect(node.right, known, positive, names), positive)
    elif isinstance(node, ast.Call):
        v = _call(node, [_collect(arg, known, positive, names) for arg in node.args], positive)
    else:
        v = value(node, known, positive)
    if v is not None:
        del names[mark:]
    return v


class _Walk:
    """The abstract run of one member: known values now, and the dependency graph so far."""

    def __init__(self, model: Model, positive: Collection[str]):
        self.model = model
        self.positive = positive
        self.known: dict[str, float] = {}
        self.edges: dict[str, set[str]] = defaultdict(set)
        self.rates = {s.name: model.rate_expression(s.name) for s in model.states}
        self.observed = False  # derived constants and rules evaluated (and recorded) at the current values

    def assign(self, name: str, tree: ast.expr) -> float | None:
        """Record what ``tree`` depends on as a dependency of ``name``; its value (not stored)."""
        return _depend(tree, self.known, self.positive, self.edges[name])

    def set(self, name: str, v: float | None) -> None:
        if v is None:
            self.known.pop(name, None)
        else:
            self.known[name] = v

    def evaluate(self, symbols) -> None:
        """Derived constants or rules (in their topological order) at the current values."""
        for sym in symbols:
            self.known.pop(sym.name, None)
        for sym in symbols:
            self.set(sym.name, value(sym.expr, self.known, self.positive))

    def observe(self) -> None:
        """Derived constants and rules at the current values, their dependencies recorded."""
        self.observed = True
        for group in (self.model.derived, self.model.rules):
            for sym in group:
                self.known.pop(sym.name, None)
            for sym in group:
                self.set(sym.name, self.assign(sym.name, sym.expr))

    def segment(self) -> None:
        """Integration between two event times: the states that provably stay at their known value
        (greatest fixpoint) keep it; every other state becomes unknown and depends on its rate."""
        states = [s.name for s in self.model.states]
        steady = {s: self.known[s] for s in states if s in self.known}
        for s in states:
            self.known.pop(s, None)
        self.evaluate(self.model.derived)
        while True:
            self.known.update(steady)
            self.evaluate(self.model.rules)
            moving = [s for s in steady if value(self.rates[s], self.known, self.positive) != 0.0]
            if not moving:
                break
            for s in moving:
                del steady[s]
                self.known.pop(s)
        for s in states:
            if s not in steady:
                dependencies(self.rates[s], self.known, self.positive, self.edges[s])
        self.observe()

    def event(self, assignments: Sequence[tuple[str, ast.expr]]) -> None:
        """One event: every assignment evaluated at the pre-event values (derived constants and rules
        included), then written."""
        if not self.observed:
            self.observe()
        new = [(name, self.assign(name, tree)) for name, tree in assignments]
        for name, v in new:
            self.set(name, v)
        self.observed = False


def member_dependence(
    model: Model,
    row: np.ndarray,
    varied: Iterable[int],
    events: Sequence[MemberEvent],
    start: float,
    end: float,
) -> Dependence:
    """The dependence of one member's symbols on the varied parameters.

    Parameters
    ----------
    model : the assembled model
    row : ndarray (k,), the member's parameter values at the start
    varied : columns of the parameter matrix that the analysis varies (their values in ``row``
        are ignored)
    events : the events that act on the member, in the order they are applied (times at or
        before ``end``); see :data:`MemberEvent`
    start, end : h, start of the timeline and the scoring time

    Returns
    -------
    Dependence
    """
    names = [q.name for q in model.parameters]
    varied_names = frozenset(names[c] for c in varied)
    assigned = {name for _, assignments in events for name, _ in assignments}
    row = np.asarray(row, dtype=float)
    positive = {
        n for n, v in zip(names, row) if v > 0 and n not in varied_names and n not in assigned
    }  # constant positive parameters (exponents)
    walk = _Walk(model, positive)
    for n, v in zip(names, row):
        if n not in varied_names and float(v) in _KNOWN:
            walk.known[n] = float(v)
    walk.observe()
    for s in model.states:
        walk.set(s.name, walk.assign(s.name, s.initial))
    walk.observe()
    t = start
    i = 0
    for t_next in sorted({e[0] for e in events if e[0] <= end} | {end}):
        if t_next > t:
            walk.segment()
        t = t_next
        while i < len(events) and events[i][0] <= t_next:
            walk.event(events[i][1])
            i += 1
    if not walk.observed:
        walk.observe()  # at scoring
    return _taint(model, walk.edges, varied_names)


def _taint(model: Model, edges: Mapping[str, set[str]], varied: frozenset[str]) -> Dependence:
    """Symbols from which the dependency graph reaches a varied parameter; and those that reach it
    through a state (tainted states, and the rules reading them, directly or through rules)."""
    users: dict[str, set[str]] = defaultdict(set)
    for name, deps in edges.items():
        for d in deps:
            users[d].add(name)
    tainted = _reach(varied, users, lambda name: True)
    states = {s.name for s in model.states}
    rules = {r.name for r in model.rules}
    bad_states = tainted & states
    through = bad_states | _reach(bad_states, users, lambda name: name in rules)
    return Dependence(varied, frozenset(tainted), frozenset(through))


def _reach(start: Iterable[str], users: Mapping[str, set[str]], follow) -> set[str]:
    """``start`` and every symbol that depends on it, through symbols ``follow`` accepts."""
    seen = set(start)
    todo = list(seen)
    while todo:
        for user in users.get(todo.pop(), ()):
            if user not in seen and follow(user):
                seen.add(user)
                todo.append(user)
    return seen
