"""Local and global sensitivity of survival outputs to model parameters.

A method is ``sample`` + ``evaluate`` + ``analyze`` (as in SALib):

* ``local``: normalised coefficients d ln y / d ln p at the nominal point,
  central differences in ln p (step ``h``, 2 runs per parameter);
* ``morris``: elementary effects (mu*, sigma) on log-scaled parameters;
* ``sobol``: first-order and total indices (Saltelli sampling, Jansen
  estimators) with bootstrap confidence intervals.

Morris and Sobol use SALib (Herman & Usher 2017): it is the field's maintained
implementation of both methods with bootstrap intervals; scipy offers Sobol
indices (``scipy.stats.sobol_indices``) but no Morris screening.  Sobol indices
are SALib's estimators on SALib's bootstrap draws, evaluated in blocks of
resamples (:func:`sobol_indices`): SALib's numbers bit for bit, without its
(N, resamples) arrays (about 250 MB at N = 4096).

Parameters vary log-uniformly over their documented ranges (parameter table),
one factor per table key applied to every instance of that key (all
populations and media).  Every sample runs the scenario's control arm and the
analysed arm over the dose grid, integrated as batches through the vectorised
model in chunks that bound memory (through :class:`exosim.analysis.batch.BatchModel`), on an
:class:`~exosim.analysis.engine.Engine`; only the analysed outputs of a chunk are kept, so the
memory a job holds does not grow with N beyond its samples and outputs.  A member whose outputs cannot depend on the
sampled parameters (the control arm of a medium transfer under uptake parameters: no
vesicles reach its recipients) is integrated once per chunk, not once per sample.

Failed runs: a sample whose integration failed has NaN outputs and is counted.
Sobol and Morris then drop every *whole* Saltelli block (the base rows and
their D radial rows) or Morris trajectory that contains a failed sample, so the
estimators stay valid on the remaining blocks; the numbers dropped are
reported.  An output a scenario does not define (SF2 and DMF need a recipient
dose curve) is NaN everywhere and gets NaN indices without affecting the other
outputs.  Local coefficients that need a failed run are NaN.

References
----------
.. [1] Saltelli A, et al. (2010) Variance based sensitivity analysis of model
   output. Comput Phys Commun 181:259. doi:10.1016/j.cpc.2009.09.018
.. [2] Morris MD (1991) Factorial sampling plans for preliminary computational
   experiments. Technometrics 33:161. doi:10.1080/00401706.1991.10484804
.. [3] Campolongo F, Cariboni J, Saltelli A (2007) An effective screening
   design for sensitivity analysis of large models. Environ Model Softw 22:1509.
   doi:10.1016/j.envsoft.2006.10.004
.. [4] Herman J, Usher W (2017) SALib: an open-source Python library for
   sensitivity analysis. J Open Source Softw 2:97. doi:10.21105/joss.00097
.. [5] Ishigami T, Homma T (1990) An importance quantification technique in
   uncertainty analysis for computer models. ISUMA '90. doi:10.1109/ISUMA.1990.151285
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
import sys
import uuid
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from exosim.analysis.batch import BatchModel
from exosim.analysis.engine import Engine, SerialEngine
from exosim.model import catalogue as cat
from exosim.scenario.observables import SENSITIVITY_OUTPUTS, sample_output_symbols, sample_outputs
from exosim.scenario.schema import Scenario
from exosim.simulate.solver import resolve_backend

__all__ = [
    "ParameterSpace",
    "SensitivityError",
    "OUTPUTS",
    "ScenarioEvaluator",
    "Analysis",
    "local",
    "morris",
    "sobol",
    "ishigami",
    "nominal_values",
    "MAX_SAMPLES",
    "memory_estimate",
    "METHODS",
    "analyse",
    "sample_count",
    "inert_factors",
    "sobol_indices",
]

#: outputs analysed, each separately (defined with the survival observables)
OUTPUTS = SENSITIVITY_OUTPUTS
#: members integrated together in one chunk (bounds memory: about 8 kB of state per member)
DEFAULT_CHUNK_MEMBERS = 8192
#: largest chunk of the compiled backend (per-member steps: its chunks bound memory, not results):
#: about 1 s of work, so that the tasks also even out between workers (ScenarioEvaluator.chunk_samples)
COMPILED_CHUNK_MEMBERS = 2048
#: tasks a worker gets at least, when workers share a compiled job (ScenarioEvaluator.chunk_samples)
TASKS_PER_WORKER = 8
#: memory one chunk of members may hold while it is integrated (bytes)
MEMORY_BOUND = 4 * 2**30
#: sanity cap on the number of model runs (samples) of one analysis
MAX_SAMPLES = 2**21


class SensitivityError(ValueError):
    """Invalid sensitivity request (unknown parameter, bad range, N not a power of two, ...)."""


class SensitivityWarning(UserWarning):
    """A request that runs but leaves outputs empty (a dose grid without 0)."""


@dataclass(frozen=True)
class ParameterSpace:
    """Factors of an analysis: names, bounds and scale.

    Attributes
    ----------
    names : parameter-table keys (or any labels for test functions)
    lows, highs : bounds in the parameters' units
    log : sample uniformly in log10 (True) or linearly (False), per factor
    """

    names: tuple[str, ...]
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    log: tuple[bool, ...]

    @classmethod
    def from_table(
        cls, group: str | None = None, names: Sequence[str] = (), ranges: dict[str, tuple[float, float]] | None = None
    ) -> ParameterSpace:
        """Factors of a parameter group and/or named keys, log-uniform over the table ranges (uniform
        over a range that starts at 0, such as a share that may vanish)."""
        table = cat.parameter_table()
        chosen: list[str] = []
        if group:
            groups = sorted({g for row in table.values() for g in row.get("groups", [])})
            if group not in groups:
                near = difflib.get_close_matches(group, groups, n=1)
                raise SensitivityError(
                    f"unknown parameter group {group!r}"
                    + (f"; did you mean {near[0]!r}?" if near else f"; groups: {', '.join(groups)}")
                )
            chosen += [k for k, row in table.items() if group in row.get("groups", [])]
        for n in names:
            if n not in table:
                near = difflib.get_close_matches(n, list(table), n=1)
                raise SensitivityError(f"unknown parameter {n!r}" + (f"; did you mean {near[0]!r}?" if near else ""))
            if n not in chosen:
                chosen.append(n)
        if not chosen:
            raise SensitivityError("no parameters: give --group and/or --params")
        ranges = dict(ranges or {})
        unknown = set(ranges) - set(chosen)
        if unknown:
            raise SensitivityError(f"--range names {sorted(unknown)}, which are not analysed factors")
        lows, highs, logs = [], [], []
        for n in chosen:
            lo, hi = (float(v) for v in ranges.get(n, table[n]["range"]))
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise SensitivityError(f"range of {n!r}: expected finite bounds, got [{lo:g}, {hi:g}]")
            if not lo < hi:
                raise SensitivityError(f"range of {n!r}: low {lo:g} must be below high {hi:g}")
            if lo < 0:
                raise SensitivityError(f"range of {n!r}: expected non-negative bounds, got [{lo:g}, {hi:g}]")
            lows.append(lo)
            highs.append(hi)
            logs.append(lo > 0)  # a range from 0 (a share that may vanish) is sampled uniformly
        return cls(tuple(chosen), tuple(lows), tuple(highs), tuple(logs))

    @property
    def dimension(self) -> int:
        """Number of factors D."""
        return len(self.names)

    def problem(self) -> dict:
        """SALib problem on the sampling scale (log10 for log factors)."""
        bounds = [
            [np.log10(lo), np.log10(hi)] if lg else [lo, hi] for lo, hi, lg in zip(self.lows, self.highs, self.log)
        ]
        return {"num_vars": self.dimension, "names": list(self.names), "bounds": bounds}

    def to_values(self, x: np.ndarray) -> np.ndarray:
        """Sampling scale -> parameter values."""
        x = np.asarray(x, float)
        return np.where(np.asarray(self.log), 10.0**x, x)


# ---------------------------------------------------------------------- model evaluation
#: per process, the batch model of the evaluator whose chunks it runs (token -> BatchModel):
#: building it (model, dependence analysis, replicated members) costs about 0.2 s, once per
#: process and evaluator instead of once per chunk
_BATCHES: dict[tuple, BatchModel] = {}
#: per evaluator (its token), the compiled scenario it built when it was made, while it lives: the
#: batch models of this process and of workers forked from it start from it instead of
#: assembling the model again (a spawned worker, without it, assembles its own)
_TEMPLATES: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def _batch_model(token: tuple, scenario: Scenario, keys: tuple[str, ...], relative: bool = False) -> BatchModel:
    """The batch model of ``token`` in this process (built on first use; the previous one dropped)."""
    batch = _BATCHES.get(token)
    if batch is None:
        _BATCHES.clear()  # one evaluator at a time: its replicated members are not kept beyond it
        # the outputs read of each member: a member none of them depends on (the control arm under
        # uptake parameters) is integrated once for the chunk, not once per sample
        batch = BatchModel(
            scenario,
            keys,
            strict=False,
            outputs=sample_output_symbols(scenario),
            relative=relative,
            template=_TEMPLATES.get(token[0]),
        )
        _BATCHES[token] = batch
    return batch


def _evaluate_chunk(task: tuple) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Top-level (picklable) worker: outputs (M, len(OUTPUTS)), failed (M,), messages.

    Only the outputs leave the task: the chunk's run (states, parameters, reference values of
    every member) is dropped as soon as they are read.
    """
    token, scenario, keys, values, target, control, relative = task
    res = _batch_model(token, scenario, keys, relative).simulate(values)
    return sample_outputs(res, values.shape[0], target, control)


@dataclass
class ScenarioEvaluator:
    """Evaluate :data:`OUTPUTS` of one arm of a scenario for parameter samples.

    Attributes
    ----------
    scenario : validated scenario (its arms are reduced to control + target)
    arm : name of the analysed arm (default: the first non-control arm)
    engine : where chunks run
    chunk_members : members (samples x arms x doses) per chunk
    progress : show a progress bar on stderr (only when it is a terminal)
    backend : integrator backend, ``auto`` (numba when installed), ``numpy`` or ``numba``
    relative : values are multipliers of each instance's value in the scenario (the local
        method: a key whose populations or media hold different values keeps them apart)
    """

    scenario: Scenario
    arm: str | None = None
    engine: Engine | None = None
    chunk_members: int = DEFAULT_CHUNK_MEMBERS
    progress: bool = True
    backend: str = "auto"
    counts: dict = field(default_factory=dict)
    relative: bool = False

    def __post_init__(self):
        sc = self.scenario
        arms = list(sc.arms)
        if not arms:
            raise SensitivityError(f"{sc.source}: sensitivity needs arms (a control and an exosome arm)")
        names = [a.name for a in arms]
        control = next((a for a in arms if a.control), None)
        if self.arm is None:
            target = next(a for a in arms if not a.control)
        elif self.arm in names:
            target = arms[names.index(self.arm)]
        else:
            near = difflib.get_close_matches(self.arm, names, n=1)
            raise SensitivityError(
                f"--arm: no arm named {self.arm!r} in {sc.source}"
                + (f"; did you mean {near[0]!r}?" if near else "")
                + "; arms: "
                + ", ".join(repr(n) for n in names)
            )
        kept = [control, target] if control is not None and control is not target else [target]
        try:
            self.backend = resolve_backend(self.backend)
        except ValueError as exc:
            raise SensitivityError(str(exc)) from None
        self.scenario = sc.subset(arms=kept, solver=sc.solver.model_copy(update={"backend": self.backend}))
        self.target = kept.index(target)
        self.control = 0 if control is not None and control is not target else None
        self.target_name = target.name
        self.engine = self.engine or SerialEngine()
        self._token = uuid.uuid4().hex  # names this evaluator's batch model in worker processes
        n_grid = len(sc.dose_grid.values) if sc.dose_grid else 1
        self.members_per_sample = len(kept) * n_grid
        if self.chunk_members < 1:
            raise SensitivityError("--chunk-members must be positive")
        template = self._template = BatchModel(self.scenario, ()).template
        _TEMPLATES[self._token] = template
        model = template.model
        grid = sc.dose_grid
        if template.grid_event.get("scored") and grid is not None and 0 not in grid.values:
            warnings.warn(
                f"{sc.source}: the dose grid ({', '.join(f'{d:g}' for d in grid.values)} {grid.unit}) has no "
                "0 dose: sf2, dmf_at_sf0.1 and bystander_survival, read against the recipients' 0 dose, are "
                "empty (add 0 to the grid, e.g. --doses 0,...)",
                SensitivityWarning,
                stacklevel=2,
            )
        need = memory_estimate(self.chunk_members, model.n_states, model.n_parameters)
        if need > MEMORY_BOUND:
            raise SensitivityError(
                f"--chunk-members {self.chunk_members} needs about {need / 2**30:.1f} GiB "
                f"per chunk; lower it (memory bound {MEMORY_BOUND / 2**30:g} GiB)"
            )

    def chunk_samples(self, m: int) -> int:
        """Samples per chunk (one task) for a job of ``m`` samples.

        At most ``chunk_members`` members.  With per-member steps (numba) a sample's result does
        not depend on its chunk, so chunks are cut finer at no change of results: at most
        :data:`COMPILED_CHUNK_MEMBERS` members (less memory held at once; the batch model is
        built once per process, not per chunk) and, when workers share the job, at least eight
        tasks per worker, so that every worker stays busy to the end (members differ in cost: with
        four, two workers took 58.9 s for the Morris screening of the 30-fraction course, with
        eight 53.9 s).  The numpy backend shares
        steps within a chunk, so its chunks stay as given.  An :class:`~exosim.analysis.engine.AutoEngine`
        learns the job's size here (its number of chunks before the cut for workers).
        """
        per_chunk = max(1, self.chunk_members // self.members_per_sample)
        if self.backend == "numba":
            per_chunk = min(per_chunk, max(1, COMPILED_CHUNK_MEMBERS // self.members_per_sample))
        workers = self.engine.size(-(-m // per_chunk))  # --workers auto decides here
        if self.backend == "numba":
            if workers > 1:
                per_chunk = min(per_chunk, max(1, -(-m // (TASKS_PER_WORKER * workers))))
        return per_chunk

    @property
    def tolerance(self) -> float:
        """The solver's relative tolerance: outputs that vary less over the samples are constant."""
        return float(self.scenario.solver.rtol)

    def chunks(self, m: int) -> list[tuple[int, int]]:
        """(first, end) samples of each task of a job of ``m`` samples, in order.

        :meth:`chunk_samples` each; but when workers share a compiled job, the chunks shrink
        towards its end, each at most a ``2 x workers``-th of the samples left and no smaller
        than a quarter of the others (a guided schedule): the last tasks, whichever worker takes
        them, end close together, instead of up to one whole chunk apart while the other
        worker idles.  Chunks do not change the compiled backend's results.
        """
        per_chunk = self.chunk_samples(m)
        if self.backend != "numba" or self.engine.workers < 2:
            return [(i, min(i + per_chunk, m)) for i in range(0, m, per_chunk)]
        smallest = max(1, per_chunk // 4)
        bounds, i = [], 0
        while i < m:
            size = min(per_chunk, max(smallest, -(-(m - i) // (2 * self.engine.workers))))
            bounds.append((i, min(i + size, m)))
            i += size
        return bounds

    def __call__(self, keys: Sequence[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Outputs (M, len(OUTPUTS)), failed flags (M,) and messages for parameter values (M, D).

        Chunks are streamed: each task's outputs are written into the (M, len(OUTPUTS)) result as
        it arrives, so what is held beyond the outputs is one chunk's run per process.
        """
        values = np.atleast_2d(np.asarray(values, float))
        keys = tuple(keys)
        m = values.shape[0]
        bounds = self.chunks(m)
        token = (self._token, keys, self.relative)
        tasks = ((token, self.scenario, keys, values[i:j], self.target, self.control, self.relative) for i, j in bounds)
        bar = None
        if self.progress and sys.stderr.isatty() and len(bounds) > 1 and importlib.util.find_spec("tqdm"):
            from tqdm import tqdm

            bar = tqdm(total=m, unit="sample", file=sys.stderr, desc="exosim sensitivity")
        outs = np.full((m, len(OUTPUTS)), np.nan)
        failed = np.zeros(m, dtype=bool)
        messages: list[str] = []
        done = 0
        try:
            for out, fl, msg in self.engine.map(_evaluate_chunk, tasks):
                outs[done : done + out.shape[0]] = out
                failed[done : done + out.shape[0]] = fl
                # each sample's failures named by its row of the samples (the run's set numbers
                # count within a chunk, which depends on the engine)
                messages += [
                    f"sample {done + s}: " + re.sub(r"\bset \d+, ", "", m) if m else m for s, m in enumerate(msg)
                ]
                done += out.shape[0]
                if bar is not None:
                    bar.update(out.shape[0])
        finally:
            _BATCHES.pop(token, None)  # a serial engine ran the chunks here: drop the batch model
            if bar is not None:
                bar.close()
        self.counts["runs"] = self.counts.get("runs", 0) + m * self.members_per_sample
        return outs, failed, messages


# ---------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Analysis:
    """Result of one sensitivity analysis.

    Attributes
    ----------
    method : local | morris | sobol
    space : the factors
    outputs : output names
    indices : list of rows {output, parameter, <index columns>}
    samples : sampled parameter values (M, D)
    values : outputs per sample (M, len(outputs))
    failed : (M,) failed samples
    dropped : blocks or trajectories dropped because of failures
    messages : failure messages, one per failed sample
    """

    method: str
    space: ParameterSpace
    outputs: tuple[str, ...]
    indices: list[dict]
    samples: np.ndarray
    values: np.ndarray
    failed: np.ndarray
    dropped: int = 0
    blocks: int = 0
    messages: list[str] = field(default_factory=list)
    #: local method: the scenario's value of each factor (its first instance)
    nominal: np.ndarray | None = None
    #: the method's settings beyond N and the seed (bootstrap resamples, confidence level, levels, step)
    settings: dict = field(default_factory=dict)
    #: per output: blocks (Saltelli blocks, trajectories) analysed, samples where it is not defined,
    #: whether it is constant over the samples, and a note when its indices are empty or constant
    screening: dict = field(default_factory=dict)


Evaluate = Callable[[Sequence[str], np.ndarray], tuple[np.ndarray, np.ndarray, list[str]]]


#: step of the local method's central differences, in ln p
LOCAL_STEP = 1e-2


def local(
    evaluate: Evaluate, space: ParameterSpace, nominal: np.ndarray, outputs: Sequence[str], h: float = LOCAL_STEP
) -> Analysis:
    """Normalised local coefficients d ln y / d ln p by central differences in ln p."""
    d = space.dimension
    nominal = np.asarray(nominal, float)
    x = np.tile(nominal, (2 * d + 1, 1))
    for j in range(d):
        x[1 + 2 * j, j] *= np.exp(h)
        x[2 + 2 * j, j] *= np.exp(-h)
    y, failed, msgs = evaluate(space.names, x)
    bad = np.array([bool(failed.all())])  # one block; a failed run leaves its factor's coefficients NaN
    ys, _, screening = _screen(outputs, y, bad, 2 * d + 1, _tolerance(evaluate), 0, None, _label(evaluate))
    rows = []
    with np.errstate(invalid="ignore", divide="ignore"):
        ly = np.log(np.where(ys > 0, ys, np.nan))
    for k, out in enumerate(outputs):
        for j, name in enumerate(space.names):
            coef = (ly[1 + 2 * j, k] - ly[2 + 2 * j, k]) / (2 * h)
            rows.append(
                {
                    "output": out,
                    "parameter": name,
                    "nominal": nominal[j],
                    "value_at_nominal": y[0, k],
                    "coefficient": coef,
                }
            )
    return Analysis(
        "local",
        space,
        tuple(outputs),
        rows,
        x,
        y,
        failed,
        messages=[m for m in msgs if m],
        settings={"relative_step": h},
        screening=screening,
    )


def _drop_blocks(y: np.ndarray, failed: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Blocks (Saltelli blocks, Morris trajectories) to drop because a sample in them failed."""
    n_blocks = y.shape[0] // block
    bad = failed.reshape(n_blocks, block).any(axis=1)
    return np.repeat(~bad, block), bad, int(bad.sum()), n_blocks


def _usable_blocks(yk: np.ndarray, bad: np.ndarray, block: int) -> np.ndarray:
    """Rows of one output to analyse: blocks without failures whose values are all finite.

    An output that a scenario does not define (e.g. SF2 without a recipient dose curve) is
    NaN in every block and gets NaN indices; it does not remove blocks of other outputs.
    """
    ok = ~bad & np.isfinite(yk).reshape(bad.size, block).all(axis=1)
    return np.repeat(ok, block)


#: an output that varies over the samples by at most this share of the solver's relative tolerance
#: (relative to its largest value) is constant: the noise of integration and rounding is about 1e-6
#: to 0.02 of rtol here (delivery under cargo or repair parameters), while effects computed to the
#: solver's accuracy start near rtol (survival under release parameters: 0.94 rtol, accurate to 0.04)
CONSTANT_SHARE = 0.1


def _tolerance(evaluate: Evaluate) -> float:
    """The relative spread within which an output of ``evaluate`` counts as constant:
    :data:`CONSTANT_SHARE` of its solver's rtol (a scenario evaluator), else 0 (exactly constant)."""
    return CONSTANT_SHARE * float(getattr(evaluate, "tolerance", 0.0))


def _label(evaluate: Evaluate) -> str:
    """What a warning names: the scenario and arm of a scenario evaluator."""
    scenario, arm = getattr(evaluate, "scenario", None), getattr(evaluate, "target_name", None)
    return f"{scenario.name}, arm {arm!r}: " if scenario is not None and arm else ""


def _screen(
    outputs: Sequence[str],
    y: np.ndarray,
    bad: np.ndarray,
    block: int,
    tolerance: float,
    least: int,
    unit: str | None,
    label: str = "",
) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """Per output: the rows to analyse, and what the analysis can say of it.

    Returns the outputs with those that vary over the samples by no more than ``tolerance``
    relative to their largest value (rounding and integration noise: delivery under cargo
    parameters varied by 3e-13 and got Sobol indices above 1) set to one value, exactly constant;
    the rows (``_usable_blocks``) of each; and per output its screening record.  An output defined
    in some samples only (``dmf_at_sf0.1`` where survival does not reach 0.1 on the grid) is
    analysed on the blocks where it is defined, with a warning; fewer than ``least`` such blocks
    leave its indices empty.  ``bad``: blocks with a failed sample; ``unit``: what a block is
    (``None``: the local method's runs, one block); ``label``: names the job in warnings.
    """
    y = y.copy()
    rows, screening, partial, short = [], {}, [], []
    live = np.repeat(~bad, block)  # samples of blocks without failures
    failed = bool(bad.all())
    for k, out in enumerate(outputs):
        if unit is None:  # the local method's runs: one without the output leaves its coefficients NaN
            keep = np.isfinite(y[:, k]) & live
            blocks, undefined = int(keep.any()), 0
        else:
            keep = _usable_blocks(y[:, k], bad, block)
            blocks = int(keep.sum()) // block
            undefined = int((~np.isfinite(y[:, k]) & live).sum())
        used = y[keep, k]
        spread = float(np.ptp(used) / np.max(np.abs(used))) if used.size and np.max(np.abs(used)) > 0 else 0.0
        constant = bool(used.size) and spread <= tolerance
        if constant:
            y[keep, k] = used[0]
        note = None
        if failed:
            note = "every run failed" if unit is None else f"every one of the {bad.size} {unit}\nhas a failed sample"
        elif blocks == 0 and undefined < live.sum() and unit is not None:
            note = f"defined in some samples,\nbut in none of the {bad.size} {unit} whole"
        elif blocks == 0:
            note = "not defined for this scenario\nand dose grid"
        elif blocks < least:
            note = f"defined in {blocks} of {bad.size} {unit}:\ntoo few to analyse"
        elif constant:
            note = "constant over the samples\n(within the solver's tolerance)"
        if undefined and undefined < live.sum():
            samples = int(live.sum())
            if blocks >= least:
                partial.append(f"{out} in {undefined} of {samples} samples ({blocks} of {bad.size} {unit} analysed)")
            else:
                short.append(
                    f"{out} in {undefined} of {samples} samples ({blocks} of {bad.size} {unit} whole: too few)"
                )
        screening[out] = {
            "blocks_analysed": blocks if blocks >= least else 0,
            "blocks_defined": blocks,
            "undefined_samples": undefined,
            "relative_spread": spread if used.size else None,
            "constant": constant,
            "note": note,
        }
        rows.append(keep if blocks >= least else np.zeros_like(keep))
    if partial or short:
        warnings.warn(
            f"{label}outputs not defined in some samples (e.g. dmf_at_sf0.1 where survival does not reach 0.1 on "
            "the dose grid) are analysed on the rest"
            + (": " + "; ".join(partial) if partial else "")
            + ("; not analysed, defined in too few: " + "; ".join(short) if short else ""),
            SensitivityWarning,
            stacklevel=3,
        )
    if (
        not failed
        and any(rec["constant"] for rec in screening.values())
        and all(rec["note"] for rec in screening.values())
    ):
        warnings.warn(
            f"{label}no analysed output varies over the samples (each is constant within the solver's tolerance "
            "or not defined): the factors act on nothing these outputs read in this arm",
            SensitivityWarning,
            stacklevel=3,
        )
    return y, rows, screening


def _index_rows(output: str, space: ParameterSpace, res, keys: tuple[str, ...]) -> list[dict]:
    """One row per parameter of SALib result ``res`` (NaN indices when there was nothing to analyse)."""
    return [
        {"output": output, "parameter": name, **{k: res[k][j] if res else np.nan for k in keys}}
        for j, name in enumerate(space.names)
    ]


def morris(
    evaluate: Evaluate,
    space: ParameterSpace,
    outputs: Sequence[str],
    n: int,
    seed: int,
    levels: int = 4,
    resamples: int = 1000,
    conf_level: float = 0.95,
) -> Analysis:
    """Morris elementary effects: mu* (with bootstrap interval) and sigma per output."""
    from SALib.analyze import morris as morris_analyze
    from SALib.sample import morris as morris_sample

    if n < 2:
        raise SensitivityError(f"Morris needs at least 2 trajectories (sigma and the bootstrap of mu*), got N = {n}")
    problem = space.problem()
    xs = morris_sample.sample(problem, n, num_levels=levels, seed=seed)
    y, failed, msgs = evaluate(space.names, space.to_values(xs))
    _, bad, dropped, n_blocks = _drop_blocks(y, failed, space.dimension + 1)
    # sigma and the bootstrap of mu* need two trajectories
    ys, keeps, screening = _screen(
        outputs, y, bad, space.dimension + 1, _tolerance(evaluate), 2, "trajectories", _label(evaluate)
    )
    rows = []
    for k, out in enumerate(outputs):
        keep = keeps[k]
        with np.errstate(all="ignore"):
            res = (
                morris_analyze.analyze(
                    problem,
                    xs[keep],
                    ys[keep, k],
                    num_resamples=resamples,
                    conf_level=conf_level,
                    num_levels=levels,
                    seed=seed,
                    print_to_console=False,
                )
                if keep.any()
                else None
            )
        rows += _index_rows(out, space, res, ("mu_star", "mu_star_conf", "sigma", "mu"))
    settings = {"levels": levels, "bootstrap_resamples": resamples, "confidence_level": conf_level}
    return Analysis(
        "morris",
        space,
        tuple(outputs),
        rows,
        space.to_values(xs),
        y,
        failed,
        dropped,
        n_blocks,
        [m for m in msgs if m],
        settings=settings,
        screening=screening,
    )


def sobol(
    evaluate: Evaluate,
    space: ParameterSpace,
    outputs: Sequence[str],
    n: int,
    seed: int,
    resamples: int = 1000,
    conf_level: float = 0.95,
) -> Analysis:
    """Sobol first-order (S1) and total (ST) indices with bootstrap intervals; N a power of two."""
    if n < 2 or n & (n - 1):
        raise SensitivityError(
            f"Sobol N must be a power of two of at least 2 (Saltelli/Sobol' sequence balance), got {n}"
        )
    from SALib.sample import sobol as sobol_sample

    problem = space.problem()
    xs = sobol_sample.sample(problem, n, calc_second_order=False, scramble=True, seed=seed)
    samples = space.to_values(xs)
    y, failed, msgs = evaluate(space.names, samples)
    _, bad, dropped, n_blocks = _drop_blocks(y, failed, space.dimension + 2)
    ys, keeps, screening = _screen(
        outputs, y, bad, space.dimension + 2, _tolerance(evaluate), 2, "blocks", _label(evaluate)
    )
    usable = {}  # output -> its outputs of the usable blocks, if enough and not constant
    for k, out in enumerate(outputs):
        yk = ys[keeps[k], k]
        if yk.size and np.ptp(yk) > 0:  # (the variance of equal values need not be 0)
            usable[out] = yk
    # the bootstrap on the evaluation's engine (its workers have SALib from this process): one task
    # per group of resample columns, for every output at once (the outputs share the resample
    # draws: drawn once per task); each column's estimate is the same number wherever it is computed
    engine = getattr(evaluate, "engine", None) or SerialEngine()
    parts = _column_parts(resamples, engine.workers)
    groups: dict[int, list[str]] = {}  # outputs of the same size share their draws
    for out, yk in usable.items():
        groups.setdefault(yk.size, []).append(out)
    tasks = [
        (problem, [usable[o] for o in outs], resamples, seed, BOOTSTRAP_BLOCK, lo, hi)
        for outs in groups.values()
        for lo, hi in parts
    ]
    pieces = iter(engine.map(_bootstrap_task, tasks))
    found = {}
    for outs in groups.values():
        group = [next(pieces) for _ in parts]
        for k, out in enumerate(outs):
            s1 = np.concatenate([g[k][0] for g in group], axis=1)
            st = np.concatenate([g[k][1] for g in group], axis=1)
            found[out] = _indices(problem, usable[out], s1, st, group[0][k][2], conf_level)
    rows = []
    for out in outputs:
        rows += _index_rows(out, space, found.get(out), ("S1", "S1_conf", "ST", "ST_conf"))
    settings = {"bootstrap_resamples": resamples, "confidence_level": conf_level, "second_order": False}
    messages = [m for m in msgs if m]
    found = (rows, samples, y, failed, dropped, n_blocks, messages)
    return Analysis("sobol", space, tuple(outputs), *found, settings=settings, screening=screening)


def _column_parts(resamples: int, workers: int) -> list[tuple[int, int]]:
    """The bootstrap's resample columns cut into one contiguous range per worker, each at least two
    columns wide (numpy sums a single column differently); one range on one process."""
    parts = max(1, min(int(workers), resamples // 2))
    edges = [round(i * resamples / parts) for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _bootstrap_task(task: tuple) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Top-level (picklable) task: :func:`_bootstrap` of outputs of one size, resample columns lo:hi."""
    problem, ys, resamples, seed, block, lo, hi = task
    # a Generator: SALib falls back to the global RNG for the integer seed 0 ("if seed:"),
    # which made the bootstrap intervals of --seed 0 irreproducible; same stream otherwise
    return _bootstrap(problem, ys, resamples, np.random.default_rng(seed), block, lo, hi)


#: elements of one block of bootstrap resamples (rows x resamples) in :func:`sobol_indices`
BOOTSTRAP_BLOCK = 2**19


def sobol_indices(
    problem: dict,
    y: np.ndarray,
    resamples: int,
    conf_level: float,
    rng: np.random.Generator,
    block: int = BOOTSTRAP_BLOCK,
) -> dict[str, np.ndarray]:
    """S1, S1_conf, ST and ST_conf of ``y`` (N (D + 2) Saltelli outputs): SALib's
    ``sobol.analyze`` without second order, in bounded memory.

    SALib draws the bootstrap resamples as one (N, resamples) index array and evaluates every
    estimator on (N, resamples) copies of the outputs: about 250 MB at N = 4096 and 1000
    resamples, growing with N.  Here the same draws (one generator, drawn row block by row block:
    the same stream) are kept as 32-bit indices, and SALib's estimators run on blocks of
    resample columns of about ``block`` elements, the terms they share (the pooled outputs'
    range and variance) computed once per block for all factors (a third of the time).  Each
    resample's estimate is a column reduction of its own, computed in the same order whatever the
    block (no block is one column wide: numpy sums a single column pairwise), so the numbers are
    SALib's exactly (``tests/test_sensitivity.py`` compares them), and :func:`sobol` may compute
    the columns in parts, on several processes.
    """
    ((s1, st, spread),) = _bootstrap(problem, [y], resamples, rng, block, 0, resamples)
    return _indices(problem, y, s1, st, spread, conf_level)


def _separated(y: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SALib's A, B and AB blocks of the standardised outputs ``y`` (N (D + 2))."""
    from SALib.analyze import sobol as sobol_analyze

    y = np.asarray(y, dtype=float)
    if y.size % (d + 2):
        raise SensitivityError(f"{y.size} Sobol outputs are not a multiple of D + 2 = {d + 2}")
    a, b, ab, _ = sobol_analyze.separate_output_values((y - y.mean()) / y.std(), d, y.size // (d + 2), False)
    return a, b, ab


def _bootstrap(
    problem: dict, ys: Sequence[np.ndarray], resamples: int, rng: np.random.Generator, block: int, lo: int, hi: int
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per output of ``ys`` (all of one size): the bootstrap estimates S1 and ST (D, hi - lo) of the
    resample columns ``lo:hi`` and the range of the resampled outputs (:func:`sobol_indices`)."""
    if resamples < 1:
        raise SensitivityError(f"bootstrap resamples must be positive, got {resamples}")
    d = problem["num_vars"]
    separated = [_separated(y, d) for y in ys]
    n = separated[0][0].size
    r = np.empty((n, resamples), dtype=np.int32 if n < 2**31 else np.int64)
    used = np.zeros(n, dtype=bool)  # samples drawn at least once (their range is that of all draws)
    step = max(1, block // max(resamples, 1))
    for i in range(0, n, step):
        r[i : i + step] = rng.integers(n, size=(min(step, n - i), resamples))
        used[r[i : i + step]] = True
    width = min(hi - lo, max(2, block // n))
    edges = list(range(lo, hi, width)) + [hi]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]  # a last block one column wide joins the one before
    tiny = np.finfo(float).eps
    found = []
    for a, b, ab in separated:
        drawn = np.r_[a[used], b[used]]
        spread = drawn.max() - drawn.min() if drawn.size else 0.0  # SALib: np.ptp of every resampled value
        s1, st = np.empty((d, hi - lo)), np.empty((d, hi - lo))  # per factor, the resamples' estimates
        for b_lo, b_hi in zip(edges[:-1], edges[1:]):
            idx = r[:, b_lo:b_hi].astype(np.intp)
            ar, br = a[idx], b[idx]
            cols = slice(b_lo - lo, b_hi - lo)
            # SALib's first_order and total_order, their shared terms (the pooled outputs, their
            # range and variance: the same for every factor) computed once per block, not 2 d times
            pooled = np.r_[ar, br]
            if np.ptp(pooled) <= tiny:  # SALib: zeros when every value of the block is the same
                s1[:, cols] = st[:, cols] = 0.0
                continue
            var = np.var(pooled, axis=0)
            for j in range(d):
                abr = ab[idx, j]
                np.divide(np.mean(br * (abr - ar), axis=0), var, out=s1[j, cols], where=var > tiny)
                s1[j, cols][var <= tiny] = 0.0
                np.divide(0.5 * np.mean((ar - abr) ** 2, axis=0), var, out=st[j, cols], where=var > tiny)
                st[j, cols][var <= tiny] = 0.0
        found.append((s1, st, spread))
    return found


def _indices(
    problem: dict, y: np.ndarray, s1: np.ndarray, st: np.ndarray, spread: float, conf_level: float
) -> dict[str, np.ndarray]:
    """S1 and ST of ``y`` and their intervals from the bootstrap estimates ``s1``, ``st`` (D, resamples)."""
    from SALib.analyze import sobol as sobol_analyze
    from scipy.stats import norm

    d = problem["num_vars"]
    a, b, ab = _separated(y, d)
    z = norm.ppf(0.5 + conf_level / 2)
    res = {key: np.zeros(d) for key in ("S1", "S1_conf", "ST", "ST_conf")}
    with warnings.catch_warnings():  # SALib's note on constant outputs: not one per output
        warnings.filterwarnings("ignore", message="Constant values encountered")
        for j in range(d):
            res["S1"][j] = sobol_analyze.first_order(a, ab[:, j], b)
            res["ST"][j] = sobol_analyze.total_order(a, ab[:, j], b)
            res["S1_conf"][j] = z * s1[j].std(ddof=1) if spread != 0.0 else 0.0
            res["ST_conf"][j] = z * st[j].std(ddof=1) if spread != 0.0 else 0.0
    return res


def ishigami(names: Sequence[str], x: np.ndarray, a: float = 7.0, b: float = 0.1):
    """Ishigami test function in the evaluator signature (no failures)."""
    x = np.atleast_2d(x)
    y = np.sin(x[:, 0]) + a * np.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * np.sin(x[:, 0])
    return y[:, None], np.zeros(x.shape[0], bool), [""] * x.shape[0]


def nominal_values(scenario: Scenario, keys: Sequence[str]) -> np.ndarray:
    """Nominal value of each key in a scenario (first instance; all instances share it unless
    overridden); NaN for a key the scenario does not have (an inert factor)."""
    return BatchModel(scenario, keys, strict=False).nominal


def inert_factors(scenario: Scenario, keys: Sequence[str]) -> list[str]:
    """Factors that do not occur in the scenario: sampled, but without any effect on the outputs."""
    batch = BatchModel(scenario, keys, strict=False)
    return [k for k, cols in zip(keys, batch.columns) if not cols]


def memory_estimate(chunk_members: int, n_states: int, n_parameters: int) -> float:
    """Bytes held while integrating one chunk (states, 7 stages, work arrays, parameters)."""
    return chunk_members * 8.0 * (12 * n_states + 2 * n_parameters)


#: analysis methods
METHODS = ("local", "morris", "sobol")


def sample_count(method: str, dimension: int, n: int) -> int:
    """Parameter samples an analysis evaluates: 2D + 1 (local), N (D + 1) (Morris), N (D + 2) (Sobol)."""
    return {"local": 2 * dimension + 1, "morris": n * (dimension + 1), "sobol": n * (dimension + 2)}[method]


def analyse(evaluator: ScenarioEvaluator, space: ParameterSpace, method: str, n: int, seed: int) -> Analysis:
    """Run one analysis of :data:`OUTPUTS` (``local``, ``morris`` or ``sobol``) with ``n`` base samples."""
    if method not in METHODS:
        raise SensitivityError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    if n < 1:
        raise SensitivityError(f"N must be positive, got {n}")
    runs = sample_count(method, space.dimension, n)
    if runs > MAX_SAMPLES:
        raise SensitivityError(f"{runs} samples exceed the limit of {MAX_SAMPLES}; lower N")
    if method == "local":
        # each instance of a key is scaled about its own value in the scenario (a medium and the
        # blood may clear vesicles at different rates): the coefficients are at the nominal point
        nominal = nominal_values(evaluator.scenario, space.names)
        evaluator.relative = True
        try:
            res = local(evaluator, space, np.ones(space.dimension), OUTPUTS)
        finally:
            evaluator.relative = False
        for r in res.indices:
            r["nominal"] = nominal[space.names.index(r["parameter"])]
        return replace(res, samples=res.samples * nominal, nominal=nominal)
    if method == "morris":
        return morris(evaluator, space, OUTPUTS, n, seed)
    return sobol(evaluator, space, OUTPUTS, n, seed)
