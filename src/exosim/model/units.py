"""Physical quantities in scenario files, converted once to exosim's base units.

exosim works internally in h, Gy, Gy/h, mL, particles, copies and cells
(MODEL.md section 2).  Scenario files may write a quantity as a number in the
base unit or as a string ``"<number> <unit>"`` (``"30 min"``, ``"2 Gy"``,
``"1e9 particles/mL"``).  Each scenario key expects one *kind* of quantity; a
unit of another kind is an error that names what was expected.

A small table is used instead of a general unit library: every key admits only
a handful of spellings, the table makes the error message list them, and it
adds nothing to start-up time.
"""

from __future__ import annotations

import math
import re

__all__ = ["UNITS", "DIMENSIONAL", "parse_quantity", "QuantityError", "format_unit_choices"]


class QuantityError(ValueError):
    """A value that is not a quantity of the expected kind."""


#: kind -> {unit spelling: factor to the base unit}; the first entry is the base unit.
UNITS: dict[str, dict[str, float]] = {
    "time": {"h": 1.0, "s": 1 / 3600, "min": 1 / 60, "hour": 1.0, "hours": 1.0,
             "d": 24.0, "day": 24.0, "days": 24.0, "week": 168.0, "weeks": 168.0},
    "dose": {"Gy": 1.0, "cGy": 0.01, "mGy": 0.001},
    "dose_rate": {"Gy/h": 1.0, "Gy/min": 60.0, "cGy/min": 0.6, "mGy/h": 0.001,
                  "mGy/min": 0.06},
    "volume": {"mL": 1.0, "L": 1000.0, "uL": 0.001, "µL": 0.001},
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
    return QuantityError(f"missing unit: expected a {kind.replace('_', ' ')} such as "
                         f"'{value} {base}' (units: {format_unit_choices(kind)})")


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
            raise QuantityError(
                f"expected a {kind.replace('_', ' ')} such as '2 {base}', got {value!r}")
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
                f"unit {unit!r} is not a {kind.replace('_', ' ')} unit; "
                f"expected one of: {format_unit_choices(kind)}")
    else:
        raise QuantityError(
            f"expected a {kind.replace('_', ' ')} such as '2 {base}', got {type(value).__name__}")
    if not math.isfinite(number):
        raise QuantityError(f"expected a finite {kind.replace('_', ' ')}, got {value!r}")
    if number < 0 and not allow_negative:
        raise QuantityError(f"expected a non-negative {kind.replace('_', ' ')}, got {value!r}")
    return number * factor
