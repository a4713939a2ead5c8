"""Cross-simulation of exported SBML in libRoadRunner or COPASI against exosim (tests, benchmarks).

For one member of a scenario: export it, simulate the SBML with libRoadRunner
(CVODE) or COPASI (LSODA, through basico) and compare every state at the output times that are not event times,
and the scored surviving fraction, with exosim's own integration at matched
tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Deviation", "crosscheck_member"]


@dataclass
class Deviation:
    """Largest relative deviations between exosim and the other simulator for one member."""

    member: int
    arm: str
    grid_dose: float
    states: float
    survival: float
    worst_state: str


def crosscheck_member(
    compiled,
    result,
    member: int,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-14,
    floor: float = 1e-3,
    simulator: str = "libroadrunner",
) -> Deviation:
    """Compare one member; ``result`` is ``compiled.run()`` at matched (tight) tolerances.

    The state deviation is ``max |a - b| / (|b| + floor*scale)`` over states and
    times, where ``scale`` is each state's declared typical magnitude: relative
    where a state is of its usual size, absolute (in units of a thousandth of that
    size) where it has decayed to nothing (e.g. DSBs 1e-20 a day after a dose).
    ``simulator`` is ``libroadrunner`` (CVODE) or ``copasi`` (COPASI's LSODA through basico,
    amounts as numbers: ``use_numbers=True``).
    """
    import libsbml

    from exosim.io.sbml.build import export_member

    doc, t0 = export_member(compiled, member)
    text = libsbml.writeSBMLToString(doc)
    m = compiled.model
    event_times = {a.time for a in compiled.actions}
    keep = np.array([t not in event_times and t > result.times[0] for t in result.times])
    times = result.times[keep] - t0
    scored = compiled.score_event.score.population
    t_end = compiled.score_event.at - t0
    selection = m.state_names + [f"{scored}__surviving_fraction"]
    out_times = np.unique(np.concatenate([[0.0], times, [t_end]]))
    if simulator == "copasi":
        sim = _copasi(text, selection, out_times, rtol, atol)
    elif simulator == "libroadrunner":
        import roadrunner

        rr = roadrunner.RoadRunner(text)
        rr.integrator.relative_tolerance = rtol
        rr.integrator.absolute_tolerance = atol
        rr.integrator.setValue("maximum_num_steps", 1_000_000)
        rr.timeCourseSelections = ["time"] + selection
        sim = np.asarray(rr.simulate(times=out_times))
    else:
        raise ValueError(f"unknown simulator {simulator!r}; expected libroadrunner or copasi")
    at_outputs = np.isin(sim[:, 0], times)
    ref = result.states[member][keep]
    scale = np.array([s.scale for s in m.states])
    dev = np.abs(sim[at_outputs, 1:-1] - ref) / (np.abs(ref) + floor * scale)
    worst = np.unravel_index(np.argmax(dev), dev.shape)
    sf_rr = sim[-1, -1]
    sf = result.surviving_fraction[member]
    return Deviation(
        member,
        compiled.arms[compiled.arm_index[member]].name,
        float(compiled.grid[member]),
        float(dev.max()),
        float(abs(sf_rr - sf) / sf),
        m.state_names[worst[1]],
    )


def _copasi(text: str, selection: list[str], times: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """Time, then the SBML ids of ``selection``, at ``times``, simulated by COPASI (basico)."""
    import basico

    model = basico.load_model(text)
    try:
        basico.set_task_settings("Time-Course", {"method": {"Max Internal Steps": 1_000_000}}, model=model)
        column = {r.sbml_id: name for name, r in basico.get_species(model=model).iterrows()}
        column |= {r.sbml_id: f"Values[{name}]" for name, r in basico.get_parameters(model=model).iterrows()}
        tc = basico.run_time_course(
            values=[float(t) for t in times], use_numbers=True, model=model, r_tol=rtol, a_tol=atol
        )
        return np.column_stack([tc.index.to_numpy()] + [tc[column[n]].to_numpy() for n in selection])
    finally:
        basico.remove_datamodel(model)
