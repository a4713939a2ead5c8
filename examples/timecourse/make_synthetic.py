"""Write the SYNTHETIC example data of this folder (not measurements).

Nanoparticle-tracking counts of the donor medium (absolute, 10% CV) and membrane-dye uptake
by the recipients (relative units, 5% of the maximum) in the default HNSCC scenario, simulated
at internalisation_rate 0.4 /h and baseline_release_rate 120 particles/cell/h (table values 1.0
and 60) with Gaussian noise, seed 0.  Fit them back with::

    exosim fit scenarios/hnscc_exosome_radioresistance.yaml examples/timecourse/nta.csv \\
        examples/timecourse/uptake.csv --params internalisation_rate,baseline_release_rate
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import exosim
from exosim.analysis import fit as _fit

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parents[1] / "scenarios" / "hnscc_exosome_radioresistance.yaml"
TRUTH = {"internalisation_rate": 0.4, "baseline_release_rate": 120.0}
ARM = "exosomes from 6 Gy donors"
UPTAKE = "recipients.bound_vesicles + recipients.internalised_vesicles"
FILES = {
    "nta.csv": (
        "arm,time,observable,value,sd",
        [(ARM, t, "donor_flask.vesicle_concentration") for t in ("2 h", "6 h", "12 h", "18 h", "24 h")],
    ),
    "uptake.csv": (
        "arm,time,observable,value,sd,unit",
        [(ARM, t, UPTAKE) for t in ("30 min", "1 h", "2 h", "4 h", "8 h", "16 h", "24 h")],
    ),
}
ADDED_AT = 25.0  # h, the transfer to the recipients (uptake times are after it)


def main() -> None:
    sc = exosim.load_scenario(SCENARIO)
    rows = {name: [(a, _shift(t, name), o) for a, t, o in r] for name, (_, r) in FILES.items()}
    for name, (header, _) in FILES.items():  # templates, so that the data reader resolves observables
        (HERE / name).write_text(
            header
            + "\n"
            + "".join(
                ",".join(map(str, r)) + ",1,1" + (",relative" if "unit" in header else "") + "\n" for r in rows[name]
            )
        )
    data = [_fit.read_observations(HERE / name, sc) for name in FILES]
    prob = _fit.FitProblem(sc, data, list(TRUTH))
    res = prob.simulate(np.array([list(TRUTH.values())]), prob.record_times)
    rng = np.random.default_rng(0)
    for (name, (header, _)), ds, members in zip(FILES.items(), data, prob._members):
        model = prob.timecourse_values(res, ds, members, ds.time, ds.observable)[0]
        relative = "unit" in header
        if relative:
            model = model * 1000.0  # a.u. per particle, unknown to the fit
        sd = np.full(model.size, 0.05 * model.max()) if relative else 0.1 * model
        value = np.maximum(model + rng.normal(0, sd), 0.0)
        lines = [f"# SYNTHETIC example data (not measurements): {Path(__file__).name}, truth {TRUTH}, seed 0", header]
        lines += [
            ",".join(map(str, r)) + f",{v:.6g},{s:.4g}" + (",relative" if relative else "")
            for r, v, s in zip(rows[name], value, sd)
        ]
        (HERE / name).write_text("\n".join(lines) + "\n")
        print("wrote", HERE / name)


def _shift(t: str, name: str) -> str:
    """Uptake times are written relative to the exosome addition; timeline times are absolute."""
    if name != "uptake.csv":
        return t
    from exosim.model.units import parse_quantity

    return f"{ADDED_AT + parse_quantity(t, 'time'):g} h"


if __name__ == "__main__":
    main()
