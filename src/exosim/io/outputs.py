"""Survival tables, summaries, time courses, provenance and figures of a run.

Conventions
-----------
* ``sf`` is the kinetic surviving fraction ``exp(-(L + A))`` of the scored
  population; untreated cells without exosomes have SF = 1.
* ``sf_vs_untreated`` divides by the control arm at grid dose 0 (the
  untreated control); it shows bystander killing at 0 Gy.
* ``sf_within_arm`` divides by the same arm at grid dose 0 (the assay
  convention, plating efficiency of the arm's own unirradiated dish).
* ``dmf_at_sf0.1`` = D10(control) / D10(arm) on the within-arm curves: above 1
  the arm is sensitised, below 1 protected.

Every file is written to a temporary folder first and moved into place only
when all files are complete, so a failed run leaves no partial output.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from exosim._version import __version__
from exosim.model.declare import SEP
from exosim.model.lq import dose_at_survival, lea_catcheside, lq_neg_log_survival, survival_at_dose
from exosim.scenario.runner import RunResult

__all__ = ["survival_table", "summary_table", "timecourse_table", "provenance", "write_outputs",
           "OutputError", "plot_survival", "staged_outputs"]


class OutputError(OSError):
    """The output folder cannot be written."""


def _grid0(result: RunResult, arm: int) -> int | None:
    sel = np.flatnonzero((result.arm_index == arm) & (result.grid == 0))
    return int(sel[0]) if sel.size else None


def _control_arm(result: RunResult) -> int | None:
    arms = result.scenario.arms
    return next((i for i, a in enumerate(arms) if a.control), None)


def survival_table(result: RunResult) -> list[dict]:
    """One row per member: kinetic and LQ survival, conventions, modifiers, delivery."""
    ref = result.reference
    ctrl = _control_arm(result)
    i_untreated = _grid0(result, ctrl) if ctrl is not None else None
    sf_untreated = result.surviving_fraction[i_untreated] if i_untreated is not None else 1.0
    ge = result.grid_event
    lq_ok = bool(ge) and ge.get("scored", False)
    rows = []
    for i in range(result.arm_index.size):
        a = result.arm_index[i]
        i0 = _grid0(result, a)
        sf = result.surviving_fraction[i]
        sf0 = result.surviving_fraction[i0] if i0 is not None else np.nan
        row = {
            "arm": result.arms[a],
            "control": ctrl == a,
            "grid_dose_Gy": result.grid[i],
            "sf": sf,
            "sf_vs_untreated": sf / sf_untreated,
            "sf_within_arm": sf / sf0 if i0 is not None else np.nan,
        }
        if lq_ok:
            n = ge["fractions"]
            d = result.grid[i] / n
            mu = ref["repair_rate"][i] * ref["repair_capacity"][i]
            g = lea_catcheside(mu, d / ge["dose_rate"]) if ge.get("dose_rate") else 1.0
            nls = lq_neg_log_survival(ref["alpha_eff"][i], ref["beta_eff"][i], d, n, g)
            row["sf_lq"] = float(sf0 * np.exp(-nls)) if i0 is not None else float(np.exp(-nls))
            row["lq_vs_kinetic_rel"] = row["sf_lq"] / sf - 1.0 if sf > 0 else np.nan
        row.update({
            "alpha_eff_per_Gy": ref["alpha_eff"][i],
            "beta_eff_per_Gy2": ref["beta_eff"][i],
            "repair_capacity": ref["repair_capacity"][i],
            "misrepair_factor": ref["misrepair_factor"][i],
            "apoptotic_propensity": ref["apoptotic_propensity"][i],
            "bystander_dsb_per_h": ref["bystander_damage_drive"][i],
        })
        for c in result.model.cargos:
            row[f"{c}_delivered_copies_per_cell"] = ref[f"{c}_delivered_at_scoring"][i]
        row["residual_dsb_at_scoring"] = ref["residual_dsb_at_scoring"][i]
        for key in ref:
            if key.startswith("surviving_fraction__"):  # populations named in score.also
                row[f"sf_{key.split('__', 1)[1]}"] = ref[key][i]
        row["status"] = "ok" if result.status[i] == 0 else "failed"
        row["message"] = result.messages[i]
        rows.append(row)
    return rows


def delivery_report(result: RunResult) -> list[dict]:
    """Delivered cargo copies per scored cell, per arm and cargo, against the copies needed.

    MODEL.md 3.3: repression needs of the order of 10^3 cytosolic copies per cell (the
    parameter table's ``half_effect_copies``, Baek et al. 2008); unidentified factors
    (kind ``unspecified``) are in abstract units against their own half-effect amount.  Reported is the largest
    cumulative delivery of any member of the arm at scoring and its ratio to that number,
    so a user sees whether a published effect is plausible by exosome delivery alone.
    """
    from exosim.model.catalogue import parameter_table
    default = float(parameter_table()["half_effect_copies"]["value"])
    rows = []
    for a, name in enumerate(result.arms):
        sel = result.arm_index == a
        for c in result.model.cargos:
            rec = result.model.cargo_records[c]
            # unidentified factors are counted in abstract units with their own half-effect amount
            needed = float(rec.get("half_effect_copies", default))
            copies = float(np.nanmax(result.reference[f"{c}_delivered_at_scoring"][sel]))
            rows.append({"scenario": result.scenario.name, "arm": name, "cargo": c,
                         "units": "abstract" if rec.get("kind") == "unspecified" else "copies",
                         "delivered_copies_per_cell": copies, "copies_for_repression": needed,
                         "fraction_of_needed": copies / needed})
    return rows


def summary_table(result: RunResult, rows: list[dict] | None = None) -> list[dict]:
    """One row per arm: alpha_eff, beta_eff, SF2, D10, DMF and bystander survival at 0 Gy."""
    rows = rows if rows is not None else survival_table(result)
    ge = result.grid_event
    curve = bool(ge) and ge.get("scored", False)
    ctrl = _control_arm(result)
    d10 = {}
    out = []
    for a, name in enumerate(result.arms):
        sel = np.flatnonzero(result.arm_index == a)
        doses = result.grid[sel]
        within = np.array([rows[i]["sf_within_arm"] for i in sel])
        i0 = _grid0(result, a)
        rec = {"arm": name, "control": ctrl == a,
               "alpha_eff_per_Gy": rows[sel[0]]["alpha_eff_per_Gy"],
               "beta_eff_per_Gy2": rows[sel[0]]["beta_eff_per_Gy2"],
               "sf0_vs_untreated": rows[i0]["sf_vs_untreated"] if i0 is not None else np.nan}
        if curve:
            rec["sf2_within_arm"] = survival_at_dose(doses, within, 2.0)
            d10[a] = dose_at_survival(doses, within, 0.1)
            rec["d10_Gy"] = d10[a]
        for c in result.model.cargos:
            rec[f"{c}_delivered_copies_per_cell"] = rows[sel[0]][f"{c}_delivered_copies_per_cell"]
        rec["failed_members"] = int(np.sum(result.status[sel]))
        out.append(rec)
    if curve:
        for a, rec in enumerate(out):
            rec["dmf_at_sf0.1"] = d10[ctrl] / d10[a] if ctrl is not None and d10[a] > 0 else np.nan
    return out


def _series(result: RunResult) -> list[tuple[str, str, int]]:
    """(column label, kind, index) of the time-course columns."""
    m = result.model
    cols = []
    for pop in m.populations:
        ns = pop.name
        for local in ["dsb", "secretion_drive", "bound_vesicles", "internalised_vesicles"] + \
                     [f"{c}_cytosolic" for c in m.cargos] + [f"{c}_delivered" for c in m.cargos]:
            s = m.states[m.state_index[f"{ns}{SEP}{local}"]]
            cols.append((f"{ns}.{local} [{s.unit}]", "state", m.state_index[s.name]))
        for local in ["release_flux", "repair_capacity", "misrepair_factor", "apoptotic_propensity",
                      "bystander_damage_drive", "surviving_fraction"]:
            name = f"{ns}{SEP}{local}"
            unit = next(r.unit for r in m.rules if r.name == name)
            cols.append((f"{ns}.{local} [{unit}]", "obs", m.observable_index[name]))
    for med in m.media:
        cols.append((f"{med}.vesicle_concentration [particles/mL]", "obs",
                     m.observable_index[f"{med}{SEP}vesicle_concentration"]))
        for c in m.cargos:
            for kind in ("vesicular", "free"):
                cols.append((f"{med}.{c}_{kind} [copies]", "state", m.state_index[f"{med}{SEP}{c}_{kind}"]))
    return cols


def timecourse_table(result: RunResult) -> tuple[list[str], np.ndarray, list[str]]:
    """Header, numeric block (rows = member x time) and arm label per row."""
    cols = _series(result)
    n_mem, n_t = result.states.shape[:2]
    block = np.empty((n_mem * n_t, 2 + len(cols)))
    block[:, 0] = np.repeat(result.grid, n_t)
    block[:, 1] = np.tile(result.times, n_mem)
    for j, (_, kind, idx) in enumerate(cols):
        src = result.states if kind == "state" else result.observables
        block[:, 2 + j] = src[:, :, idx].reshape(-1)
    arms = [result.arms[a] for a in np.repeat(result.arm_index, n_t)]
    return ["arm", "grid_dose_Gy", "time_h"] + [c[0] for c in cols], block, arms


def provenance_header(scenario, command: list[str]) -> dict:
    """What every output's provenance starts with: version, time, command, scenario file and
    hash, and the numerical environment."""
    import scipy
    return {
        "exosim_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "scenario": {"name": scenario.name, "file": scenario.source, "sha256": scenario.sha256},
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "scipy": scipy.__version__, "platform": platform.platform()},
    }


def provenance(result: RunResult, argv: list[str] | None = None) -> dict:
    """Everything needed to reproduce a run: versions, scenario hash, parameters, solver."""
    sc, m = result.scenario, result.model
    params = []
    p0 = result.parameters
    for j, q in enumerate(m.parameters):
        col = p0[:, j]
        by_arm = {result.arms[a]: float(col[result.arm_index == a][0]) for a in range(len(result.arms))}
        entry = {"name": q.name.replace(SEP, "."), "key": q.key, "module": q.module, "unit": q.unit,
                 "value": float(col[0]), "range": [q.low, q.high], "source": q.source, "assumed": q.assumed}
        if len(set(by_arm.values())) > 1:
            entry["value_by_arm"] = by_arm
        params.append(entry)
    head = provenance_header(sc, argv if argv is not None else sys.argv)
    head["scenario"].update(type=sc.type, references=sc.references, assumptions=sc.assumptions)
    return {
        **head,
        "seed": None,
        "randomness": "none: the simulation is deterministic",
        "solver": {"method": "Dormand-Prince 5(4), batched, per-member error control",
                   "rtol": sc.solver.rtol, "atol": sc.solver.atol,
                   "atol_scaling": "atol multiplied by each state's declared scale",
                   **{k: v for k, v in result.timing.items() if k != "seconds"}},
        "wall_time_s": result.timing["seconds"],
        "members": int(result.arm_index.size),
        "arms": result.arms,
        "failures": [msg for msg in result.messages if msg],
        "conventions": __doc__.split("Conventions\n-----------\n", 1)[1].split("\n\nEvery file", 1)[0],
        "parameters": params,
    }


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{float(v):.10g}"
    return str(v)


def _quote(text: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text])
    return buf.getvalue()


def _rows_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if not rows:
        return ""
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(rows[0]))
    for r in rows:
        w.writerow([_fmt(v) for v in r.values()])
    return buf.getvalue()


def plot_survival(result: RunResult, rows: list[dict], path: Path) -> None:
    """Log survival vs grid dose, one line per arm (control dashed), LQ dotted where defined."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sc = result.scenario
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for a, name in enumerate(result.arms):
        sel = np.flatnonzero(result.arm_index == a)
        x = result.grid[sel]
        y = np.array([rows[i]["sf_vs_untreated"] for i in sel])
        control = rows[sel[0]]["control"]
        colour = "black" if control else colours[a % len(colours)]
        ax.plot(x, y, "--" if control else "-", marker="o", ms=3 if control else 4, color=colour, label=name,
                zorder=3 if control else 2)
        if "sf_lq" in rows[sel[0]]:
            lq = np.array([rows[i]["sf_lq"] for i in sel]) * (y[0] / rows[sel[0]]["sf_lq"]
                                                               if rows[sel[0]]["sf_lq"] > 0 else 1.0)
            ax.plot(x, lq, ":", color=colour, lw=1)
    ax.set_yscale("log")
    positive = result.grid[result.grid > 0]
    if positive.size and positive.max() / positive.min() > 100:  # mGy to Gy: keep both ends readable
        ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
        ax.set_xlim(0, float(positive.max()) * 1.3)
    label = sc.dose_grid.label if sc.dose_grid and sc.dose_grid.label else "dose"
    ax.set_xlabel(f"{label[0].upper()}{label[1:]} (Gy)")
    ax.set_ylabel("Surviving fraction (relative to untreated control)")
    ax.set_title(sc.name.replace("_", " "), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    if "sf_lq" in rows[0]:
        ax.text(0.99, 0.99, "markers: kinetic model; dotted: LQ with alpha_eff, beta_eff",
                transform=ax.transAxes, ha="right", va="top", fontsize=7, color="0.3")
    fig.savefig(path, dpi=150)


def plot_timecourses(result: RunResult, path: Path) -> None:
    """Key states over time, one line per arm, at the largest grid dose: vesicles in each medium,
    cargo delivered to and present in the cytosol of the scored cells, and their DSBs."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m, sc = result.model, result.scenario
    scored = sc.timeline[[e.kind for e in sc.timeline].index("score")].score.population
    top = np.nanmax(result.grid) if np.isfinite(result.grid).any() else np.nan
    panels = [(f"{med}{SEP}vesicles", f"vesicles in {med}", True) for med in m.media]
    for c in m.cargos:
        panels += [(f"{scored}{SEP}{c}_delivered", f"{c} delivered to {scored} (per cell)", False),
                   (f"{scored}{SEP}{c}_cytosolic", f"{c} in the cytosol of {scored} (per cell)", False)]
    panels.append((f"{scored}{SEP}dsb", f"DSBs per cell, {scored}", False))
    fig = Figure(figsize=(11, 2.6 * ((len(panels) + 2) // 3)), layout="constrained")
    FigureCanvasAgg(fig)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (state, title, log) in enumerate(panels):
        ax = fig.add_subplot((len(panels) + 2) // 3, 3, k + 1)
        for a, name in enumerate(result.arms):
            sel = np.flatnonzero((result.arm_index == a) & ((result.grid == top) | np.isnan(result.grid)))
            if not sel.size:
                continue
            y = result.states[sel[0], :, m.state_index[state]]
            ax.plot(result.times, y, color=colours[a % len(colours)], lw=1.2, label=name)
        if log and np.nanmax(result.states[:, :, m.state_index[state]]) > 0:
            ax.set_yscale("symlog", linthresh=1.0)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("time (h)", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=6)
    grid_label = sc.dose_grid.label if sc.dose_grid else ""
    fig.suptitle(f"{sc.name.replace('_', ' ')}" + (f" ({grid_label} {top:g} Gy)" if np.isfinite(top) else ""),
                 fontsize=10)
    fig.savefig(path, dpi=120)


class _Staged:
    """A temporary folder inside ``outdir`` whose files are moved into ``outdir`` only when every
    file was written (so a failure leaves no partial output); raises :class:`OutputError`."""

    def __init__(self, outdir: str | Path):
        self.outdir = Path(outdir)
        self.written: list[Path] = []

    def __enter__(self) -> Path:
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=".exosim-", dir=self.outdir))
        except OSError as exc:
            raise OutputError(f"cannot write to output folder {str(self.outdir)!r}: {exc.strerror or exc}") from None
        return self.tmp

    def __exit__(self, kind, exc, tb) -> bool:
        try:
            if kind is None:
                for f in sorted(self.tmp.iterdir()):
                    os.replace(f, self.outdir / f.name)
                    self.written.append(self.outdir / f.name)
            elif issubclass(kind, OSError):
                raise OutputError(f"cannot write to output folder {str(self.outdir)!r}: "
                                  f"{exc.strerror or exc}") from None
        except OSError as err:
            raise OutputError(f"cannot write to output folder {str(self.outdir)!r}: {err.strerror or err}") from None
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def staged_outputs(outdir: str | Path) -> _Staged:
    """Context manager: write files into the yielded folder; they appear in ``outdir`` together."""
    return _Staged(outdir)


def write_outputs(result: RunResult, outdir: str | Path, *, argv: list[str] | None = None,
                  figure: bool = True) -> list[Path]:
    """Write survival.csv, summary.csv, timecourses.csv, provenance.json and survival.png.

    All files are produced in a temporary folder inside ``outdir`` and moved into
    ``outdir`` only when every file is complete.

    Raises
    ------
    OutputError
        If ``outdir`` cannot be created or written.
    """
    stage = staged_outputs(outdir)
    with stage as tmp:
        rows = survival_table(result)
        (tmp / "survival.csv").write_text(_rows_csv(rows))
        (tmp / "summary.csv").write_text(_rows_csv(summary_table(result, rows)))
        if result.states.shape[1]:
            header, block, arms = timecourse_table(result)
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(header)
            quoted = {a: _quote(a) for a in set(arms)}
            fmt = ",".join(["%.10g"] * block.shape[1])
            buf.writelines(f"{quoted[a]},{fmt % tuple(line)}\n" for a, line in zip(arms, block.tolist()))
            (tmp / "timecourses.csv").write_text(buf.getvalue().replace("nan", ""))
        (tmp / "provenance.json").write_text(json.dumps(provenance(result, argv), indent=1, default=float))
        if figure:
            plot_survival(result, rows, tmp / "survival.png")
    return stage.written
