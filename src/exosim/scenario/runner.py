"""The protocol engine: a scenario's timeline of events, run for all members at once.

A *member* is one arm at one dose of the dose grid.  All members share the
model structure and the event times; they differ in parameters (arm
overrides) and in event magnitudes (grid dose, arm variables, arm-only
events).  Between event times the whole batch is integrated by
:func:`exosim._integrate.integrate`; at an event time every action is applied
to the batch with per-member values.  New experiment types are new scenario
files (compartment wiring and events), not new engine code.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exosim.model import catalogue as cat
from exosim.model.assemble import Model, ModelError, PopulationSpec
from exosim.model.declare import SEP
from exosim.simulate.dopri5 import FAILED, SolverOptions, integrate
from exosim.scenario.schema import Arm, Event, Scenario, ScenarioError, parameter_value
from exosim.model.units import parse_quantity
from exosim.model.modules import ACUTE_DOSE

__all__ = ["CompiledScenario", "RunResult", "compile_scenario", "run"]

#: intervention process -> factor parameter it lowers
PROCESS_PARAMETER = {
    "release": "ilv_formation_factor",
    "fusion": "fusion_factor",
    "binding": "binding_factor",
    "internalisation": "internalisation_factor",
}


@dataclass
class _Batch:
    """Mutable state of a running batch."""

    y: np.ndarray
    p: np.ndarray
    ledger: dict[str, np.ndarray]


@dataclass(order=True)
class _Action:
    """One event at one time: ``apply`` changes the batch; ``describe(member)`` gives the same
    change as (symbol, formula of pre-event values) pairs, used for SBML events."""

    time: float
    order: int
    kind: str = field(compare=False)
    apply: Any = field(compare=False)
    path: str = field(compare=False, default="")
    describe: Any = field(compare=False, default=None)

    def sbml_assignments(self, member: int) -> list[tuple[str, str]]:
        """The event's assignments for one member as (symbol, SBML formula of pre-event values)."""
        return self.describe(member)


@dataclass
class RunResult:
    """Everything one run of a scenario produced.

    Attributes
    ----------
    scenario, model : what was run
    arms : arm names, in order
    arm_index : ndarray (N,), arm of each member
    grid : ndarray (N,), Gy, grid dose of each member (NaN without a dose grid)
    surviving_fraction : ndarray (N,), kinetic SF of the scored population
    status : ndarray (N,), 0 = success, 1 = failed
    messages : per-member failure message ("" on success)
    reference : observables of the scored population at the reference time
        (just before the grid irradiation if it irradiates the scored
        population, else at scoring): alpha_eff, beta_eff, modifiers, ...
    final_states : ndarray (N, n) at scoring
    times : ndarray (T,), h, output times
    states : ndarray (N, T, n) state time courses (empty if not requested)
    observables : ndarray (N, T, m) rule time courses (empty if not requested)
    ledger : particles and cargo added to or removed from media by events
    parameters : ndarray (N, k), parameters at the start of each member
    grid_event : description of the grid irradiation (population, fractions, duration)
    timing : wall-clock seconds and solver counters
    """

    scenario: Scenario
    model: Model
    arms: list[str]
    arm_index: np.ndarray
    grid: np.ndarray
    surviving_fraction: np.ndarray
    status: np.ndarray
    messages: list[str]
    reference: dict[str, np.ndarray]
    final_states: np.ndarray
    times: np.ndarray
    states: np.ndarray
    observables: np.ndarray
    ledger: dict[str, np.ndarray]
    parameters: np.ndarray
    grid_event: dict[str, Any]
    timing: dict[str, float]

    @property
    def scored_population(self) -> str:
        """Name of the population whose survival is scored."""
        return next(e.score.population for e in self.scenario.timeline if e.score is not None)

    def state(self, name: str) -> np.ndarray:
        """Final value of a state (qualified name) for every member."""
        return self.final_states[:, self.model.state_index[name]]


class CompiledScenario:
    """A validated scenario turned into a model, members, parameters and actions.

    Parameters
    ----------
    scenario : a validated :class:`~exosim._scenario.Scenario`
    replicates : copies of the (arm x grid) members, e.g. one per parameter sample
    """

    def __init__(self, scenario: Scenario, *, replicates: int = 1):
        self.scenario = sc = scenario
        self.replicates = replicates
        records = {}
        for c, override in sc.cargo.items():
            rec = dict(cat.cargo_catalogue()[c])
            rec.update({k: (v if k == "effects" else parameter_value(v)) for k, v in (override or {}).items()})
            records[c] = rec
        self.cargo_records = records
        pops = [PopulationSpec(n, p.medium, p.cell_line, tuple(p.packages)) for n, p in sc.populations.items()]
        try:
            self.model = Model(pops, list(sc.media), list(sc.cargo),
                               [(lk.source, lk.target) for lk in sc.links], cargo_records=records)
        except ModelError as exc:
            raise ScenarioError(sc.source, "cargo", str(exc)) from None
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

    def _parameters(self) -> np.ndarray:
        sc, m = self.scenario, self.model
        base = m.default_parameters()
        for k, v in sc.parameters.items():
            base[self.instances(k)] = parameter_value(v)
        for name, med in sc.media.items():
            base[self.instances("volume", name)] = med.volume
            for k, v in med.parameters.items():
                base[self.instances(k, name)] = parameter_value(v)
        for name, pop in sc.populations.items():
            base[self.instances("cells", name)] = pop.cells
            for k, v in pop.parameters.items():
                base[self.instances(k, name)] = parameter_value(v)
        for lk in sc.links:
            base[m.parameter_index[f"{lk.source}_to_{lk.target}{SEP}transfer_rate"]] = lk.rate
        p = np.tile(base, (self.n_members, 1))
        for a, arm in enumerate(self.arms):
            rows = self.arm_index == a
            for k, v in sorted(arm.parameters.items(), key=lambda kv: "." in kv[0]):
                ns, key = (k.split(".", 1) if "." in k else (None, k))
                p[np.ix_(rows, self.instances(key, ns))] = parameter_value(v)
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

    def _actions(self) -> tuple[list[_Action], dict[str, Any]]:
        sc = self.scenario
        actions: list[_Action] = []
        order = 0
        grid_event: dict[str, Any] = {}
        entries = [(f"timeline[{i}]", ev, None) for i, ev in enumerate(sc.timeline)]
        for a, arm in enumerate(self.arms):
            entries += [(f"arms[{a}].events[{i}]", ev, a) for i, ev in enumerate(arm.events)]
        for path, ev, arm in entries:
            mask = np.ones(self.n_members, bool) if arm is None else self.arm_index == arm
            kind = ev.kind
            if kind == "score":
                continue
            if kind == "irradiate":
                new, info = self._irradiation(ev, mask, path)
                for t, (apply, describe) in new:
                    actions.append(_Action(t, order, "irradiate", apply, path, describe))
                    order += 1
                if ev.irradiate.dose == "grid":
                    grid_event = info
                continue
            builder = {"transfer": self._transfer, "add": self._add, "intervene": self._intervene,
                       "treat": self._treat, "change_medium": self._change_medium}[kind]
            apply, describe = builder(ev.action, mask)
            actions.append(_Action(ev.at, order, kind, apply, path, describe))
            order += 1
        actions.sort()
        return actions, grid_event

    def _irradiation(self, ev: Event, mask: np.ndarray, path: str):
        act = ev.irradiate
        dose = np.where(mask, self._dose_per_member(act.dose), 0.0)
        n = act.fractions
        per_fraction = dose / n
        if act.days_per_week:
            offsets = [((k // act.days_per_week) * 7 * 24.0 + (k % act.days_per_week) * act.interval)
                       for k in range(n)]
        else:
            offsets = [k * act.interval for k in range(n)]
        pop = act.population
        out = []
        scored = self.score_event.score.population
        for k, off in enumerate(offsets):
            t = ev.at + off
            record = act.dose == "grid" and k == 0 and pop == scored
            if act.dose_rate is None:
                out.append((t, self._acute(pop, per_fraction, record)))
            else:
                rate = act.dose_rate
                duration = per_fraction / rate
                out.append((t, self._rate_change(pop, np.where(per_fraction > 0, rate, 0.0), record)))
                for dur in np.unique(duration[per_fraction > 0]):
                    sel = (duration == dur) & (per_fraction > 0)
                    out.append((t + float(dur), self._rate_change(pop, np.where(sel, -rate, 0.0), False)))
        info = {"population": pop, "fractions": n, "dose_rate": act.dose_rate, "scored": pop == scored}
        return out, info

    def _record(self, batch: _Batch) -> None:
        self._reference = (batch.y.copy(), batch.p.copy())

    def _acute(self, pop: str, dose: np.ndarray, record: bool):
        m = self.model

        def apply(batch: _Batch) -> None:
            if record:
                self._record(batch)
            for state, expr in ACUTE_DOSE.items():
                inc = m.evaluate(expr, pop, batch.y, batch.p, {"D": dose})
                batch.y[:, m.state_index[f"{pop}{SEP}{state}"]] += inc

        def describe(i: int) -> list[tuple[str, str]]:
            if dose[i] == 0:
                return []
            return [(f"{pop}{SEP}{state}", f"{pop}{SEP}{state} + {m.formula(expr, pop, {'D': float(dose[i])})}")
                    for state, expr in ACUTE_DOSE.items()]
        return apply, describe

    def _rate_change(self, pop: str, delta: np.ndarray, record: bool):
        idx = self.model.parameter_index[f"{pop}{SEP}dose_rate"]

        def apply(batch: _Batch) -> None:
            if record:
                self._record(batch)
            col = batch.p[:, idx] + delta
            col[np.abs(col) < 1e-12] = 0.0
            batch.p[:, idx] = col

        name = f"{pop}{SEP}dose_rate"

        def describe(i: int) -> list[tuple[str, str]]:
            return [(name, f"{name} + {float(delta[i])!r}")] if delta[i] != 0 else []
        return apply, describe

    def _content(self, medium: str) -> list[tuple[str, str | None, str]]:
        """(state, cargo or None, 'vesicles'|'vesicular'|'free') of a medium's movable content."""
        out = [(f"{medium}{SEP}vesicles", None, "vesicles")]
        for c in self.model.cargos:
            out += [(f"{medium}{SEP}{c}_vesicular", c, "vesicular"), (f"{medium}{SEP}{c}_free", c, "free")]
        return out

    @staticmethod
    def _book(batch: _Batch, cargo: str | None, key: str, amount: np.ndarray) -> None:
        name = f"{cargo or 'particles'}_{key}"
        batch.ledger.setdefault(name, np.zeros(batch.y.shape[0]))
        batch.ledger[name] += amount

    def _transfer(self, act, mask: np.ndarray):
        si = self.model.state_index
        src, dst = self._content(act.source), self._content(act.target)

        def apply(batch: _Batch) -> None:
            y = batch.y
            for (s_name, cargo, what), (d_name, _, _) in zip(src, dst):
                s, d = si[s_name], si[d_name]
                if act.replace:
                    discarded = np.where(mask, y[:, d], 0.0)
                    y[:, d] -= discarded
                    self._book(batch, cargo, "removed", discarded)
                moved = np.where(mask, y[:, s] * act.fraction, 0.0)
                y[:, s] -= moved
                keep = (1.0 if what == "free" else act.recovery) / act.dilution
                if what == "free" and act.purify:
                    keep = 0.0
                y[:, d] += moved * keep
                self._book(batch, cargo, "removed", moved * (1.0 - keep))

        def describe(i: int) -> list[tuple[str, str]]:
            if not mask[i]:
                return []
            out = []
            for (s_name, _, what), (d_name, _, _) in zip(src, dst):
                keep = 0.0 if (what == "free" and act.purify) else \
                    (1.0 if what == "free" else act.recovery) / act.dilution
                kept = "0" if act.replace else d_name
                out.append((d_name, f"{kept} + {s_name}*{float(act.fraction * keep)!r}"))
                out.append((s_name, f"{s_name}*{float(1.0 - act.fraction)!r}"))
            return out
        return apply, describe

    def _add(self, act, mask: np.ndarray):
        si = self.model.state_index
        volume = self.scenario.media[act.medium].volume
        amount = act.particles if act.particles is not None else act.concentration * volume

        def apply(batch: _Batch) -> None:
            n = np.where(mask, amount, 0.0)
            batch.y[:, si[f"{act.medium}{SEP}vesicles"]] += n
            self._book(batch, None, "added", n)
            for c, q in act.cargo.items():
                batch.y[:, si[f"{act.medium}{SEP}{c}_vesicular"]] += n * q
                self._book(batch, c, "added", n * q)

        def describe(i: int) -> list[tuple[str, str]]:
            if not mask[i]:
                return []
            ves = f"{act.medium}{SEP}vesicles"
            out = [(ves, f"{ves} + {float(amount)!r}")]
            for c, q in act.cargo.items():
                name = f"{act.medium}{SEP}{c}_vesicular"
                out.append((name, f"{name} + {float(amount) * q!r}"))
            return out
        return apply, describe

    def _intervene(self, act, mask: np.ndarray):
        agent = cat.agents()[act.agent]
        efficacy = act.efficacy if act.efficacy is not None else float(agent["efficacy"])
        idx = self.model.parameter_index[f"{act.population}{SEP}{PROCESS_PARAMETER[agent['process']]}"]

        def apply(batch: _Batch) -> None:
            batch.p[mask, idx] *= 1.0 - efficacy

        name = self.model.parameters[idx].name

        def describe(i: int) -> list[tuple[str, str]]:
            return [(name, f"{name}*{float(1.0 - efficacy)!r}")] if mask[i] else []
        return apply, describe

    def _treat(self, act, mask: np.ndarray):
        rule = cat.treatments()[act.treatment]
        si = self.model.state_index
        destroys = rule.get("destroys") or {}
        kinds = {c: self.cargo_records[c].get("kind", "rna") for c in self.model.cargos}
        med = act.medium

        def apply(batch: _Batch) -> None:
            y = batch.y
            for c, kind in kinds.items():
                where = destroys.get(kind, [])
                v, f = si[f"{med}{SEP}{c}_vesicular"], si[f"{med}{SEP}{c}_free"]
                for state, label in ((v, "vesicular"), (f, "free")):
                    if label in where:
                        gone = np.where(mask, y[:, state], 0.0)
                        y[:, state] -= gone
                        self._book(batch, c, "removed", gone)
                if rule.get("lyses_vesicles"):
                    freed = np.where(mask, y[:, v], 0.0)
                    y[:, v] -= freed
                    y[:, f] += freed
            if rule.get("lyses_vesicles"):
                ves = si[f"{med}{SEP}vesicles"]
                gone = np.where(mask, y[:, ves], 0.0)
                y[:, ves] -= gone
                self._book(batch, None, "removed", gone)

        def describe(i: int) -> list[tuple[str, str]]:
            if not mask[i]:
                return []
            out = []
            lyse = bool(rule.get("lyses_vesicles"))
            for c, kind in kinds.items():
                where = destroys.get(kind, [])
                v, f = f"{med}{SEP}{c}_vesicular", f"{med}{SEP}{c}_free"
                free_left = "0" if "free" in where else f
                freed = v if (lyse and "vesicular" not in where) else "0"
                out.append((f, f"{free_left} + {freed}"))
                if lyse or "vesicular" in where:
                    out.append((v, "0"))
            if lyse:
                out.append((f"{med}{SEP}vesicles", "0"))
            return out
        return apply, describe

    def _change_medium(self, act, mask: np.ndarray):
        si = self.model.state_index
        content = self._content(act.medium)

        def apply(batch: _Batch) -> None:
            for name, cargo, _ in content:
                gone = np.where(mask, batch.y[:, si[name]], 0.0)
                batch.y[:, si[name]] -= gone
                self._book(batch, cargo, "removed", gone)

        def describe(i: int) -> list[tuple[str, str]]:
            return [(name, "0") for name, _, _ in content] if mask[i] else []
        return apply, describe

    # ------------------------------------------------------------- running
    def run(self, *, time_courses: bool = True, parameters: np.ndarray | None = None,
            record_times: np.ndarray | None = None) -> RunResult:
        """Integrate all members through the timeline.

        Parameters
        ----------
        time_courses : record states and rules every ``output.time_step``
        parameters : ndarray (N, k), optional
            Replaces the scenario's parameter matrix (sensitivity analyses).
        record_times : ndarray, optional
            Record at these times (h, within the timeline) instead of every
            ``output.time_step`` (fits to time-course data).  A value at the
            time of an event is the value just before the event.

        Returns
        -------
        RunResult
        """
        sc, m = self.scenario, self.model
        start = _time.perf_counter()
        p = (self.parameters if parameters is None else np.asarray(parameters, float)).copy()
        n_mem = p.shape[0]
        if n_mem != self.n_members:
            raise ValueError(f"parameters must have {self.n_members} rows, got {n_mem}")
        p_start = p.copy()
        batch = _Batch(m.initial_state(p), p, {})
        t_end = self.score_event.at
        t0 = sc.timeline_start
        step = sc.output.time_step
        if record_times is not None:
            record_times = np.asarray(record_times, dtype=float)
            if record_times.size and not (record_times.min() >= t0 and record_times.max() <= t_end):
                raise ValueError(f"record_times must lie within the timeline [{t0:g}, {t_end:g}] h")
            times, time_courses = np.unique(np.append(record_times, t0)), True
        else:
            times = np.unique(np.append(np.arange(t0, t_end, step), t_end)) if time_courses else np.array([t0])
        n_t = times.size
        states = np.full((n_mem, n_t, m.n_states), np.nan) if time_courses else np.empty((n_mem, 0, m.n_states))
        obs = np.full((n_mem, n_t, len(m.observable_names)), np.nan) if time_courses else \
            np.empty((n_mem, 0, len(m.observable_names)))
        status = np.zeros(n_mem, dtype=int)
        messages = [""] * n_mem
        options = SolverOptions(rtol=sc.solver.rtol, atol=sc.solver.atol)
        compiled = sc.solver.backend == "numba"
        if compiled:
            from exosim.simulate.dopri5_numba import integrate_compiled, resolve_backend
            resolve_backend("numba")  # clear message when numba is missing
        scale = np.array([s.scale for s in m.states])
        self._reference = None
        if time_courses:
            states[:, 0] = batch.y
            obs[:, 0] = m.observe(batch.y, batch.p)
        counters = {"steps": 0, "rejected": 0, "rhs_evaluations": 0}
        h = None
        t = t0
        event_times = sorted({a.time for a in self.actions if a.time <= t_end} | {t_end})
        ai = 0
        for t_next in event_times:
            if t_next > t:
                sel = (times > t) & (times <= t_next)
                if compiled:
                    sol = integrate_compiled(m, t, t_next, batch.y, batch.p, atol_scale=scale, options=options,
                                             t_eval=times[sel], h0=h)
                else:
                    sol = integrate(m.rhs, t, t_next, batch.y, batch.p, atol_scale=scale, options=options,
                                    t_eval=times[sel], h0=h)
                h = sol.h_last
                counters["steps"] += sol.n_steps
                counters["rejected"] += sol.n_rejected
                if compiled:  # per-member counts; "steps" is the largest member's
                    counters["member_rhs_evaluations"] = counters.get("member_rhs_evaluations", 0) + sol.n_rhs
                    counters["member_steps"] = counters.get("member_steps", 0) + int(sol.member_steps.sum())
                else:
                    counters["rhs_evaluations"] += sol.n_rhs
                for i in np.flatnonzero((sol.status == FAILED) & (status != FAILED)):
                    status[i] = FAILED
                    grid = "" if np.isnan(self.grid[i]) else f", grid dose {self.grid[i]:g} Gy"
                    messages[i] = (f"scenario {sc.name!r}, arm {self.arms[self.arm_index[i]].name!r}, "
                                   f"member {i}{grid}: solver failed at t = {sol.t_failed[i]:.6g} h: "
                                   f"{sol.message[i]}")
                batch.y = sol.y
                if time_courses and sel.any():
                    idx = np.flatnonzero(sel)
                    states[:, idx] = sol.ys
                    flat = sol.ys.reshape(-1, m.n_states)
                    reps = np.repeat(batch.p, idx.size, axis=0)
                    obs[:, idx] = m.observe(flat, reps).reshape(n_mem, idx.size, -1)
                t = t_next
            while ai < len(self.actions) and self.actions[ai].time <= t_next:
                self.actions[ai].apply(batch)
                ai += 1
        final = batch.y
        scored = self.score_event.score.population
        obs_final = m.observe(final, batch.p)
        sf = obs_final[:, m.observable_index[f"{scored}{SEP}surviving_fraction"]]
        ref_y, ref_p = self._reference if self._reference is not None else (final, batch.p)
        ref_obs = m.observe(ref_y, ref_p)
        prefix = f"{scored}{SEP}"
        reference = {n[len(prefix):]: ref_obs[:, i] for i, n in enumerate(m.observable_names)
                     if n.startswith(prefix)}
        for c in m.cargos:
            reference[f"{c}_delivered_at_scoring"] = final[:, m.state_index[f"{prefix}{c}_delivered"]]
        reference["residual_dsb_at_scoring"] = final[:, m.state_index[f"{prefix}dsb"]]
        for other in self.score_event.score.also:  # e.g. in-field survival beside out-of-field
            sf_other = obs_final[:, m.observable_index[f"{other}{SEP}surviving_fraction"]]
            reference[f"surviving_fraction{SEP}{other}"] = np.where(status == FAILED, np.nan, sf_other)
        sf = np.where(status == FAILED, np.nan, sf)
        timing = {"seconds": _time.perf_counter() - start, "backend": sc.solver.backend, **counters}
        return RunResult(sc, m, [a.name for a in self.arms], self.arm_index.copy(), self.grid.copy(), sf,
                         status, messages, reference, final, times, states, obs, batch.ledger, p_start,
                         self.grid_event, timing)


def compile_scenario(scenario: Scenario) -> CompiledScenario:
    """Build model, members, parameters and actions of a validated scenario."""
    return CompiledScenario(scenario)


def run(scenario: Scenario, *, time_courses: bool = True) -> RunResult:
    """Compile and run a scenario; see :meth:`CompiledScenario.run`."""
    return CompiledScenario(scenario).run(time_courses=time_courses)
