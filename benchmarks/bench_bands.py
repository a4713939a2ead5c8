"""What 95 % prediction bands add to a run: posterior draws of the catalogue, one batch.

Usage: python benchmarks/bench_bands.py [--draws 200] [--repeat 3] [--scenario FILE]

For each backend (numpy, and numba when installed) prints the median wall time of
:func:`exosim.analysis.posterior.prediction_bands` (the draws' batch run plus the band
statistics, in process, after one warm-up call that compiles and caches) and of the plain run
it is added to. The target of the evidence issue: under 10 s for 200 draws with the
compiled backend on this machine (2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "scenarios" / "hnscc_exosome_radioresistance.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scenario", default=str(DEFAULT))
    args = ap.parse_args()

    import exosim
    from exosim.analysis.posterior import prediction_bands
    from exosim.simulate.solver import numba_available

    sc = exosim.load_scenario(args.scenario)
    backends = ["numpy"] + (["numba"] if numba_available() else [])
    print(f"scenario: {Path(args.scenario).name}, draws: {args.draws}")
    for backend in backends:
        prediction_bands(sc, draws=2, solver=backend)  # warm-up: compile / load the kernel cache
        exosim.run(sc, solver=backend, time_courses=False)
        runs, bands = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            exosim.run(sc, solver=backend, time_courses=False)
            runs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = prediction_bands(sc, draws=args.draws, solver=backend)
            bands.append(time.perf_counter() - t0)
        members = b.draws * len(b.survival)
        print(
            f"  {backend:<6} run {statistics.median(runs):6.2f} s; bands {statistics.median(bands):6.2f} s "
            f"({members} members, parameters {', '.join(b.params)})"
        )


if __name__ == "__main__":
    main()
