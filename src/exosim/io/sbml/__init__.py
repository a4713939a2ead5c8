"""SBML export, generated with sbmlutils from the same declarations the simulator runs.

:func:`export` writes one member (arm, grid dose) of a scenario as a flat SBML
Level 3 Version 2 model with the scenario's timeline as events;
:func:`write_models` regenerates the modular and composed models in ``models/``.
Every document is checked with libsbml (units included) and one with errors is
never written.

The subpackage, one job per module:

* :mod:`~exosim.io.sbml.units`: exosim unit strings as SBML units;
* :mod:`~exosim.io.sbml.build`: flat models of an assembled model or a scenario member;
* :mod:`~exosim.io.sbml.compose`: one model per module and their comp composition;
* :mod:`~exosim.io.sbml.validate`: consistency checks and (atomic) writing;
* :mod:`~exosim.io.sbml.crosscheck`: simulation of an export in libRoadRunner against exosim.

sbmlutils and libsbml (the ``sbml`` extra) are imported only when a document is
built or checked.

References
----------
.. [1] Hucka M, et al. (2019) The Systems Biology Markup Language (SBML): Language
   Specification for Level 3 Version 2 Core. J Integr Bioinform 16:20190021.
   doi:10.1515/jib-2019-0021
.. [2] Smith LP, et al. (2015) SBML Level 3 package: Hierarchical Model
   Composition, Version 1 Release 3. J Integr Bioinform 12:268. doi:10.2390/biecoll-jib-2015-268
.. [3] Koenig M (2021) sbmlutils: Python utilities for SBML. Zenodo. doi:10.5281/zenodo.597149
"""

from __future__ import annotations

from pathlib import Path

from exosim.io.sbml.build import export_member
from exosim.io.sbml.compose import write_models
from exosim.io.sbml.validate import SBMLExportError, validate, write_validated
from exosim.model.units import parse_quantity
from exosim.scenario.load import load_scenario
from exosim.scenario.observables import member_index
from exosim.scenario.runner import CompiledScenario, compile_scenario
from exosim.scenario.schema import Scenario, ScenarioError

__all__ = ["SBMLExportError", "export", "export_member", "select_member", "validate", "write_models", "write_validated"]


def select_member(compiled: CompiledScenario, *, arm: str | None = None, dose: float | None = None) -> int:
    """The member (row) of a compiled scenario for an arm and a grid dose.

    Parameters
    ----------
    compiled : CompiledScenario
        The compiled scenario.
    arm : str, optional
        Arm name; default the first arm.
    dose : float, optional
        A dose of the scenario's dose grid, in the grid's unit; default the largest
        (the arm's first member for a scenario without a grid).

    Returns
    -------
    int
        Index into ``compiled.arm_index``, ``compiled.grid`` and ``compiled.parameters``.

    Raises
    ------
    ScenarioError
        No arm of that name, or the dose is not on the grid.
    """
    sc = compiled.scenario
    names = [a.name for a in compiled.arms]
    if arm is not None and arm not in names:
        listed = "\n".join(f"  {n}" for n in names)
        raise ScenarioError(sc.source, "arms", f"no arm named {arm!r}; arms:\n{listed}")
    a = names.index(arm) if arm is not None else 0
    if dose is not None and sc.dose_grid is None:
        raise ScenarioError(
            sc.source, "dose_grid", f"--dose {dose:g}: the scenario has no dose grid (leave --dose out)"
        )
    unit = sc.dose_grid.unit if sc.dose_grid else "Gy"
    gray = None if dose is None else parse_quantity(f"{dose} {unit}", "dose")
    member = member_index(compiled.arm_index, compiled.grid, a, gray)
    if member is None:
        raise ScenarioError(sc.source, "dose_grid", f"dose {dose:g} {unit} is not on the grid")
    return member


def export(
    scenario: Scenario | CompiledScenario | str | Path,
    *,
    arm: str | None = None,
    dose: float | None = None,
    path: str | Path | None = None,
):
    """SBML document of one arm and grid dose of a scenario, optionally written to a file.

    The document is a flat SBML Level 3 Version 2 model of the scenario's model at the
    member's parameter values, with the timeline as events; SBML time 0 is the
    scenario's first event time (stated in the model notes).

    Parameters
    ----------
    scenario : Scenario, CompiledScenario, str or Path
        A validated scenario, its compiled form, or the path of a scenario YAML file.
    arm : str, optional
        Arm name; default the first arm.
    dose : float, optional
        A dose of the scenario's dose grid, in the grid's unit; default the largest.
    path : str or Path, optional
        If given, the document is validated and written there atomically.

    Returns
    -------
    libsbml.SBMLDocument
        The document (validated if ``path`` is given).

    Raises
    ------
    ScenarioError
        An unreadable or invalid scenario file, no arm of that name, or a dose not on the grid.
    SBMLExportError
        With ``path``: validation errors (nothing is written) or an unwritable path.

    Examples
    --------
    >>> doc = export("scenarios/hnscc_exosome_radioresistance.yaml",  # doctest: +SKIP
    ...              arm="exosomes from 6 Gy donors", dose=4, path="hnscc.xml")
    """
    if isinstance(scenario, (str, Path)):
        scenario = load_scenario(scenario)
    compiled = scenario if isinstance(scenario, CompiledScenario) else compile_scenario(scenario)
    doc, _ = export_member(compiled, select_member(compiled, arm=arm, dose=dose))
    if path is not None:
        write_validated(doc, path)
    return doc
