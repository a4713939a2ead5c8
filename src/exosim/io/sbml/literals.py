"""Units of the numeric literals of an expression, inferred from their context (``sbml:units``).

SBML cannot check the units of an expression that contains a number without units: every
``2`` in ``log(2)/half_time`` or ``1 - share`` would otherwise make libsbml warn (99505) and
leave the units of the whole expression undetermined. exosim knows the unit of every symbol
and the declared unit of every rule, derived constant, rate and event assignment, so the
unit of each literal follows from where it stands:

* added to, subtracted from, or compared (``pos``, ``hill``'s ``x`` and ``K``) with a term of
  known unit: that unit;
* a factor or divisor where the rest of the product and the unit the expression must have are
  known: the unit that makes the product come out right;
* in an exponent, inside ``exp`` or ``log``, or anywhere else: dimensionless.

Units are (exponents of SBML base units, multiplier) pairs, as :func:`exosim.model.units.unit_kinds`
returns them.
"""

from __future__ import annotations

import ast
import hashlib
import math
from collections.abc import Callable, Iterable

__all__ = ["Kinds", "DIMENSIONLESS", "kinds_of", "infer_literal_units", "same_kinds", "LiteralUnits"]

#: (sorted (base unit, exponent) pairs, multiplier)
Kinds = tuple[tuple[tuple[str, float], ...], float]
DIMENSIONLESS: Kinds = ((), 1.0)


def kinds_of(text: str) -> Kinds:
    """:data:`Kinds` of an exosim unit string."""
    from exosim.io.sbml.units import unit_kinds

    exps, mult = unit_kinds(text)
    return tuple(sorted((k, float(v)) for k, v in exps.items() if v != 0)), float(mult)


def same_kinds(a: Kinds, b: Kinds) -> bool:
    """Equal exponents and multipliers equal to 1e-9 relative."""
    return a[0] == b[0] and math.isclose(a[1], b[1], rel_tol=1e-9)


def _combine(a: Kinds, b: Kinds, sign: float) -> Kinds:
    exps = dict(a[0])
    for k, v in b[0]:
        exps[k] = exps.get(k, 0.0) + sign * v
    return tuple(sorted((k, v) for k, v in exps.items() if abs(v) > 1e-12)), a[1] * b[1] ** sign


def _power(a: Kinds, e: float) -> Kinds:
    return tuple((k, v * e) for k, v in a[0] if abs(v * e) > 1e-12), a[1] ** e


def infer_literal_units(
    tree: ast.expr, expected: Kinds | None, unit_of: Callable[[str], Kinds | None]
) -> dict[int, Kinds]:
    """Units of the numeric literals of ``tree`` (by ``id`` of their ``ast.Constant`` node).

    Parameters
    ----------
    tree : ast.expr
        The expression (exosim's expression subset).
    expected : Kinds or None
        The unit the whole expression must have (its declaration), if known.
    unit_of : callable
        Unit of a symbol name, or None if unknown.

    Returns
    -------
    dict
        ``id(node)`` -> :data:`Kinds` for every ``ast.Constant`` of the tree, and for every
        ``pos`` and ``hill`` call (the unit of the zero of ``max(x, 0)``); dimensionless where the context
        does not decide.
    """
    found: dict[int, Kinds] = {}
    memo: dict[int, Kinds | None] = {}

    def synth(n: ast.expr) -> Kinds | None:
        """Unit of ``n`` from its symbols alone (None: undetermined; literals are undetermined)."""
        key = id(n)
        if key not in memo:
            memo[key] = _synth(n)
        return memo[key]

    def _synth(n: ast.expr) -> Kinds | None:
        if isinstance(n, ast.Name):
            return unit_of(n.id)
        if isinstance(n, ast.UnaryOp):
            return synth(n.operand)
        if isinstance(n, ast.BinOp):
            left, right = synth(n.left), synth(n.right)
            if isinstance(n.op, (ast.Add, ast.Sub)):
                return left or right
            if isinstance(n.op, ast.Pow):
                if isinstance(n.right, ast.Constant) and left is not None:
                    return _power(left, float(n.right.value))
                return left if left == DIMENSIONLESS else None
            if left is None or right is None:
                return None
            return _combine(left, right, 1.0 if isinstance(n.op, ast.Mult) else -1.0)
        if isinstance(n, ast.Call):
            f = n.func.id
            if f in ("exp", "log", "hill"):
                return DIMENSIONLESS
            if f == "sqrt":
                inner = synth(n.args[0])
                return _power(inner, 0.5) if inner is not None else None
            if f == "pos":
                return synth(n.args[0])
        return None

    def push(n: ast.expr, want: Kinds | None) -> None:
        """Annotate the literals of ``n``, which must have unit ``want`` (None: unknown)."""
        if isinstance(n, ast.Constant):
            if want is not None:
                found[id(n)] = want
            return
        if isinstance(n, ast.UnaryOp):
            push(n.operand, want)
        elif isinstance(n, ast.BinOp):
            left, right = synth(n.left), synth(n.right)
            if isinstance(n.op, (ast.Add, ast.Sub)):
                target = want or left or right
                push(n.left, target)
                push(n.right, target)
            elif isinstance(n.op, ast.Pow):
                push(n.right, DIMENSIONLESS)
                e = float(n.right.value) if isinstance(n.right, ast.Constant) else None
                if left is None and want is not None and e:
                    left = _power(want, 1.0 / e)
                push(n.left, left)
            else:
                mult = isinstance(n.op, ast.Mult)
                if want is not None and left is not None and right is None:
                    # left * r = want -> r = want/left;  left / r = want -> r = left/want
                    right = _combine(want, left, -1.0) if mult else _combine(left, want, -1.0)
                elif want is not None and right is not None and left is None:
                    left = _combine(want, right, -1.0 if mult else 1.0)
                push(n.left, left)
                push(n.right, right)
        elif isinstance(n, ast.Call):
            f = n.func.id
            if f in ("exp", "log"):
                push(n.args[0], DIMENSIONLESS)
            elif f == "sqrt":
                push(n.args[0], _power(want, 2.0) if want is not None else synth(n.args[0]))
            elif f == "pos":  # max(a, 0): the implicit zero takes the unit of a
                target = want or synth(n.args[0])
                push(n.args[0], target)
                found[id(n)] = target if target is not None else DIMENSIONLESS
            elif f == "hill":  # hill(max(x, 0), K, n): x, K and the zero share a unit
                common = synth(n.args[0]) or synth(n.args[1])
                push(n.args[0], common)
                push(n.args[1], common)
                push(n.args[2], DIMENSIONLESS)
                found[id(n)] = common if common is not None else DIMENSIONLESS

    push(tree, expected)
    for node in ast.walk(tree):
        implicit_zero = isinstance(node, ast.Call) and node.func.id in ("pos", "hill")
        if (isinstance(node, ast.Constant) or implicit_zero) and id(node) not in found:
            found[id(node)] = DIMENSIONLESS
    return found


class LiteralUnits:
    """Renders expressions of an assembled model with a unit on every numeric literal
    (``sbml:units``), inferred from the declared units of the symbols and of the expression, so
    that libsbml can check the units of every rule, rate and event assignment.

    A literal whose unit no unit string of the model has gets a UnitDefinition of its own
    (:attr:`extra`), named from a hash of the unit, so that the same unit has the same id in
    every (sub)model. :attr:`texts` are the unit strings the literals use.
    """

    def __init__(self, model, constants: Iterable = ()):
        from exosim.model.declare import SEP

        symbols = {q.name: q.unit for q in model.parameters}
        symbols |= {f"{med}{SEP}volume": "mL" for med in model.media}
        symbols |= {c.sid: c.unit for c in constants}
        symbols |= {x.name: x.unit for x in list(model.derived) + list(model.rules) + list(model.states)}
        self.symbols = symbols
        self.texts: set[str] = set()
        self.extra: dict[str, Kinds] = {}
        self._kinds: dict[str, Kinds] = {}
        self._by_kinds: list[tuple[Kinds, str]] = []
        for text in sorted(set(symbols.values()) | {"1", "h"}):
            self._known(text)

    def _known(self, text: str) -> Kinds:
        if text not in self._kinds:
            self._kinds[text] = kinds_of(text)
            self._by_kinds.append((self._kinds[text], text))
        return self._kinds[text]

    def unit_of_symbol(self, name: str) -> str:
        """Declared unit string of a model symbol."""
        return self.symbols[name]

    def _unit_id(self, k: Kinds) -> str:
        from exosim.io.sbml.units import unit_id

        for known, text in self._by_kinds:
            if same_kinds(known, k):
                self.texts.add(text)
                return unit_id(text)
        uid = "u_literal_" + hashlib.sha256(repr((k[0], f"{k[1]:.12g}")).encode()).hexdigest()[:10]
        self.extra[uid] = k
        return uid

    def __call__(self, tree: ast.expr, unit: str) -> str:
        """SBML formula of ``tree``, an expression whose declared unit is ``unit``."""
        from exosim.model import expr as _expr

        found = infer_literal_units(
            tree,
            self._known(unit),
            lambda n: self._known(self.symbols[n]) if n in self.symbols else None,
        )
        return _expr.to_sbml_formula(tree, literal_unit=lambda node: self._unit_id(found[id(node)]))
