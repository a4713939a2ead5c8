"""The batch adapter between analyses and the runner: parameter sets in, runs out.

Sensitivity analyses and fits both ask one question: run the scenario for R
parameter sets at once.  :class:`BatchModel` answers it (PINTS ``ForwardModel``
style): it names the varied parameters, resolves them to columns of the
parameter matrix, replicates the scenario's members once per set and injects the
values.  This is the only place where sampled values are written into a run;
failed members come back as data (``status``), never as an exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np

from exosim.model import catalogue as cat
from exosim.scenario.result import RunResult
from exosim.scenario.runner import CompiledScenario
from exosim.scenario.schema import Scenario

__all__ = ["BatchModel", "BatchError"]


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

    Attributes
    ----------
    columns : per parameter, the columns of the parameter matrix it sets
    nominal : the scenario's value of each parameter (first instance; NaN if absent)
    n_members : members of one replicate (arms x grid doses)
    """

    def __init__(self, scenario: Scenario, params: Sequence[str], *, strict: bool = True):
        self.scenario = scenario
        self.params = list(params)
        table = cat.parameter_table()
        self._compiled: dict[int, CompiledScenario] = {1: CompiledScenario(scenario)}
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
        self.evaluations = 0

    @property
    def template(self) -> CompiledScenario:
        """The compiled scenario of one replicate (members, model, arms, grid)."""
        return self._compiled[1]

    def compiled(self, replicates: int) -> CompiledScenario:
        """The compiled scenario with ``replicates`` copies of the members (built once, reused)."""
        if replicates not in self._compiled:  # building the model costs more than a small run: reuse it
            self._compiled[replicates] = CompiledScenario(self.scenario, replicates=replicates)
        return self._compiled[replicates]

    def parameters(self, theta: np.ndarray) -> np.ndarray:
        """The parameter matrix (R * n_members, k) for parameter sets ``theta`` (R, len(params))."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        compiled = self.compiled(theta.shape[0])
        p = compiled.parameters.copy()
        for j, cols in enumerate(self.columns):
            p[:, cols] = np.repeat(theta[:, j], self.n_members)[:, None]
        return p

    def simulate(self, theta: np.ndarray, *, record_times: np.ndarray | None = None) -> RunResult:
        """Run every parameter set of ``theta`` (R, len(params)); members replicate-major.

        Only the time courses at ``record_times`` are recorded (none when None).
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        compiled = self.compiled(theta.shape[0])
        self.evaluations += theta.shape[0]
        return compiled.run(parameters=self.parameters(theta), time_courses=False, record_times=record_times)
