"""The expression language in which every rate law is written once.

Rate laws are strings in a small subset of Python syntax: numbers, names,
``+ - * / **``, unary minus and the functions of :data:`FUNCTIONS`.  The same
parsed expression is rendered

* as numpy source for the vectorised right-hand side (:func:`to_numpy`), and
* as scalar Python for the compiled (numba) backend (:func:`to_scalar`), and
* as an SBML Level 3 infix formula (:func:`to_sbml_formula`) for the export,

so the simulator and the SBML model cannot drift apart.
"""

from __future__ import annotations

import ast
import weakref
from collections.abc import Callable

__all__ = [
    "FUNCTIONS",
    "HILL_BODY",
    "HILL_CORE",
    "ExpressionError",
    "parse",
    "names",
    "rename",
    "to_numpy",
    "to_sbml_formula",
    "to_scalar",
    "hill_numpy",
    "hill_sbml_lambda",
    "hill_scalar_source",
    "hill_fast_scalar_source",
]

#: the Hill function x^n/(K^n + x^n) of max(x, 0) (docs/model.md section 2), declared once: the numpy
#: and compiled implementations (HILL_BODY) and the SBML function definition (HILL_CORE, its
#: calls clipping x at 0) are generated from it
HILL_CORE = "x**n/(K**n + x**n)"
#: in SBML the clipping is at the call site (``hill(max(x, 0 u), K, n)``), so that the function
#: definition has no literal and libsbml can tell the units of every call
HILL_BODY = HILL_CORE.replace("x", "pos(x)")


class ExpressionError(ValueError):
    """An expression outside the supported subset."""


#: function name -> (number of arguments, numpy rendering, SBML rendering)
FUNCTIONS: dict[str, tuple[int, Callable[..., str], Callable[..., str]]] = {
    "exp": (1, lambda a: f"np.exp({a})", lambda a: f"exp({a})"),
    "log": (1, lambda a: f"np.log({a})", lambda a: f"ln({a})"),
    "sqrt": (1, lambda a: f"np.sqrt({a})", lambda a: f"sqrt({a})"),
    # SBML: ``zero`` is the 0 of max(x, 0), with the unit of x where the export gives one
    "pos": (1, lambda a: f"np.maximum({a}, 0.0)", lambda a, zero="0": f"max({a}, {zero})"),
    # Hill function x^n / (K^n + x^n) of a non-negative argument (docs/model.md section 2).
    "hill": (3, lambda x, k, n: f"_hill({x}, {k}, {n})", lambda x, k, n, zero="0": f"hill(max({x}, {zero}), {k}, {n})"),
}

#: functions whose SBML rendering clips an argument at a zero that takes that argument's unit
_CLIPPING = ("pos", "hill")

#: renderings for scalar (per-member, compiled) code where they differ from numpy's
_SCALAR: dict[str, Callable[..., str]] = {"pos": lambda a: f"max({a}, 0.0)"}

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_PRECEDENCE = {ast.Add: 1, ast.Sub: 1, ast.Mult: 2, ast.Div: 2, ast.Pow: 4}


def parse(text: str) -> ast.expr:
    """Parse and check an expression; raise :class:`ExpressionError` if unsupported."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse expression {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, ast.Constant, ast.Call))
            or type(node) in _BINOPS
            or isinstance(node, (ast.USub, ast.UAdd))
        ):
            if isinstance(node, ast.Constant) and type(node.value) not in (int, float):
                raise ExpressionError(f"only numeric constants allowed in {text!r}")
            if isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                    raise ExpressionError(f"unknown function in {text!r}; allowed: {sorted(FUNCTIONS)}")
                if len(node.args) != FUNCTIONS[node.func.id][0] or node.keywords:
                    raise ExpressionError(f"{node.func.id}() takes {FUNCTIONS[node.func.id][0]} arguments in {text!r}")
            continue
        raise ExpressionError(f"unsupported syntax {type(node).__name__} in {text!r}")
    return tree


#: the names of each tree already read (trees are not changed once built: rewriting copies them)
_NAMES: weakref.WeakKeyDictionary[ast.expr, frozenset[str]] = weakref.WeakKeyDictionary()


def names(tree: ast.expr) -> set[str]:
    """Variable names used by an expression (function names excluded)."""
    found = _NAMES.get(tree)
    if found is None:
        nodes = list(ast.walk(tree))
        called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
        found = _NAMES[tree] = frozenset(n.id for n in nodes if isinstance(n, ast.Name) and id(n) not in called)
    return set(found)


def rename(tree: ast.expr, mapping: Callable[[str], str], *, fresh: bool = False) -> ast.expr:
    """A copy of ``tree`` with every variable name passed through ``mapping`` (``fresh``: a tree
    no one else holds, just parsed, is renamed in place instead of copied first)."""

    class _Renamer(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.Call:
            node.args = [self.visit(a) for a in node.args]
            return node

        def visit_Name(self, node: ast.Name) -> ast.Name:
            return ast.copy_location(ast.Name(id=mapping(node.id), ctx=ast.Load()), node)

    import copy

    return _Renamer().visit(tree if fresh else copy.deepcopy(tree))


def _render(
    node: ast.expr,
    fmt: str,
    name: Callable[[str], str],
    literal_unit: Callable[[ast.Constant], str | None] | None = None,
    power: str | None = None,
) -> str:
    def go(n: ast.expr, parent_prec: int = 0, right: bool = False) -> str:
        if isinstance(n, ast.Constant):
            unit = literal_unit(n) if literal_unit is not None else None
            return repr(float(n.value)) + (f" {unit}" if unit else "")
        if isinstance(n, ast.Name):
            return name(n.id)
        if isinstance(n, ast.UnaryOp):
            inner = go(n.operand, 3)
            s = f"-{inner}" if isinstance(n.op, ast.USub) else inner
            return f"({s})" if parent_prec >= 3 else s
        if isinstance(n, ast.BinOp):
            prec = _PRECEDENCE[type(n.op)]
            op = _BINOPS[type(n.op)]
            if fmt == "sbml" and op == "**":
                op = "^"
            if power is not None and op == "**" and not isinstance(n.right, ast.Constant):
                return f"{power}({go(n.left)}, {go(n.right)})"  # a call: no precedence to mind
            # power is right-associative; everything else left-associative
            if op in ("**", "^"):
                s = f"{go(n.left, prec + 1)} {op} {go(n.right, prec)}"
            else:
                s = f"{go(n.left, prec)} {op} {go(n.right, prec, right=True)}"
            needs = prec < parent_prec or (prec == parent_prec and right)
            return f"({s})" if needs else s
        if isinstance(n, ast.Call):
            args = [go(a) for a in n.args]
            _, np_r, sbml_r = FUNCTIONS[n.func.id]
            if fmt == "scalar":
                return _SCALAR.get(n.func.id, np_r)(*args)
            if fmt == "sbml" and n.func.id in _CLIPPING and literal_unit is not None and literal_unit(n):
                return sbml_r(*args, zero=f"0 {literal_unit(n)}")  # max(x, 0) with the zero in x's unit
            return (np_r if fmt == "numpy" else sbml_r)(*args)
        raise ExpressionError(f"cannot render {type(n).__name__}")

    return go(node)


def to_numpy(tree: ast.expr, name: Callable[[str], str] = str) -> str:
    """Python/numpy source for ``tree``; ``name`` maps variable names to code."""
    return _render(tree, "numpy", name)


def to_scalar(tree: ast.expr, name: Callable[[str], str] = str, power: str | None = None) -> str:
    """Scalar Python source for ``tree`` (one member; numba-compilable).

    ``power``: a function name ``f`` to render a power with a non-literal exponent as
    ``f(a, b)`` instead of ``a ** b`` (the compiled kernel's ``_pow``, which skips the
    library call for the exponents 1 and 2 that parameters usually take); literal exponents
    (``x ** 2.0``) stay operators."""
    return _render(tree, "scalar", name, power=power)


def to_sbml_formula(
    tree: ast.expr, name: Callable[[str], str] = str, literal_unit: Callable[[ast.Constant], str | None] | None = None
) -> str:
    """SBML Level 3 infix formula (libsbml ``parseL3Formula`` syntax) for ``tree``; ``literal_unit``
    gives the unit id a numeric literal carries (``2 u_dimensionless``), or None for none."""
    return _render(tree, "sbml", name, literal_unit)


def hill_numpy():
    """numpy Hill function compiled from :data:`HILL_BODY`."""
    import numpy as np

    namespace: dict = {"np": np}
    exec(f"def _hill(x, K, n):\n    return {to_numpy(parse(HILL_BODY))}", namespace)  # noqa: S102 - from HILL_BODY
    return namespace["_hill"]


def hill_scalar_source(name: str = "_hill") -> str:
    """Scalar source of the Hill function from :data:`HILL_BODY`."""
    return f"def {name}(x, K, n):\n    return {to_scalar(parse(HILL_BODY))}\n"


def hill_fast_scalar_source(name: str = "_hill") -> str:
    """Scalar source of :data:`HILL_BODY` for the compiled kernel: the same function, with one
    power instead of three (``1/(1 + (K/x)**n)`` for ``x > 0``), and none for the integer
    exponents up to 16 that parameters usually take (1, 2, the bystander response's 8: repeated
    squaring; a pow is about 8 % of the ICCM kernel's time); uses ``math``.  A test checks it
    against :func:`hill_numpy`."""
    return (
        f"def {name}(x, K, n):\n"
        "    if x > 0.0:\n"
        "        if n == 1.0:\n"
        "            return x / (K + x)\n"
        "        if n == 2.0:\n"
        "            return x * x / (K * K + x * x)\n"
        "        q = K / x\n"
        "        if 0.0 < n <= 16.0 and n == math.floor(n):\n"
        "            # an integer exponent (a Hill coefficient of 3, 4 or 8): squarings, no pow\n"
        "            m = int(n)\n"
        "            r = 1.0\n"
        "            while m > 0:\n"
        "                if m & 1:\n"
        "                    r *= q\n"
        "                q *= q\n"
        "                m >>= 1\n"
        "            return 1.0 / (1.0 + r)\n"
        "        return 1.0 / (1.0 + q ** n)\n"
        f"    return {to_scalar(parse(HILL_BODY))}\n"
    )


def hill_sbml_lambda() -> str:
    """SBML ``lambda`` of :data:`HILL_CORE` for the function definition ``hill`` (its calls
    clip ``x`` at 0)."""
    return f"lambda(x, K, n, {to_sbml_formula(parse(HILL_CORE))})"
