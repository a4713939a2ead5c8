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
from exosim.model.units import QuantityError
from exosim.model.units import unit_kinds as _parse

__all__ = ["unit_id", "unit_kinds", "rate_unit", "model_units"]


def unit_kinds(text: str) -> tuple[dict[str, float], float]:
    """SBML base-unit exponents and multiplier of a unit string; the parsing is
    :func:`exosim.model.units.unit_kinds` (whose base dimensions are SBML's)."""
    try:
        return _parse(text)
    except QuantityError as exc:
        raise SBMLExportError(f"unit {text!r} has no SBML mapping: {exc}") from None


def unit_id(text: str) -> str:
    """A valid, readable UnitDefinition id for a unit string (``mL/h`` -> ``u_mL_per_h``)."""
    sid = text.replace("/", "_per_").replace("*", "_").replace("^", "").replace("(", "").replace(")", "")
    sid = re.sub(r"[^A-Za-z0-9_]", "_", sid)
    return "u_" + ("dimensionless" if text == "1" else sid)


#: model length and area units (exosim has no lengths or areas; set so that tools that expect
#: them, such as COPASI, import without warnings): micrometre and square micrometre
LENGTH, AREA = "um", "um^2"


def _units_of(kinds: dict[str, float], mult: float) -> list:
    """sbmlutils Units of base-unit exponents and a multiplier."""
    from sbmlutils.factory import Unit

    if not kinds:
        return [Unit("dimensionless", 1.0, 0, mult)]
    items = sorted(kinds.items())
    # the multiplier goes to the first unit, raised to 1/exponent
    first, e0 = items[0]
    return [Unit(first, e0, 0, mult ** (1.0 / e0))] + [Unit(k, e, 0, 1.0) for k, e in items[1:]]


def _unit_definitions(texts: set[str], extra: dict[str, tuple] | None = None) -> list:
    """sbmlutils UnitDefinitions of the unit strings (and the model's length and area units),
    sorted by string, then of ``extra`` units of literals (id -> (exponent pairs, multiplier))
    that no unit string has."""
    from sbmlutils.factory import UnitDefinition

    out = []
    for text in sorted(set(texts) | {LENGTH, AREA}):
        out.append(UnitDefinition(unit_id(text), name=text, units=_units_of(*unit_kinds(text))))
    for uid, (pairs, mult) in sorted((extra or {}).items()):
        name = " ".join(f"{k}^{e:g}" for k, e in pairs) + (f" x {mult:g}" if mult != 1.0 else "")
        out.append(UnitDefinition(uid, name=f"unit of a literal: {name}", units=_units_of(dict(pairs), mult)))
    return out


def _is_species(unit: str) -> bool:
    """True for quantities counted in items, which become species (amounts)."""
    kinds, _ = unit_kinds(unit)
    return kinds == {"item": 1.0}


def rate_unit(unit: str) -> str:
    """Unit of the time derivative of a quantity in ``unit`` (time in h)."""
    return f"{unit}/h" if unit != "1" else "1/h"


def model_units():
    """The model-wide units of every exosim SBML model: time h, substance and extent particles, volume mL."""
    from sbmlutils.factory import ModelUnits

    return ModelUnits(
        time=unit_id("h"),
        extent=unit_id("particles"),
        substance=unit_id("particles"),
        volume=unit_id("mL"),
        length=unit_id(LENGTH),
        area=unit_id(AREA),
    )
