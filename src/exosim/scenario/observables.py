"""Survival observables of a run, defined once: the conventions, SF2, D10, DMF, bystander
survival and delivered cargo.  Run tables and summaries, sensitivity outputs and fits all
read them from here.

Conventions
-----------
* ``sf`` is the kinetic surviving fraction ``exp(-(L + A + F + Au))`` (lethal lesions,
  apoptotic, ferroptotic and autophagic commitment) times the share spared by the bystander
  response, of the scored population; untreated cells without exosomes have SF = 1.
* ``sf_vs_untreated`` divides by the control arm at grid dose 0 (the
  untreated control); it shows bystander killing at 0 Gy.
* ``sf_within_arm`` divides by the same arm at grid dose 0 (the assay
  convention, plating efficiency of the arm's own unirradiated dish).
* ``dmf_at_sf0.1`` = D10(control) / D10(arm) on the within-arm curves: above 1
  the arm is sensitised, below 1 protected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from exosim.model import catalogue as cat
from exosim.model.declare import SEP
from exosim.model.lq import (
    dose_at_survival,
    dose_at_survival_rows,
    lea_catcheside,
    lq_neg_log_survival,
    survival_at_dose,
    survival_at_dose_rows,
)

if TYPE_CHECKING:  # pragma: no cover
    from exosim.scenario.result import RunResult
    from exosim.scenario.schema import Scenario

__all__ = [
    "CONVENTIONS",
    "NORMALISATIONS",
    "SENSITIVITY_OUTPUTS",
    "control_arm",
    "dose_zero_member",
    "member_index",
    "reference_members",
    "normalise",
    "survival_rows",
    "summary_rows",
    "delivery_rows",
    "sample_outputs",
    "sample_output_symbols",
]

#: the conventions above, as recorded in every run's provenance
CONVENTIONS = (
    "sf: kinetic surviving fraction exp(-(L + A + F + Au)) (lethal lesions, apoptotic, ferroptotic and autophagic "
    "commitment) times the share spared by the bystander response, of the scored population (untreated cells without "
    "exosomes have SF = 1); sf_vs_untreated: divided by the control arm at grid dose 0 (shows bystander "
    "killing at 0 Gy); sf_within_arm: divided by the same arm at grid dose 0 (the assay convention); "
    "dmf_at_sf0.1: D10(control) / D10(arm) on the within-arm curves (above 1 sensitised, below 1 protected)"
)
#: survival normalisations: relative to the control arm at dose 0, to the same arm at dose 0, or none
NORMALISATIONS = ("control", "within_arm", "none")
#: outputs of sensitivity analyses, per parameter sample, of the analysed arm
SENSITIVITY_OUTPUTS = (
    "sf2",
    "dmf_at_sf0.1",
    "bystander_survival",
    "alpha_eff",
    "beta_eff",
    "delivered_copies_per_cell",
)


def control_arm(arms) -> int | None:
    """Index of the control arm (``control: true``), or None."""
    return next((i for i, a in enumerate(arms) if a.control), None)


def dose_zero_member(arm_index: np.ndarray, grid: np.ndarray, arm: int | None) -> int | None:
    """The first member of ``arm`` at grid dose 0, or None."""
    if arm is None:
        return None
    sel = np.flatnonzero((arm_index == arm) & (grid == 0))
    return int(sel[0]) if sel.size else None


def member_index(arm_index: np.ndarray, grid: np.ndarray, arm: int, dose: float | None = None) -> int | None:
    """The member of ``arm`` at grid dose ``dose`` (Gy): the largest dose when None, the arm's
    single member when NaN (no dose grid); None when the dose is not on the grid."""
    rows = np.flatnonzero(arm_index == arm)
    doses = grid[rows]
    if dose is None:
        return int(rows[np.nanargmax(doses)]) if np.isfinite(doses).any() else int(rows[0])
    hit = np.isnan(doses) if np.isnan(dose) else np.isclose(doses, dose, rtol=0, atol=1e-12)
    return int(rows[np.flatnonzero(hit)[0]]) if hit.any() else None


def reference_members(arm_index: np.ndarray, grid: np.ndarray, how: str, control: int | None) -> np.ndarray:
    """Per member, the member its survival is divided by under ``how`` (-1: none, divide by 1;
    -2: no such member, NaN)."""
    if how not in NORMALISATIONS:
        raise ValueError(f"normalisation {how!r}: expected one of {NORMALISATIONS}")
    n = arm_index.size
    if how == "none":
        return np.full(n, -1)
    if how == "control":
        i0 = dose_zero_member(arm_index, grid, control)
        return np.full(n, -1 if i0 is None else i0)
    out = np.empty(n, dtype=int)
    for a in np.unique(arm_index):
        i0 = dose_zero_member(arm_index, grid, int(a))
        out[arm_index == a] = -2 if i0 is None else i0
    return out


def normalise(sf: np.ndarray, arm_index: np.ndarray, grid: np.ndarray, how: str, control: int | None) -> np.ndarray:
    """Surviving fractions (..., N) relative to the reference of each member (see :data:`NORMALISATIONS`).

    ``control`` without a control arm (or without its dose-0 member) divides by 1:
    the untreated control then is SF = 1 by construction.
    """
    sf = np.asarray(sf, dtype=float)
    ref = reference_members(arm_index, grid, how, control)
    denom = np.where(ref >= 0, sf[..., np.maximum(ref, 0)], np.where(ref == -1, 1.0, np.nan))
    return sf / denom


def survival_rows(result: RunResult) -> list[dict]:
    """One row per member: kinetic and LQ survival, conventions, modifiers, delivery (survival.csv)."""
    ref = result.reference
    ctrl = control_arm(result.scenario.arms)
    sf_all = result.surviving_fraction
    vs_untreated = normalise(sf_all, result.arm_index, result.grid, "control", ctrl)
    within = normalise(sf_all, result.arm_index, result.grid, "within_arm", ctrl)
    ge = result.grid_event
    lq_ok = bool(ge) and ge.get("scored", False)
    rows = []
    for i in range(result.arm_index.size):
        a = result.arm_index[i]
        i0 = dose_zero_member(result.arm_index, result.grid, a)
        sf = sf_all[i]
        sf0 = sf_all[i0] if i0 is not None else np.nan
        row = {
            "arm": result.arms[a],
            "control": ctrl == a,
            "grid_dose_Gy": result.grid[i],
            "sf": sf,
            "sf_vs_untreated": vs_untreated[i],
            "sf_within_arm": within[i],
        }
        if lq_ok:
            n = ge["fractions"]
            d = result.grid[i] / n
            rho = ref["repair_capacity"][i]
            g = (
                lea_catcheside(
                    ref["repair_rate"][i] * rho,
                    d / ge["dose_rate"],
                    ref["slow_repair_rate"][i] * rho,
                    result.parameters[i, result.model.parameter_index[f"{ge['population']}{SEP}slow_repair_share"]],
                )
                if ge.get("dose_rate")
                else 1.0
            )
            nls = lq_neg_log_survival(ref["alpha_eff"][i], ref["beta_eff"][i], d, n, g)
            row["sf_lq"] = float(sf0 * np.exp(-nls)) if i0 is not None else float(np.exp(-nls))
            row["lq_vs_kinetic_rel"] = row["sf_lq"] / sf - 1.0 if sf > 0 else np.nan
        row.update(
            {
                "alpha_eff_per_Gy": ref["alpha_eff"][i],
                "beta_eff_per_Gy2": ref["beta_eff"][i],
                "repair_capacity": ref["repair_capacity"][i],
                "misrepair_factor": ref["misrepair_factor"][i],
                "apoptotic_propensity": ref["apoptotic_propensity"][i],
                "ferroptosis_defence": ref["ferroptosis_defence"][i],
                "autophagy": ref["autophagy"][i],
                "bystander_dsb_per_h": ref["bystander_damage_drive"][i],
            }
        )
        for c in result.model.cargos:
            row[f"{c}_delivered_copies_per_cell"] = ref[f"{c}_delivered_at_scoring"][i]
        row["residual_dsb_at_scoring"] = ref["residual_dsb_at_scoring"][i]
        for other in result.also_scored:
            row[f"sf_{other}"] = ref[f"surviving_fraction__{other}"][i]
        row["status"] = "ok" if result.status[i] == 0 else "failed"
        row["message"] = result.messages[i]
        rows.append(row)
    return rows


#: tumour growth delay endpoint: the time a tumour takes to reach this multiple of its volume
#: at the start (quadrupling, a common endpoint of tumour growth-delay assays)
GROWTH_MULTIPLE = 4.0


def time_to_multiple(times: np.ndarray, volume: np.ndarray, multiple: float = GROWTH_MULTIPLE) -> float:
    """First time (h, after ``times[0]``) at which ``volume`` reaches ``multiple`` times its first
    value, interpolated linearly in log volume between samples; NaN if it never does."""
    target = multiple * volume[0]
    above = np.flatnonzero(volume >= target)
    if not above.size or not volume[0] > 0:
        return float("nan")
    j = int(above[0])
    if j == 0:
        return 0.0
    v0, v1 = np.log(volume[j - 1]), np.log(volume[j])
    frac = (np.log(target) - v0) / (v1 - v0) if v1 > v0 else 1.0
    return float(times[j - 1] + frac * (times[j] - times[j - 1]) - times[0])


def summary_columns(model) -> list[str]:
    """Every column :func:`summary_rows` can write for ``model`` (those of a dose grid and of a
    protocol without one; a run has one set or the other)."""
    cols = ["arm", "control", "alpha_eff_per_Gy", "beta_eff_per_Gy2", "sf0_vs_untreated"]
    cols += ["sf2_within_arm", "d10_Gy", "sf_at_scoring"]
    for pop in (p for p in model.populations if p.tumour):
        cols += [f"{pop.name}_volume_at_scoring_mm3", f"{pop.name}_days_to_{GROWTH_MULTIPLE:g}x_volume"]
    cols += [f"{c}_delivered_copies_per_cell" for c in model.cargos]
    return cols + ["failed_members", "dmf_at_sf0.1"]


def summary_rows(result: RunResult, rows: list[dict] | None = None) -> list[dict]:
    """One row per arm: alpha_eff, beta_eff, SF2, D10, DMF and bystander survival at 0 Gy, or the
    scored survival of a protocol without a dose grid, and tumour volumes at scoring (summary.csv)."""
    rows = rows if rows is not None else survival_rows(result)
    ge = result.grid_event
    curve = bool(ge) and ge.get("scored", False)
    ctrl = control_arm(result.scenario.arms)
    d10 = {}
    out = []
    for a, name in enumerate(result.arms):
        sel = np.flatnonzero(result.arm_index == a)
        doses = result.grid[sel]
        within = np.array([rows[i]["sf_within_arm"] for i in sel])
        i0 = dose_zero_member(result.arm_index, result.grid, a)
        rec = {
            "arm": name,
            "control": ctrl == a,
            "alpha_eff_per_Gy": rows[sel[0]]["alpha_eff_per_Gy"],
            "beta_eff_per_Gy2": rows[sel[0]]["beta_eff_per_Gy2"],
            "sf0_vs_untreated": rows[i0]["sf_vs_untreated"] if i0 is not None else np.nan,
        }
        if curve:
            rec["sf2_within_arm"] = survival_at_dose(doses, within, 2.0)
            d10[a] = dose_at_survival(doses, within, 0.1)
            rec["d10_Gy"] = d10[a]
        else:  # one protocol, no dose grid: the scored survival itself
            rec["sf_at_scoring"] = rows[sel[0]]["sf"]
        for pop in (p for p in result.model.populations if p.tumour):  # volume endpoint (immune arm)
            idx = result.model.observable_index[f"{pop.name}{SEP}tumour_volume"]
            obs = result.model.observe(result.final_states[sel[:1]], result.parameters[sel[:1]])
            rec[f"{pop.name}_volume_at_scoring_mm3"] = 1000.0 * float(obs[0, idx])
            if result.times.size > 1:
                rec[f"{pop.name}_days_to_{GROWTH_MULTIPLE:g}x_volume"] = (
                    time_to_multiple(result.times, result.observables[sel[0], :, idx], GROWTH_MULTIPLE) / 24.0
                )
        for c in result.model.cargos:
            rec[f"{c}_delivered_copies_per_cell"] = rows[sel[0]][f"{c}_delivered_copies_per_cell"]
        rec["failed_members"] = int(np.sum(result.status[sel]))
        out.append(rec)
    if curve:
        for a, rec in enumerate(out):
            rec["dmf_at_sf0.1"] = d10[ctrl] / d10[a] if ctrl is not None and d10[a] > 0 else np.nan
    return out


def delivery_rows(result: RunResult) -> list[dict]:
    """Delivered cargo copies per scored cell, per arm and cargo, against the copies needed.

    Repression needs of the order of 10^3 cytosolic copies per cell (the parameter
    table's ``half_effect_copies``; Baek et al. 2008, Nature 455:64); unidentified
    factors (kind ``unspecified``) are in abstract units against their own half-effect
    amount.  Reported is the largest cumulative delivery of any member of the arm at
    scoring and its ratio to that number, so a user sees whether a published effect is
    plausible by exosome delivery alone.

    A sponge (cargo with ``sponges``) is judged against the copies whose sites equal the
    endogenous site pool of the repressor it competes for (``P_r/s_jr``: the load that halves
    the occupancy of the repressor's sites under tight binding; Denzler et al. 2014).
    Cargo of the immune arm (``immune_role``) is sensed in the medium, not delivered: it has no row.
    """
    table = cat.parameter_table()
    default = float(table["half_effect_copies"]["value"])
    rows = []
    for a, name in enumerate(result.arms):
        sel = result.arm_index == a
        for c in result.model.cargos:
            rec = result.model.cargo_records[c]
            if rec.get("immune_role"):  # acts through the immune arm, not by delivery into the cells
                continue
            needed = float(rec.get("half_effect_copies", default))
            for r, sites in (rec.get("sponges") or {}).items():
                pool = float(cat.repressors()[r].get("target_sites_per_cell", table["repressor_target_sites"]["value"]))
                needed = min(needed, pool / float(sites)) if rec.get("effects") else pool / float(sites)
            copies = float(np.nanmax(result.reference[f"{c}_delivered_at_scoring"][sel]))
            rows.append(
                {
                    "scenario": result.scenario.name,
                    "arm": name,
                    "cargo": c,
                    "units": "abstract" if rec.get("kind") == "unspecified" else "copies",
                    "delivered_copies_per_cell": copies,
                    "copies_for_repression": needed,
                    "fraction_of_needed": copies / needed,
                }
            )
    return rows


def sample_output_symbols(scenario: Scenario) -> list[str]:
    """The states and rules :func:`sample_outputs` reads of a run of ``scenario``: the scored
    population's surviving fraction, its ``alpha_eff`` and ``beta_eff`` and its delivered cargo
    (what a batch over parameter samples must compute exactly; see
    :class:`exosim.analysis.batch.BatchModel`)."""
    population = next(e.score.population for e in scenario.timeline if e.score is not None)
    names = ["surviving_fraction", "alpha_eff", "beta_eff"] + [f"{c}_delivered" for c in scenario.cargo]
    return [f"{population}{SEP}{n}" for n in names]


def sample_outputs(
    result: RunResult, m_samples: int, target: int, control: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:data:`SENSITIVITY_OUTPUTS` per parameter sample of a replicated run.

    Returns outputs (M, len(SENSITIVITY_OUTPUTS)), failed flags (M,) and one message per
    sample.  ``bystander_survival`` is the analysed arm's survival relative to the control
    arm at grid dose 0 when the grid irradiates the scored cells (NaN without a 0 Gy dose),
    else at the largest grid dose (a donor-dose grid).  ``delivered_copies_per_cell`` counts the
    scenario's first cargo.  ``alpha_eff``, ``beta_eff`` and the delivered copies are the analysed
    arm's at the grid's first dose.
    """
    n_arms = len(result.arms)
    n_grid = result.arm_index.size // (m_samples * n_arms)
    sf = result.surviving_fraction.reshape(m_samples, n_arms, n_grid)
    grid = result.grid[:n_grid]
    failed = result.status.reshape(m_samples, -1).max(axis=1) > 0
    messages = [
        "; ".join(msg for msg in result.messages[s * n_arms * n_grid : (s + 1) * n_arms * n_grid] if msg)
        for s in range(m_samples)
    ]
    ref = {k: v.reshape(m_samples, n_arms, n_grid) for k, v in result.reference.items()}
    out = np.full((m_samples, len(SENSITIVITY_OUTPUTS)), np.nan)
    curve = bool(result.grid_event) and result.grid_event.get("scored", False)
    i0 = np.flatnonzero(grid == 0)
    # relative to the control at 0 Gy of a survival curve (none without a 0 Gy dose), else at the
    # largest dose of a donor-dose grid
    at = (i0[0] if i0.size else None) if curve else int(np.argmax(grid))
    # copies of one cargo (the scenario's first): copies of unlike cargos do not add up
    first = next((c for c in result.model.cargos if f"{c}_delivered_at_scoring" in ref), None)
    delivered = ref[f"{first}_delivered_at_scoring"] if first is not None else np.zeros_like(sf)
    # the within-arm curves of one sample are the members' survival normalised within the arm
    arm_of = np.repeat(np.arange(n_arms), n_grid)
    within = normalise(sf.reshape(m_samples, -1), arm_of, np.tile(grid, n_arms), "within_arm", control)
    within = within.reshape(m_samples, n_arms, n_grid)
    ok = ~failed  # every curve summarised at once (lq.*_rows: the scalar helpers' arithmetic)
    if curve and i0.size:
        out[ok, 0] = survival_at_dose_rows(grid, within[ok, target], 2.0)
        if control is not None:
            out[ok, 1] = dose_at_survival_rows(grid, within[ok, control], 0.1) / dose_at_survival_rows(
                grid, within[ok, target], 0.1
            )
    if at is not None:
        out[ok, 2] = sf[ok, target, at] / sf[ok, control, at] if control is not None else sf[ok, target, at]
    out[ok, 3] = ref["alpha_eff"][ok, target, 0]
    out[ok, 4] = ref["beta_eff"][ok, target, 0]
    out[ok, 5] = delivered[ok, target, 0]
    return out, failed, messages
