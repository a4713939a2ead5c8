"""Published evidence as data, and the scorecard that judges the model against it.

An evidence file (``evidence/<paper>.yaml``) holds one paper's quantitative observations:

.. code-block:: yaml

    source: {citation: "Liu Z et al. 2006 Radiat Res 166:19", doi: 10.1667/RR3580.1}
    entries:
      - id: liu2006_iccm_below_threshold
        measured: relative clonogenic survival of recipients of medium from 1 mGy donors
        cells: HPV-G keratinocytes (donors and recipients)
        module: bystander
        role: validation
        protocol: protocols/iccm_low_dose.yaml
        observable: {quantity: survival, arm: ICCM, dose: 1 mGy}
        observed: {value: 1.0, tolerance: 0.05, tolerance_reason: "..."}
        obtained: 'abstract: "... a dose threshold around 2 mGy ..."'

Each entry runs its protocol (a scenario file; always on catalogue biology: a scenario's
``hypothesis:`` blocks are left out, or flagged and not counted with
``with_hypotheses=True``), reads one model value and compares it with the reported value.
An entry passes when the model lies inside the observation's band (:meth:`Observed.bounds`).
A run that fails is a failed row, never a dropped one.  See docs/evidence.md.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from exosim.model.declare import SEP
from exosim.model.units import QuantityError, conversion_factor
from exosim.scenario.load import load_scenario, read_yaml_mapping
from exosim.scenario.observables import control_arm
from exosim.scenario.runner import CompiledScenario
from exosim.scenario.schema import Scenario, ScenarioError, ScenarioWarning, quantity_validator

__all__ = [
    "EvidenceError",
    "Entry",
    "Evidence",
    "ROLES",
    "MODULES",
    "load_evidence",
    "run_evidence",
    "run_evidence_sets",
    "score_rows",
    "pass_rates",
    "evidence_hash",
]

ROLES = ("calibration", "validation")
#: what an entry tests, by model module or experiment type
MODULES = (
    "release",
    "cargo",
    "uptake",
    "intervention",
    "repair",
    "lq",
    "fractionation",
    "bystander",
    "exosome_survival",
    "transport",
)
#: points recorded over a window for max / time_of_max / half_time
WINDOW_POINTS = 241


class EvidenceError(ScenarioError):
    """Invalid evidence input: names the file, the key path and what was expected (a kind of
    :class:`~exosim.scenario.schema.ScenarioError`: bad input, exit code 2)."""


# ---------------------------------------------------------------------- schema
Time = Annotated[float, quantity_validator("time", allow_negative=True)]
Dose = Annotated[float, quantity_validator("dose")]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Text = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """The paper: citation and DOI (or, where the DOI could not be read, its PubMed id)."""

    citation: Text
    doi: Annotated[str, Field(pattern=r"^10\.\d{4,9}/\S+$")] | None = None
    pmid: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _identified(self) -> SourceSpec:
        if self.doi is None and self.pmid is None:
            raise ValueError("give the paper's doi (or its pmid when no DOI could be read)")
        return self

    @property
    def identifier(self) -> str:
        return f"doi:{self.doi}" if self.doi else f"PMID {self.pmid}"


class Observed(_Strict):
    """The reported value and its uncertainty: exactly one of ``sd``, ``sem`` (with ``n``
    when reported), ``interval`` (a reported CI or range) or ``tolerance`` (a stated relative
    tolerance, for values reported without uncertainty; ``tolerance_reason`` says why).

    A paper that reports only a direction or a bound gives an ``interval`` and no ``value``:
    every model value inside it fits equally well (:attr:`bound_only`; the calibration
    objective adds nothing inside the band), and the scorecard shows the band's middle."""

    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    sd: Positive | None = None
    sem: Positive | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    interval: tuple[float, float] | None = None
    tolerance: Annotated[float, Field(gt=0, lt=10)] | None = None
    tolerance_reason: str | None = None

    @model_validator(mode="after")
    def _one_uncertainty(self) -> Observed:
        given = [k for k in ("sd", "sem", "interval", "tolerance") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of sd, sem, interval or tolerance, got {given or 'none'}")
        if self.value is None and self.interval is None:
            raise ValueError("give the reported value (only a direction or a bound may omit it, as an interval)")
        if self.interval is not None:
            lo, hi = self.interval
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"interval must be two finite numbers, low < high, got {list(self.interval)}")
            if self.value is not None and not lo <= self.value <= hi:
                raise ValueError(f"value {self.value:g} lies outside its interval [{lo:g}, {hi:g}]")
        if self.tolerance is not None and not (self.tolerance_reason or "").strip():
            raise ValueError("a tolerance needs a tolerance_reason (why no reported uncertainty is used)")
        return self

    @property
    def bound_only(self) -> bool:
        """Only a direction or a bound was reported (an interval without a value)."""
        return self.value is None

    @property
    def shown(self) -> float:
        """The value the scorecard shows: the reported one, or the middle of a bound-only band
        (geometric for a positive band, the observables' log axes)."""
        if self.value is not None:
            return self.value
        lo, hi = self.interval
        return math.sqrt(lo * hi) if lo > 0 else 0.5 * (lo + hi)

    def bounds(self) -> tuple[float, float]:
        """The band a model value must fall in: value +/- 2 SD (a replicate experiment's
        spread; SD = SEM * sqrt(n) when n is reported, else the SEM itself), the reported
        interval, or value * (1 -/+ tolerance)."""
        if self.interval is not None:
            return float(self.interval[0]), float(self.interval[1])
        if self.tolerance is not None:
            half = abs(self.value) * self.tolerance
        else:
            sd = self.sd if self.sd is not None else self.sem * math.sqrt(self.n or 1)
            half = 2.0 * sd
        return self.value - half, self.value + half

    def describe(self) -> str:
        """The uncertainty as reported (for the scorecard)."""
        n = f", n={self.n}" if self.n else ""
        if self.sd is not None:
            return f"SD {self.sd:g}{n}"
        if self.sem is not None:
            return f"SEM {self.sem:g}{n}"
        if self.interval is not None:
            kind = "bound only (no value reported)" if self.bound_only else "interval"
            return f"{kind} [{self.interval[0]:g}, {self.interval[1]:g}]{n}"
        return f"stated tolerance {self.tolerance:.0%}{n}"


class MemberSpec(_Strict):
    """Which member (arm, grid dose) and when; unset fields take the observable's."""

    arm: str | None = None
    dose: Dose | None = None
    at: Time | None = None


class ObservableSpec(MemberSpec):
    """The model value an entry reads.

    ``quantity``: ``survival`` (scored survival of ``arm`` at grid ``dose``, normalised as
    ``normalise``), ``summary.<column>`` (a column of the run's summary for ``arm``) or a
    model state or rule ``namespace.name`` (``recipients.dsb``) at time ``at`` (value) or over
    ``window`` (``max``, ``time_of_max``, ``half_time``: time after the window start to fall to
    half the start value).  ``relative_to``: divide by the same quantity of another member or
    time.  ``per``: divide by another quantity of the same member and time (copies per
    vesicle: ``donor_flask.mir_22_vesicular`` per ``donor_flask.vesicles``; alpha/beta:
    ``summary.alpha_eff_per_Gy`` per ``summary.beta_eff_per_Gy2``).  ``unit``: the unit of the
    reported value (model values are converted).
    """

    quantity: Text
    normalise: Literal["control", "within_arm", "none"] = "control"
    statistic: Literal["value", "max", "time_of_max", "half_time"] = "value"
    window: tuple[Time, Time] | None = None
    relative_to: MemberSpec | None = None
    per: str | None = None
    unit: str | None = None


class EntrySpec(_Strict):
    """One published observation."""

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    measured: Text
    cells: Text
    module: Literal[MODULES]  # type: ignore[valid-type]
    role: Literal[ROLES]  # type: ignore[valid-type]
    protocol: Text
    observable: ObservableSpec
    observed: Observed
    obtained: Text
    note: str | None = None


class EvidenceFile(_Strict):
    """One paper's evidence file."""

    source: SourceSpec
    entries: Annotated[list[EntrySpec], Field(min_length=1)]


# ---------------------------------------------------------------------- loaded entries
@dataclass(frozen=True)
class Entry:
    """A checked evidence entry with its paper and the protocol file it runs."""

    spec: EntrySpec
    source: SourceSpec
    file: str
    index: int
    protocol: Path

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def where(self) -> str:
        return f"entries[{self.index}]"


@dataclass
class Evidence:
    """Every loaded entry, and the protocols they run (loaded and compiled once)."""

    entries: list[Entry]
    protocols: dict[Path, Scenario] = field(default_factory=dict)
    compiled: dict[Path, CompiledScenario] = field(default_factory=dict)
    with_hypotheses: bool = False
    _replicated: dict[tuple[Path, int], CompiledScenario] = field(default_factory=dict, repr=False)

    def replicated(self, protocol: Path, replicates: int) -> CompiledScenario:
        """The protocol compiled with ``replicates`` copies of its members (built once, reused)."""
        key = (protocol, replicates)
        if key not in self._replicated:
            self._replicated[key] = CompiledScenario(self.protocols[protocol], replicates=replicates)
        return self._replicated[key]

    def select(self, roles: Sequence[str] | None = None, ids: Sequence[str] | None = None) -> Evidence:
        """The entries of some roles and/or ids (unknown ids are an error)."""
        known = {e.id for e in self.entries}
        for i in ids or []:
            if i not in known:
                near = difflib.get_close_matches(i, sorted(known), n=1)
                raise EvidenceError(
                    "evidence", "", f"unknown entry {i!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                )
        keep = [e for e in self.entries if (not roles or e.role in roles) and (not ids or e.id in set(ids))]
        if self.entries and not keep:
            asked = " and ".join(
                x for x in (f"role {', '.join(roles)}" if roles else "", "the ids given" if ids else "") if x
            )
            raise EvidenceError("evidence", "", f"no entry with {asked} (of {len(self.entries)} entries)")
        return Evidence(keep, self.protocols, self.compiled, self.with_hypotheses, self._replicated)


def _first_error(exc: ValidationError, source: str) -> EvidenceError:
    err = exc.errors()[0]
    loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]).replace(".[", "[")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "required field missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "literal_error":
        msg = f"expected {err['ctx']['expected']}, got {err['input']!r}"
    return EvidenceError(source, loc, msg)


def evidence_files(path: str | Path) -> list[Path]:
    """The evidence files of a folder (``*.yaml``, sorted) or one file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.yaml"))
        if not files:
            raise EvidenceError(str(path), "", "no evidence files (*.yaml) in this folder")
        return files
    if not path.exists():
        raise EvidenceError(str(path), "", "no such file or folder")
    return [path]


def load_evidence(path: str | Path = "evidence", *, with_hypotheses: bool = False) -> Evidence:
    """Read and check every entry of the evidence files under ``path``.

    Every protocol is loaded and compiled, and every observable resolved (arm, grid dose,
    time, quantity, unit), so a bad entry fails here, before anything runs.

    Raises
    ------
    EvidenceError
        One message naming the file, the key path and what was expected.
    """
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    ev = Evidence(entries, with_hypotheses=with_hypotheses)
    for f in evidence_files(path):
        src = str(f)
        try:
            data = read_yaml_mapping(f.read_bytes(), src, "'source' and 'entries'")
        except ScenarioError as exc:
            raise EvidenceError(src, exc.path, exc.problem) from None
        try:
            spec = EvidenceFile.model_validate(data)
        except ValidationError as exc:
            raise _first_error(exc, src) from None
        for i, e in enumerate(spec.entries):
            if e.id in seen:
                raise EvidenceError(src, f"entries[{i}].id", f"duplicate entry id {e.id!r} (also in {seen[e.id]})")
            seen[e.id] = src
            entry = Entry(e, spec.source, src, i, (f.parent / e.protocol).resolve())
            _check_entry(ev, entry)
            entries.append(entry)
    return ev


def _protocol(ev: Evidence, entry: Entry) -> tuple[Scenario, CompiledScenario]:
    p = entry.protocol
    if p not in ev.protocols:
        if not p.is_file():
            raise EvidenceError(entry.file, f"{entry.where}.protocol", f"no scenario file {entry.spec.protocol!r}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ScenarioWarning)
                sc = load_scenario(p, hypotheses=ev.with_hypotheses)
            compiled = CompiledScenario(sc)
        except ScenarioError as exc:
            raise EvidenceError(entry.file, f"{entry.where}.protocol", f"the protocol is invalid: {exc}") from None
        ev.protocols[p], ev.compiled[p] = sc, compiled
    return ev.protocols[p], ev.compiled[p]


def _model_units(model) -> dict[str, str]:
    return {**{s.name: s.unit for s in model.states}, **{s.name: s.unit for s in model.derived + model.rules}}


def _check_entry(ev: Evidence, entry: Entry) -> None:
    sc, compiled = _protocol(ev, entry)
    obs = entry.spec.observable
    where = f"{entry.where}.observable"

    def fail(key: str, msg: str) -> EvidenceError:
        return EvidenceError(entry.file, f"{where}.{key}" if key else where, msg)

    arms = [a.name for a in compiled.arms]
    grid = sorted(set(float(x) for x in compiled.grid if np.isfinite(x)))
    start, end = sc.timeline_start, compiled.score_event.at
    for key, member in (("", obs), ("relative_to.", obs.relative_to)):
        if member is None:
            continue
        if member.arm is not None and member.arm not in arms:
            near = difflib.get_close_matches(member.arm, arms, n=1)
            raise fail(
                f"{key}arm",
                f"no arm {member.arm!r} in the protocol"
                + (f"; did you mean {near[0]!r}?" if near else f" (arms: {arms})"),
            )
        if member.dose is not None and not any(math.isclose(member.dose, g, rel_tol=1e-9, abs_tol=1e-12) for g in grid):
            raise fail(f"{key}dose", f"{member.dose:g} Gy is not a dose of the protocol's grid {grid} Gy")
        if member.at is not None and not start <= member.at <= end:
            raise fail(f"{key}at", f"{member.at:g} h is outside the protocol's timeline [{start:g}, {end:g}] h")
    if len(arms) > 1 and obs.arm is None:
        raise fail("arm", f"the protocol has {len(arms)} arms: name one of {arms}")
    if len(grid) > 1 and obs.dose is None and not obs.quantity.startswith("summary."):
        raise fail("dose", f"the protocol's grid has {len(grid)} doses: name one of {grid} Gy")
    q = obs.quantity
    model_unit = _quantity_unit(compiled, q, lambda msg: fail("quantity", msg))
    if obs.statistic == "value" and obs.window is not None:
        raise fail("window", "a window needs a statistic (max, time_of_max or half_time)")
    if obs.statistic != "value" and obs.at is not None:
        raise fail("at", f"statistic {obs.statistic!r} reads a window, not a time 'at'")
    if (
        obs.relative_to is not None
        and obs.relative_to.at is not None
        and (obs.statistic != "value" or q == "survival" or q.startswith("summary."))
    ):
        raise fail("relative_to.at", f"{q!r} read as {obs.statistic!r} has no time to change")
    if q == "survival" or q.startswith("summary."):
        if obs.at is not None or obs.window is not None or obs.statistic != "value":
            raise fail("quantity", f"{q!r} is read at scoring: give no 'at', 'window' or 'statistic'")
    else:
        if obs.statistic == "value" and obs.at is None:
            raise fail("at", f"{q!r} needs the time 'at' which it is read (or a window and a statistic)")
        if obs.statistic != "value":
            if obs.window is None:
                raise fail("window", f"statistic {obs.statistic!r} needs a window [start, end]")
            lo, hi = obs.window
            if not lo < hi:
                raise fail("window", f"[{lo:g}, {hi:g}] h: expected [start, end] with the start before the end")
            if not start <= lo < hi <= end:
                raise fail(
                    "window", f"[{lo:g}, {hi:g}] h must lie inside the protocol's timeline [{start:g}, {end:g}] h"
                )
        if obs.statistic in ("time_of_max", "half_time"):
            model_unit = "h"
    if obs.per is not None:
        if (
            obs.statistic != "value"
            or "survival" in (q, obs.per)
            or (q.startswith("summary.") != obs.per.startswith("summary."))
        ):
            raise fail(
                "per",
                "divide a value by another of the same kind: a summary column by a summary "
                "column, a state or rule at 'at' by another",
            )
        per_unit = _quantity_unit(compiled, obs.per, lambda msg: fail("per", msg))
        model_unit = "1" if per_unit == model_unit else f"{model_unit}/({per_unit})"
    if obs.relative_to is not None:
        model_unit = "1"
    if obs.unit is not None:
        try:
            conversion_factor(model_unit, obs.unit)
        except QuantityError:
            raise fail(
                "unit", f"{obs.unit!r} cannot be converted to {model_unit!r}, the unit of the model value"
            ) from None


def _quantity_unit(compiled: CompiledScenario, q: str, fail) -> str:
    """The model unit of quantity ``q``; ``fail(message)`` when the model has no such quantity."""
    if q.startswith("summary."):
        from exosim.scenario.observables import summary_columns

        columns = [c for c in summary_columns(compiled.model) if c not in ("arm", "control")]
        if q.split(".", 1)[1] not in columns:
            near = difflib.get_close_matches(q.split(".", 1)[1], columns, n=1)
            raise fail(
                f"unknown summary column {q!r}"
                + (f" (did you mean 'summary.{near[0]}'?)" if near else f": expected one of {', '.join(columns)}")
            )
    if q == "survival" or q.startswith("summary."):
        for suffix, unit in (("_per_Gy2", "1/Gy^2"), ("_per_Gy", "1/Gy"), ("_Gy", "Gy")):
            if q.endswith(suffix):
                return unit
        return "1"
    name = q.replace(".", SEP, 1)
    model = compiled.model
    if name not in model.state_index and name not in model.observable_index:
        pop, _, local = q.partition(".")
        if local.startswith("foci") and pop in {p.name for p in model.populations}:
            raise fail(
                f"observable {q!r} needs the foci assay: add 'assays: [foci]' to population {pop!r} of the protocol"
            )
        known = sorted(n.replace(SEP, ".", 1) for n in list(model.state_index) + list(model.observable_index))
        near = difflib.get_close_matches(q, known, n=1)
        raise fail(
            f"unknown observable {q!r}: expected 'survival', 'summary.<column>' or a model state or rule "
            + (f"(did you mean {near[0]!r}?)" if near else "written namespace.name")
        )
    return _model_units(model)[name]


# ---------------------------------------------------------------------- running
def _record_times(entries: list[Entry]) -> np.ndarray | None:
    times: set[float] = set()
    for e in entries:
        obs = e.spec.observable
        if obs.quantity == "survival" or obs.quantity.startswith("summary."):
            continue
        if obs.statistic == "value":
            times.add(float(obs.at))
            if obs.relative_to is not None:
                times.add(float(obs.relative_to.at if obs.relative_to.at is not None else obs.at))
        else:
            times.update(np.linspace(obs.window[0], obs.window[1], WINDOW_POINTS).tolist())
    return np.array(sorted(times)) if times else None


def _member(compiled: CompiledScenario, arm: str | None, dose: float | None) -> int:
    arms = [a.name for a in compiled.arms]
    a = arms.index(arm) if arm is not None else (control_arm(compiled.arms) or 0)
    rows = np.flatnonzero(compiled.arm_index == a)
    if dose is None:
        return int(rows[0])
    grid = compiled.grid[rows]
    return int(rows[np.argmin(np.abs(grid - dose))])


def _value(entry: Entry, compiled: CompiledScenario, res, survival: list[dict], summary: list[dict]) -> float:
    obs = entry.spec.observable

    def read(member: MemberSpec | ObservableSpec, fallback: ObservableSpec, quantity: str | None = None) -> float:
        q = quantity or obs.quantity
        arm = member.arm if member.arm is not None else fallback.arm
        dose = member.dose if member.dose is not None else fallback.dose
        at = member.at if member.at is not None else fallback.at
        m = _member(compiled, arm, dose)
        if res.status[m] != 0:
            raise RuntimeError(f"the solver failed for arm {res.arms[res.arm_index[m]]!r}: {res.messages[m]}")
        if q == "survival":
            col = {"control": "sf_vs_untreated", "within_arm": "sf_within_arm", "none": "sf"}[obs.normalise]
            return float(survival[m][col])
        if q.startswith("summary."):
            col = q.split(".", 1)[1]
            row = next(r for r in summary if r["arm"] == res.arms[res.arm_index[m]])
            if col not in row:
                raise RuntimeError(f"the summary has no column {col!r} (columns: {sorted(row)})")
            return float(row[col])
        name = q.replace(".", SEP, 1)
        model = compiled.model
        series = (
            res.states[m, :, model.state_index[name]]
            if name in model.state_index
            else res.observables[m, :, model.observable_index[name]]
        )
        if obs.statistic == "value":
            return float(series[int(np.argmin(np.abs(res.times - at)))])
        lo, hi = obs.window
        own = np.linspace(lo, hi, WINDOW_POINTS)  # the entry's own grid: results never depend on
        idx = np.searchsorted(res.times, own - 1e-9)  # which other entries share the protocol
        t, y = res.times[idx], series[idx]
        if obs.statistic == "max":
            return float(np.max(y))
        if obs.statistic == "time_of_max":
            if np.ptp(y) <= 1e-12 * max(1.0, float(np.max(np.abs(y)))):
                raise RuntimeError(f"{q} stays at {y[0]:.3g} over the window: it has no peak")
            return float(t[int(np.argmax(y))] - lo)
        below = np.flatnonzero(y <= 0.5 * y[0])
        if y[0] <= 0:
            raise RuntimeError(f"{q} is {y[0]:.3g} at the window start: no half-time (start after the event?)")
        if not below.size:
            raise RuntimeError(f"{q} does not fall to half its value within the window")
        k = below[0]
        t0, t1, y0, y1 = t[k - 1], t[k], y[k - 1], y[k]
        return float(t0 + (0.5 * y[0] - y0) * (t1 - t0) / (y1 - y0) - lo)

    def one(member: MemberSpec | ObservableSpec) -> float:
        v = read(member, obs)
        return v / read(member, obs, obs.per) if obs.per is not None else v

    value = one(obs)
    if obs.relative_to is not None:
        reference = one(obs.relative_to)
        if reference == 0:
            raise RuntimeError(f"the reference (relative_to) of {obs.quantity} is 0: no ratio to compare")
        return value / reference
    if obs.unit is not None:
        unit_from = _quantity_unit(compiled, obs.quantity, RuntimeError)
        if obs.statistic in ("time_of_max", "half_time"):
            unit_from = "h"
        elif obs.per is not None:
            per_unit = _quantity_unit(compiled, obs.per, RuntimeError)
            unit_from = "1" if per_unit == unit_from else f"{unit_from}/({per_unit})"
        value *= conversion_factor(unit_from, obs.unit)
    return value


def run_evidence(
    ev: Evidence,
    *,
    parameters: dict[str, float] | None = None,
    solver: str | None = None,
    runner: Callable | None = None,
    progress: bool = False,
) -> list[dict]:
    """Run every entry's protocol once and read its model value; one row per entry.

    Parameters
    ----------
    parameters : parameter name -> value applied in every protocol (the shared parameters of
        a calibration; names as :meth:`~exosim.scenario.runner.CompiledScenario.columns`
        reads them); default the catalogues
    solver : backend name; default each protocol's ``solver.backend``
    runner : called as ``runner(compiled, parameters_matrix, record_times)`` instead of
        :meth:`CompiledScenario.run` (tests)
    progress : a progress bar over the protocols on stderr when it is a terminal

    A protocol whose run raises, or a member the solver fails, makes a failed row
    (``status`` ``failed`` with the message); nothing is dropped.
    """
    names = list(parameters or {})
    theta = np.array([[float(parameters[n]) for n in names]]) if names else np.zeros((1, 0))
    return run_evidence_sets(ev, names, theta, solver=solver, runner=runner, progress=progress)[0]


def run_evidence_sets(
    ev: Evidence,
    names: Sequence[str],
    theta: np.ndarray,
    *,
    solver: str | None = None,
    runner: Callable | None = None,
    progress: bool = False,
) -> list[list[dict]]:
    """The scorecard rows of every parameter set in ``theta`` (R, len(names)).

    Each protocol runs once for all R sets, one replicate per set (walkers of a sampler,
    posterior draws), so a batch costs little more than one run.  Rows of set ``r`` are
    those :func:`run_evidence` gives for ``dict(zip(names, theta[r]))``.
    """
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    n_sets = theta.shape[0]
    by_protocol: dict[Path, list[Entry]] = {}
    for e in ev.entries:
        by_protocol.setdefault(e.protocol, []).append(e)
    values: list[dict[str, tuple[float, str]]] = [{} for _ in range(n_sets)]
    protocols = list(by_protocol.items())
    if progress:
        from exosim.util.progress import progress as _bar

        protocols = _bar(protocols, total=len(protocols), desc="exosim evidence", unit="protocol")
    for path, entries in protocols:
        base = ev.compiled[path]
        compiled = base if n_sets == 1 else ev.replicated(path, n_sets)
        p = compiled.parameters.copy()
        for j, name in enumerate(names):
            cols = base.columns(name)
            if cols:
                p[:, cols] = np.repeat(theta[:, j], base.n_members)[:, None]
        times = _record_times(entries)
        try:
            if runner is not None:
                res = runner(compiled, p, times)
            else:
                res = compiled.run(time_courses=times is not None, parameters=p, record_times=times, solver=solver)
        except Exception as exc:  # a failed protocol fails its entries, it never stops the scorecard
            for e in entries:
                for r in range(n_sets):
                    values[r][e.id] = (math.nan, f"run failed: {type(exc).__name__}: {exc}")
            continue
        for r in range(n_sets):
            one = res if n_sets == 1 else res.replicate(r, base.n_members)
            try:
                survival, summary = one.survival_rows(), one.summary_rows()
            except Exception as exc:
                for e in entries:
                    values[r][e.id] = (math.nan, f"run failed: {type(exc).__name__}: {exc}")
                continue
            for e in entries:
                try:
                    values[r][e.id] = (_value(e, base, one, survival, summary), "")
                except Exception as exc:
                    values[r][e.id] = (math.nan, f"{type(exc).__name__}: {exc}")
    return [score_rows(ev, v) for v in values]


def score_rows(ev: Evidence, values: dict[str, tuple[float, str]]) -> list[dict]:
    """Scorecard rows from model values (entry id -> (value, failure message))."""
    rows = []
    for e in ev.entries:
        model, message = values.get(e.id, (math.nan, "not run"))
        obs = e.spec.observed
        lo, hi = obs.bounds()
        ok = not message and math.isfinite(model)
        hyp = ev.protocols[e.protocol].hypotheses if e.protocol in ev.protocols else []
        rows.append(
            {
                "entry": e.id,
                "source": e.source.citation,
                "doi": e.source.identifier,
                "module": e.spec.module,
                "role": e.role,
                "cells": e.spec.cells,
                "measured": " ".join(e.spec.measured.split()),
                "observable": _describe(e.spec.observable),
                "unit": e.spec.observable.unit or "1",
                "observed": obs.shown,
                "bound_only": obs.bound_only,
                "uncertainty": obs.describe(),
                "low": lo,
                "high": hi,
                "model": model,
                "ratio": model / obs.shown if ok and obs.shown != 0 else math.nan,
                "within": "yes" if ok and lo <= model <= hi else "no",
                "status": "hypothesis (not counted)" if hyp else ("ok" if ok else "failed"),
                "message": message,
                "hypothesis": "; ".join(hyp),
                "obtained": " ".join(e.spec.obtained.split()),
                "protocol": e.spec.protocol,
                "file": e.file,
            }
        )
    return rows


def _describe(obs: ObservableSpec) -> str:
    parts = [obs.quantity if obs.statistic == "value" else f"{obs.statistic} of {obs.quantity}"]
    if obs.quantity == "survival" and obs.normalise != "control":
        parts.append(f"({obs.normalise})")
    where = []
    if obs.arm:
        where.append(f"arm {obs.arm!r}")
    if obs.dose is not None:
        where.append(f"{obs.dose:g} Gy")
    if obs.at is not None:
        where.append(f"at {obs.at:g} h")
    if obs.window is not None:
        where.append(f"over [{obs.window[0]:g}, {obs.window[1]:g}] h")
    text = " ".join(parts) + (", " + ", ".join(where) if where else "")
    if obs.relative_to is not None:
        r = obs.relative_to
        ref = [
            f"arm {r.arm!r}" if r.arm else "",
            f"{r.dose:g} Gy" if r.dose is not None else "",
            f"at {r.at:g} h" if r.at is not None else "",
        ]
        text += " / the same, " + ", ".join(x for x in ref if x)
    return text


def pass_rates(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per role: entries counted (hypothesis runs are not), passed, failed runs, pass rate."""
    out = {}
    for role in ROLES:
        counted = [r for r in rows if r["role"] == role and r["status"] != "hypothesis (not counted)"]
        passed = sum(r["within"] == "yes" for r in counted)
        out[role] = {
            "entries": len(counted),
            "passed": passed,
            "failed_runs": sum(r["status"] == "failed" for r in counted),
            "rate": passed / len(counted) if counted else math.nan,
        }
    return out


def evidence_hash(ev: Evidence) -> str:
    """SHA-256 over the evidence files and the protocol files the entries run."""
    h = hashlib.sha256()
    for f in sorted({e.file for e in ev.entries} | {str(e.protocol) for e in ev.entries}):
        h.update(Path(f).read_bytes())
    return h.hexdigest()
