"""Physical quantities in scenario files, converted once to exosim's base units.

exosim works internally in h, Gy, Gy/h, mL, particles, copies and cells.
Scenario files may write a quantity as a number in the
base unit or as a string ``"<number> <unit>"`` (``"30 min"``, ``"2 Gy"``,
``"1e9 particles/mL"``).  Each scenario key expects one *kind* of quantity; a
unit of another kind is an error that names what was expected.

A small table is used instead of a general unit library: every key admits only
a handful of spellings, the table makes the error message list them, and it
adds nothing to start-up time.

The same module parses the compound unit strings of the parameter table and of
model states (``mL/(h*site)``, ``1/Gy^2``) into base dimensions
(:func:`unit_kinds`): the SBML export builds its unit definitions from them and
fits convert data units with them (:func:`conversion_factor`).  Parameter values
in scenario files are parsed once into a :class:`Quantity` (number and unit).
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

__all__ = [
    "UNITS",
    "DIMENSIONAL",
    "parse_quantity",
    "QuantityError",
    "format_unit_choices",
    "unit_kinds",
    "conversion_factor",
    "Quantity",
    "parse_parameter_value",
    "short_repr",
]


class QuantityError(ValueError):
    """A value that is not a quantity of the expected kind."""


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters: input is never formatted
    unbounded (a scenario string may be megabytes long, a YAML list nested arbitrarily deep)."""
    import reprlib

    if isinstance(value, str):
        text = repr(value[: limit + 1])
    else:
        r = reprlib.Repr()
        r.maxstring, r.maxother, r.maxlevel = limit + 2, limit, 3
        r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 8
        text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: kind -> {unit spelling: factor to the base unit}; the first entry is the base unit.
UNITS: dict[str, dict[str, float]] = {
    "time": {
        "h": 1.0,
        "s": 1 / 3600,
        "min": 1 / 60,
        "hour": 1.0,
        "hours": 1.0,
        "d": 24.0,
        "day": 24.0,
        "days": 24.0,
        "week": 168.0,
        "weeks": 168.0,
    },
    "dose": {"Gy": 1.0, "cGy": 0.01, "mGy": 0.001},
    "dose_rate": {"Gy/h": 1.0, "Gy/min": 60.0, "cGy/min": 0.6, "mGy/h": 0.001, "mGy/min": 0.06},
    "volume": {"mL": 1.0, "L": 1000.0, "uL": 0.001, "µL": 0.001, "mm3": 0.001},
    "particles": {"particles": 1.0},
    "concentration": {"particles/mL": 1.0, "particles/L": 0.001, "particles/uL": 1000.0},
    "cells": {"cells": 1.0},
    "copies_per_particle": {"copies/particle": 1.0},
    "fraction": {"1": 1.0, "%": 0.01},
}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*(.*?)\s*$", re.IGNORECASE)


def format_unit_choices(kind: str) -> str:
    """The accepted spellings for ``kind``, for error messages."""
    return ", ".join(u for u in UNITS[kind] if u != "1")


#: kinds whose values must carry a unit in scenario files (a bare number is ambiguous)
DIMENSIONAL = {"time", "dose", "dose_rate", "volume", "concentration"}


def _missing_unit(value: object, kind: str, base: str) -> QuantityError:
    return QuantityError(
        f"missing unit: expected a {kind.replace('_', ' ')} such as "
        f"'{str(value).strip()[:40]} {base}' (units: {format_unit_choices(kind)})"
    )


def parse_quantity(value: object, kind: str, *, allow_negative: bool = False) -> float:
    """Convert ``value`` to the base unit of ``kind``.

    Parameters
    ----------
    value
        A number (already in the base unit) or a string ``"<number> <unit>"``.
    kind
        A key of :data:`UNITS` (``"time"``, ``"dose"``, ...).
    allow_negative
        Times may be negative (events before the reference time); doses may not.
        Kinds in :data:`DIMENSIONAL` need an explicit unit.

    Returns
    -------
    float
        The value in the base unit of ``kind`` (h, Gy, Gy/h, mL, ...).

    Raises
    ------
    QuantityError
        If the value is not finite, negative where not allowed, or carries a
        unit of another kind.
    """
    base = next(iter(UNITS[kind]))
    if isinstance(value, bool):
        raise QuantityError(f"expected a {kind.replace('_', ' ')} such as '2 {base}', got {value!r}")
    if isinstance(value, (int, float)):
        if kind in DIMENSIONAL:
            raise _missing_unit(value, kind, base)
        number, factor = float(value), 1.0
    elif isinstance(value, str):
        match = _QUANTITY.match(value)
        if not match:
            raise QuantityError(f"expected a {kind.replace('_', ' ')} such as '2 {base}', got {short_repr(value)}")
        number = float(match.group(1))
        unit = match.group(2)
        if unit == "":
            if kind in DIMENSIONAL:
                raise _missing_unit(value, kind, base)
            factor = 1.0
        elif unit in UNITS[kind]:
            factor = UNITS[kind][unit]
        else:
            raise QuantityError(
                f"unit {short_repr(unit)} is not a {kind.replace('_', ' ')} unit; "
                f"expected one of: {format_unit_choices(kind)}"
            )
    else:
        raise QuantityError(f"expected a {kind.replace('_', ' ')} such as '2 {base}', got {type(value).__name__}")
    if not math.isfinite(number):
        raise QuantityError(f"expected a finite {kind.replace('_', ' ')}, got {short_repr(value)}")
    if number < 0 and not allow_negative:
        raise QuantityError(f"expected a non-negative {kind.replace('_', ' ')}, got {short_repr(value)}")
    if not math.isfinite(number * factor):  # finite as written, not in the base unit (1e308 d)
        raise QuantityError(f"expected a finite {kind.replace('_', ' ')}, got {short_repr(value)} (too large)")
    return number * factor


# ---------------------------------------------------------------------- compound unit strings
#: counted material (vesicles, cargo copies, binding sites): the dimension ``item``
COUNTS = {"particles", "particle", "copies", "copy", "sites", "site"}
#: symbol -> (base dimension or None for dimensionless, multiplier to that dimension's base unit).
#: Base units are SBML's: second, gray, litre, item.  DSBs and lethal lesions are mean numbers
#: per cell (Poisson means), hence dimensionless (gamma-H2AX foci likewise), which makes alpha
#: (1/Gy), beta (1/Gy^2) and the argument of exp(-(L + A)) check out.
SYMBOLS = {
    "h": ("second", 3600.0),
    "min": ("second", 60.0),
    "s": ("second", 1.0),
    "Gy": ("gray", 1.0),
    "mL": ("litre", 1e-3),
    "L": ("litre", 1.0),
    "uL": ("litre", 1e-6),
    "um": ("metre", 1e-6),
    "µL": ("litre", 1e-6),
    "cell": (None, 1.0),
    "cells": (None, 1.0),
    "DSB": (None, 1.0),
    "foci": (None, 1.0),
    "lesions": (None, 1.0),
    # pO2 enters only as ratios p/(p + K): a dimensionless pressure scale in the SBML units
    "mmHg": (None, 1.0),
    "1": (None, 1.0),
}


def unit_kinds(text: str) -> tuple[dict[str, float], float]:
    """Parse a unit string (``mL/(h*site)``, ``1/Gy^2``) into base-dimension exponents.

    Parameters
    ----------
    text : str
        Unit string: symbols of :data:`SYMBOLS` or :data:`COUNTS` joined by ``*`` and
        ``/``, with parentheses and ``^`` powers.

    Returns
    -------
    exponents : dict of str to float
        Base dimension (``second``, ``gray``, ``litre``, ``item``) -> exponent
        (dimensionless symbols are left out).
    multiplier : float
        Factor from the unit to the base units.

    Raises
    ------
    QuantityError
        An unknown symbol, or an unparsable string.
    """
    compact = text.replace(" ", "")
    tokens = re.findall(r"[A-Za-zµ]+|-?\d+(?:\.\d+)?|[*/()^]", compact)
    if "".join(tokens) != compact or not tokens:
        raise QuantityError(f"cannot parse unit {text!r}")
    pos = 0

    def atom() -> tuple[dict[str, float], float]:
        nonlocal pos
        if pos >= len(tokens):
            raise QuantityError(f"cannot parse unit {text!r}")
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            out = expr()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise QuantityError(f"cannot parse unit {text!r}: unbalanced parentheses")
            pos += 1
        elif tok in COUNTS:
            out = ({"item": 1.0}, 1.0)
        elif tok in SYMBOLS:
            kind, mult = SYMBOLS[tok]
            out = ({kind: 1.0} if kind else {}, mult)
        else:
            raise QuantityError(
                f"unit symbol {tok!r} in {text!r} is not known; known: {', '.join(list(SYMBOLS) + sorted(COUNTS))}"
            )
        if pos < len(tokens) and tokens[pos] == "^":
            try:
                e = float(tokens[pos + 1])
            except (IndexError, ValueError):
                raise QuantityError(f"cannot parse unit {text!r}: '^' needs a number") from None
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
            mult *= m2**sign
        return {k: v for k, v in kinds.items() if v != 0}, mult

    result = expr()
    if pos != len(tokens):
        raise QuantityError(f"cannot parse unit {text!r}")
    return result


def conversion_factor(from_unit: str, to_unit: str) -> float:
    """Values in ``to_unit`` per value in ``from_unit`` (``particles/mL`` -> ``particles/uL``: 1e-3).

    Raises
    ------
    QuantityError
        The units are of different dimensions, or cannot be parsed.
    """
    if from_unit == to_unit:
        return 1.0
    (k1, m1), (k2, m2) = unit_kinds(from_unit), unit_kinds(to_unit)
    if k1 != k2:
        raise QuantityError(f"{from_unit!r} cannot be converted to {to_unit!r}")
    return m1 / m2


# ---------------------------------------------------------------------- parameter values
class Quantity(NamedTuple):
    """A parameter value as written in a scenario: a number and its unit (None if bare)."""

    value: float
    unit: str | None


def parse_parameter_value(value: object) -> Quantity:
    """``3``, ``"0.5 1/h"`` or ``"1e5 cells"`` -> :class:`Quantity`; the unit is checked against the
    parameter table by the scenario loader, which knows the key.

    Raises
    ------
    QuantityError
        Not a finite number, optionally followed by a unit.
    """
    if isinstance(value, Quantity):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QuantityError(f"expected a number with its unit, got {short_repr(value)}")
    if isinstance(value, str):
        parts = value.strip().split(None, 1)
        try:
            number = float(parts[0])
        except (ValueError, IndexError):
            raise QuantityError(f"expected a number with its unit, got {short_repr(value)}") from None
        unit = parts[1] if len(parts) == 2 else None
    else:
        number, unit = float(value), None
    if not math.isfinite(number):
        raise QuantityError(f"expected a finite number, got {short_repr(value)}")
    return Quantity(number, unit)
