"""The rate-law expression language (exosim.model.expr): what it accepts, what it rejects, and
that its numpy, scalar and SBML renderings compute what the original text means."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest

from exosim.model import expr


def _libsbml():
    """python-libsbml (the 'sbml'/'test' extra), imported only by the SBML rendering checks."""
    import libsbml

    return libsbml


# -- reference semantics: Python's own evaluation of the original text ----------------------


def ref_hill(x, K, n):
    """x^n / (K^n + x^n) for x >= 0, 0 for x < 0 (docs/model.md section 2)."""
    return 0.0 if x < 0 else x**n / (K**n + x**n)


REFERENCE_FUNCTIONS = {
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "pos": lambda v: max(v, 0.0),
    "hill": ref_hill,
}


def python_value(text: str, values: dict[str, float]) -> float:
    return eval(text, {"__builtins__": {}}, {**REFERENCE_FUNCTIONS, **values})


def numpy_value(source: str, values: dict):
    return eval(source, {"np": np, "_hill": expr.hill_numpy()}, dict(values))


def scalar_hill():
    namespace: dict = {}
    exec(expr.hill_scalar_source("_hill"), namespace)  # noqa: S102
    return namespace["_hill"]


def scalar_value(source: str, values: dict) -> float:
    return eval(source, {"np": np, "math": math, "_hill": scalar_hill()}, dict(values))


# -- an independent evaluator of libsbml's parse of the SBML formula ------------------------


def _sbml_eval(node, env: dict[str, float], functions: dict):
    libsbml = _libsbml()
    t = node.getType()
    if node.isNumber():
        return float(node.getValue())
    if t == libsbml.AST_NAME:
        return env[node.getName()]
    kids = [_sbml_eval(node.getChild(i), env, functions) for i in range(node.getNumChildren())]
    if t == libsbml.AST_PLUS:
        return math.fsum(kids) if len(kids) != 2 else kids[0] + kids[1]
    if t == libsbml.AST_MINUS:
        return -kids[0] if len(kids) == 1 else kids[0] - kids[1]
    if t == libsbml.AST_TIMES:
        return math.prod(kids)
    if t == libsbml.AST_DIVIDE:
        return kids[0] / kids[1]
    if t in (libsbml.AST_POWER, libsbml.AST_FUNCTION_POWER):
        return kids[0] ** kids[1]
    if t == libsbml.AST_FUNCTION_EXP:
        return math.exp(kids[0])
    if t == libsbml.AST_FUNCTION_LN:
        return math.log(kids[0])
    if t == libsbml.AST_FUNCTION_ROOT:  # sqrt(a) parses as root(2, a)
        degree, arg = kids if len(kids) == 2 else (2.0, kids[0])
        return math.sqrt(arg) if degree == 2.0 else arg ** (1.0 / degree)
    if t == libsbml.AST_FUNCTION_MAX:
        return max(kids)
    if t == libsbml.AST_FUNCTION:
        return functions[node.getName()](*kids)
    raise AssertionError(f"unexpected SBML node type {t} in {libsbml.formulaToL3String(node)}")


def _parse_l3(formula: str):
    libsbml = _libsbml()
    tree = libsbml.parseL3Formula(formula)
    assert tree is not None, f"libsbml cannot parse {formula!r}: {libsbml.getLastParseL3Error()}"
    return tree


def sbml_hill():
    """``hill(x, K, n)`` as the SBML export writes a call (``hill(max(x, 0), K, n)``), evaluated
    with the function definition ``hill`` (from hill_sbml_lambda) by libsbml's parse."""
    call = expr.to_sbml_formula(expr.parse("hill(x, K, n)"))
    return lambda x, K, n: sbml_value(call, {"x": x, "K": K, "n": n})


def sbml_hill_definition():
    """The SBML function definition ``hill`` (from hill_sbml_lambda), evaluated by libsbml's parse."""
    lam = _parse_l3(expr.hill_sbml_lambda())
    assert lam.getType() == _libsbml().AST_LAMBDA
    params = [lam.getChild(i).getName() for i in range(lam.getNumChildren() - 1)]
    assert params == ["x", "K", "n"]
    # look the body up on each call: a child node is only valid while ``lam`` (its owner) lives
    return lambda *args: _sbml_eval(lam.getChild(lam.getNumChildren() - 1), dict(zip(params, args, strict=True)), {})


def sbml_value(formula: str, values: dict[str, float]) -> float:
    return _sbml_eval(_parse_l3(formula), values, {"hill": sbml_hill_definition()})


# -- parse: accepted ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "2.5",
        "1e-3",
        ".5",
        "k",
        "k_on2",
        "a + b",
        "a - b",
        "a * b",
        "a / b",
        "a ** b",
        "-a",
        "+a",
        "-(a + 1)",
        "exp(a)",
        "log(a)",
        "sqrt(a)",
        "pos(a - b)",
        "hill(x, K, n)",
        "hill(exp(a), 2 * K, 1)",
        "k * (1 + E * hill(P, K, n)) - (k1 + k2) * M",
    ],
)
def test_parse_accepts_the_supported_subset(text):
    tree = expr.parse(text)
    assert isinstance(tree, ast.expr)
    assert ast.dump(tree) == ast.dump(ast.parse(text, mode="eval").body)


def test_every_declared_function_is_accepted_with_its_arity_only():
    assert set(expr.FUNCTIONS) >= {"exp", "log", "sqrt", "pos", "hill"}
    for fname, (arity, _, _) in expr.FUNCTIONS.items():
        args = ", ".join(f"x{i}" for i in range(arity))
        expr.parse(f"{fname}({args})")
        for wrong in (arity - 1, arity + 1):
            if wrong < 0:
                continue
            text = f"{fname}({', '.join(f'x{i}' for i in range(wrong))})"
            with pytest.raises(expr.ExpressionError, match=str(arity)) as info:
                expr.parse(text)
            assert repr(text) in str(info.value)


# -- parse: rejected ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("a.b", "Attribute"),
        ("np.exp(a)", "unknown function"),
        ("a[0]", "Subscript"),
        ("a < b", "Compare"),
        ("a == b", "Compare"),
        ("'x'", "numeric"),
        ("a * 'x'", "numeric"),
        ("None", "numeric"),
        ("1j * a", "numeric"),
        ("foo(a)", "unknown function"),
        ("__import__('os')", "unknown function"),
        ("exp(a, b)", "1"),
        ("hill(a, b)", "3"),
        ("exp(a, x=b)", "1"),
        ("hill(a, b, c, n=2)", "3"),
        ("a // b", "FloorDiv"),
        ("a % b", "Mod"),
        ("~a", "Invert"),
        ("not a", "Not"),
        ("a and b", "BoolOp"),
        ("a if b else c", "IfExp"),
        ("lambda: a", "Lambda"),
        ("[a]", "List"),
        ("a +", "cannot parse"),
        ("a = 1", "cannot parse"),
    ],
)
def test_parse_rejects_everything_else_naming_the_expression(text, words):
    with pytest.raises(expr.ExpressionError) as info:
        expr.parse(text)
    message = str(info.value)
    assert repr(text) in message
    assert words in message
    assert isinstance(info.value, ValueError)


# -- names and rename -----------------------------------------------------------------------


def test_names_excludes_function_names():
    tree = expr.parse("hill(x, K, n) + exp(y) * pos(z - log(w)) / sqrt(v) - 2")
    assert expr.names(tree) == {"x", "K", "n", "y", "z", "w", "v"}
    assert expr.names(expr.parse("3.5")) == set()
    assert expr.names(expr.parse("a * a + a")) == {"a"}


def test_rename_maps_variable_names_only_and_leaves_its_input_alone():
    tree = expr.parse("k * hill(x, K, n) - exp(-y) + pos(x)")
    before = ast.dump(tree)
    renamed = expr.rename(tree, lambda n: f"cells__{n}")
    assert ast.dump(tree) == before
    assert expr.names(renamed) == {"cells__k", "cells__x", "cells__K", "cells__n", "cells__y"}
    called = {n.func.id for n in ast.walk(renamed) if isinstance(n, ast.Call)}
    assert called == {"hill", "exp", "pos"}
    rng = np.random.default_rng(3)
    values = {v: float(rng.uniform(0.5, 2.0)) for v in ("k", "x", "K", "n", "y")}
    assert eval(
        expr.to_numpy(renamed), {"np": np, "_hill": expr.hill_numpy()}, {f"cells__{k}": v for k, v in values.items()}
    ) == pytest.approx(python_value("k * hill(x, K, n) - exp(-y) + pos(x)", values), rel=1e-12)


def test_renderings_pass_names_through_the_name_callback():
    tree = expr.parse("a * exp(b) + hill(a, K, n)")
    mapping = {"a": "y[:, 0]", "b": "p[:, 1]", "K": "p[:, 2]", "n": "p[:, 3]"}
    source = expr.to_numpy(tree, mapping.__getitem__)
    assert "y[:, 0]" in source and "p[:, 1]" in source and "np.exp(" in source and "_hill(" in source
    y = np.array([[0.5], [2.0]])
    p = np.array([[0.0, 0.3, 1.0, 2.0], [0.0, -1.0, 1.5, 1.0]])
    got = eval(source, {"np": np, "_hill": expr.hill_numpy()}, {"y": y, "p": p})
    want = [
        python_value("a * exp(b) + hill(a, K, n)", {"a": y[i, 0], "b": p[i, 1], "K": p[i, 2], "n": p[i, 3]})
        for i in range(2)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert "y[:, 0]" in expr.to_sbml_formula(tree, mapping.__getitem__)


# -- renderings compute what the text means -------------------------------------------------

EXPRESSIONS = [
    "a - (b - c)",
    "a - b - c",
    "a / (b * c)",
    "a / b / c",
    "a / b * c",
    "-a ** 2",
    "(-a) ** 2",
    "(a ** b) ** c",
    "a ** b ** c",
    "a ** -b",
    "2 ** -a",
    "2 * -a",
    "a - -b",
    "-(a + b) * c",
    "a * (b + c)",
    "(a + b) * c",
    "a - b + c",
    "a - (b + c)",
    "+a - b",
    "pos(a - b)",
    "pos(b - a) * c",
    "hill(a, b, c)",
    "hill(a - b, c, 2.5)",
    "hill(a, b, 1)",
    "exp(log(a))",
    "sqrt(a) / b",
    "1e-3 * a + 2.5 / b",
    "exp(-a * b) ** c",
    "-hill(a, b, c) ** 2",
    "log(a / (b + c)) - sqrt(a * b) ** -c",
]


def _samples(n: int = 25) -> list[dict[str, float]]:
    rng = np.random.default_rng(20240611)
    return [{v: float(rng.uniform(0.2, 2.5)) for v in "abc"} for _ in range(n)]


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_numpy_and_scalar_renderings_evaluate_like_python(text):
    tree = expr.parse(text)
    numpy_source, scalar_source = expr.to_numpy(tree), expr.to_scalar(tree)
    samples = _samples()
    want = [python_value(text, s) for s in samples]
    for s, w in zip(samples, want, strict=True):
        assert numpy_value(numpy_source, s) == pytest.approx(w, rel=1e-12), numpy_source
        assert scalar_value(scalar_source, s) == pytest.approx(w, rel=1e-12), scalar_source
    # vectorised: one call over the whole batch
    batch = {v: np.array([s[v] for s in samples]) for v in "abc"}
    np.testing.assert_allclose(numpy_value(numpy_source, batch), want, rtol=1e-12, err_msg=numpy_source)


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_sbml_formula_parses_in_libsbml_and_evaluates_like_python(text):
    formula = expr.to_sbml_formula(expr.parse(text))
    assert "**" not in formula and "np." not in formula
    for s in _samples(10):
        assert sbml_value(formula, s) == pytest.approx(python_value(text, s), rel=1e-12), formula


def test_power_is_right_associative_in_every_rendering():
    # with a=2, b=3, c=2: a ** b ** c = 2 ** 9 = 512, (a ** b) ** c = 8 ** 2 = 64
    values = {"a": 2.0, "b": 3.0, "c": 2.0}
    for text, want in [("a ** b ** c", 512.0), ("(a ** b) ** c", 64.0), ("-a ** 2", -4.0), ("(-a) ** 2", 4.0)]:
        tree = expr.parse(text)
        assert numpy_value(expr.to_numpy(tree), values) == want
        assert scalar_value(expr.to_scalar(tree), values) == want
        assert sbml_value(expr.to_sbml_formula(tree), values) == want


def test_scalar_rendering_of_pos_uses_builtin_max():
    source = expr.to_scalar(expr.parse("pos(a - b)"))
    assert "np.maximum" not in source
    assert eval(source, {"__builtins__": {"max": max}}, {"a": 1.0, "b": 3.0}) == 0.0
    assert "np.maximum" in expr.to_numpy(expr.parse("pos(a - b)"))


# -- the Hill function ----------------------------------------------------------------------

XS = [-2.0, -1e-9, 0.0, 1e-6, 0.3, 1.0, 2.0, 7.5, 1e4]


@pytest.mark.parametrize("n", [1.0, 1, 2.5])
@pytest.mark.parametrize("K", [0.5, 2.0])
def test_hill_is_x_n_over_k_n_plus_x_n_and_zero_for_negative_x(n, K):
    want = [0.0 if x < 0 else x**n / (K**n + x**n) for x in XS]
    hill_np = expr.hill_numpy()
    np.testing.assert_allclose(hill_np(np.array(XS), K, n), want, rtol=1e-13, atol=0)
    for x, w in zip(XS, want, strict=True):
        assert float(hill_np(np.array([x]), K, n)[0]) == pytest.approx(w, rel=1e-13, abs=0)
        assert scalar_hill()(x, K, n) == pytest.approx(w, rel=1e-13, abs=0)
        assert sbml_hill()(x, K, n) == pytest.approx(w, rel=1e-13, abs=0)
    assert all(w == 0.0 for x, w in zip(XS, want, strict=True) if x <= 0)


def test_hill_numpy_broadcasts_per_member_parameters():
    x = np.array([0.5, 1.0, -1.0, 3.0])
    K = np.array([1.0, 2.0, 1.0, 0.5])
    n = np.array([1.0, 2.5, 2.0, 1.0])
    want = [ref_hill(*args) for args in zip(x, K, n, strict=True)]
    np.testing.assert_allclose(expr.hill_numpy()(x, K, n), want, rtol=1e-13)


def test_hill_renderings_come_from_the_one_declared_body():
    assert expr.names(expr.parse(expr.HILL_BODY)) == {"x", "K", "n"}
    assert expr.to_sbml_formula(expr.parse(expr.HILL_CORE)) in expr.hill_sbml_lambda()
    # the SBML calls clip x at 0, as HILL_BODY does inside the numpy and compiled functions
    assert expr.HILL_BODY == expr.HILL_CORE.replace("x", "pos(x)")
    assert expr.to_sbml_formula(expr.parse("hill(a, b, c)")) == "hill(max(a, 0), b, c)"
    assert "def _hill(x, K, n):" in expr.hill_scalar_source()
    assert "def my_hill(x, K, n):" in expr.hill_scalar_source("my_hill")


def test_the_kernels_hill_function_is_the_declared_one():
    """The compiled kernel's Hill function (fewer powers, none for integer n up to 16) equals
    HILL_BODY everywhere: clipped below 0, at the half-saturation, for small, integer and large n."""
    namespace: dict = {"math": math}
    exec(expr.hill_fast_scalar_source("_hill"), namespace)  # noqa: S102
    fast, declared = namespace["_hill"], expr.hill_numpy()
    for n in (0.5, 1.0, 2.0, 3.0, 3.7, 4.0, 7.0, 8.0, 16.0, 17.0):
        for K in (1e-3, 0.7, 250.0):
            for x in (-1.0, 0.0, 1e-9, K * 0.2, K, K * 5.0, 1e6):
                assert fast(x, K, n) == pytest.approx(float(declared(x, K, n)), rel=1e-12, abs=1e-300), (x, K, n)
