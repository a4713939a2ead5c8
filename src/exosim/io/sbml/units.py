"""SBML units of exosim's unit strings: parsing into SBML base units and UnitDefinitions.

Every declared unit string (``mL/(h*site)``, ``1/Gy^2``, ...) is mapped to
exponents of SBML base units and a multiplier. Counted material (vesicles, cargo
copies, binding sites) is ``item``; cells, DSBs and lethal lesions are
dimensionless (mean numbers per cell), so that the radiosensitivities (1/Gy,
1/Gy^2) and the exponent of the surviving fraction check out.
"""

from __future__ import annotations

import re

from exosim.io.sbml.validate import SBMLExportError

__all__ = ["unit_id", "unit_kinds"]

#: counted material (vesicles, cargo copies, binding sites) maps to the SBML base unit ``item``
_COUNTS = {"particles", "particle", "copies", "copy", "sites", "site"}
#: symbol -> (SBML kind or None for dimensionless, multiplier to that kind); DSBs and lethal
#: lesions are mean numbers per cell (Poisson means), hence dimensionless, which makes
#: alpha (1/Gy), beta (1/Gy^2) and the argument of exp(-(L + A)) check out
_SYMBOLS = {"h": ("second", 3600.0), "min": ("second", 60.0), "s": ("second", 1.0),
            "Gy": ("gray", 1.0), "mL": ("litre", 1e-3), "L": ("litre", 1.0), "uL": ("litre", 1e-6),
            "cell": (None, 1.0), "cells": (None, 1.0), "DSB": (None, 1.0), "1": (None, 1.0)}


def unit_kinds(text: str) -> tuple[dict[str, float], float]:
    """Parse a unit string (``mL/(h*site)``, ``1/Gy^2``) into SBML base-unit exponents.

    Parameters
    ----------
    text : str
        Unit string: symbols joined by ``*`` and ``/``, with parentheses and ``^`` powers.

    Returns
    -------
    exponents : dict of str to float
        SBML base unit kind -> exponent (dimensionless symbols are left out).
    multiplier : float
        Factor from the unit to the SBML base units.

    Raises
    ------
    SBMLExportError
        A symbol without SBML mapping, or an unparsable string.
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
    """A valid, readable UnitDefinition id for a unit string (``mL/h`` -> ``u_mL_per_h``)."""
    sid = text.replace("/", "_per_").replace("*", "_").replace("^", "").replace("(", "").replace(")", "")
    sid = re.sub(r"[^A-Za-z0-9_]", "_", sid)
    return "u_" + ("dimensionless" if text == "1" else sid)


def _unit_definitions(texts: set[str]) -> list:
    """sbmlutils UnitDefinitions of the unit strings, sorted by string."""
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


def _is_species(unit: str) -> bool:
    """True for quantities counted in items, which become species (amounts)."""
    kinds, _ = unit_kinds(unit)
    return kinds == {"item": 1.0}
