"""The 30-fraction course: `exosim run` (whole process) and its Morris screening, wall time.

Usage: python benchmarks/bench_course.py [--repeat 5] [--morris] [--fallback rosenbrock|bdf|none]

Times `exosim run scenarios/fractionated_course_exosome_buildup.yaml` as a whole process
(imports, the cached kernel, the figure), median of ``--repeat`` runs after one warm-up run
(which compiles the kernel on a fresh cache); with ``--morris`` also, once,
`exosim sensitivity ... --method morris --group uptake` at its defaults (N = 1024, 22,528 model
runs), with the scenario's ``solver.stiff_fallback`` replaced by ``--fallback`` when given (a
copy of the scenario in a temporary folder).  Prints the load average before and after: the
numbers mean little on a machine busy with other jobs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "fractionated_course_exosome_buildup.yaml"


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "exosim.cli", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--morris", action="store_true")
    ap.add_argument("--fallback", choices=["rosenbrock", "bdf", "none"])
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        scenario = SCENARIO
        if args.fallback:
            data = yaml.safe_load(SCENARIO.read_text())
            data["solver"] = dict(data.get("solver") or {}) | {"stiff_fallback": args.fallback}
            scenario = Path(tmp) / SCENARIO.name
            scenario.write_text(yaml.safe_dump(data, sort_keys=False))
        run = ["run", str(scenario), "-o", str(Path(tmp) / "run")]
        wall(run)  # warm-up: compiles the kernel on a fresh cache
        times = [wall(run) for _ in range(args.repeat)]
        print(f"exosim run, whole process: median {statistics.median(times):.2f} s of {args.repeat} ({times})")
        if args.morris:
            morris = ["sensitivity", str(scenario), "--method", "morris", "--group", "uptake"]
            seconds = wall([*morris, "-o", str(Path(tmp) / "morris")])
            print(f"exosim sensitivity --method morris --group uptake (defaults): {seconds:.1f} s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
