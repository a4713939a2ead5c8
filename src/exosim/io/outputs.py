"""Writers of the files a run, a sensitivity analysis and a fit produce.

Every writer produces all its files in a staged folder
(:func:`exosim.util.atomic.staged_outputs`) and moves them into place only when
all are complete, so a failure or an interruption leaves no partial output.  Each
writer declares every file its command can produce (``RUN_FILES``,
``SENSITIVITY_FILES``, ``FIT_FILES``); those a run did not write (``--no-timecourses``,
``--no-figure``) are removed from the folder when the new files are committed, so no
stale file of an earlier run stays beside them.  Other files in the folder are never
touched.  Tables come from the
result objects (same column names as their pandas tables), provenance from
:mod:`exosim.io.provenance`, figures from :mod:`exosim.io.figures`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from exosim.io import figures, tables
from exosim.io.provenance import run_record
from exosim.model import catalogue as cat
from exosim.util.atomic import OutputError, staged_outputs

if TYPE_CHECKING:  # pragma: no cover
    from exosim.analysis.fit import FitProblem, FitResult
    from exosim.analysis.sensitivity import Analysis
    from exosim.scenario.result import RunResult
    from exosim.util.forked import ForkedCall

__all__ = [
    "write_outputs",
    "write_analysis",
    "write_fit",
    "fit_estimate_rows",
    "OutputError",
    "RUN_FILES",
    "SENSITIVITY_FILES",
    "FIT_FILES",
    "EVIDENCE_FILES",
    "write_scorecard",
    "scorecard_markdown",
    "CALIBRATION_FILES",
    "write_calibration",
    "calibration_yaml",
]

RUN_FILES = (
    "survival.csv",
    "summary.csv",
    "timecourses.csv",
    "provenance.json",
    "survival.png",
    "bands.csv",
    "bands_summary.csv",
)
"""Every file ``exosim run`` (:func:`write_outputs`) can write."""
SENSITIVITY_FILES = ("indices.csv", "samples.csv", "provenance.json", "sensitivity.png")
"""Every file ``exosim sensitivity`` (:func:`write_analysis`) can write."""
FIT_FILES = ("estimates.csv", "fit.json", "fit.png")
"""Every file ``exosim fit`` (:func:`write_fit`) can write."""
EVIDENCE_FILES = ("scorecard.csv", "scorecard.md", "scorecard.png", "provenance.json")
"""Every file ``exosim evidence`` (:func:`write_scorecard`) can write."""
CALIBRATION_FILES = ("calibration.yaml", "posterior.csv") + EVIDENCE_FILES
"""Every file ``exosim calibrate`` (:func:`write_calibration`) can write."""


def _json(doc: dict) -> str:
    return json.dumps(doc, indent=1, default=float)


def write_outputs(
    result: RunResult,
    outdir: str | Path,
    *,
    argv: list[str] | None = None,
    figure: bool = True,
    bands=None,
    drawer: ForkedCall | None = None,
) -> list[Path]:
    """Write survival.csv, summary.csv, timecourses.csv, provenance.json and survival.png;
    with prediction ``bands`` (:class:`~exosim.analysis.posterior.Bands`) also bands.csv and
    bands_summary.csv, the bands' record in the provenance and the bands shaded in the figure.
    ``drawer``: a child process prepared to draw (:mod:`exosim.util.forked`); the figure is
    drawn here if it cannot (the same file either way).

    Files of :data:`RUN_FILES` this call does not write (timecourses.csv without time
    courses, survival.png without ``figure``) are removed from ``outdir``.

    Raises
    ------
    OutputError
        If ``outdir`` cannot be created or written.
    """
    stage = staged_outputs(outdir, RUN_FILES)
    with stage as tmp:
        rows = result.survival_rows()
        (tmp / "survival.csv").write_text(tables.rows_csv(rows))
        (tmp / "summary.csv").write_text(tables.rows_csv(result.summary_rows(rows)))
        if result.states.shape[1]:
            (tmp / "timecourses.csv").write_text(tables.timecourses_csv(result))
        record = run_record(result, argv)
        if bands is not None and bands.params:
            (tmp / "bands.csv").write_text(tables.rows_csv(bands.survival))
            (tmp / "bands_summary.csv").write_text(tables.rows_csv(bands.summary))
            record["bands"] = bands.record()
            # the run itself is deterministic; the bands' draws are the one random choice
            record["seed"] = record["bands"].get("seed")
            record["randomness"] = "the posterior draws of the prediction bands (seed above); runs are deterministic"
        (tmp / "provenance.json").write_text(_json(record))
        if figure:
            args = (result, rows, tmp / "survival.png")
            if drawer is None or not drawer.call(figures.plot_survival, *args, bands=bands):
                figures.plot_survival(*args, bands=bands)
        elif drawer is not None:
            drawer.close()
    return stage.written


def write_analysis(analysis: Analysis, outdir: str | Path, provenance: dict) -> list[Path]:
    """indices.csv, samples.csv, provenance.json and sensitivity.png of a sensitivity analysis."""
    stage = staged_outputs(outdir, SENSITIVITY_FILES)
    with stage as tmp:
        (tmp / "indices.csv").write_text(tables.rows_csv(analysis.indices))
        header = list(analysis.space.names) + list(analysis.outputs) + ["status"]
        rows = [
            list(x) + list(y) + ["failed" if bad else "ok"]
            for x, y, bad in zip(analysis.samples, analysis.values, analysis.failed)
        ]
        (tmp / "samples.csv").write_text(tables.matrix_csv(header, rows))
        (tmp / "provenance.json").write_text(_json(provenance))
        shown = provenance.get("scenario", {}).get("name", "")
        if provenance.get("arm"):
            shown += f", arm '{provenance['arm']}'"
        if provenance.get("hypotheses"):
            shown += " (hypothesis)"
        shown += f", {analysis.samples.shape[0]} samples"
        figures.plot_analysis(analysis, tmp / "sensitivity.png", title=shown)
    return stage.written


def fit_estimate_rows(problem: FitProblem, result: FitResult) -> list[dict]:
    """estimates.csv: per parameter the estimate, interval, unit, nominal value and search range."""
    table = cat.parameter_table()
    return [
        {
            "parameter": n,
            "estimate": e,
            "low": lo,
            "high": hi,
            "unit": table[n.split(".")[-1]]["unit"],
            "nominal": nom,
            "range_low": b[0],
            "range_high": b[1],
            "interval_open_at": o,
        }
        for n, e, lo, hi, nom, b, o in zip(
            result.params, result.estimate, result.low, result.high, problem.nominal, problem.bounds, result.open_ends
        )
    ]


def _observation_rows(problem: FitProblem, result: FitResult) -> list[dict]:
    rows = []
    for ds, sl in zip(problem.datasets, problem.slices):
        for i, model in enumerate(result.predicted[sl]):
            row = {"file": problem.name(ds), "kind": ds.kind, "arm": ds.arm[i], "dose_Gy": ds.dose[i]}
            if ds.kind == "timecourse":
                row.update(time_h=ds.time[i], observable=ds.observable[i], unit=ds.unit[i])
            row.update(observed=ds.y[i], weight=ds.w[i], model=model)
            rows.append(row)
    return rows


def write_fit(problem: FitProblem, result: FitResult, outdir: str | Path, provenance: dict) -> list[Path]:
    """estimates.csv, fit.json (provenance, goodness of fit, profiles) and fit.png of a fit."""
    rows = fit_estimate_rows(problem, result)
    stage = staged_outputs(outdir, FIT_FILES)
    with stage as tmp:
        (tmp / "estimates.csv").write_text(tables.rows_csv(rows))
        doc = dict(
            provenance,
            estimates=rows,
            goodness_of_fit=result.gof,
            nll=result.nll,
            dispersion=result.dispersion,
            plating_efficiency=result.plating_efficiency,
            nuisance=result.nuisance,
            converged=result.converged,
            optimiser_message=result.message,
            model_runs=result.evaluations,
            profiles=result.profiles,
            observations=_observation_rows(problem, result),
        )
        (tmp / "fit.json").write_text(_json(doc))
        figures.plot_fit(problem, result, tmp / "fit.png")
    return stage.written


def scorecard_markdown(rows: list[dict], rates: dict, title: str = "exosim evidence scorecard") -> str:
    """The scorecard's short summary: pass rates per role, then every row that did not pass."""

    def pct(r: dict) -> str:
        return "n/a" if not r["entries"] else f"{r['rate']:.0%} ({r['passed']}/{r['entries']})"

    lines = [
        f"# {title}",
        "",
        "An entry passes when the model value lies in the observation's band (reported interval, "
        "value +/- 2 SD, or a stated tolerance); a failed run is a failed row.",
        "",
        "| role | within uncertainty | failed runs |",
        "|---|---|---|",
    ]
    for role, r in rates.items():
        lines.append(f"| {role} | {pct(r)} | {r['failed_runs']} |")
    hyp = [r for r in rows if r["status"] == "hypothesis (not counted)"]
    if hyp:
        lines += ["", f"{len(hyp)} entries ran a scenario hypothesis and are not counted."]
    lines += [
        "",
        "## Entries outside their band",
        "",
        "| entry | role | observed | band | model | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["within"] == "yes":
            continue
        unit = "" if r["unit"] == "1" else f" {r['unit']}"  # a dimensionless value shows no unit
        model = "failed" if r["status"] == "failed" else f"{r['model']:.3g}{unit}"
        note = r["message"] or r["observable"]
        lines.append(
            f"| {r['entry']} | {r['role']} | {r['observed']:.3g}{unit} | [{r['low']:.3g}, {r['high']:.3g}]{unit} "
            f"| {model} | {note} |"
        )
    lines += ["", "## All entries", "", "| entry | source | module | role | within |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['entry']} | {r['doi']} | {r['module']} | {r['role']} | {r['within']} |")
    return "\n".join(lines) + "\n"


def write_scorecard(rows: list[dict], rates: dict, outdir: str | Path, provenance: dict) -> list[Path]:
    """scorecard.csv, scorecard.md, scorecard.png and provenance.json of an evidence run."""
    stage = staged_outputs(outdir, EVIDENCE_FILES)
    with stage as tmp:
        (tmp / "scorecard.csv").write_text(tables.rows_csv(rows))
        (tmp / "scorecard.md").write_text(scorecard_markdown(rows, rates))
        figures.plot_scorecard(rows, rates, tmp / "scorecard.png")
        (tmp / "provenance.json").write_text(_json(provenance))
    return stage.written


def calibration_yaml(result, provenance: dict, posterior=None) -> str:
    """The calibrated parameter set in the parameter table's terms, with its provenance, and
    (when sampled) the posterior: per-parameter summary, sampler diagnostics and the draws.
    The catalogue's ``calibration.yaml`` is this document (``exosim calibrate --write-catalogue``)."""
    import yaml

    table = cat.parameter_table()
    doc = {
        "calibrated_parameters": {
            n: {
                "value": result.estimates[n],
                "unit": str(table[n.split(".", 1)[-1]]["unit"]),
                "profile_interval_95": list(result.intervals[n]) if result.profiles else None,
                # an open end is the end of the search range: the evidence does not bound it there
                "interval_open_at": [
                    side for side, o in zip(("low", "high"), result.open_ends.get(n, (False, False))) if o
                ]
                if result.profiles
                else None,
                "identified": result.identified[n] if result.profiles else None,  # None: not profiled
                "catalogue_value": result.nominal[n],
                "searched": list(result.bounds[n]),
            }
            for n in result.params
        },
        "objective": {"chi_square": result.objective, "at_catalogue_values": result.nominal_objective},
        "calibration_entries": result.entries,
        "evidence_sha256": provenance["evidence_sha256"],
        "created_utc": provenance["created_utc"],
        "exosim_version": provenance["exosim_version"],
        "command": " ".join(provenance.get("command") or []),
    }
    if posterior is not None:
        doc["posterior"] = {
            "prior": "log-uniform over each parameter's range (searched)",
            "likelihood": "exp(-chi_square / 2) over the calibration entries, each band +/- 2 SD",
            "parameters": posterior.summary(),
            "diagnostics": posterior.diagnostics(),
            "draws": {
                "names": list(posterior.params),
                "values": [[float(f"{v:.6g}") for v in row] for row in posterior.draws],
            },
        }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=200)


def write_calibration(
    result, rows: list[dict], rates: dict, outdir: str | Path, provenance: dict, posterior=None
) -> list[Path]:
    """calibration.yaml and the scorecard of every entry with the calibrated values; with a
    posterior, posterior.csv (one row per kept draw) too."""
    stage = staged_outputs(outdir, CALIBRATION_FILES)
    with stage as tmp:
        (tmp / "calibration.yaml").write_text(calibration_yaml(result, provenance, posterior))
        if posterior is not None:
            draws = [
                {"draw": i, **dict(zip(posterior.params, map(float, row))), "chi_square": float(c)}
                for i, (row, c) in enumerate(zip(posterior.draws, posterior.chi_square))
            ]
            (tmp / "posterior.csv").write_text(tables.rows_csv(draws))
        (tmp / "scorecard.csv").write_text(tables.rows_csv(rows))
        (tmp / "scorecard.md").write_text(scorecard_markdown(rows, rates, "exosim scorecard after calibration"))
        figures.plot_scorecard(rows, rates, tmp / "scorecard.png", ylabel="Model (calibrated parameters)")
        (tmp / "provenance.json").write_text(_json(provenance))
    return stage.written
