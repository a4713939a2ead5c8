"""Largest deviation between exosim and libRoadRunner on the exported SBML, per scenario.

Usage: python benchmarks/sbml_crosscheck.py

Each arm of each scenario at its largest grid dose is exported as SBML and simulated with
libRoadRunner (CVODE, rtol 1e-10); exosim runs at rtol 1e-10. Prints the largest relative
deviation of the states (at every non-event output time, with a floor of 1e-3 of each state's
typical magnitude) and of the scored surviving fraction, and the time taken.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import exosim
from exosim.io.sbml.crosscheck import crosscheck_member

ROOT = Path(__file__).resolve().parents[1]

for f in sorted((ROOT / "scenarios").glob("*.yaml")):
    sc = exosim.load_scenario(f)
    sc = sc.model_copy(update={"solver": sc.solver.model_copy(update={"rtol": 1e-10, "atol": 1e-13})})
    compiled = exosim.compile_scenario(sc)
    result = compiled.run()
    t0 = time.perf_counter()
    n = int(np.sum(compiled.arm_index == 0))
    devs = [crosscheck_member(compiled, result, a * n + n - 1) for a in range(len(compiled.arms))]
    worst = max(devs, key=lambda d: d.states)
    print(
        f"{f.stem}: {len(devs)} arms, states max rel dev {worst.states:.2e} ({worst.worst_state}, "
        f"arm {worst.arm!r}), survival max rel dev {max(d.survival for d in devs):.2e}, "
        f"{time.perf_counter() - t0:.1f} s"
    )
