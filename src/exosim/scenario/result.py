"""What a run of a scenario returns: :class:`RunResult`, with tidy tables for notebooks.

The arrays are the run's raw record (one row per member); the methods turn them
into pandas tables whose column names are those of the CSV files the CLI
writes (``recipients.dsb``, ``sf_within_arm``, ...), and into an xarray cube.
pandas and xarray are imported only when a table is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from exosim.model.declare import SEP
from exosim.scenario import observables as obs_mod
from exosim.simulate.solver import FAILED

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import xarray

    from exosim.model.assemble import Model
    from exosim.scenario.schema import Scenario

__all__ = ["RunResult", "Member", "public_name", "reference_symbol"]


def public_name(symbol: str) -> str:
    """``recipients__dsb`` -> ``recipients.dsb``: how symbols are named in tables and the API."""
    return symbol.replace(SEP, ".", 1)


def reference_symbol(key: str, population: str) -> str:
    """The model symbol behind a key of :attr:`RunResult.reference` of the scored ``population``
    (``alpha_eff`` -> ``recipients__alpha_eff``; see :meth:`RunResult.collect`)."""
    if key.endswith("_delivered_at_scoring"):
        return f"{population}{SEP}{key.removesuffix('_at_scoring')}"
    if key == "residual_dsb_at_scoring":
        return f"{population}{SEP}dsb"
    if key.startswith(f"surviving_fraction{SEP}"):
        return f"{key.split(SEP, 1)[1]}{SEP}surviving_fraction"
    return f"{population}{SEP}{key}"


@dataclass(frozen=True)
class Member:
    """One member (arm, grid dose) of a run.

    Attributes
    ----------
    index : row of the member in the run's arrays
    arm : arm name
    dose_Gy : grid dose (NaN without a dose grid)
    surviving_fraction : kinetic SF of the scored population at scoring
    status : ``ok`` or ``failed``; ``message`` says why
    parameters : parameter name (``namespace.name``) -> value at the start
    final_states : state name -> value at scoring
    """

    index: int
    arm: str
    dose_Gy: float
    surviving_fraction: float
    status: str
    message: str
    parameters: dict[str, float]
    final_states: dict[str, float]


@dataclass(frozen=True)
class RunResult:
    """Everything one run of a scenario produced.

    Attributes
    ----------
    scenario, model : what was run
    arms : arm names, in order
    arm_index : ndarray (N,), arm of each member
    grid : ndarray (N,), Gy, grid dose of each member (NaN without a dose grid)
    surviving_fraction : ndarray (N,), kinetic SF of the scored population (NaN if failed)
    status : ndarray (N,), 0 = success, 1 = failed
    messages : per-member failure message ("" on success)
    reference : observables of the scored population at the reference time
        (just before the grid irradiation if it irradiates the scored
        population, else at scoring): alpha_eff, beta_eff, modifiers, ...
    final_states : ndarray (N, n) at scoring
    times : ndarray (T,), h, output times
    states : ndarray (N, T, n) state time courses (T = 0 if not recorded)
    observables : ndarray (N, T, m) rule time courses
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
    timing: dict[str, Any]

    @classmethod
    def collect(
        cls,
        compiled,
        y: np.ndarray,
        p: np.ndarray,
        reference,
        status: np.ndarray,
        messages: list[str],
        times: np.ndarray,
        states: np.ndarray,
        obs: np.ndarray,
        ledger: dict,
        p_start: np.ndarray,
        timing: dict,
    ) -> RunResult:
        """Assemble the result of a finished run (called by the runner)."""
        m = compiled.model
        score = compiled.score_event.score
        prefix = f"{score.population}{SEP}"
        obs_final = m.observe(y, p)
        sf = obs_final[:, m.observable_index[f"{prefix}surviving_fraction"]]
        ref_y, ref_p = reference if reference is not None else (y, p)
        ref_obs = m.observe(ref_y, ref_p)
        ref = {n[len(prefix) :]: ref_obs[:, i] for i, n in enumerate(m.observable_names) if n.startswith(prefix)}
        for c in m.cargos:
            ref[f"{c}_delivered_at_scoring"] = y[:, m.state_index[f"{prefix}{c}_delivered"]]
        ref["residual_dsb_at_scoring"] = y[:, m.state_index[f"{prefix}dsb"]]
        for other in score.also:  # e.g. in-field survival beside out-of-field
            sf_other = obs_final[:, m.observable_index[f"{other}{SEP}surviving_fraction"]]
            ref[f"surviving_fraction{SEP}{other}"] = np.where(status == FAILED, np.nan, sf_other)
        sf = np.where(status == FAILED, np.nan, sf)
        return cls._frozen(
            cls(
                compiled.scenario,
                m,
                [a.name for a in compiled.arms],
                compiled.arm_index.copy(),
                compiled.grid.copy(),
                sf,
                status,
                messages,
                ref,
                y,
                times,
                states,
                obs,
                ledger,
                p_start,
                compiled.grid_event,
                timing,
            )
        )

    @staticmethod
    def _frozen(result: RunResult) -> RunResult:
        """Make the arrays read-only and the mappings views, so that the tables cannot drift from them."""
        for value in vars(result).values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        for name in ("reference", "ledger", "grid_event", "timing"):
            mapping = getattr(result, name)
            for value in mapping.values():
                if isinstance(value, np.ndarray):
                    value.flags.writeable = False
            object.__setattr__(result, name, MappingProxyType(dict(mapping)))
        return result

    def replicate(self, r: int, n_members: int) -> RunResult:
        """The members of replicate ``r`` (``n_members`` each, replicate-major) as a run of their own.

        A batch over parameter sets (posterior draws, walkers) runs every set as one
        replicate; its tables are those of replicate ``r`` run alone.
        """
        return self.select(slice(r * n_members, (r + 1) * n_members))

    def select(self, rows: slice) -> RunResult:
        """The members ``rows`` (a slice of the member axis) as a run of their own."""
        per_member = {k: v[rows] for k, v in self.reference.items()}
        ledger = {k: v[rows] for k, v in self.ledger.items()}
        return self._frozen(
            RunResult(
                self.scenario,
                self.model,
                list(self.arms),
                self.arm_index[rows].copy(),
                self.grid[rows].copy(),
                self.surviving_fraction[rows].copy(),
                self.status[rows].copy(),
                list(self.messages[rows]),
                per_member,
                self.final_states[rows].copy(),
                self.times.copy(),
                self.states[rows].copy(),
                self.observables[rows].copy(),
                ledger,
                self.parameters[rows].copy(),
                dict(self.grid_event),
                dict(self.timing),
            )
        )

    # ------------------------------------------------------------------ lookups
    @property
    def also_scored(self) -> list[str]:
        """Populations whose survival is reported beside the scored one (``score.also``)."""
        return [k.split(SEP, 1)[1] for k in self.reference if k.startswith(f"surviving_fraction{SEP}")]

    def state(self, name: str) -> np.ndarray:
        """Final value of a state for every member (``recipients.dsb`` or ``recipients__dsb``)."""
        return self.final_states[:, self.model.state_index[name.replace(".", SEP, 1)]]

    def member(self, *, arm: str | None = None, dose: float | None = None) -> Member:
        """One member by arm name (default: the first arm) and grid dose in Gy (default: the largest).

        Raises
        ------
        KeyError
            No such arm, or the dose is not on the grid.
        """
        a = 0 if arm is None else (self.arms.index(arm) if arm in self.arms else None)
        if a is None:
            raise KeyError(f"no arm {arm!r}; arms: {self.arms}")
        i = obs_mod.member_index(self.arm_index, self.grid, a, None if dose is None else float(dose))
        if i is None:
            raise KeyError(f"dose {dose:g} Gy is not on the grid {sorted(set(self.grid.tolist()))}")
        return Member(
            i,
            self.arms[a],
            float(self.grid[i]),
            float(self.surviving_fraction[i]),
            "ok" if self.status[i] == 0 else "failed",
            self.messages[i],
            {public_name(q.name): float(self.parameters[i, j]) for j, q in enumerate(self.model.parameters)},
            {public_name(s.name): float(self.final_states[i, j]) for j, s in enumerate(self.model.states)},
        )

    # ------------------------------------------------------------------ tables (plain)
    def survival_rows(self) -> list[dict]:
        """survival.csv as a list of rows (see :mod:`exosim.scenario.observables`)."""
        return obs_mod.survival_rows(self)

    def summary_rows(self, rows: list[dict] | None = None) -> list[dict]:
        """summary.csv as a list of rows, one per arm."""
        return obs_mod.summary_rows(self, rows)

    def timecourse_columns(self) -> list[tuple[str, str, str, int]]:
        """(name, unit, 'state' | 'obs', index) of the time-course columns of timecourses.csv."""
        m = self.model
        units = {s.name: s.unit for s in list(m.states) + list(m.derived) + list(m.rules)}
        cols = []
        for pop in m.populations:
            ns = pop.name
            for local in (
                [
                    "dsb",
                    "secretion_drive",
                    "bound_vesicles",
                    "internalised_vesicles",
                    "uptake_enhancement",
                    "dead_share",
                ]
                + [f"{c}_cytosolic" for c in m.cargos]
                + [f"{c}_delivered" for c in m.cargos]
            ):
                name = f"{ns}{SEP}{local}"
                cols.append((name, units[name], "state", m.state_index[name]))
            for local in [
                "release_flux",
                "repair_capacity",
                "misrepair_factor",
                "apoptotic_propensity",
                "ferroptosis_defence",
                "autophagy",
                "bystander_damage_drive",
                "bystander_response",
                "foci",  # populations that score the foci assay only
                "surviving_fraction",
                "tumour_volume",  # tumours only (immune arm)
                "clonogenic_volume",
                "immune_kill_rate",
            ]:
                name = f"{ns}{SEP}{local}"
                if name in m.observable_index:
                    cols.append((name, units[name], "obs", m.observable_index[name]))
        for local in ("dc_activation", "effector_t_cells"):  # the immune arm, where there is one
            name = f"immune{SEP}{local}"
            if name in m.state_index:
                cols.append((name, units[name], "state", m.state_index[name]))
        for med in m.media:
            name = f"{med}{SEP}vesicle_concentration"
            cols.append((name, units[name], "obs", m.observable_index[name]))
            for c in m.cargos:
                for kind in ("vesicular", "free"):
                    name = f"{med}{SEP}{c}_{kind}"
                    cols.append((name, units[name], "state", m.state_index[name]))
        return [(public_name(n), u, k, i) for n, u, k, i in cols]

    def timecourse_block(self) -> tuple[list[str], np.ndarray, list[str]]:
        """Header, numeric block (rows = member x time) and arm label per row of timecourses.csv."""
        cols = self.timecourse_columns()
        n_mem, n_t = self.states.shape[:2]
        block = np.empty((n_mem * n_t, 2 + len(cols)))
        block[:, 0] = np.repeat(self.grid, n_t)
        block[:, 1] = np.tile(self.times[:n_t], n_mem)
        for j, (_, _, kind, idx) in enumerate(cols):
            src = self.states if kind == "state" else self.observables
            block[:, 2 + j] = src[:, :, idx].reshape(-1)
        arms = [self.arms[a] for a in np.repeat(self.arm_index, n_t)]
        return ["arm", "grid_dose_Gy", "time_h"] + [f"{n} [{u}]" for n, u, _, _ in cols], block, arms

    # ------------------------------------------------------------------ tables (pandas, xarray)
    @property
    def survival(self) -> pandas.DataFrame:
        """Per member (arm, grid dose): the columns of survival.csv."""
        import pandas as pd

        return pd.DataFrame(self.survival_rows())

    @property
    def summary(self) -> pandas.DataFrame:
        """Per arm: the columns of summary.csv (alpha_eff, beta_eff, SF2, D10, DMF, ...)."""
        import pandas as pd

        return pd.DataFrame(self.summary_rows())

    def timecourses(self, long: bool = True) -> pandas.DataFrame:
        """The recorded time courses: long (arm, grid_dose_Gy, time_h, variable, unit, value) or wide
        (the columns of timecourses.csv).  Empty if the run recorded none."""
        import pandas as pd

        header, block, arms = self.timecourse_block()
        wide = pd.DataFrame(block, columns=header[1:])
        wide.insert(0, "arm", arms)
        if not long:
            return wide
        cols = self.timecourse_columns()
        out = wide.rename(columns={f"{n} [{u}]": n for n, u, _, _ in cols}).melt(
            id_vars=["arm", "grid_dose_Gy", "time_h"], var_name="variable", value_name="value"
        )
        out.insert(4, "unit", out["variable"].map({n: u for n, u, _, _ in cols}))
        return out

    def to_xarray(self) -> xarray.Dataset:
        """The (arm, dose, time) cube of every state and rule, one data variable each (with its unit)."""
        import xarray as xr

        m = self.model
        n_arms, n_t = len(self.arms), self.states.shape[1]
        n_grid = self.arm_index.size // n_arms
        doses = self.grid[:n_grid]
        data = {}
        units = {s.name: s.unit for s in list(m.states) + list(m.derived) + list(m.rules)}
        for src, names in ((self.states, m.state_names), (self.observables, m.observable_names)):
            for j, name in enumerate(names):
                cube = src[:, :, j].reshape(n_arms, n_grid, n_t)
                data[public_name(name)] = xr.DataArray(cube, dims=("arm", "dose", "time"), attrs={"unit": units[name]})
        ds = xr.Dataset(data, coords={"arm": self.arms, "dose": doses, "time": self.times[:n_t]})
        ds["dose"].attrs["unit"] = "Gy"
        ds["time"].attrs["unit"] = "h"
        ds.attrs.update(scenario=self.scenario.name, sha256=self.scenario.sha256)
        return ds
