"""Observations for fits: reading and checking data files against a scenario.

Formats (CSV, one observation per row; a header row; blank and ``#`` lines skipped):

* survival points ``arm, dose, survival, sd``;
* colony counts ``arm, dose, colonies, seeded``;
* time courses ``time, observable, value, sd`` and optionally ``arm``, ``dose`` and
  ``unit``: any state or rule ``namespace.name`` of the model, or a sum of them;
  units the model's, a convertible one (the unit table of
  :mod:`exosim.model.units`) or ``relative``.

Doses are in the unit of the scenario's dose grid and must lie within its range; they need
not be grid points: the fit simulates exactly the doses the data name (the scenario's
grid only sets the range and the unit).

Every problem is one :class:`FitError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import difflib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exosim.model.declare import SEP
from exosim.model.units import UNITS, QuantityError, conversion_factor, parse_quantity
from exosim.scenario.runner import CompiledScenario
from exosim.scenario.schema import Scenario

__all__ = ["FitError", "FitWarning", "Observations", "read_observations", "RELATIVE", "default_likelihood"]

RELATIVE = ("relative", "a.u.", "au", "arbitrary")

#: the largest relative survival a data file may give (above 1: cells that plate or grow better
#: than the control's; absolute surviving fractions, ``--normalise none``, stay at most 1)
MAX_RELATIVE_SURVIVAL = 2.0


class FitError(ValueError):
    """Bad data file or fit request; the message names the file, row and column."""


class FitWarning(UserWarning):
    """Something in a data file that is read but worth a look (a column left unread, a row twice)."""


@dataclass
class Observations:
    """Observations read from one data file (doses in Gy, times in h).

    ``y`` is survival, colonies or the observed value; ``w`` the standard deviation
    (survival, time courses) or cells seeded (colonies).  Time courses also carry the
    time, the observable (label and model terms), the factor from model to data unit
    (NaN for relative data) and the relative group of each row.
    """

    source: str
    kind: str  # "survival" | "colonies" | "timecourse"
    arm: list[str]
    dose: np.ndarray
    y: np.ndarray
    w: np.ndarray
    time: np.ndarray | None = None
    observable: list[str] = field(default_factory=list)
    terms: dict[str, list[tuple[str, int, str]]] = field(default_factory=dict)
    unit: list[str] = field(default_factory=list)
    factor: np.ndarray | None = None

    @property
    def groups(self) -> list[str]:
        """Observables measured in relative units: one fitted scale factor each."""
        if self.factor is None:
            return []
        return sorted({o for o, f in zip(self.observable, self.factor) if np.isnan(f)}, key=self.observable.index)


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and (line number in the file, row) pairs; blank and '#' lines are skipped.  UTF-8,
    with or without the byte-order mark a spreadsheet's "CSV UTF-8" writes."""
    if path.is_dir():
        raise FitError(f"{path}: a folder, not a data file")
    if not path.is_file():
        raise FitError(f"{path}: no such data file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # the offset in the file, for a hex editor or a search
        raise FitError(f"{path}: not a UTF-8 text file (byte {exc.start}); save it as CSV in UTF-8") from None
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(keepends=True), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise FitError(f"{path}: no header row: the file is empty or holds only comments")
    records = list(csv.reader(text for _, text in lines))
    header = [h.strip() for h in records[0]]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise FitError(f"{path}: column {twice[0]!r} appears twice in the header")
    for (n, _), rec in zip(lines[1:], records[1:]):
        if len(rec) > len(header):
            extra = rec[len(header)]
            raise FitError(f"{path}: row {n} has {len(rec)} fields, the header {len(header)}: {extra!r} is extra")
    rows = [(n, {h: v.strip() for h, v in zip(header, rec)}) for (n, _), rec in zip(lines[1:], records[1:])]
    return header, rows


#: the columns each kind of data file may hold (others are refused when they look like one of
#: them, e.g. 'Arm', else noted and left unread)
COLUMNS = {
    "survival": ("arm", "dose", "survival", "sd"),
    "colonies": ("arm", "dose", "colonies", "seeded"),
    "timecourse": ("time", "observable", "value", "sd", "arm", "dose", "unit"),
}


def read_observations(path: str | Path, scenario: Scenario) -> Observations:
    """Read and check a data file against a scenario (arms, doses, times, observables)."""
    path = Path(path)
    header, rows = _read_rows(path)
    cols = set(header)
    if {"survival", "sd"} <= cols:
        kind, ycol, wcol = "survival", "survival", "sd"
    elif {"colonies", "seeded"} <= cols:
        kind, ycol, wcol = "colonies", "colonies", "seeded"
    elif {"time", "observable", "value", "sd"} <= cols:
        kind, ycol, wcol = "timecourse", "value", "sd"
    else:
        raise FitError(
            f"{path}: columns {header}: expected 'dose' with either 'survival' and 'sd' "
            f"or 'colonies' and 'seeded' (and optionally 'arm'), or a time course: "
            f"'time', 'observable', 'value', 'sd' (and optionally 'arm', 'dose', 'unit')"
        )
    known = COLUMNS[kind]
    for h in header:
        if h in known:
            continue
        near = difflib.get_close_matches(h.lower(), known, n=1, cutoff=0.6)
        if near:  # a column meant to be read, misspelt: reading around it would mislabel every row
            raise FitError(f"{path}: unknown column {h!r}; did you mean {near[0]!r}? (columns: {', '.join(known)})")
        warnings.warn(f"{path}: column {h!r} is not read (columns: {', '.join(known)})", FitWarning, stacklevel=2)
    grid = scenario.dose_grid
    if kind != "timecourse":
        if "dose" not in cols:
            raise FitError(f"{path}: missing column 'dose' (in {grid.unit if grid else 'Gy'})")
        if grid is None:
            raise FitError(f"{path}: scenario {scenario.name!r} has no dose grid to compare doses with")
    elif grid is None and "dose" in cols and any(row.get("dose") for _, row in rows):
        raise FitError(f"{path}: column 'dose': scenario {scenario.name!r} has no dose grid; leave the column out")
    arms = [a.name for a in scenario.arms] or [scenario.name]
    default_arm = next((a.name for a in scenario.arms if not a.control), arms[0])
    treated = [a.name for a in scenario.arms if not a.control]
    if "arm" not in cols and len(treated) > 1:
        raise FitError(
            f"{path}: no column 'arm', and scenario {scenario.name!r} has several arms {arms}: "
            "name the arm of every row"
        )
    if grid is not None:
        unit = UNITS["dose"][grid.unit]
        lo, hi = min(grid.values), max(grid.values)
    model = window = None
    if kind == "timecourse":
        probe = CompiledScenario(scenario)
        model = probe.model
        window = (scenario.timeline_start, probe.score_event.at)
    obs = Observations(str(path), kind, [], np.empty(0), np.empty(0), np.empty(0))
    arm, dose, y, w, time, factor = [], [], [], [], [], []
    for r, row in rows:  # r: line of the file
        reader = _Row(path, r, row)
        number, fail = reader.number, reader.fail
        a = row.get("arm", default_arm)
        if not a:
            raise fail("arm", f"empty; expected one of {arms}")
        if a not in arms:
            near = difflib.get_close_matches(a, arms, n=1)
            raise fail(
                "arm",
                f"no arm {a!r} in scenario {scenario.name!r}"
                + (f"; did you mean {near[0]!r}?" if near else f"; arms: {arms}"),
            )
        if grid is None:
            d = float("nan")
        else:
            d = number("dose") if (kind != "timecourse" or row.get("dose")) else lo
            if not lo <= d <= hi:
                raise fail(
                    "dose", f"{d:g} {grid.unit} is outside the scenario's dose grid [{lo:g}, {hi:g}] {grid.unit}"
                )
            d *= unit
        yy, ww = number(ycol), number(wcol)
        if kind == "survival":
            # relative to a control, plating noise and protection give values above 1; above
            # MAX_RELATIVE_SURVIVAL it is not a surviving fraction (a percentage, a count)
            if not 0 <= yy <= MAX_RELATIVE_SURVIVAL:
                raise fail(
                    "survival",
                    f"{yy:g} is outside [0, {MAX_RELATIVE_SURVIVAL:g}] (a surviving fraction, relative to the "
                    "control or absolute; not a percentage)",
                )
            if not ww > 0:
                raise fail("sd", f"expected a positive standard deviation, got {ww:g}")
        elif kind == "colonies":
            if yy < 0 or yy != int(yy):
                raise fail("colonies", f"expected a non-negative count, got {yy:g}")
            if not ww >= 1:
                raise fail("seeded", f"expected at least one cell, got {ww:g}")
            if yy > ww:
                raise fail("colonies", f"{yy:g} colonies from {ww:g} cells seeded: a cell forms at most one colony")
        else:
            if yy < 0:
                raise fail("value", f"expected a non-negative value, got {yy:g}")
            if not ww > 0:
                raise fail("sd", f"expected a positive standard deviation, got {ww:g}")
            time.append(_time(row.get("time", ""), window, fail))
            label, model_unit = _observable(row.get("observable", ""), model, obs, fail)
            data_unit = row.get("unit") or model_unit
            factor.append(_unit_factor(data_unit, model_unit, label, fail))
            obs.observable.append(label)
            obs.unit.append(data_unit)
        arm.append(a)
        dose.append(d)
        y.append(yy)
        w.append(ww)
    if not arm:
        raise FitError(f"{path}: no data rows")
    seen: dict[tuple, int] = {}
    blank = [None] * len(arm)
    for (r, _), key in zip(rows, zip(arm, dose, y, w, time or blank, obs.observable or blank)):
        if key in seen:  # replicates are fine; a row pasted twice counts double
            warnings.warn(
                f"{path}: row {r} repeats row {seen[key]} exactly; both are fitted as independent observations",
                FitWarning,
                stacklevel=2,
            )
        seen.setdefault(key, r)
    obs.arm, obs.dose, obs.y, obs.w = arm, np.array(dose), np.array(y), np.array(w)
    if kind == "timecourse":
        obs.time, obs.factor = np.array(time), np.array(factor)
        for label in obs.groups:
            units = {u for o, u in zip(obs.observable, obs.unit) if o == label}
            if len(units) > 1:
                raise FitError(
                    f"{path}: column 'unit': observable {label!r} is given both in relative and in "
                    f"absolute units ({sorted(units)}); use one"
                )
    return obs


class _Row:
    """One data row: numbers read from it and errors naming its file, line and column."""

    def __init__(self, path: Path, line: int, row: dict):
        self.path, self.line, self.row = path, line, row

    def fail(self, col: str, what: str) -> FitError:
        """The error for column ``col`` of this row."""
        return FitError(f"{self.path}: row {self.line}, column {col!r}: {what}")

    def number(self, col: str) -> float:
        """A finite number from column ``col``."""
        try:
            value = float(self.row[col])
        except (KeyError, ValueError):
            raise self.fail(col, f"expected a number, got {self.row.get(col)!r}") from None
        if not np.isfinite(value):
            raise self.fail(col, f"expected a finite number, got {self.row[col]!r}")
        return value


def _time(text: str, window: tuple[float, float], fail) -> float:
    """A timeline time: a number in h or a quantity such as '30 min'; inside the timeline."""
    try:
        t = float(text)
    except ValueError:
        try:
            t = parse_quantity(text, "time", allow_negative=True)
        except QuantityError as exc:
            raise fail("time", str(exc)) from None
    if not np.isfinite(t):
        raise fail("time", f"expected a finite time, got {text!r}")
    if not window[0] <= t <= window[1]:
        raise fail(
            "time",
            f"{t:g} h is outside the scenario's timeline [{window[0]:g}, {window[1]:g}] h (first event to scoring)",
        )
    return t


def _observable(text: str, model, obs: Observations, fail) -> tuple[str, str]:
    """Resolve 'ns.name [+ ns.name ...]' to model states/rules; returns (label, unit)."""
    parts = [p.strip() for p in text.split("+")]
    label = " + ".join(p.replace(SEP, ".", 1) for p in parts)
    if label in obs.terms:
        return label, obs.terms[label][0][2]
    units = {**{s.name: s.unit for s in model.states}, **{s.name: s.unit for s in model.derived + model.rules}}
    known = [n.replace(SEP, ".", 1) for n in list(model.state_index) + list(model.observable_index)]
    terms = []
    for p in parts:
        q = p.replace(".", SEP, 1)
        if q in model.state_index:
            terms.append(("state", model.state_index[q], units[q]))
        elif q in model.observable_index:
            terms.append(("obs", model.observable_index[q], units[q]))
        else:
            near = difflib.get_close_matches(p.replace(SEP, ".", 1), known, n=1)
            raise fail(
                "observable",
                f"no state or rule {p!r} in the model"
                + (
                    f"; did you mean {near[0]!r}?"
                    if near
                    else " (write namespace.name, e.g. "
                    "'recipients.internalised_vesicles' or 'donor_flask.vesicle_concentration')"
                ),
            )
    if len({t[2] for t in terms}) > 1:
        raise fail("observable", f"{label!r} adds quantities of different units {[t[2] for t in terms]}")
    obs.terms[label] = terms
    return label, terms[0][2]


def _unit_factor(data_unit: str, model_unit: str, label: str, fail) -> float:
    """Data value per model value (NaN for relative data)."""
    if data_unit.lower() in RELATIVE:
        return float("nan")
    try:
        return conversion_factor(model_unit, data_unit)
    except QuantityError:
        case = data_unit.lower() == model_unit.lower()  # 'particles/ml': units are case-sensitive (mL)
        raise fail(
            "unit",
            f"{data_unit!r} cannot be converted to {model_unit!r}, the unit of {label!r}; "
            + (f"units are case-sensitive: did you mean {model_unit!r}? " if case else "")
            + f"give values in {model_unit!r} or 'relative' (one fitted scale factor)",
        ) from None


def default_likelihood(datasets: list[Observations]) -> str:
    """``auto``: quasi-Poisson when colony counts are fitted, else normal."""
    return "quasipoisson" if any(d.kind == "colonies" for d in datasets) else "normal"
