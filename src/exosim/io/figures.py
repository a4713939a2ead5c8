"""Figures: survival curves, time courses, sensitivity indices and calibration fits.

Every function draws on a new matplotlib ``Figure`` (Agg canvas, no display) and
saves it to ``path``; the writers in :mod:`exosim.io.outputs` call them inside a
staged folder, so a figure appears complete or not at all.
"""

from __future__ import annotations

import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exosim.model.declare import SEP
from exosim.model.units import UNITS
from exosim.scenario.observables import GROWTH_MULTIPLE, time_to_multiple

if TYPE_CHECKING:  # pragma: no cover
    from exosim.analysis.fit import FitProblem, FitResult, Observations
    from exosim.analysis.sensitivity import Analysis
    from exosim.scenario.result import RunResult

# the fit modules (scipy.optimize, ~1 s to import) are imported by the fit panels that use them,
# so that writing a run's survival figure does not pay for them

__all__ = ["plot_survival", "plot_timecourses", "plot_analysis", "plot_fit", "plot_scorecard", "save_options"]

# ---------------------------------------------------------------------- style, in one place
#: colour-blind-safe colours (Okabe & Ito 2008, "Color universal design"); the control arm is
#: black, the others take these in order (yellow last: low contrast on white)
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442"]
#: markers and line styles per arm, so arms that overlap stay distinguishable in print
ARM_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
#: no dotted style among them: dotted is the LQ curve drawn beside each arm
ARM_LINES = ["-", "--", "-.", (0, (8, 2, 1, 2, 1, 2)), (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (6, 3)), (0, (5, 1, 1, 1))]
#: colours of the evidence roles
ROLE_STYLE = {"calibration": (OKABE_ITO[3], "o"), "validation": (OKABE_ITO[4], "s")}


#: formats and resolution of every saved figure (``exosim figures --format/--dpi``; see
#: :func:`save_options`); the default is a PNG at each figure's own resolution
_SAVE: dict = {"formats": ("png",), "dpi": None}
FORMATS = ("png", "pdf", "svg")


def parse_formats(text: str) -> tuple[str, ...]:
    """``"png,pdf"`` -> ``("png", "pdf")``; ValueError naming the first unknown format."""
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS] or ([] if formats else [text])
    if bad:
        raise ValueError(f"unknown format {bad[0]!r}; expected a comma-separated list of {', '.join(FORMATS)}")
    return formats


@contextmanager
def save_options(formats: tuple[str, ...] = ("png",), dpi: int | None = None):
    """Save the figures drawn inside the block in ``formats`` (png, pdf, svg: one file each,
    the suffix of the path replaced) at ``dpi`` (raster formats; None: each figure's own)."""
    formats = parse_formats(",".join(formats))
    old = dict(_SAVE)
    _SAVE.update(formats=tuple(formats), dpi=dpi)
    try:
        yield
    finally:
        _SAVE.update(old)


def _save(fig, path, dpi: int) -> None:
    path = Path(path)
    for fmt in _SAVE["formats"]:
        fig.savefig(path.with_suffix(f".{fmt}"), dpi=_SAVE["dpi"] or dpi, format=fmt)


def _canvas(figsize, layout: str | None = "constrained"):
    """A figure on an Agg canvas; ``layout=None`` for single-axes figures whose margins are set
    by hand (the constrained-layout solve is a third of the time ``exosim run`` spends drawing)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def prepare() -> None:
    """Import what drawing needs and draw one small figure (text, markers, a legend, a log axis)
    to memory, so that fonts and tick formatting are loaded before a figure is due: what a child
    process does ahead of the call while the parent integrates (:mod:`exosim.util.forked`)."""
    import io

    fig = _canvas((2.0, 1.6), layout=None)
    ax = fig.add_subplot()
    ax.plot([0.0, 2.0, 4.0], [1.0, 0.5, 0.1], marker="o", markerfacecolor="none", label="arm")
    ax.set_yscale("log")
    _readable_survival_axis(ax, np.array([1.0, 0.5, 0.1]))
    ax.set_xlabel("Dose (Gy)")
    ax.set_title("exosim", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.savefig(io.BytesIO(), format="png", dpi=40)


def _colours() -> list[str]:
    return list(OKABE_ITO)


def arm_styles(controls: list[bool]) -> list[dict]:
    """:func:`arm_style` of every arm, numbering the non-control arms in order."""
    rank = np.cumsum([not c for c in controls]) - 1
    return [arm_style(int(r), bool(c)) for r, c in zip(rank, controls)]


def arm_style(a: int, control: bool) -> dict:
    """Line, marker and colour of the ``a``-th non-control arm (any ``a`` for the control).

    The control is black and dashed with small filled dots; the others take Okabe-Ito colours,
    each its own marker and line style, with hollow markers that shrink with the arm index so
    coinciding points show as nested outlines."""
    if control:
        return {"color": "black", "linestyle": "--", "marker": "o", "ms": 3.5, "zorder": 4}
    return {
        "color": OKABE_ITO[a % len(OKABE_ITO)],
        "linestyle": ARM_LINES[a % len(ARM_LINES)],
        "marker": ARM_MARKERS[(a + 1) % len(ARM_MARKERS)],
        "ms": max(8.0 - 1.0 * a, 4.0),
        "markerfacecolor": "none",
        "markeredgewidth": 1.2,
        "zorder": 3,
    }


def _grid_ticks(ax, values) -> None:
    """Ticks of a symlog dose axis at the doses themselves, plain numbers, no minor ticks: the
    default "0" next to 10^-2 collides, and decades say little for a dose grid."""
    from matplotlib.ticker import NullLocator

    ticks = sorted({float(v) for v in np.asarray(values, float) if np.isfinite(v)})
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks], fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())


def _plain_log_ticks(axis) -> None:
    """Decimal labels on a log axis at 1, 2 and 5 per decade; unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def scenario_title(sc) -> str:
    """The scenario's ``title``, or its name with spaces; flagged when it states a hypothesis."""
    title = sc.title or sc.name.replace("_", " ")
    return title + (" (hypothesis)" if sc.hypotheses else "")


def _readable_survival_axis(ax, values: np.ndarray) -> None:
    """Log survival axis with readable ticks: plain decimals when the data span less than a
    decade, a linear axis when they span less than half of one (bystander effects of 10^-4)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, ScalarFormatter

    v = values[np.isfinite(values) & (values > 0)]
    if not v.size:
        return
    span = v.max() / v.min()
    if span < 1.5:
        ax.set_yscale("linear")
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
        ax.yaxis.set_major_formatter(fmt)
    elif span < 10:
        ax.yaxis.set_major_locator(LogLocator(subs=tuple(range(1, 10))))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def plot_survival(result: RunResult, rows: list[dict], path: Path, bands=None) -> None:
    """Log survival vs grid dose, one line per arm (control black and dashed), LQ dotted where
    defined; 95 % prediction ``bands`` (posterior draws): the control's shaded, the other arms'
    as bars.  A scenario without a dose grid (a fractionated course) gets its survival over the
    protocol instead (:func:`_plot_course`)."""
    sc = result.scenario
    if not np.isfinite(result.grid).any():
        if any(p.tumour for p in result.model.populations) and result.times.size > 1:
            _plot_tumours(result, rows, path)
        else:
            _plot_course(result, rows, path)
        return
    fig = _canvas((6.4, 4.6), layout=None)
    fig.subplots_adjust(left=0.13, right=0.975, bottom=0.11, top=0.93)
    ax = fig.add_subplot()
    drawn = []
    styles = arm_styles(
        [bool(rows[int(np.flatnonzero(result.arm_index == a)[0])]["control"]) for a in range(len(result.arms))]
    )
    for a, name in enumerate(result.arms):
        sel = np.flatnonzero(result.arm_index == a)
        x = result.grid[sel]
        y = np.array([rows[i]["sf_vs_untreated"] for i in sel])
        drawn.append(y)
        control = bool(rows[sel[0]]["control"])
        style = styles[a]
        colour = style["color"]
        ax.plot(x, y, label=name, lw=1.4, **style)
        if bands is not None and bands.params:
            lo = np.array([bands.survival[i]["sf_vs_untreated_low"] for i in sel])
            hi = np.array([bands.survival[i]["sf_vs_untreated_high"] for i in sel])
            drawn += [lo, hi]
            if control:  # the control's band shaded; the other arms' as bars beside their points
                ax.fill_between(x, lo, hi, color="0.5", alpha=0.2, lw=0, zorder=1)
            else:
                shift = 1.0 + 0.012 * (a - len(result.arms) / 2)  # side by side, on linear and log axes
                ax.vlines(x * shift, lo, hi, color=colour, lw=1.6, alpha=0.75, zorder=2)
        if "sf_lq" in rows[sel[0]]:
            lq = np.array([rows[i]["sf_lq"] for i in sel]) * (
                y[0] / rows[sel[0]]["sf_lq"] if rows[sel[0]]["sf_lq"] > 0 else 1.0
            )
            ax.plot(x, lq, ":", color=colour, lw=1.6, alpha=0.9, zorder=2)
    ax.set_yscale("log")
    _readable_survival_axis(ax, np.concatenate(drawn))
    positive = result.grid[result.grid > 0]
    if positive.size and positive.max() / positive.min() > 100:  # mGy to Gy: keep both ends readable
        ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
        ax.set_xlim(0, float(positive.max()) * 1.3)
        _grid_ticks(ax, result.grid)
    label = sc.dose_grid.label if sc.dose_grid and sc.dose_grid.label else "dose"
    ax.set_xlabel(f"{label[0].upper()}{label[1:]} (Gy)")
    ax.set_ylabel("Surviving fraction (relative to untreated control)")
    ax.set_title(scenario_title(sc), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")  # where it hides the fewest points, lines and bars
    notes = ["markers: kinetic model; dotted: LQ with alpha_eff, beta_eff"] if "sf_lq" in rows[0] else []
    if bands is not None and bands.params:
        notes.append(f"95 % prediction bands, {bands.draws} posterior draws: shaded (control), bars (other arms)")
    if notes:  # a caption under the axes: inside them it lay over the control's line at 1
        fig.subplots_adjust(bottom=0.11 + 0.028 * len(notes))
        fig.text(0.975, 0.008, "\n".join(notes), ha="right", va="bottom", fontsize=7, color="0.3")
    _save(fig, path, 150)


def _plot_course(result: RunResult, rows: list[dict], path: Path) -> None:
    """Survival of the scored population over a protocol without a dose grid (a fractionated
    course): the time course of its surviving fraction per arm when time courses were recorded,
    with the final value and its ratio to the control in the legend."""
    sc, m = result.scenario, result.model
    scored = sc.timeline[[e.kind for e in sc.timeline].index("score")].score.population
    fig = _canvas((6.4, 4.6))
    ax = fig.add_subplot()
    ctrl = next((i for i, r in enumerate(rows) if r["control"]), 0)
    idx = m.observable_index.get(f"{scored}{SEP}surviving_fraction")
    have_course = result.observables.size and idx is not None and result.times.size > 1
    first = [int(np.flatnonzero(result.arm_index == a)[0]) for a in range(len(result.arms))]
    styles = arm_styles([bool(rows[i]["control"]) for i in first])
    for a, name in enumerate(result.arms):
        i = first[a]
        control = bool(rows[i]["control"])
        style = styles[a]
        final = rows[i]["sf"]
        label = f"{name}: SF {final:.3g}" + ("" if control else f" ({final / rows[ctrl]['sf']:.3g} x control)")
        if have_course:
            style = {k: v for k, v in style.items() if k not in ("marker", "ms", "markerfacecolor", "markeredgewidth")}
            ax.plot(result.times, result.observables[i, :, idx], label=label, lw=1.4, **style)
        else:
            ax.bar(a, final, color=style["color"], label=label)
    ax.set_yscale("log")
    if not have_course:  # bars grow from well below the smallest value
        ax.set_ylim(bottom=min(r["sf"] for r in rows if r["sf"] > 0) / 10)
    if have_course:
        ax.set_xlabel("Time (h)")
    else:
        ax.set_xticks([])
    ax.set_ylabel(f"Surviving fraction of {scored}")
    first = next((e for e in sc.timeline if e.kind == "irradiate"), None)
    ax.set_title(scenario_title(sc) + (f"\n{first.label}" if first is not None and first.label else ""), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    _save(fig, path, 150)


def _plot_tumours(result: RunResult, rows: list[dict], path: Path) -> None:
    """Tumour volume over the protocol, one panel per tumour and one line per arm (the endpoint
    of scenarios with an immune arm: growth delay), with the volume at scoring in the legend."""
    sc, m = result.scenario, result.model
    tumours = [p.name for p in m.populations if p.tumour]
    fig = _canvas((5.2 * len(tumours), 4.4))
    first = [int(np.flatnonzero(result.arm_index == a)[0]) for a in range(len(result.arms))]
    styles = arm_styles([bool(rows[i]["control"]) for i in first])
    days = (result.times - result.times[0]) / 24.0
    for k, pop in enumerate(tumours):
        ax = fig.add_subplot(1, len(tumours), k + 1)
        idx = m.observable_index[f"{pop}{SEP}tumour_volume"]
        for a, name in enumerate(result.arms):
            style = {
                key: v
                for key, v in styles[a].items()
                if key not in ("marker", "ms", "markerfacecolor", "markeredgewidth")
            }
            v = 1000.0 * result.observables[first[a], :, idx]  # mL -> mm3
            t4 = time_to_multiple(result.times, v, GROWTH_MULTIPLE) / 24.0
            reach = f"{GROWTH_MULTIPLE:g}x in {t4:.1f} d" if np.isfinite(t4) else f"not {GROWTH_MULTIPLE:g}x by the end"
            ax.plot(days, v, lw=1.5, label=f"{name}: {reach}", **style)
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel("Time (days)")
        ax.set_ylabel("Tumour volume (mm$^3$)")
        ax.set_title(f"{pop.replace('_', ' ')} (legend: time to {GROWTH_MULTIPLE:g}x the initial volume)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(scenario_title(sc), fontsize=10)
    _save(fig, path, 150)


def plot_timecourses(result: RunResult, path: Path) -> None:
    """Key states over time, one line per arm, at the largest grid dose: vesicles in each medium,
    cargo delivered to and present in the cytosol of the scored cells, the targets sponges
    release from repression, and the cells' DSBs."""
    m, sc = result.model, result.scenario
    scored = sc.timeline[[e.kind for e in sc.timeline].index("score")].score.population
    top = np.nanmax(result.grid) if np.isfinite(result.grid).any() else np.nan
    panels = [(f"{med}{SEP}vesicles", f"vesicles in {med}", True) for med in m.media]
    for c in m.cargos:
        panels += [
            (f"{scored}{SEP}{c}_delivered", f"{c} delivered to {scored} (per cell)", False),
            (f"{scored}{SEP}{c}_cytosolic", f"{c} in the cytosol of {scored} (per cell)", False),
        ]
    # targets a sponge releases from an endogenous repressor: the relief is the sponge's whole effect
    relieved = sorted({k for hits in m.repressor_records.values() for k in hits})
    panels += [(f"{scored}{SEP}{k}_level", f"{k} in {scored} (relative to baseline)", False) for k in relieved]
    panels.append((f"{scored}{SEP}dsb", f"DSBs per cell, {scored}", False))
    if f"immune{SEP}effector_t_cells" in m.state_index:  # the immune arm
        panels += [
            (f"immune{SEP}dc_activation", "dendritic cells activated through STING (share)", False),
            (f"immune{SEP}effector_t_cells", "effector T cells primed against the tumours", False),
        ]
    rows = (len(panels) + 2) // 3
    height = 2.6 * rows
    # margins set by hand (inches): a constrained-layout solve re-measures every tick label and
    # was half the time of a gallery run (``exosim figures``)
    fig = _canvas((11, height), layout=None)
    fig.subplots_adjust(
        left=0.75 / 11,
        right=1 - 0.2 / 11,
        top=1 - 0.55 / height,
        bottom=0.45 / height,
        wspace=0.32,
        hspace=1.05 / (2.6 - (1.0 / rows)),
    )
    units = {s.name: s.unit for s in m.states}
    styles = arm_styles([bool(a.control) for a in sc.arms] if sc.arms else [True])
    for k, (state, title, log) in enumerate(panels):
        ax = fig.add_subplot((len(panels) + 2) // 3, 3, k + 1)
        for a, name in enumerate(result.arms):
            style = styles[a]
            sel = np.flatnonzero((result.arm_index == a) & ((result.grid == top) | np.isnan(result.grid)))
            if not sel.size:
                continue
            y = result.states[sel[0], :, m.state_index[state]]
            ax.plot(result.times, y, color=style["color"], linestyle=style["linestyle"], lw=1.2, label=name)
        if log and np.nanmax(result.states[:, :, m.state_index[state]]) > 0:
            ax.set_yscale("symlog", linthresh=1.0)
        unit = units.get(state, "")
        ax.set_ylabel(
            "share" if state.endswith("dc_activation") else "relative to baseline" if unit == "1" else unit, fontsize=7
        )
        ax.set_title(textwrap.fill(title, 48), fontsize=8)  # long cargo names: two lines, no overlap
        ax.set_xlabel("time (h)", fontsize=8)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=6)
    grid_label = sc.dose_grid.label if sc.dose_grid else ""
    fig.suptitle(
        scenario_title(sc) + (f", {grid_label} {top:g} Gy" if np.isfinite(top) else ""),
        fontsize=10,
    )
    _save(fig, path, 120)


#: Morris panels: factors whose mu* and sigma are both at most this share of the largest are
#: counted in a note instead of labelled one by one
MORRIS_LABEL_SHARE = 0.03


def plot_analysis(analysis: Analysis, path, title: str | None = None) -> None:
    """Tornado (local), mu*-sigma (Morris) or S1/ST bars with intervals (Sobol), one panel per output;
    ``title``: what was analysed (scenario, arm, samples), after the method."""
    from matplotlib.ticker import MaxNLocator

    outs = analysis.outputs
    ncol = 3
    nrow = int(np.ceil(len(outs) / ncol))
    fig = _canvas((4.2 * ncol, 3.2 * nrow))
    names = list(analysis.space.names)
    colours = _colours()
    for k, out in enumerate(outs):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        rows = [r for r in analysis.indices if r["output"] == out]
        keys = {"local": ("coefficient",), "morris": ("mu_star",)}.get(analysis.method, ("S1", "ST"))
        values = np.array([float(r[key]) for r in rows for key in keys])
        empty = analysis.screening.get(out, {}).get("note")  # constant, not defined, too few blocks
        if empty is None and not np.isfinite(values).any():
            empty = "not defined for this scenario\nand dose grid"
        elif empty is None and np.all(values[np.isfinite(values)] == 0):
            empty = "no parameter moves this output\n(every index is 0)"
        if empty:
            ax.text(0.5, 0.5, empty, ha="center", va="center", fontsize=8, color="0.4", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(out, fontsize=8)
            continue
        if analysis.method == "local":
            coef = np.array([r["coefficient"] for r in rows])
            order = np.argsort(np.nan_to_num(np.abs(coef), nan=-1))
            ax.barh(
                np.arange(len(rows)), coef[order], color=[colours[0] if c >= 0 else colours[3] for c in coef[order]]
            )
            ax.set_yticks(np.arange(len(rows)), [names[i] for i in order], fontsize=6)
            ax.axvline(0, color="black", lw=0.5)
            ax.set_xlabel("d ln y / d ln p (orange: y rises with p, blue: falls)", fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(4))
        elif analysis.method == "morris":
            mu = np.array([r["mu_star"] for r in rows])
            sig = np.array([r["sigma"] for r in rows])
            ax.scatter(mu, sig, s=12)
            # factors near the origin are labelled as a group (their names would pile up there)
            near = (np.nan_to_num(mu) <= MORRIS_LABEL_SHARE * np.nanmax(mu)) & (
                np.nan_to_num(sig) <= MORRIS_LABEL_SHARE * np.nanmax(sig)
            )
            for i, name in enumerate(names):
                if np.isfinite(mu[i]) and not near[i]:
                    ax.annotate(name, (mu[i], sig[i]), fontsize=5, annotation_clip=False)
            if near.sum() > 1:
                ax.text(
                    0.98,
                    0.04,
                    f"{int(near.sum())} factors near 0 (mu* and sigma\n<= {MORRIS_LABEL_SHARE:.0%} of the largest)",
                    ha="right",
                    va="bottom",
                    fontsize=5,
                    color="0.4",
                    transform=ax.transAxes,
                )
            elif near.any():
                i = int(np.flatnonzero(near)[0])
                ax.annotate(names[i], (mu[i], sig[i]), fontsize=5, annotation_clip=False)
            ax.set_xlim(left=0.0, right=1.35 * float(np.nanmax(mu)) if np.nanmax(mu) > 0 else None)
            ax.set_ylim(bottom=0.0, top=1.15 * float(np.nanmax(sig)) if np.nanmax(sig) > 0 else None)
            # SALib's elementary effect: the change of y per unit of the [0, 1]-scaled factor, i.e.
            # across the factor's whole sampled range (its decades, for a log-uniform factor)
            ax.set_xlabel("mu* (change of y across the factor's sampled range)", fontsize=7)
            ax.set_ylabel("sigma", fontsize=7)
        else:
            x = np.arange(len(rows))
            for off, key, colour in ((-0.2, "S1", colours[0]), (0.2, "ST", colours[1])):
                val = np.array([r[key] for r in rows])
                err = np.array([r[f"{key}_conf"] for r in rows])
                ax.bar(x + off, val, 0.4, yerr=err, label=key, color=colour, capsize=2, error_kw={"lw": 0.6})
            ax.set_xticks(x, names, rotation=60, ha="right", fontsize=6)
            ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
            ax.legend(fontsize=6)
        ax.set_title(out, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{analysis.method} sensitivity" + (f": {title}" if title else ""), fontsize=9)
    _save(fig, path, 130)


#: a fit's survival panel has a log axis when the data and model span more than this factor
#: (clonogenic survival over doses); relative survival near 1 (medium transfer) stays linear
SURVIVAL_LOG_SPAN = 10.0


def _dose_panel(ax, problem: FitProblem, result: FitResult, ds: Observations) -> None:
    from exosim.analysis.fit import FitProblem, Observations

    if ds.kind == "survival":
        obs, err = ds.y, ds.w
        ylabel = {
            "control": "survival relative to control",
            "within_arm": "surviving fraction (within arm)",
            "none": "surviving fraction",
        }[problem.normalise]
    else:
        pe = result.nuisance[problem.plating_key(ds)]
        obs = ds.y / (ds.w * pe)
        err = np.sqrt(np.maximum(ds.y, 1.0) * result.dispersion) / (ds.w * pe)
        ylabel = "surviving fraction (colonies / seeded / PE)"
    unit = problem.scenario.dose_grid.unit
    scale = UNITS["dose"][unit]
    positive = ds.dose[ds.dose > 0]
    logscale = bool(positive.size) and ds.dose.max() / positive.min() > 50
    # the model as a curve: the fitted problem evaluated on a dense dose grid
    if logscale:
        lin = np.linspace(min(ds.dose.min(), 0.0), positive.min(), 20)  # the linear part of the axis
        dense = np.unique(np.concatenate([lin, np.geomspace(positive.min(), ds.dose.max(), 60)]))
    else:
        dense = np.linspace(ds.dose.min(), ds.dose.max(), 60)
    arms = sorted(set(ds.arm), key=ds.arm.index)
    grid = Observations(
        "curve",
        "survival",
        [a for a in arms for _ in dense],
        np.tile(dense, len(arms)),
        np.ones(dense.size * len(arms)),
        np.ones(dense.size * len(arms)),
    )
    curve = FitProblem(
        problem.scenario,
        grid,
        problem.params,
        normalise=problem.normalise,
        ranges=dict(zip(problem.params, problem.bounds)),
        backend=problem.backend,
    )
    curve = curve.predict(result.estimate[None, :])[0].reshape(len(arms), dense.size)
    for a, model in zip(arms, curve):
        sel = np.array([x == a for x in ds.arm])
        line = ax.errorbar(ds.dose[sel] / scale, obs[sel], yerr=err[sel], fmt="o", capsize=3, label=f"{a} (data)")
        ax.plot(dense / scale, model, "-", color=line[0].get_color(), label=f"{a} (model)")
    ax.set_xlabel(f"{problem.scenario.dose_grid.label or 'dose'} ({unit})")
    ax.set_ylabel(ylabel)
    shown = np.concatenate([np.ravel(obs), np.ravel(curve)])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    if shown.size and shown.max() > SURVIVAL_LOG_SPAN * shown.min():  # survival over decades: a log axis
        ax.set_yscale("log", nonpositive="clip")
        _plain_log_ticks(ax.yaxis)
    if logscale:
        ax.set_xscale("symlog", linthresh=max(positive.min() / scale, 1e-6))
        _grid_ticks(ax, np.unique(ds.dose) / scale)


def _timecourse_panel(ax, problem: FitProblem, result: FitResult, ds: Observations, members: np.ndarray) -> None:
    """Data with error bars and the fitted model as a continuous curve, one per (arm, dose, observable)."""
    dense = np.unique(np.concatenate([np.linspace(ds.time.min(), ds.time.max(), 200), ds.time]))
    res = problem.simulate(result.estimate, record_times=dense)
    scales = {label: np.array([result.nuisance[problem.scale_key(ds, label)]]) for label in ds.groups}
    keys = sorted(
        {(a, d, o) for a, d, o in zip(ds.arm, ds.dose, ds.observable)},
        key=lambda k: (ds.arm.index(k[0]), np.nan_to_num(k[1]), ds.observable.index(k[2])),
    )
    for a, d, o in keys:
        sel = np.array([(x, y, z) == (a, d, o) for x, y, z in zip(ds.arm, ds.dose, ds.observable)], dtype=bool)
        m = members[sel][0]
        curve = problem.timecourse_values(res, ds, [m] * dense.size, dense, [o] * dense.size)
        fac = ds.factor[sel][0]
        curve = curve * (scales[o][:, None] if o in scales else fac)
        label = f"{a}: {o}" + (
            ""
            if np.isnan(d) or problem.scenario.dose_grid is None or len(problem.scenario.dose_grid.values) < 2
            else f" ({d:g} Gy)"
        )
        line = ax.errorbar(ds.time[sel], ds.y[sel], yerr=ds.w[sel], fmt="o", capsize=3, label=label)
        ax.plot(dense, curve[0], "-", color=line[0].get_color())
    ax.set_xlabel("time (h)")
    from exosim.analysis.fit.data import RELATIVE

    units = sorted({"relative (a.u.)" if u.lower() in RELATIVE else u for u in ds.unit})
    ax.set_ylabel(units[0] if len(units) == 1 else "value (" + ", ".join(units) + ")")


def plot_fit(problem: FitProblem, result: FitResult, path) -> None:
    """One panel per data file (data with error bars over the fitted model) and the profiles."""
    n = len(problem.datasets)
    fig = _canvas((5 * (n + 1), 4.2))
    axes = fig.subplots(1, n + 1)
    for ax, ds, members in zip(axes, problem.datasets, problem._members):
        if ds.kind == "timecourse":
            _timecourse_panel(ax, problem, result, ds, members)
        else:
            _dose_panel(ax, problem, result, ds)
        ax.set_title(f"{scenario_title(problem.scenario)}: {Path(ds.source).name}", fontsize=9)
        ax.legend(fontsize=6)
    axp = axes[-1]
    from scipy import stats

    crit = stats.chi2.ppf(0.95, 1)
    for name, prof in result.profiles.items():
        axp.plot(10.0 ** np.array(prof["log10_value"]), prof["statistic"], label=name)
    axp.axhline(crit, color="k", lw=0.8, ls="--", label="95% threshold")
    axp.set_xscale("log")
    _plain_log_ticks(axp.xaxis)
    axp.set_ylim(0, max(4 * crit, 1))
    axp.set_xlabel("parameter value")
    axp.set_ylabel("2 (NLL - NLL_min)" + (" (counts / dispersion)" if result.dispersion > 1 else ""))
    axp.set_title("profile likelihood", fontsize=9)
    axp.legend(fontsize=7)
    _save(fig, path, 120)


def plot_scorecard(rows: list[dict], rates: dict, path: Path, ylabel: str = "Model (catalogue parameters)") -> None:
    """Model vs observed on log axes, one marker per entry (filled: within its band), error
    bars the observation's band, coloured by role; the identity line with a factor-2 band.
    Values at or below zero and failed runs sit on the bottom or left edge, marked."""
    fig = _canvas((7.2, 6.4))
    ax = fig.add_subplot()
    observed = [r["observed"] for r in rows if r["observed"] > 0] + [r["high"] for r in rows if r["high"] > 0]
    lo, hi = (min(observed) / 10, max(observed) * 10) if observed else (1e-3, 1e3)
    models = [r["model"] for r in rows if np.isfinite(r["model"]) and r["model"] > 0]
    lo = min([lo] + [m / 2 for m in models if m > lo / 100])  # far-off models are clipped to the edge
    hi = max([hi] + [m * 2 for m in models if m < hi * 100])
    floor = lo * 1.3
    grid = np.geomspace(lo, hi, 50)
    ax.fill_between(grid, grid / 2, grid * 2, color="0.9", zorder=0, label="within a factor of 2")
    ax.plot(grid, grid, color="0.4", lw=1, zorder=1, label="model = observed")
    at: dict[tuple, int] = {}  # markers per drawn point: entries that coincide are counted, not hidden
    for role, (colour, marker) in ROLE_STYLE.items():
        sel = [r for r in rows if r["role"] == role]
        if not sel:
            continue
        r_ = rates.get(role, {})
        label = f"{role}: {r_.get('passed', 0)}/{r_.get('entries', 0)} within uncertainty"
        for i, r in enumerate(sel):
            x = r["observed"] if r["observed"] > 0 else floor
            y = float(np.clip(r["model"], floor, hi / 1.3)) if np.isfinite(r["model"]) else floor
            xerr = np.array([[max(x - max(r["low"], floor * 0.99), 0)], [max(r["high"] - x, 0)]])
            ax.errorbar(x, y, xerr=xerr, fmt="none", ecolor=colour, elinewidth=0.8, alpha=0.6, zorder=2)
            ok = r["within"] == "yes"
            key = (round(float(np.log10(x)), 3), round(float(np.log10(y)), 3))
            at[key] = at.get(key, 0) + 1
            ax.plot(
                x,
                y,
                marker="x" if r["status"] == "failed" else marker,
                ms=6,
                color=colour,
                mfc=colour if ok else "white",
                ls="none",
                zorder=3,
                label=label if i == 0 else None,
            )
    for (lx, ly), count in at.items():
        if count > 1:
            ax.annotate(
                f"x{count}", (10**lx, 10**ly), xytext=(5, 3), textcoords="offset points", fontsize=6.5, color="0.2"
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("Observed (published value; bars: band an entry must meet)")
    ax.set_ylabel(ylabel)
    ax.set_title("exosim against published evidence", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.text(
        0.99,
        0.01,
        "filled: within uncertainty; open: outside; x: run failed; xN: N entries at one point\n"
        "values off the axes, <= 0 or failed: drawn at the edge",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=6.5,
        color="0.3",
    )
    _save(fig, path, 150)
