"""The batch adapter between analyses and the runner: parameter sets in, runs out.

Sensitivity analyses and fits both ask one question: run the scenario for R
parameter sets at once.  :class:`BatchModel` answers it (PINTS ``ForwardModel``
style): it names the varied parameters, resolves them to columns of the
parameter matrix, replicates the scenario's members once per set and injects the
values.  This is the only place where sampled values are written into a run;
failed members come back as data (``status``), never as an exception.

Members whose outputs cannot depend on the sampled parameters (the control arm of a
medium transfer without donor cells, under uptake parameters) are integrated once, not
once per set: :mod:`exosim.model.dependence` finds them from the expression trees and
the member's events, and the runner gives every replicate of such a member the states of
that one integration (``share``), evaluating its events, rules and outputs with the
replicate's own parameters.  The result has the layout of the full run.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Sequence
from functools import cached_property

import numpy as np

from exosim.model import catalogue as cat
from exosim.model.declare import SEP
from exosim.model.dependence import Dependence, member_dependence
from exosim.scenario.actions import medium_content
from exosim.scenario.result import RunResult, reference_symbol
from exosim.scenario.runner import CompiledScenario
from exosim.scenario.schema import Scenario
from exosim.simulate.solver import FAILED

__all__ = ["BatchModel", "BatchError", "member_dependences"]


class BatchError(ValueError):
    """A parameter name that the table or the scenario does not know."""


class BatchModel:
    """Run a scenario for many parameter sets as one batch.

    Parameters
    ----------
    scenario : the scenario (its solver settings are used as they are)
    params : parameter-table keys (every instance in the scenario), ``namespace.key``
        (one population or medium), ``cell_line.key`` or ``cargo.key``
        (see :meth:`~exosim.scenario.runner.CompiledScenario.columns`)
    strict : a parameter that does not occur in the scenario is an error (fits); with
        ``strict=False`` it sets no column (an inert factor of a sensitivity analysis)
    outputs : the states and rules the caller reads (``recipients.surviving_fraction``); None:
        every state and rule.  A member none of whose outputs can depend on ``params``
        (:mod:`exosim.model.dependence`) is integrated once per call, at the scenario's own
        values of ``params``, and every parameter set gets its results (:attr:`shared`).
        With every state and rule (the default) this happens only when no state of the member
        depends on ``params``: the results are those of the full run.  With fewer outputs a
        shared member's other states may depend on ``params``; they (and the rules and
        reference values computed from them) are NaN in the result, and the outputs agree
        with the full run to the solver's tolerance (the member's steps are controlled on all
        its states), and a shared member that fails is run again once per set.  With outputs,
        the last segment of every member integrates only the states the outputs can depend on
        (the runner's ``outputs``): the others are NaN in the final states.
    share : integrate such members once (False: every member of every set, the reference)
    relative : parameter sets are multipliers of each instance's value in the scenario, not
        values given to every instance (the local sensitivity method)
    template : the compiled scenario of one replicate of ``scenario`` when already built
        (its model is not assembled again); built from the scenario by default

    Attributes
    ----------
    columns : per parameter, the columns of the parameter matrix it sets
    nominal : the scenario's value of each parameter (first instance; NaN if absent)
    n_members : members of one replicate (arms x grid doses)
    """

    def __init__(
        self,
        scenario: Scenario,
        params: Sequence[str],
        *,
        strict: bool = True,
        outputs: Iterable[str] | None = None,
        share: bool = True,
        relative: bool = False,
        template: CompiledScenario | None = None,
    ):
        self.scenario = scenario
        self.params = list(params)
        #: parameter sets are multipliers of each instance's own value, not values
        self.relative = relative
        table = cat.parameter_table()
        if template is None or template.replicates != 1:
            template = CompiledScenario(scenario)
        self._compiled: dict[int, CompiledScenario] = {1: template}
        probe = self._compiled[1]
        self.columns: list[list[int]] = []
        for name in self.params:
            key = name.split(".", 1)[-1]
            if key not in table:
                near = difflib.get_close_matches(key, list(table), n=1)
                raise BatchError(f"unknown parameter {key!r}" + (f"; did you mean {near[0]!r}?" if near else ""))
            cols = probe.columns(name)
            if not cols and strict:
                raise BatchError(f"parameter {name!r} does not occur in scenario {scenario.name!r}")
            self.columns.append(cols)
        self.nominal = np.array([probe.parameters[0, c[0]] if c else np.nan for c in self.columns])
        self.n_members = probe.n_members
        self.outputs = None if outputs is None else frozenset(self._symbol(o) for o in outputs)
        self.share = share
        self.evaluations = 0

    def _symbol(self, name: str) -> str:
        """The model symbol of an output name (``namespace.name`` or qualified)."""
        model = self.template.model
        symbol = name if SEP in name else name.replace(".", SEP, 1)
        if model.kinds.get(symbol) not in ("state", "rule", "derived"):
            known = [n.replace(SEP, ".", 1) for n in model.state_names + model.observable_names]
            near = difflib.get_close_matches(name.replace(SEP, ".", 1), known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise BatchError(f"no state or rule {name!r} in the model{hint}")
        return symbol

    @property
    def template(self) -> CompiledScenario:
        """The compiled scenario of one replicate (members, model, arms, grid)."""
        return self._compiled[1]

    def compiled(self, replicates: int) -> CompiledScenario:
        """The compiled scenario with ``replicates`` copies of the members (built once, reused)."""
        if replicates not in self._compiled:  # building the model costs more than a small run: reuse it
            model = self.template.model  # the same for every replicate count
            self._compiled[replicates] = CompiledScenario(self.scenario, replicates=replicates, model=model)
        return self._compiled[replicates]

    def parameters(self, theta: np.ndarray) -> np.ndarray:
        """The parameter matrix (R * n_members, k) for parameter sets ``theta`` (R, len(params))."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        compiled = self.compiled(theta.shape[0])
        return self._fill(compiled.parameters.copy(), theta)

    def _fill(self, p: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``p`` with the first ``len(theta)`` replicates set to the parameter sets ``theta``."""
        rows = theta.shape[0] * self.n_members
        for j, cols in enumerate(self.columns):
            column = np.repeat(theta[:, j], self.n_members)[:, None]
            p[:rows, cols] = p[:rows, cols] * column if self.relative else column
        return p

    @cached_property
    def dependence(self) -> list[Dependence]:
        """Per member of one replicate, which of its symbols may depend on the parameters."""
        return member_dependences(self.template, sorted({c for cols in self.columns for c in cols}))

    @cached_property
    def shared(self) -> np.ndarray:
        """bool (n_members,): the members of one replicate integrated once per call, because none
        of the outputs depends on the parameters (see ``outputs``)."""
        return np.array([d.independent(self.outputs) for d in self.dependence], dtype=bool)

    def simulate(
        self, theta: np.ndarray, *, record_times: np.ndarray | None = None, share: bool | None = None
    ) -> RunResult:
        """Run every parameter set of ``theta`` (R, len(params)); members replicate-major.

        Only the time courses at ``record_times`` are recorded (none when None).  The members
        of :attr:`shared` are integrated once unless ``share`` (default: the model's) is False;
        ``timing["members_integrated"]`` of the result counts the members integrated.
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        reps = theta.shape[0]
        self.evaluations += reps
        once = self.shared if (self.share if share is None else share) else np.zeros(self.n_members, bool)
        if once.any():  # also for one set: a shared member's result does not depend on the other sets
            res = self._run_shared(theta, once, record_times)
            failed = (res.status.reshape(reps, -1)[:, once] == FAILED).any()
            if not (failed and self.outputs is not None):  # a failure of a shared member is run again per set
                return res
        compiled = self.compiled(reps)
        return compiled.run(
            parameters=self.parameters(theta), time_courses=False, record_times=record_times, outputs=self.outputs
        )

    def _run_shared(self, theta: np.ndarray, once: np.ndarray, record_times: np.ndarray | None) -> RunResult:
        """The run with the members ``once`` integrated once: in an extra replicate at the scenario's
        values of the parameters, whose states every set takes (``share`` of the runner)."""
        reps, n = theta.shape[0], self.n_members
        compiled = self.compiled(reps + 1)
        p = self._fill(compiled.parameters.copy(), theta)
        share = np.arange(compiled.n_members)
        extra = reps * n + np.arange(n)
        for i in np.flatnonzero(once):
            share[i + n * np.arange(reps)] = extra[i]
        share[extra[~once]] = np.flatnonzero(~once)  # unused: they take the first set's states, not integrated
        res = compiled.run(
            parameters=p, time_courses=False, record_times=record_times, share=share, outputs=self.outputs
        )
        return _unknown_outside_outputs(res.select(slice(0, reps * n)), once, self.dependence, reps)


def member_dependences(compiled: CompiledScenario, columns: Sequence[int]) -> list[Dependence]:
    """Per member of ``compiled``, which of its symbols may depend on the parameter columns ``columns``
    (:func:`exosim.model.dependence.member_dependence` with the member's row and events).

    Members that agree in what the analysis reads of them (which parameters are 0, 1 or positive,
    which events act on them and which of their per-member constants are 0, 1 or positive) share
    one analysis.
    """
    model = compiled.model
    start, end = compiled.scenario.timeline_start, compiled.score_event.at
    actions = [a for a in compiled.actions if a.time <= end]
    fixed = np.ones(model.n_parameters, dtype=bool)
    fixed[list(columns)] = False
    done: dict[tuple, Dependence] = {}
    out = []
    for i in range(compiled.n_members):
        row = compiled.parameters[i]
        acting = [a for a in actions if a.acts[i]]
        key = (
            _classes(row[fixed]),
            tuple((a.order, _classes(np.array([v[i] for v in a.constants.values()]))) for a in acting),
        )
        if key not in done:
            events = [(a.time, a.sbml_trees(i)) for a in acting]
            done[key] = member_dependence(model, row, columns, events, start, end)
        out.append(done[key])
    return out


def _classes(values: np.ndarray) -> bytes:
    """What the dependence analysis reads of values: 0, 1, positive or other."""
    values = np.asarray(values, dtype=float)
    return np.select([values == 0, values == 1, values > 0], [0, 1, 2], 3).astype(np.int8).tobytes()


def _unknown_outside_outputs(res: RunResult, once: np.ndarray, deps: list[Dependence], reps: int) -> RunResult:
    """``res`` with NaN where a shared member's value depends on the parameters through its states
    (it was integrated with other values than the set's): states, rules, reference values,
    survival and, if a medium's content is among them, the member's ledger."""
    stale = {i: deps[i].through_states for i in np.flatnonzero(once) if deps[i].through_states}
    if not stale:
        return res
    m, n = res.model, once.size
    scored = next(e for e in res.scenario.timeline if e.score is not None).score.population
    media = {s for med in m.media for s, _, _ in medium_content(m, med)}
    final, states, obs = res.final_states.copy(), res.states.copy(), res.observables.copy()
    sf = res.surviving_fraction.copy()
    reference = {k: v.copy() for k, v in res.reference.items()}
    ledger = {k: v.copy() for k, v in res.ledger.items()}
    for i, symbols in stale.items():
        rows = i + n * np.arange(reps)
        cols = [m.state_index[s] for s in symbols if s in m.state_index]
        ocols = [m.observable_index[s] for s in symbols if s in m.observable_index]
        final[np.ix_(rows, cols)] = np.nan
        every = np.arange(states.shape[1])  # recorded times (none without time courses)
        states[np.ix_(rows, every, cols)] = np.nan
        obs[np.ix_(rows, every, ocols)] = np.nan
        if f"{scored}{SEP}surviving_fraction" in symbols:
            sf[rows] = np.nan
        for key, values in reference.items():
            if reference_symbol(key, scored) in symbols:
                values[rows] = np.nan
        if media & symbols:
            for values in ledger.values():
                values[rows] = np.nan
    return RunResult._frozen(
        dataclasses.replace(
            res,
            surviving_fraction=sf,
            reference=reference,
            final_states=final,
            states=states,
            observables=obs,
            ledger=ledger,
        )
    )
