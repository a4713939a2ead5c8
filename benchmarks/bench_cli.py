"""Wall time of `exosim run` on the default scenario, whole process including imports.

Usage: python benchmarks/bench_cli.py [--repeat 5]

Prints the median and min of `repeat` runs of the installed `exosim` command, plus the
in-process integration time and solver counters reported by the run itself. The target
is under 1 s for the whole process on this machine (2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "scenarios" / "hnscc_exosome_radioresistance.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scenario", default=str(DEFAULT))
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("exosim")
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([str(exe), "run", args.scenario, "-o", f"{tmp}/r{i}"], check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
        prov = json.loads(Path(f"{tmp}/r0/provenance.json").read_text())
    print(f"scenario: {Path(args.scenario).name}, members: {prov['members']}")
    print(
        f"exosim run, whole process: median {statistics.median(walls):.3f} s, min {min(walls):.3f} s "
        f"over {args.repeat} runs"
    )
    print(
        f"integration of all members as one batch: {prov['wall_time_s']:.3f} s, "
        f"{prov['solver']['steps']} steps, {prov['solver']['rhs_evaluations']} batched rhs evaluations"
    )


if __name__ == "__main__":
    main()
