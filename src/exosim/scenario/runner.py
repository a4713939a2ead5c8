"""The scenario runner: a scenario's timeline of events, run for all members at once.

A *member* is one arm at one dose of the dose grid (times ``replicates``, one per
parameter sample in analyses).  All members share the model structure and the
event times; they differ in parameters (arm overrides) and in event magnitudes
(grid dose, arm variables, arm-only events).  Between event times a
:class:`~exosim.simulate.solver.Solver` integrates the whole batch; at an event
time every :class:`~exosim.scenario.actions.Action` is applied with per-member
values.  New experiment types are new scenario files (compartment wiring and
events), not new runner code.

A member the solver fails is named in its message with the parameters of its set that
lie outside their documented range (the usual cause: a rate decades too large makes the
member too stiff for explicit steps).  A run whose record would exceed
:data:`~exosim.scenario.load.MAX_RUN_BYTES` is refused before it starts, and a long run
can report its progress on stderr (``progress=True``; the CLI does when stderr is a terminal).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time as _time
from collections.abc import Collection
from typing import Any

import numpy as np

from exosim.model import catalogue as cat
from exosim.model.assemble import Model, ModelError, PopulationSpec
from exosim.model.declare import SEP
from exosim.model.units import parse_quantity
from exosim.scenario import actions as ev_types
from exosim.scenario.actions import Action
from exosim.scenario.load import check_run_size, suggest
from exosim.scenario.result import RunResult
from exosim.scenario.schema import Arm, Event, Scenario, ScenarioError, parameter_value
from exosim.simulate.solver import FAILED, MESSAGES, SegmentResult, Solver, SolverOptions, get_solver

__all__ = ["CompiledScenario", "compile_scenario", "run", "out_of_range"]

#: seconds between progress lines on stderr (and before the first)
PROGRESS_EVERY = 3.0

#: failures the parameters cannot explain (the state or its derivative was already non-finite)
_NOT_STIFF = (MESSAGES["initial"], MESSAGES["derivative"])

#: h: time-course sample just after each acute irradiation (3.6 ms: the post-event values), so peaks
#: are drawn; tiny, so that the integrator's steps, and its accuracy, stay as without it
AFTER_IRRADIATION = 1.0e-6


def out_of_range(model: Model, row: np.ndarray, limit: int = 3) -> list[str]:
    """The parameters of one parameter set (a row of ``p``) outside their documented range,
    farthest (in decades) first, as ``'recipients.internalisation_rate = 1e+09 1/h is outside
    its documented range [0.1, 5]'``; at most ``limit`` and a last item ``'N more'``."""
    found = []
    for q, value in zip(model.parameters, np.asarray(row, dtype=float)):
        if cat.within_documented_range(q.key, value, q.low, q.high):
            continue
        edge = q.low if value < q.low else q.high
        decades = math.inf if value <= 0 or edge <= 0 else abs(math.log10(value / edge))
        unit = "" if q.unit == "1" else f" {q.unit}"
        name = q.name.replace(SEP, ".", 1)
        found.append((decades, f"{name} = {value:g}{unit} is outside its documented range [{q.low:g}, {q.high:g}]"))
    found.sort(key=lambda item: -item[0])
    text = [t for _, t in found[:limit]]
    if len(found) > limit:
        text.append(f"and {len(found) - limit} more")
    return text


def _cause(model: Model, row: np.ndarray, reason: str) -> str:
    """What a failure message adds about the member's parameters."""
    if reason in _NOT_STIFF:
        return ""
    named = out_of_range(model, row)
    if not named:
        return "; every parameter is within its documented range"
    return "; stiff: " + ", ".join(named)


class CompiledScenario:
    """A validated scenario turned into a model, members, parameters and actions.

    Parameters
    ----------
    scenario : a validated :class:`~exosim.scenario.schema.Scenario`
    replicates : copies of the (arm x grid) members, e.g. one per parameter sample
    model : the model of ``scenario`` when already built (another replicate count of the same
        scenario: the model does not depend on it); built from the scenario by default
    """

    def __init__(self, scenario: Scenario, *, replicates: int = 1, model: Model | None = None):
        self.scenario = sc = scenario
        self.replicates = replicates
        records = {}
        for c, override in sc.cargo.items():
            rec = dict(cat.cargo_catalogue()[c])
            rec.update({k: (v if k == "effects" else parameter_value(v)) for k, v in (override or {}).items()})
            records[c] = rec
        self.cargo_records = records
        pops = [
            PopulationSpec(n, p.medium, p.cell_line, tuple(p.packages), tuple(p.assays), p.tumour_volume is not None)
            for n, p in sc.populations.items()
        ]
        try:
            self.model = (
                model
                if model is not None
                else Model(
                    pops,
                    list(sc.media),
                    list(sc.cargo),
                    [(lk.source, lk.target) for lk in sc.links],
                    cargo_records=records,
                    immune_medium=sc.immune.medium if sc.immune is not None else None,
                )
            )
        except ModelError as exc:
            # the keys behind it as the file wrote them (a hypothesis block's), down to what they share
            written = [sc.as_written(k).split(".") for k in exc.key_paths] or [["cargo"]]
            shared = []
            for parts in zip(*written):
                if len(set(parts)) > 1:
                    break
                shared.append(parts[0])
            raise ScenarioError(sc.source, ".".join(shared) or "cargo", str(exc)) from None
        self.arms: list[Arm] = list(sc.arms) or [Arm(name=sc.name)]
        grid = sc.dose_grid.in_gray() if sc.dose_grid is not None else [float("nan")]
        # members: replicate-major, then arm, then grid dose (replicates serve parameter samples)
        self.arm_index = np.tile(np.repeat(np.arange(len(self.arms)), len(grid)), replicates)
        self.grid = np.tile(np.asarray(grid, dtype=float), len(self.arms) * replicates)
        self.n_members = self.arm_index.size
        self.parameters = self._parameters()
        self.score_event = next(e for e in sc.timeline if e.score is not None)
        self.actions, self.grid_event = self._actions()

    # ------------------------------------------------------------- parameters
    def instances(self, key: str, namespace: str | None = None) -> list[int]:
        """Columns of ``p`` holding parameter-table ``key`` (in one namespace, or all)."""
        out = []
        for i, q in enumerate(self.model.parameters):
            if q.key != key:
                continue
            ns = q.name.split(SEP, 1)[0]
            if namespace is None or ns == namespace:
                out.append(i)
        return out

    def columns(self, name: str) -> list[int]:
        """Columns of ``p`` that the parameter ``name`` sets; empty when the scenario has none.

        ``key`` (every instance), ``namespace.key`` (one population or medium),
        ``cell_line.key`` (every population of that catalogue cell line, e.g.
        ``hnscc_pooled.alpha0``) or ``cargo.key`` (that cargo's instances in every population).
        """
        if "." not in name:
            return self.instances(name)
        prefix, key = name.split(".", 1)
        namespaces = {prefix} | {n for n, pop in self.scenario.populations.items() if pop.cell_line == prefix}
        return [
            i
            for i, q in enumerate(self.model.parameters)
            if q.key == key
            and (q.name.split(SEP, 1)[0] in namespaces or q.name.split(SEP, 1)[-1].startswith(prefix + "_"))
        ]

    def _columns(self, key: str, namespace: str, path: str) -> list[int]:
        """Columns of ``key`` in one population or medium; an error naming ``path`` if it has none."""
        cols = self.instances(key, namespace)
        if not cols:
            have = sorted({q.key for q in self.model.parameters if q.name.split(SEP, 1)[0] == namespace})
            raise ScenarioError(
                self.scenario.source,
                self.scenario.as_written(path),
                f"{namespace!r} has no parameter {key!r}" + suggest(key, have, _SEE_MODEL_DOCS),
            )
        return cols

    def _everywhere(self, key: str, path: str) -> list[int]:
        """Columns of a bare ``key`` (every population, medium or link that has it); an error
        naming ``path`` if none has it (an override that would change nothing)."""
        cols = self.instances(key)
        if not cols:
            have = sorted({q.key for q in self.model.parameters})
            raise ScenarioError(
                self.scenario.source,
                self.scenario.as_written(path),
                f"no population, medium or link of this scenario has parameter {key!r}, so the value would "
                "change nothing" + suggest(key, have, _SEE_MODEL_DOCS),
            )
        return cols

    def _parameters(self) -> np.ndarray:
        sc, m = self.scenario, self.model
        base = m.default_parameters()
        for name, med in sc.media.items():  # catalogue values of the medium's kind come first
            for k, v in cat.media()[med.kind].items():
                if k not in cat.DESCRIPTIVE:
                    base[self._columns(k, name, f"media.{name}.kind")] = float(v)
        for k, v in sc.parameters.items():
            base[self._everywhere(k, f"parameters.{k}")] = v.value
        for name, med in sc.media.items():
            base[self.instances("volume", name)] = med.volume
            for k, v in med.parameters.items():
                base[self._columns(k, name, f"media.{name}.parameters.{k}")] = v.value
        for name, pop in sc.populations.items():
            base[self.instances("cells", name)] = pop.cells
            if pop.tumour_volume is not None:
                base[self.instances("tumour_initial_volume", name)] = pop.tumour_volume
            for k, v in pop.parameters.items():
                base[self._columns(k, name, f"populations.{name}.parameters.{k}")] = v.value
        for lk in sc.links:
            base[m.parameter_index[f"{lk.source}_to_{lk.target}{SEP}transfer_rate"]] = lk.rate
        p = np.tile(base, (self.n_members, 1))
        for a, arm in enumerate(self.arms):
            rows = self.arm_index == a
            for k, v in sorted(arm.parameters.items(), key=lambda kv: "." in kv[0]):
                ns, key = k.split(".", 1) if "." in k else (None, k)
                path = f"arms[{a}].parameters.{k}"
                cols = self._everywhere(key, path) if ns is None else self._columns(key, ns, path)
                p[np.ix_(rows, cols)] = v.value
        return p

    # ------------------------------------------------------------- events
    def _variable(self, name: str, arm: Arm) -> float:
        value = arm.variables.get(name, self.scenario.variables.get(name))
        return parse_quantity(value, "dose")

    def _dose_per_member(self, dose: Any) -> np.ndarray:
        if dose == "grid":
            return self.grid.copy()
        if isinstance(dose, str):
            return np.array([self._variable(dose[1:], self.arms[a]) for a in self.arm_index])
        return np.full(self.n_members, float(dose))

    def _actions(self) -> tuple[list[Action], dict[str, Any]]:
        sc, m = self.scenario, self.model
        actions: list[Action] = []
        grid_event: dict[str, Any] = {}
        entries = [(f"timeline[{i}]", ev, None) for i, ev in enumerate(sc.timeline)]
        for a, arm in enumerate(self.arms):
            entries += [(f"arms[{a}].events[{i}]", ev, a) for i, ev in enumerate(arm.events)]

        label = ""  # of the event being added

        def add(t: float, kind: str, path: str, assignments, acts, constants=None, record=False, detail="") -> None:
            actions.append(
                Action(t, len(actions), kind, path, assignments, constants or {}, acts, record, label, detail)
            )

        for path, ev, arm in entries:
            label = ev.label or ""
            mask = np.ones(self.n_members, bool) if arm is None else self.arm_index == arm
            act = ev.action
            if ev.kind == "score":
                continue
            if ev.kind == "irradiate":
                info = self._irradiation(ev, mask, path, add)
                if act.dose == "grid":
                    grid_event = info
            elif ev.kind == "transfer":
                add(ev.at, "transfer", path, ev_types.transfer(m, act), mask)
            elif ev.kind == "add":
                add(ev.at, "add", path, ev_types.add(act), mask)
            elif ev.kind == "intervene":
                add(ev.at, "intervene", path, ev_types.intervene(act)[0], mask)
            elif ev.kind == "treat":
                add(ev.at, "treat", path, ev_types.treat(m, self.cargo_records, act), mask)
            elif ev.kind == "change_medium":
                add(ev.at, "change_medium", path, ev_types.change_medium(m, act.medium), mask)
            else:  # pragma: no cover - the schema admits no other kind
                raise ScenarioError(sc.source, path, f"no action for event type {ev.kind!r}")
        actions.sort(key=lambda a: (a.time, a.order))
        return actions, grid_event

    def _irradiation(self, ev: Event, mask: np.ndarray, path: str, add) -> dict[str, Any]:
        act = ev.irradiate
        dose = np.where(mask, self._dose_per_member(act.dose), 0.0)
        n = act.fractions
        per_fraction = dose / n
        offsets = act.offsets()
        pop = act.population
        scored = self.score_event.score.population
        for k, off in enumerate(offsets):
            t = ev.at + off
            record = act.dose == "grid" and k == 0 and pop == scored
            detail = f"fraction {k + 1}/{n}" if n > 1 else ""
            if act.dose_rate is None:
                add(
                    t,
                    "irradiate",
                    path,
                    ev_types.irradiation(self.model, pop),
                    per_fraction > 0,
                    {"D": per_fraction},
                    record,
                    detail,
                )
            else:
                rate = act.dose_rate
                on = np.where(per_fraction > 0, rate, 0.0)
                start = ", ".join(x for x in (detail, "beam on") if x)
                add(t, "irradiate", path, ev_types.dose_rate_change(pop), on != 0, {"delta": on}, record, start)
                duration = per_fraction / rate
                for dur in np.unique(duration[per_fraction > 0]):
                    off_rate = np.where((duration == dur) & (per_fraction > 0), -rate, 0.0)
                    add(
                        t + float(dur),
                        "irradiate",
                        path,
                        ev_types.dose_rate_change(pop),
                        off_rate != 0,
                        {"delta": off_rate},
                        detail=", ".join(x for x in (detail, "beam off") if x),
                    )
        return {"population": pop, "fractions": n, "dose_rate": act.dose_rate, "scored": pop == scored}

    def _after_irradiation(self) -> list[float]:
        """Recorded times just after each acute irradiation, so that the peaks of DSBs and of what
        follows them are drawn (the value at an event time is the one just before it)."""
        t0, t_end = self.scenario.timeline_start, self.score_event.at
        after = [
            a.time + AFTER_IRRADIATION
            for a in self.actions
            if a.kind == "irradiate" and any(x.symbol.endswith(f"{SEP}dsb") for x in a.assignments)
        ]
        return [t for t in after if t0 <= t < t_end]

    def _output_times(self) -> np.ndarray:
        """The times a run with time courses records: every ``output.time_step``, just after
        each acute irradiation, and at scoring."""
        t0, t_end = self.scenario.timeline_start, self.score_event.at
        grid = np.arange(t0, t_end, self.scenario.output.time_step)
        return np.unique(np.concatenate([grid, self._after_irradiation(), [t_end]]))

    def check_size(self, time_courses: bool = True) -> int:
        """The memory estimate (bytes) of a run's record with (or without) time courses; a
        :class:`ScenarioError` above the limit (:func:`~exosim.scenario.load.check_run_size`).
        The times are counted without building them when there would be millions."""
        sc, m = self.scenario, self.model
        times = 0
        if time_courses:
            span = self.score_event.at - sc.timeline_start
            times = math.ceil(span / sc.output.time_step) + len(self._after_irradiation()) + 1  # at most
            if times <= 1_000_000:
                times = self._output_times().size
        return check_run_size(sc, self.n_members, times, m.n_states, len(m.observable_names))

    # ------------------------------------------------------------- running
    def _implicit_fallback(self, sol, t, t_next, y, p, scale, options, t_eval, status, counters, integrator) -> None:
        """Members the explicit solver failed in this segment for step size or step budget are
        integrated again from ``y`` at ``t``: with the compiled Rodas4 (``rosenbrock``, all of them
        in one call; :mod:`exosim.simulate.rosenbrock`) or alone with BDF (``bdf``, or
        ``rosenbrock`` without numba; :mod:`exosim.simulate.implicit`); a success replaces the
        failure in ``sol``, a failure adds its reason to the message."""
        from exosim.simulate import implicit
        from exosim.simulate.solver import numba_available

        redo = [
            i
            for i in np.flatnonzero((sol.status == FAILED) & (status != FAILED))
            if implicit.falls_back(sol.message[i])
        ]
        if not redo:
            return
        if options.stiff_fallback == "rosenbrock" and numba_available():
            from exosim.simulate.dopri5_numba import integrate_compiled

            res = integrate_compiled(
                self.model,
                t,
                t_next,
                y[redo],
                p[redo],
                atol_scale=scale,
                options=options,
                t_eval=t_eval,
                implicit_only=True,
            )
            counters["rhs_evaluations"] = counters.get("rhs_evaluations", 0) + res.stats["rhs_evaluations"]
            counters["implicit_steps"] = counters.get("implicit_steps", 0) + res.stats.get("implicit_steps", 0)
            for j, i in enumerate(redo):
                if res.status[j] == 0:
                    sol.y[i] = res.y[j]
                    if t_eval.size:
                        sol.ys[i] = res.ys[j]
                    sol.status[i], sol.message[i], sol.t_failed[i] = 0, "", np.nan
                    counters["implicit_members"] = counters.get("implicit_members", 0) + 1
                else:
                    sol.message[i] = f"{sol.message[i]}; {res.message[j]}"
            return
        rhs1 = None
        for i in redo:
            if rhs1 is None and integrator.name == "numba":  # the compiled one-member rhs: far faster
                from exosim.simulate.dopri5_numba import rhs_for

                rhs1 = rhs_for(self.model, options.method)
            res = implicit.integrate_member(
                self.model,
                t,
                t_next,
                y[i],
                p[i],
                rtol=options.rtol,
                atol=options.atol * scale,
                t_eval=t_eval,
                max_seconds=options.max_seconds,
                rhs1=rhs1,
            )
            counters["implicit_rhs_evaluations"] = counters.get("implicit_rhs_evaluations", 0) + res.rhs_evaluations
            if res.ok:
                sol.y[i] = res.y
                if t_eval.size:
                    sol.ys[i] = res.ys
                sol.status[i] = 0
                sol.message[i] = ""
                sol.t_failed[i] = np.nan
                counters["implicit_members"] = counters.get("implicit_members", 0) + 1
            else:
                sol.message[i] = f"{sol.message[i]}; {res.message}"

    def frozen_states(self, outputs: Collection[str]) -> tuple[int, ...]:
        """The states the last segment can hold constant when only ``outputs`` (model symbols)
        are read at scoring: those the outputs cannot depend on
        (:meth:`~exosim.model.assemble.Model.relevant_states`); none when an event acts at the
        scoring time (it could read them)."""
        if any(a.time == self.score_event.at for a in self.actions):
            return ()
        relevant = set(self.model.relevant_states(outputs))
        return tuple(i for i in range(self.model.n_states) if i not in relevant)

    def run(
        self,
        *,
        time_courses: bool = True,
        parameters: np.ndarray | None = None,
        record_times: np.ndarray | None = None,
        solver: str | Solver | None = None,
        progress: bool = False,
        share: np.ndarray | None = None,
        outputs: Collection[str] | None = None,
    ) -> RunResult:
        """Integrate all members through the timeline.

        Parameters
        ----------
        time_courses : record states and rules every ``output.time_step``
        parameters : ndarray (N, k), optional
            Replaces the scenario's parameter matrix (analyses inject samples here,
            through :class:`exosim.analysis.batch.BatchModel`).
        record_times : ndarray, optional
            Record at these times (h, within the timeline) instead of every
            ``output.time_step`` (fits to time-course data).  A value at the
            time of an event is the value just before the event.
        solver : solver name (``numpy``, ``numba``, ``auto``) or a
            :class:`~exosim.simulate.solver.Solver`; default the scenario's ``solver.backend``
        progress : write the share of the timeline done to stderr every
            :data:`PROGRESS_EVERY` s of a run that takes longer (the CLI: when stderr is a terminal)
        share : ndarray (N,) of int, optional
            Per member, the member it takes its states from: only the members with
            ``share[i] == i`` are integrated, and after every segment each other member ``i``
            takes the states of ``share[i]`` (which must share with itself).  Its events, rules,
            derived constants and outputs are still evaluated with its own parameters.  For
            members whose states cannot depend on the parameters in which they differ from their
            source (:mod:`exosim.model.dependence`; :class:`exosim.analysis.batch.BatchModel`).
            ``timing["members_integrated"]`` counts the members integrated.
        outputs : the states and rules (model symbols) the caller reads at scoring; None: every
            one.  Without time courses, the last segment (from the last event to the score)
            then integrates only the states they can depend on (:meth:`frozen_states`): the
            others are held constant and left out of the error control
            (``SolverOptions.frozen``), and are NaN in the final states, with the rules and values
            at scoring computed from them.  ``timing["frozen_states"]`` counts them.

        Returns
        -------
        RunResult

        Raises
        ------
        ScenarioError
            The record would exceed :data:`~exosim.scenario.load.MAX_RUN_BYTES`.
        """
        sc, m = self.scenario, self.model
        start = _time.perf_counter()
        try:
            integrator = get_solver(solver if solver is not None else sc.solver.backend)
        except ValueError as exc:  # the scenario asks for a backend whose extra is not installed
            raise ScenarioError(sc.source, "solver.backend", str(exc)) from None
        p = (self.parameters if parameters is None else np.asarray(parameters, float)).copy()
        n_mem = p.shape[0]
        if n_mem != self.n_members:
            raise ValueError(f"parameters must have {self.n_members} rows, got {n_mem}")
        p_start = p.copy()
        rows, copy_from = _sharing(share, n_mem)
        y = m.initial_state(p)
        ledger: dict[str, np.ndarray] = {}
        t_end = self.score_event.at
        t0 = sc.timeline_start
        if record_times is not None:
            record_times = np.asarray(record_times, dtype=float)
            if record_times.size and not (record_times.min() >= t0 and record_times.max() <= t_end):
                raise ValueError(f"record_times must lie within the timeline [{t0:g}, {t_end:g}] h")
            times, time_courses = np.unique(np.append(record_times, t0)), True
        elif time_courses:
            self.check_size()  # before the times are built: a tiny time step would not fit in memory
            times = self._output_times()
        else:
            times = np.array([t0])
        n_t = times.size if time_courses else 0
        check_run_size(sc, n_mem, n_t, m.n_states, len(m.observable_names))
        states = np.full((n_mem, n_t, m.n_states), np.nan)
        obs = np.full((n_mem, n_t, len(m.observable_names)), np.nan)
        status = np.zeros(n_mem, dtype=int)
        messages = [""] * n_mem
        options = SolverOptions(
            rtol=sc.solver.rtol,
            atol=sc.solver.atol,
            max_seconds=sc.solver.max_seconds,
            horizon=float(t_end),
            stiff_fallback=sc.solver.stiff_fallback,
            method=sc.solver.method,
        )
        scale = np.array([s.scale for s in m.states])
        frozen = self.frozen_states(outputs) if outputs is not None and not time_courses else ()
        reference = None
        if time_courses:
            states[:, 0] = y
            obs[:, 0] = m.observe(y, p)
        counters: dict[str, int] = {}
        h = None
        t = t0
        event_times = sorted({a.time for a in self.actions if a.time <= t_end} | {t_end})
        ai = 0
        shown = 0.0  # when progress was last written (0: never)
        t_next = t

        def report(fraction: float) -> None:
            """Progress line for ``fraction`` of the segment from ``t`` to ``t_next`` done."""
            nonlocal shown
            now = _time.perf_counter()
            if now - max(shown, start) < PROGRESS_EVERY:
                return
            shown, at = now, t + fraction * (t_next - t)
            done = 100.0 * (at - t0) / (t_end - t0) if t_end > t0 else 100.0
            sys.stderr.write(
                f"\rexosim: {sc.name}: {done:3.0f}% of the timeline (t = {at:.4g} of {t_end:g} h), {now - start:.0f} s"
            )
            sys.stderr.flush()

        # solvers that can report within a segment (the shipped ones) get the callback
        within = {"progress": report} if progress and getattr(integrator, "reports_progress", False) else {}
        for t_next in event_times:
            if progress:
                report(0.0)
            if t_next > t:
                sel = (times > t) & (times <= t_next) if time_courses else np.zeros(times.size, bool)
                y_int, p_int = (y, p) if rows is None else (y[rows], p[rows])
                status_int = status if rows is None else status[rows]
                # members entering the segment with the same states, parameters and step are
                # integrated once (the grid doses of one sample, before the grid irradiation)
                first, copies = _identical(y_int, p_int, h)
                if first is not None:
                    y_int, p_int, status_int = y_int[first], p_int[first], status_int[first]
                    h = h[first] if isinstance(h, np.ndarray) else h
                    counters["member_segments_shared"] = counters.get("member_segments_shared", 0) + (
                        copies.size - first.size
                    )
                # the last segment: only what the outputs read is integrated
                opts = dataclasses.replace(options, frozen=frozen) if frozen and t_next == t_end else options
                sol = integrator.integrate(
                    m, t, t_next, y_int, p_int, atol_scale=scale, options=opts, t_eval=times[sel], h0=h, **within
                )
                for key, value in sol.stats.items():
                    counters[key] = counters.get(key, 0) + value
                if sc.solver.stiff_fallback != "none":
                    self._implicit_fallback(
                        sol,
                        t,
                        t_next,
                        y_int,
                        p_int,
                        scale,
                        opts,
                        times[sel],
                        status_int,
                        counters,
                        integrator,
                    )
                if first is not None:
                    sol = _spread(sol, copies, h_last=True)
                h = sol.h_last
                if rows is not None:
                    sol = _spread(sol, copy_from)
                for i in np.flatnonzero((sol.status == FAILED) & (status != FAILED)):
                    status[i] = FAILED
                    grid = "" if np.isnan(self.grid[i]) else f", grid dose {self.grid[i]:g} Gy"
                    # a replicated run (parameter sets): the set, and the member within it
                    per_set = self.n_members // self.replicates
                    member = f"member {i}" if self.replicates == 1 else f"set {i // per_set}, member {i % per_set}"
                    messages[i] = (
                        f"scenario {sc.name!r}, arm {self.arms[self.arm_index[i]].name!r}, "
                        f"{member}{grid}: solver failed at t = {sol.t_failed[i]:.6g} h: "
                        f"{sol.message[i]}{_cause(m, p_start[i], sol.message[i])}"
                    )
                y = sol.y
                if sel.any():
                    idx = np.flatnonzero(sel)
                    states[:, idx] = sol.ys
                    flat = sol.ys.reshape(-1, m.n_states)
                    obs[:, idx] = m.observe(flat, np.repeat(p, idx.size, axis=0)).reshape(n_mem, idx.size, -1)
                t = t_next
            while ai < len(self.actions) and self.actions[ai].time <= t_next:
                action = self.actions[ai]
                if action.record:
                    reference = (y.copy(), p.copy())
                action.apply(m, y, p, ledger)
                ai += 1
        if shown:
            sys.stderr.write(f"\rexosim: {sc.name}: 100% of the timeline, {_time.perf_counter() - start:.0f} s\n")
            sys.stderr.flush()
        if frozen:
            y[:, list(frozen)] = np.nan  # not integrated over the last segment
            counters["frozen_states"] = len(frozen)
        counters.pop("failures", None)
        timing = {
            "seconds": _time.perf_counter() - start,
            "backend": integrator.name,
            "method": _described(getattr(integrator, "description", integrator.name), options.method),
            **counters,
            "members_integrated": n_mem if rows is None else int(rows.size),
        }
        return RunResult.collect(self, y, p, reference, status, messages, times, states, obs, ledger, p_start, timing)


def _described(description: str, name: str) -> str:
    """The integrator's description (written for the default pair) naming the pair the run used."""
    from exosim.simulate.solver import METHODS, method

    return description.replace(METHODS["dopri5"].title, method(name).title)


def _sharing(share: np.ndarray | None, n_mem: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The members to integrate and, per member, its source's row among them (None, None: all)."""
    if share is None:
        return None, None
    share = np.asarray(share)
    if share.shape != (n_mem,) or not np.issubdtype(share.dtype, np.integer):
        raise ValueError(f"share must be {n_mem} member indices, got shape {share.shape}, dtype {share.dtype}")
    if share.min() < 0 or share.max() >= n_mem or np.any(share[share] != share):
        raise ValueError("share must map every member to a member that shares with itself")
    rows = np.flatnonzero(share == np.arange(n_mem))
    return rows, np.searchsorted(rows, share)


#: odd 64-bit weights of a row hash (wrapping sums of the states' bits) in :func:`_identical`
_HASH_WEIGHTS = np.random.default_rng(20240611).integers(1, 2**63, 256, dtype=np.uint64) | np.uint64(1)


def _identical(y: np.ndarray, p: np.ndarray, h) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Members with bitwise equal states, parameters and (per-member) first step: the first of
    each group and, per member, its group's row among them (None, None: all differ).

    The shipped integrators give such members bitwise equal results (per-member step control,
    or one step controlled by the largest member error, which a copy does not change), so the
    segment is integrated for the first of each group only and its result copied.
    """
    if y.shape[0] < 2:
        return None, None
    # members whose states differ bit for bit have different hashes: usually all of them (after
    # the grid irradiation), found at a tenth of the cost of comparing the rows
    bits = np.ascontiguousarray(y).view(np.uint64)
    if np.unique((bits * np.resize(_HASH_WEIGHTS, bits.shape[1])).sum(axis=1)).size == y.shape[0]:
        return None, None
    cols = [y, p] if not isinstance(h, np.ndarray) else [y, p, h[:, None]]
    key = np.ascontiguousarray(np.concatenate(cols, axis=1))
    rows = key.view(np.dtype((np.void, key.dtype.itemsize * key.shape[1]))).ravel()
    _, first, copies = np.unique(rows, return_index=True, return_inverse=True)
    if first.size == y.shape[0]:
        return None, None
    order = np.argsort(first)  # keep the members in their order (the same batch layout)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[copies.ravel()]


def _spread(sol: SegmentResult, copy_from: np.ndarray, h_last: bool = False) -> SegmentResult:
    """The segment result of the integrated members spread to every member (row ``copy_from[i]``);
    with ``h_last`` also a per-member last step."""
    step = sol.h_last
    if h_last and isinstance(step, np.ndarray) and step.ndim == 1:
        step = step[copy_from]
    return SegmentResult(
        sol.y[copy_from],
        sol.status[copy_from],
        sol.t_failed[copy_from],
        [sol.message[j] for j in copy_from],
        sol.ys[copy_from],
        sol.stats,
        step,
        None if sol.member_steps is None else sol.member_steps[copy_from],
    )


#: in place of the list of every parameter key (too long for a one-line message)
_SEE_MODEL_DOCS = " (docs/model.md, section 3, gives each module's parameters)"


def compile_scenario(scenario: Scenario) -> CompiledScenario:
    """Build model, members, parameters and actions of a validated scenario."""
    return CompiledScenario(scenario)


def run(
    scenario: Scenario, *, time_courses: bool = True, solver: str | Solver | None = None, progress: bool = False
) -> RunResult:
    """Compile and run a scenario; see :meth:`CompiledScenario.run`."""
    return CompiledScenario(scenario).run(time_courses=time_courses, solver=solver, progress=progress)
