"""Provenance records: what every output carries so that it can be reproduced.

One header (version, time, command, scenario file and hash, numerical
environment) starts every record; runs add parameters and solver counters,
sensitivity analyses their sampling, fits their data files and settings.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from exosim._version import __version__
from exosim.scenario.observables import CONVENTIONS
from exosim.scenario.result import RunResult, public_name
from exosim.scenario.schema import Scenario

__all__ = [
    "header",
    "base_header",
    "run_record",
    "file_record",
    "sensitivity_record",
    "fit_record",
    "evidence_record",
    "catalogue_record",
]


def _version_of(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


#: the distributions whose versions every record carries (None: not installed); read from
#: their metadata, so that no record imports a package (scipy alone took 0.13 s to import)
DEPENDENCIES = (
    "numpy",
    "scipy",
    "pydantic",
    "pyyaml",
    "matplotlib",
    "numba",
    "SALib",
    "dask",
    "distributed",
    "emcee",
)


def source_record() -> dict | None:
    """The git commit exosim runs from, and whether its files differ from it, when the package
    lives in a git checkout (an editable install); None for an installed wheel."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"git_commit": out.removesuffix("-dirty"), "uncommitted_changes": out.endswith("-dirty")}


def header(scenario: Scenario, command: list[str] | None = None, *, packages: tuple[str, ...] = ()) -> dict:
    """What every provenance record starts with: version, time, command, scenario file and
    hash, and the numerical environment (plus the versions of ``packages``)."""
    head = base_header(command, packages=packages)
    env = head.pop("environment")
    head["scenario"] = {"name": scenario.name, "file": scenario.source, "sha256": scenario.sha256}
    head["environment"] = env
    return head


def catalogue_record() -> dict:
    """SHA-256 of each catalogue file: the parameter set a result was computed with."""
    from importlib import resources

    data = resources.files("exosim.model").joinpath("data")
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(data.iterdir(), key=lambda x: x.name)
        if f.name.endswith(".yaml")
    }


def evidence_record(ev, rates: dict, *, wall: float, command: list[str] | None = None, parameters=None) -> dict:
    """Provenance of a scorecard: versions, evidence and protocol files with their hashes, the
    catalogue files, parameters changed for the run (a calibration), pass rates."""
    from exosim.analysis.evidence import evidence_hash

    return {
        **base_header(command),
        "evidence_sha256": evidence_hash(ev),
        "evidence_files": [file_record(f) for f in sorted({e.file for e in ev.entries})],
        "protocols": [file_record(p) for p in sorted({str(e.protocol) for e in ev.entries})],
        "catalogue_sha256": catalogue_record(),
        "hypotheses": "applied, rows flagged and not counted" if ev.with_hypotheses else "left out (catalogue biology)",
        "parameters_changed": dict(parameters or {}),
        "entries": len(ev.entries),
        "pass_rates": rates,
        "seed": None,
        "randomness": "none: the simulations are deterministic",
        "wall_time_s": wall,
    }


def base_header(command: list[str] | None = None, *, packages: tuple[str, ...] = ()) -> dict:
    """Version, source commit, time, command and the environment: Python, platform and the
    version of every dependency in :data:`DEPENDENCIES` (plus ``packages``)."""
    env = {"python": platform.python_version(), "platform": platform.platform()}
    env.update({p: _version_of(p) for p in DEPENDENCIES + tuple(p for p in packages if p not in DEPENDENCIES)})
    return {
        "exosim_version": __version__,
        "source": source_record(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else ["exosim"] + sys.argv[1:],
        "environment": env,
    }


def file_record(path: str | Path) -> dict:
    """A data file named by path and SHA-256."""
    return {"file": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def _hypothesis_values(sc: Scenario, model) -> dict[str, list[str]]:
    """Model parameter -> the key paths (as the file wrote them) of the hypothesis values that
    set it, in some arm or in all."""
    out: dict[str, list[str]] = {}
    for merged, written in sc.written.items():
        if ".parameters." not in f".{merged}":
            continue  # cargo fields: listed with the scenario's biology
        key = merged.split("parameters.", 1)[1]
        if merged.startswith(("populations.", "media.")):
            key = f"{merged.split('.')[1]}.{key}"
        for q in model.parameters:
            if (q.key == key) if "." not in key else (public_name(q.name) == key):
                out.setdefault(q.name, []).append(written)
    return out


def run_record(result: RunResult, command: list[str] | None = None) -> dict:
    """Everything needed to reproduce a run: versions, scenario hash, parameters, solver."""
    sc, m = result.scenario, result.model
    params = []
    p0 = result.parameters
    by_hypothesis = _hypothesis_values(sc, m)
    for j, q in enumerate(m.parameters):
        col = p0[:, j]
        by_arm = {result.arms[a]: float(col[result.arm_index == a][0]) for a in range(len(result.arms))}
        entry = {
            "name": public_name(q.name),
            "key": q.key,
            "module": q.module,
            "unit": q.unit,
            "value": float(col[0]),
            "range": [q.low, q.high],
            "source": q.source,
            "assumed": q.assumed,
        }
        if len(set(by_arm.values())) > 1:
            entry["value_by_arm"] = by_arm
        if q.name in by_hypothesis:  # a value the file's hypothesis sets, not the catalogue's
            entry["catalogue_source"] = entry.pop("source")
            entry["source"] = "hypothesis: " + ", ".join(by_hypothesis[q.name])
        params.append(entry)
    head = header(sc, command, packages=("numba",) if result.timing.get("backend") == "numba" else ())
    head["scenario"].update(
        type=sc.type,
        references=sc.references,
        assumptions=sc.assumptions,
        hypotheses=sc.hypotheses,
        biology=(
            "catalogue values changed by the hypotheses listed"
            if sc.hypotheses
            else ("catalogue values changed by overrides: " + ", ".join(sc.biology_changes))
            if sc.biology_changes
            else "catalogue values only"
        ),
        changed=sorted(set(sc.written.values())) or sc.biology_changes,
    )
    return {
        **head,
        "seed": None,
        "randomness": "none: the simulation is deterministic",
        "solver": {
            "rtol": sc.solver.rtol,
            "atol": sc.solver.atol,
            "atol_scaling": "atol multiplied by each state's declared scale",
            **{k: v for k, v in result.timing.items() if k != "seconds"},
        },
        "wall_time_s": result.timing["seconds"],
        "members": int(result.arm_index.size),
        "arms": result.arms,
        "failures": [msg for msg in result.messages if msg],
        "conventions": CONVENTIONS,
        "parameters": params,
    }


def sensitivity_record(
    scenario,
    evaluator,
    space,
    analysis,
    *,
    method: str,
    n: int,
    n_requested: int,
    seed: int,
    engine,
    chunk_members: int,
    wall: float,
    table: dict,
    command: list[str] | None = None,
) -> dict:
    """Provenance of a sensitivity analysis: sampling, factors, failures, engine and solver."""
    from exosim.analysis.sensitivity import LOCAL_STEP, inert_factors  # only sensitivity records need them

    local = method == "local"
    if local:  # no sampling: each factor of each instance scaled by exp(+-h) about the scenario's values
        nominal = analysis.nominal if analysis.nominal is not None else [float("nan")] * len(space.names)
        factors = [
            {
                "key": k,
                "nominal": float(v),
                "unit": table[k]["unit"],
                "step": f"ln p +- {LOCAL_STEP:g} for each instance",
            }
            for k, v in zip(space.names, nominal)
        ]
    else:
        factors = [
            {"key": k, "low": lo, "high": hi, "scale": "log-uniform" if lg else "uniform", "unit": table[k]["unit"]}
            for k, lo, hi, lg in zip(space.names, space.lows, space.highs, space.log)
        ]
    return {
        **header(scenario, command, packages=("SALib",) + (("numba",) if evaluator.backend == "numba" else ())),
        "method": method,
        "N": None if local else n,
        "N_requested": None if local else n_requested,
        "seed": None if local else seed,
        "settings": analysis.settings,  # bootstrap resamples and confidence level, Morris levels, local step
        "arm": evaluator.target_name,
        "control_arm": None if evaluator.control is None else evaluator.scenario.arms[evaluator.control].name,
        "hypotheses": scenario.hypotheses,
        "grid_doses": scenario.dose_grid.values if scenario.dose_grid else None,
        "grid_unit": scenario.dose_grid.unit if scenario.dose_grid else None,
        "parameters": factors,
        "samples": int(analysis.samples.shape[0]),
        "model_runs": int(evaluator.counts.get("runs", 0)),
        "failed_samples": int(analysis.failed.sum()),
        "dropped_blocks": analysis.dropped,
        "blocks": analysis.blocks,
        "failure_policy": "failed samples have NaN outputs; whole Saltelli blocks / Morris trajectories "
        "containing one are dropped before analysis and counted here",
        "failures": analysis.messages[:100],
        "inert_factors": inert_factors(evaluator.scenario, space.names),
        # per output: blocks analysed, samples where it is not defined, constant within the solver's rtol
        "outputs": {
            out: {**rec, "note": rec["note"].replace("\n", " ") if rec.get("note") else None}
            for out, rec in analysis.screening.items()
        },
        "engine": engine.record() if hasattr(engine, "record") else engine.describe(),
        "chunk_members": chunk_members,
        # samples per task as cut for this job (the compiled backend caps chunks at 2048 members)
        "samples_per_task": min(
            evaluator.chunk_samples(int(analysis.samples.shape[0])), int(analysis.samples.shape[0])
        ),
        "wall_time_s": wall,
        "solver": {"backend": evaluator.backend, "rtol": scenario.solver.rtol, "atol": scenario.solver.atol},
    }


def fit_record(
    scenario,
    problem,
    data_files: list,
    *,
    likelihood: str,
    normalise: str,
    level: float,
    wall: float,
    command: list[str] | None = None,
) -> dict:
    """Provenance of a fit: data files with hashes, likelihood, normalisation, level, solver."""
    return {
        **header(scenario, command, packages=("numba",) if problem.backend == "numba" else ()),
        "data_files": [file_record(p) for p in data_files],
        "likelihood": likelihood,
        "normalise": normalise,
        "level": level,
        "backend": problem.backend,
        "rtol": problem.scenario.solver.rtol,
        "wall_time_s": wall,
    }
