"""Validation and writing of SBML documents: no document with errors is ever written.

sbmlutils 0.15 (Python 3.11) does not raise on invalid SBML, so every document
is checked with libsbml's consistency checks (units included), plus a check for
rules and assignments whose formula sbmlutils could not parse, before it is
written (atomically).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exosim.util.atomic import atomic_write

__all__ = ["SBMLExportError", "Validation", "validate", "write_validated"]


class SBMLExportError(RuntimeError):
    """An SBML document failed validation or could not be written."""


@dataclass
class Validation:
    """libsbml consistency check result.

    Attributes
    ----------
    errors : list of str
        Errors (severity error or fatal) and missing formulas; a document with any is not written.
    warnings : list of str
        Warnings, mostly units that cannot be verified (literal numbers carry no units).
    """

    errors: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        """True if there are no errors (warnings allowed)."""
        return not self.errors


def validate(doc, *, units: bool = True) -> Validation:
    """Run libsbml's consistency checks (units included) on a document.

    Parameters
    ----------
    doc : libsbml.SBMLDocument
        The document; its error log receives the check's messages.
    units : bool
        Include the unit consistency checks.

    Returns
    -------
    Validation
    """
    import libsbml

    doc.setConsistencyChecks(libsbml.LIBSBML_CAT_UNITS_CONSISTENCY, units)
    doc.setConsistencyChecks(libsbml.LIBSBML_CAT_MODELING_PRACTICE, False)
    doc.checkConsistency()
    errors, warnings = _missing_math(doc), []
    for i in range(doc.getNumErrors()):
        e = doc.getError(i)
        text = f"{e.getErrorId()} {e.getShortMessage()}: {e.getMessage().strip()[:300]}"
        (errors if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR else warnings).append(text)
    return Validation(errors, warnings)


def _missing_math(doc) -> list[str]:
    """Rules, initial assignments and event assignments without math (sbmlutils drops
    formulas it cannot parse and L3V2 validation accepts the absence)."""
    model = doc.getModel()
    out = []
    if model is None:
        return ["document has no model"]
    items = [(r.getVariable(), r) for r in model.getListOfRules()]
    items += [(a.getSymbol(), a) for a in model.getListOfInitialAssignments()]
    for e in model.getListOfEvents():
        items += [(f"{e.getId()}:{a.getVariable()}", a) for a in e.getListOfEventAssignments()]
    for name, item in items:
        if item.getMath() is None:
            out.append(f"missing math for {name} (formula could not be parsed)")
    return out


def write_validated(doc, path: str | Path) -> Validation:
    """Validate ``doc``; write it atomically to ``path`` only if it has no errors.

    Parameters
    ----------
    doc : libsbml.SBMLDocument
        The document to write.
    path : str or Path
        Target file; it is replaced as a whole or not at all.

    Returns
    -------
    Validation
        The check result (no errors; warnings possible).

    Raises
    ------
    SBMLExportError
        On validation errors (nothing is written) or an unwritable path.
    """
    import libsbml

    result = validate(doc)
    if not result.ok:
        raise SBMLExportError("SBML validation failed, nothing written:\n  " + "\n  ".join(result.errors[:10]))
    path = Path(path)
    try:
        atomic_write(path, libsbml.writeSBMLToString(doc))
    except OSError as exc:
        raise SBMLExportError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    return result
