"""Command-line interface: ``exosim run | validate | figures | export | export-sbml | export-petab |
sensitivity | fit | evidence | calibrate | delivery``.

Exit codes: 0 success (failed members are reported in the outputs and on
stderr, never an abort), 2 bad input or unwritable output, 3 (``run``) every
member of some arm failed: the outputs are written (failures are data) and stderr
names the arm and its parameters outside their documented range.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

from exosim._version import __version__

#: how ``exosim run`` names the method of ``solver.stiff_fallback`` in its note
_IMPLICIT_NAMES = {"rosenbrock": "Rodas4", "bdf": "BDF"}

EXAMPLES = """examples:
  exosim run scenarios/hnscc_exosome_radioresistance.yaml -o results/hnscc
  exosim validate scenarios/*.yaml
  exosim figures scenarios/*.yaml -o figures
  exosim evidence -o results/evidence
"""

EXPORT_EXAMPLE = """example:
  exosim export scenarios/hnscc_exosome_radioresistance.yaml --arm "exosomes from 6 Gy donors" --dose 4 -o hnscc.xml

writes one member (arm, grid dose) of the scenario as self-contained, validated SBML Level 3
Version 2: its parameters, initial conditions and timeline as SBML events. Needs the 'sbml'
extra: pip install "exosim[sbml]".
"""

MODELS_EXAMPLE = """example:
  exosim export-sbml -o models

regenerates the module files, the composed (comp) model and its flattened form in models/.
"""

SENSITIVITY_EXAMPLE = """examples:
  exosim sensitivity scenarios/hnscc_exosome_radioresistance.yaml --group uptake --method sobol -N 1024 \\
      --seed 1 -o results/sobol
  exosim sensitivity scenarios/hnscc_exosome_radioresistance.yaml --method morris -N 50 \\
      --params binding_rate_constant,endosomal_escape_rate
  exosim sensitivity SCENARIO.yaml --group uptake --method local --range vesicle_decay_rate=0.01:0.1

outputs (each analysed separately): sf2, dmf_at_sf0.1, bystander_survival, alpha_eff, beta_eff,
delivered_copies_per_cell of the analysed arm (default: the first non-control arm).
writes indices.csv, samples.csv, provenance.json and sensitivity.png. Needs the 'sensitivity'
extra (and 'dask' for --scheduler). The environment variable EXOSIM_SENSITIVITY_MAX_N caps N.
"""

FIGURES_EXAMPLE = """examples:
  exosim figures scenarios/*.yaml -o results/figures            # PNG and PDF
  exosim figures scenarios/*.yaml -o figures --format png       # the gallery of this repository
  exosim figures scenarios/partial_field_bystander.yaml --format svg --dpi 300

writes one survival-curve figure per scenario, named after the scenario, plus time courses of
medium-transfer scenarios and the fit of scenarios with a calibration block.
"""

RUN_EXAMPLE = """examples:
  exosim run scenarios/hnscc_exosome_radioresistance.yaml -o results/hnscc
  exosim run scenarios/hnscc_exosome_radioresistance.yaml --bands -o results/hnscc

writes survival.csv (survival vs dose per arm and member), summary.csv (alpha_eff,
beta_eff, SF2, D10, DMF per arm), timecourses.csv, provenance.json and survival.png;
with --bands also bands.csv and bands_summary.csv (95 % prediction bands from draws of
the catalogue's posterior, shaded in survival.png).
"""

FIT_EXAMPLE = """examples:
  exosim fit scenarios/iccm_bystander_medium_transfer.yaml scenarios/data/iccm_relative_survival.csv \\
      --params recipients.bystander_susceptible_fraction \\
      --range recipients.bystander_susceptible_fraction=0.05:0.6 -o results/iccm-fit
  exosim fit SCENARIO colonies.csv --params endosomal_escape_rate,half_effect_copies --likelihood quasipoisson
  exosim fit SCENARIO nta.csv uptake.csv survival.csv --params baseline_release_rate,internalisation_rate
data files (several are fitted jointly): a header row, one observation per row, '#' lines ignored,
dose in the scenario grid's unit, within the grid's range (the fit simulates exactly the data's doses):
  arm,dose,survival,sd                    (normal likelihood)
  arm,dose,colonies,seeded                (Poisson / quasi-Poisson; plating efficiency estimated)
  arm,time,observable,value,sd[,dose,unit] (time courses, normal likelihood)
time courses: time in h or with a unit ('30 min'), on the scenario's timeline; observable a state or
rule 'namespace.name' or a sum 'a + b' (e.g. donor_flask.vesicle_concentration,
recipients.bound_vesicles + recipients.internalised_vesicles); unit the model's or a convertible one
(particles/uL), or 'relative' to fit a scale factor (fluorescence in a.u.).
"""

PETAB_EXAMPLE = """example:
  exosim export-petab scenarios/iccm_bystander_medium_transfer.yaml scenarios/data/iccm_relative_survival.csv \\
      --params recipients.bystander_susceptible_fraction \\
      --range recipients.bystander_susceptible_fraction=0.05:0.6 -o results/iccm-petab

writes the fit problem (same data files, parameters and options as exosim fit) as a PEtab v1
problem for pyPESTO, AMICI, COPASI or Data2Dynamics: model.xml (one SBML model for every arm and
dose the data use; what differs between them is a parameter), conditions.tsv, measurements.tsv,
observables.tsv, parameters.tsv (bounds: the parameter table's range or --range; log10 where
positive), problem.yaml, parameter_map.csv (exosim keys -> SBML ids) and README.md (what PEtab v1
cannot express: survival relative to another arm is a fixed reference, colony counts are normal
with the Poisson variance). Checked with petab's linter before anything is written. Needs the
'petab' extra: pip install "exosim[petab]".
"""

EVIDENCE_EXAMPLE = """examples:
  exosim evidence -o results/evidence
  exosim evidence evidence/qi2012.yaml --role calibration -o results/qi

runs every entry of the evidence files (one published observation each) on the catalogue
parameters and writes scorecard.csv (observed +/- uncertainty, model, ratio, within yes/no),
scorecard.md (pass rates, every row outside its band), scorecard.png (model vs observed) and
provenance.json. A run that fails is a failed row. Exit code 2 for a bad evidence file
(nothing written). See docs/evidence.md.
"""

CALIBRATE_EXAMPLE = """example:
  exosim calibrate --params foci_formation_half_time,foci_clearance_half_time -o results/calibration

fits the parameters to every calibration entry of the evidence at once (validation entries are
never read), profiles each over its range, and writes calibration.yaml (estimates, 95 % profile
intervals, which parameters the evidence identifies, evidence hash) with the scorecard of all
entries at the calibrated values: the validation rows are then predictions.
"""

VALIDATE_EXAMPLE = """example:
  exosim validate scenarios/*.yaml
"""


def _seed(text: str) -> int:
    """A seed option: an integer in [0, 2**32) (numpy's and SALib's seeds)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**32 - 1, got {text!r}")
    return value


def _at_least(minimum: int, why: str = ""):
    """An integer option of at least ``minimum`` (``why``: the reason, added to the message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{why}, got {text!r}")
        return value

    return parse


def _path(text: str) -> str:
    """An output path: not empty (an empty ``-o ""`` wrote to the current folder, or fell back to the
    default, depending on the command)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def _workers(text: str) -> int | None:
    """``--workers``: a positive integer, or ``auto`` (None)."""
    from exosim.analysis.engine import parse_workers

    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _profile_points(text: str) -> int:
    """``--profile-points``: 0 (no profiles) or at least 3 (the estimate and a point either side)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value != 0 and value < 3:
        raise argparse.ArgumentTypeError(f"expected 0 (no profiles) or an integer >= 3, got {text!r}")
    return value


#: fewest posterior draws of a 95 % band (its 2.5 % and 97.5 % quantiles between draws)
MIN_BAND_DRAWS = 20


def _bands_option(parser: argparse.ArgumentParser) -> None:
    """``--bands [DRAWS]``: 95 % prediction bands from posterior draws of the catalogue."""
    parser.add_argument(
        "--bands",
        nargs="?",
        type=_at_least(MIN_BAND_DRAWS, " (a 95 % band needs draws beyond its quantiles)"),
        const=200,
        default=0,
        metavar="DRAWS",
        help="95 %% prediction bands from DRAWS draws (default 200) of the catalogue's posterior",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exosim",
        description="Mechanistic simulator of radiation-induced exosome signalling coupled to "
        "linear-quadratic cell survival.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"exosim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run a scenario and write tables, provenance and figure",
        epilog=RUN_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("-o", "--outdir", type=_path, help="output folder (default: results/<scenario name>)")
    run.add_argument("--no-timecourses", action="store_true", help="skip timecourses.csv (faster)")
    run.add_argument("--no-figure", action="store_true", help="skip survival.png")
    run.add_argument(
        "--strict", action="store_true", help="a parameter outside its documented range is an error, not a warning"
    )
    run.add_argument(
        "--no-hypotheses",
        action="store_true",
        help="leave out the scenario's hypothesis blocks: run the protocol on catalogue biology alone",
    )
    run.add_argument(
        "--backend",
        choices=["auto", "numpy", "numba"],
        help="integrator (default: the scenario's solver.backend): numba compiles once per model structure "
        "(about 5 s, cached) and wins on long protocols; auto picks numba when installed",
    )
    _bands_option(run)
    run.add_argument("--posterior", help="calibration.yaml with a posterior to draw from (default: the catalogue's)")
    run.add_argument("--seed", type=_seed, default=0, help="seed that picks the posterior draws (default 0)")
    evi = sub.add_parser(
        "evidence",
        help="judge the model against published evidence (scorecard)",
        epilog=EVIDENCE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evi.add_argument("path", nargs="?", default="evidence", help="evidence folder or file (default: evidence)")
    evi.add_argument(
        "-o", "--outdir", type=_path, default="results/evidence", help="output folder (default: results/evidence)"
    )
    evi.add_argument("--role", choices=["calibration", "validation"], action="append", help="only these roles")
    evi.add_argument("--entry", action="append", help="only these entry ids (repeatable)")
    evi.add_argument(
        "--with-hypotheses",
        action="store_true",
        help="apply the protocols' hypothesis blocks (rows flagged and not counted)",
    )
    evi.add_argument("--solver", choices=["numpy", "numba", "auto"], help="backend (default: each protocol's)")
    cal = sub.add_parser(
        "calibrate",
        help="fit shared parameters to the calibration entries of the evidence",
        epilog=CALIBRATE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cal.add_argument("path", nargs="?", default="evidence", help="evidence folder or file (default: evidence)")
    cal.add_argument("--params", required=True, help="comma-separated: key, cargo.key or population.key")
    cal.add_argument("--range", action="append", default=[], help="name=low:high (default: documented range)")
    cal.add_argument("-o", "--outdir", type=_path, default="results/calibration", help="output folder")
    cal.add_argument(
        "--profile-points",
        type=_profile_points,
        default=7,
        help="points of each parameter's profile (default 7; 0 skips profiles: no intervals)",
    )
    cal.add_argument("--solver", choices=["numpy", "numba", "auto"], help="backend (default: each protocol's)")
    cal.add_argument(
        "--sample",
        type=_at_least(0),
        default=0,
        metavar="STEPS",
        help="then sample the posterior with emcee for STEPS steps per walker (default 0: no sampling)",
    )
    cal.add_argument("--walkers", type=int, default=16, help="emcee walkers, even, >= 2 x parameters (default 16)")
    cal.add_argument("--seed", type=_seed, default=0, help="seed of the walkers' start and moves (default 0)")
    cal.add_argument(
        "--write-catalogue",
        action="store_true",
        help="also write calibration.yaml (with the posterior) into the catalogue, where prediction bands read it",
    )
    val = sub.add_parser(
        "validate",
        help="check scenario files without running them",
        epilog=VALIDATE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    val.add_argument("scenarios", nargs="+", help="scenario YAML files (each is checked; one line per problem)")
    val.add_argument(
        "--strict", action="store_true", help="a parameter outside its documented range is an error, not a warning"
    )
    exp = sub.add_parser(
        "export",
        help="write one arm and dose of a scenario as SBML",
        epilog=EXPORT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    exp.add_argument("scenario", help="scenario YAML file")
    exp.add_argument("-o", "--output", type=_path, required=True, help="SBML file to write")
    exp.add_argument("--arm", help="arm name (default: the first arm)")
    exp.add_argument("--dose", type=float, help="grid dose in the grid's unit (default: the largest)")
    pet = sub.add_parser(
        "export-petab",
        help="write a fit problem (scenario, data, parameters) as a PEtab v1 problem",
        epilog=PETAB_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pet.add_argument("scenario", help="scenario YAML file")
    pet.add_argument("data", nargs="+", help="CSV data files in the formats of exosim fit (see exosim fit --help)")
    pet.add_argument(
        "--params", required=True, help="comma-separated parameter keys, or population.key for one population"
    )
    pet.add_argument(
        "--likelihood",
        choices=["auto", "normal", "poisson", "quasipoisson"],
        default="auto",
        help="as for exosim fit; colony counts are exported as normal with the Poisson variance",
    )
    pet.add_argument(
        "--normalise",
        choices=["control", "within_arm", "none"],
        default="control",
        help="survival data relative to the control arm at dose 0 (default), to the same arm, or absolute",
    )
    pet.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="KEY=LOW:HIGH",
        help="bounds of an estimated parameter (default: the parameter table's range; log10 scale if LOW > 0)",
    )
    pet.add_argument(
        "--backend",
        choices=["auto", "numpy", "numba"],
        default="auto",
        help="integrator of the check that reference survivals do not depend on the estimated parameters",
    )
    pet.add_argument("-o", "--outdir", type=_path, help="output folder (default: results/<scenario>-petab)")
    mod = sub.add_parser(
        "export-sbml",
        help="regenerate the SBML files in models/",
        epilog=MODELS_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.add_argument("-o", "--outdir", type=_path, default="models", help="folder (default: models)")
    sen = sub.add_parser(
        "sensitivity",
        help="local, Morris or Sobol sensitivity of survival outputs",
        epilog=SENSITIVITY_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sen.add_argument("scenario", help="scenario YAML file")
    sen.add_argument("--group", help="parameter group (uptake, release, cargo, repair, immune)")
    sen.add_argument("--params", default="", help="comma-separated parameter keys (added to the group)")
    sen.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="KEY=LOW:HIGH",
        help="override a parameter's range (table units); repeatable",
    )
    sen.add_argument("--method", choices=["local", "morris", "sobol"], default="sobol")
    sen.add_argument(
        "-N",
        type=_at_least(1),
        default=None,
        help="Sobol base samples (power of two) or Morris trajectories (default 1024; not used by local)",
    )
    sen.add_argument("--seed", type=_seed, default=None, help="seed of sampling and bootstrap (default 0)")
    sen.add_argument(
        "--no-hypotheses",
        action="store_true",
        help="leave the scenario's hypothesis blocks out (catalogue biology only)",
    )
    sen.add_argument("--arm", help="analysed arm (default: first non-control arm)")
    sen.add_argument("--doses", help="comma-separated grid doses replacing the scenario's grid (grid unit)")
    sen.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="worker processes on this machine (default auto: one per usable core for a job of more than one "
        "chunk, none for a smaller job; the results are the same whatever the number)",
    )
    sen.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786")
    sen.add_argument(
        "--backend",
        choices=["auto", "numpy", "numba"],
        default="auto",
        help="integrator: numba (compiled, per-member steps; extra 'fast') or numpy; auto picks numba when installed",
    )
    sen.add_argument("--chunk-members", type=int, default=8192, help="members integrated together (memory bound)")
    sen.add_argument("-o", "--outdir", type=_path, help="output folder (default: results/<scenario>-<method>)")
    fig = sub.add_parser(
        "figures",
        help="regenerate the figure gallery: survival curves, time courses (medium transfer), calibration fits",
        epilog=FIGURES_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fig.add_argument("scenarios", nargs="+", help="scenario YAML files")
    fig.add_argument("-o", "--outdir", type=_path, default="figures", help="folder for the figures (default: figures)")
    fig.add_argument(
        "--format",
        default="png,pdf",
        help="comma-separated file formats, png, pdf, svg (default png,pdf: a raster to look at, a vector "
        "for a journal)",
    )
    fig.add_argument("--dpi", type=int, default=None, help="resolution of raster figures (default: 120-150)")
    fig.add_argument(
        "--workers",
        default="auto",
        help="worker processes, one scenario each at a time (default auto: one per usable core, at most one per "
        "scenario; the files are the same byte for byte whatever the number)",
    )
    _bands_option(fig)
    ft = sub.add_parser(
        "fit",
        help="estimate parameters from survival data, colony counts or time courses",
        epilog=FIT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Maximum-likelihood fit of chosen parameters to a data file with "
        "profile-likelihood intervals, goodness of fit and a figure.",
    )
    ft.add_argument(
        "scenario",
        nargs="?",
        help="scenario YAML file (with --petab optional: default the scenario the export recorded)",
    )
    ft.add_argument(
        "data",
        nargs="*",
        help="CSV files fitted jointly: arm,dose,survival,sd or arm,dose,colonies,seeded (dose in the "
        "grid unit) or time courses arm,time,observable,value,sd[,dose,unit]",
    )
    ft.add_argument(
        "--params",
        help="comma-separated parameter keys, or population.key for one population (required without --petab)",
    )
    ft.add_argument(
        "--petab",
        metavar="PROBLEM",
        help="fit a PEtab problem written by exosim export-petab (problem.yaml or its folder) instead of DATA: "
        "its measurements, conditions, estimated parameters and bounds (no DATA or --params)",
    )
    ft.add_argument(
        "--likelihood",
        choices=["auto", "normal", "poisson", "quasipoisson"],
        default="auto",
        help="auto: normal for survival+sd, quasipoisson for colony counts",
    )
    ft.add_argument(
        "--normalise",
        choices=["control", "within_arm", "none"],
        default=None,
        help="survival data relative to the control arm at dose 0 (default), to the same arm, or absolute "
        "(with --petab: the problem's)",
    )
    ft.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="KEY=LOW:HIGH",
        help="search range of a fitted parameter (default: the parameter table's range, with --petab the "
        "problem's bounds; must be > 0)",
    )
    ft.add_argument("--level", type=float, default=0.95, help="confidence level of the profile intervals")
    ft.add_argument(
        "--backend",
        choices=["auto", "numpy", "numba"],
        default="auto",
        help="integrator: numba (compiled; extra 'fast') or numpy; auto picks numba when installed",
    )
    ft.add_argument("-o", "--outdir", type=_path, help="output folder (default: results/<scenario>-fit)")
    dl = sub.add_parser(
        "delivery",
        help="delivered cargo copies per cell vs the ~10^3 needed (markdown table)",
        description="Run scenarios and report, per arm, the cargo copies delivered per scored "
        "cell against the order-10^3 copies needed for repression (Baek et al. 2008).",
    )
    dl.add_argument("scenarios", nargs="+", help="scenario YAML files")
    return parser


#: optional extras and the modules each provides
EXTRAS = {
    "sbml": ("sbmlutils", "libsbml"),
    "petab": ("sbmlutils", "libsbml", "petab"),
    "sensitivity": ("SALib",),
    "fast": ("numba",),
}


def _missing_extra(extra: str, what: str) -> bool:
    """Print one line naming the extra to install if its modules are missing (before any work)."""
    import importlib.util

    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"exosim: error: {what} needs the {extra} extra ({', '.join(missing)} missing): "
            f'pip install "exosim[{extra}]"',
            file=sys.stderr,
        )
    return bool(missing)


def _ranges(items: list[str], error: type[Exception]) -> dict[str, tuple[float, float]]:
    """``--range KEY=LOW:HIGH`` options as a dict; ``error`` for a malformed one."""
    ranges = {}
    for item in items:
        key, _, span = item.partition("=")
        lo, _, hi = span.partition(":")
        try:
            ranges[key] = (float(lo), float(hi))
        except ValueError:
            raise error(f"--range {item!r}: expected KEY=LOW:HIGH with numbers") from None
    return ranges


def _stats(d: dict) -> str:
    """'key value, ...' of a goodness-of-fit record (nested file records left out)."""
    return ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {'n/a (no degrees of freedom)' if v is None else v}"
        for k, v in d.items()
        if k not in ("files", "file")
    )


def _cmd_fit(args: argparse.Namespace, argv: list[str]) -> int:
    import time

    from exosim.analysis import fit as _fit
    from exosim.io.outputs import OutputError, write_fit
    from exosim.io.provenance import fit_record
    from exosim.scenario.load import load_scenario
    from exosim.util.atomic import claim_output

    try:
        _fit.check_level(args.level)
        if args.petab:
            from exosim.io.petab import read_petab

            # a lone CSV given before --petab lands in the scenario slot
            given = list(args.data) + ([args.scenario] if str(args.scenario or "").lower().endswith(".csv") else [])
            if given or args.params:
                raise _fit.FitError(
                    "--petab: the data and the estimated parameters come from the PEtab problem; give "
                    "exosim fit [SCENARIO] --petab PROBLEM, or exosim fit SCENARIO DATA... --params KEY[,KEY]"
                )
            imported = read_petab(args.petab, args.scenario)  # ScenarioError: exit 2 in main
            if args.normalise not in (None, imported.normalise):
                raise _fit.FitError(
                    f"--normalise {args.normalise}: {imported.problem_yaml} holds survival normalised "
                    f"'{imported.normalise}' (as exported); leave --normalise out"
                )
            scenario, data, params = imported.scenario, imported.datasets, imported.params
            normalise, data_files = imported.normalise, imported.files
            likelihood = imported.likelihood if args.likelihood == "auto" else args.likelihood
            ranges = {**imported.ranges, **_ranges(args.range, _fit.FitError)}
            described = f"PEtab problem {imported.problem_yaml}"
        else:
            if not (args.scenario and args.data):
                raise _fit.FitError("give SCENARIO and DATA files, or --petab PROBLEM (see exosim fit --help)")
            if not args.params:
                raise _fit.FitError("--params: name the parameters to estimate (KEY[,KEY]), or give --petab PROBLEM")
            scenario = load_scenario(args.scenario)
            data = [_fit.read_observations(path, scenario) for path in args.data]
            likelihood = _fit.default_likelihood(data) if args.likelihood == "auto" else args.likelihood
            params = [p.strip() for p in args.params.split(",") if p.strip()]
            normalise, data_files = args.normalise or "control", args.data
            ranges = _ranges(args.range, _fit.FitError)
            described = ", ".join(args.data)
        problem = _fit.FitProblem(
            scenario,
            data,
            params,
            likelihood=likelihood,
            normalise=normalise,
            ranges=ranges,
            backend=args.backend,
        )
    except _fit.FitError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    outdir = args.outdir or f"results/{scenario.name}-fit"
    claim_output(outdir)  # writable and locked before the fit (OutputError: exit 2 in main)
    start = time.perf_counter()
    result = _fit.fit(problem, level=args.level)
    prov = fit_record(
        scenario,
        problem,
        data_files,
        likelihood=likelihood,
        normalise=normalise,
        level=args.level,
        wall=time.perf_counter() - start,
        command=["exosim"] + argv,
    )
    try:
        files = write_fit(problem, result, outdir, prov)
    except OutputError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    print(f"fit of {scenario.name!r} to {described} ({likelihood}): {result.evaluations} model runs")
    for n, e, lo, hi, o in zip(result.params, result.estimate, result.low, result.high, result.open_ends):
        ends = "both ends" if "," in o else f"the {o} end"
        note = f"; open at {ends} of the search range: not identifiable there" if o else ""
        print(f"  {n:<40} {e:.4g}  [{lo:.4g}, {hi:.4g}] ({100 * args.level:g}% profile{note})")
    print("  goodness of fit: " + _stats(result.gof))
    for entry in result.gof.get("files", []):
        print(f"    {entry['file']}: " + _stats(entry))
    for name, value in result.nuisance.items():
        print(f"  {name}: {value:.4g} (closed form)")
    if not result.converged:
        print(f"exosim: warning: optimiser did not converge: {result.message}", file=sys.stderr)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _cmd_delivery(args: argparse.Namespace) -> int:
    from exosim.scenario.load import load_scenario
    from exosim.scenario.observables import delivery_rows
    from exosim.scenario.runner import run
    from exosim.util.progress import progress

    scenarios = [load_scenario(p) for p in args.scenarios]  # all validated before any output
    print("| scenario | arm | cargo | delivered per cell | / amount for half effect |")
    print("|---|---|---|---:|---:|")
    for sc in progress(scenarios, total=len(scenarios), desc="exosim delivery", unit="scenario"):
        rows = delivery_rows(run(sc, time_courses=False))
        if not rows:  # stderr: the table on stdout stays a table
            print(
                f"exosim: note: {sc.source}: no cargo with an amount for half effect in this scenario (no row)",
                file=sys.stderr,
            )
        for r in rows:
            cargo = r["cargo"] + (" (abstract units)" if r["units"] == "abstract" else "")
            print(
                f"| {r['scenario']} | {r['arm']} | {cargo} | {r['delivered_copies_per_cell']:.3g} | "
                f"{r['fraction_of_needed']:.2g} |"
            )
    return 0


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from exosim.scenario.load import load_scenario_with_warnings
    from exosim.scenario.runner import compile_scenario
    from exosim.scenario.schema import ScenarioError

    scenario, found = load_scenario_with_warnings(args.scenario, strict=args.strict, hypotheses=not args.no_hypotheses)
    compiled = compile_scenario(scenario)  # a problem found in building the model is the one message
    for warning in found:
        print(f"exosim: warning: {warning}", file=sys.stderr)
    for statement in scenario.hypotheses:
        print(
            f"exosim: note: runs a hypothesis (not catalogue biology): {' '.join(statement.split())}", file=sys.stderr
        )
    outdir = Path(args.outdir) if args.outdir else Path("results") / scenario.name
    record = None
    if args.posterior:
        from exosim.scenario.load import read_yaml_mapping

        try:
            data = Path(args.posterior).read_bytes()
        except OSError as exc:
            raise ScenarioError(args.posterior, "", f"cannot read the posterior file: {exc.strerror}") from None
        record = read_yaml_mapping(data, args.posterior, "a calibration record")
        if "posterior" not in record:
            raise ScenarioError(args.posterior, "posterior", "no posterior: write one with exosim calibrate --sample")
    if args.posterior and not args.bands:  # a posterior given is a posterior to draw bands from
        args.bands = 200
    if args.bands and record is None:
        from exosim.model import catalogue as cat

        record = cat.calibration()
        if not record or "posterior" not in record:
            print(
                "exosim: error: the catalogue has no posterior to draw bands from: run "
                "`exosim calibrate --params ... --sample STEPS --write-catalogue` first",
                file=sys.stderr,
            )
            return 2
    drawer = None
    if not args.no_figure:  # a second core imports matplotlib and loads fonts while this one integrates
        from exosim.io.figures import prepare
        from exosim.util.forked import ForkedCall

        drawer = ForkedCall.start(prepare, shared=(scenario, compiled.model))
    try:
        return _run_and_write(args, argv, scenario, compiled, outdir, record, drawer)
    finally:
        if drawer is not None:
            drawer.close()


def _run_and_write(args, argv, scenario, compiled, outdir, record, drawer) -> int:
    """The rest of ``exosim run``: integrate, draw bands, write the outputs and report."""
    from exosim.io.outputs import OutputError, write_outputs
    from exosim.util.atomic import claim_output

    claim_output(outdir)  # writable and locked before the run (OutputError: exit 2 in main)
    result = compiled.run(time_courses=not args.no_timecourses, progress=sys.stderr.isatty(), solver=args.backend)
    bands = None
    if args.bands:
        from exosim.analysis.posterior import BandsError, prediction_bands

        try:
            # the draws are one large batch: the compiled backend when installed (auto)
            bands = prediction_bands(scenario, record, draws=args.bands, seed=args.seed, solver="auto")
        except BandsError as exc:
            print(f"exosim: error: {exc}", file=sys.stderr)
            return 2
        if not bands.params:
            print(
                "exosim: note: no parameter of the posterior "
                f"({', '.join(bands.absent)}) occurs in this scenario: no bands",
                file=sys.stderr,
            )
    try:
        files = write_outputs(
            result, outdir, argv=["exosim"] + argv, figure=not args.no_figure, bands=bands, drawer=drawer
        )
    except OutputError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    for msg in result.messages:
        if msg:
            print(f"exosim: warning: {msg}", file=sys.stderr)
    if result.timing.get("implicit_members"):
        method = _IMPLICIT_NAMES.get(scenario.solver.stiff_fallback, "an implicit method")
        print(
            f"exosim: note: {result.timing['implicit_members']} member segment(s) were too stiff for the explicit "
            f"solver and were integrated with {method} (solver.stiff_fallback)",
            file=sys.stderr,
        )
    rows = result.summary_rows()
    print(f"{scenario.name}: {result.arm_index.size} members in {result.timing['seconds']:.2f} s")
    for r in rows:
        extra = (
            f"  SF2 {r['sf2_within_arm']:.3f}  D10 {r['d10_Gy']:.2f} Gy  DMF {r['dmf_at_sf0.1']:.3f}"
            if "d10_Gy" in r
            else ""
        )
        sf = f"SF {r['sf_at_scoring']:.3g}" if "sf_at_scoring" in r else f"SF(0) {r['sf0_vs_untreated']:.3f}"
        volumes = ""
        for k, v in r.items():
            if k.endswith("_volume_at_scoring_mm3"):
                pop = k.removesuffix("_volume_at_scoring_mm3")
                days = r.get(f"{pop}_days_to_4x_volume", float("nan"))
                volumes += f"  {pop} {v:.0f} mm3" + (f" (4x in {days:.1f} d)" if math.isfinite(days) else "")
        print(
            f"  {r['arm']:<48} alpha {r['alpha_eff_per_Gy']:.4f}/Gy  beta {r['beta_eff_per_Gy2']:.4f}/Gy2"
            f"  {sf}{extra}{volumes}"
        )
    if bands is not None and bands.params:
        print(
            f"  95 % prediction bands from {bands.draws} posterior draws of {', '.join(bands.params)} "
            f"({bands.seconds:.1f} s)"
        )
        for r in bands.summary:
            if "sf2_within_arm_median" in r:
                print(
                    f"  {r['arm']:<48} SF2 {r['sf2_within_arm_median']:.3f} "
                    f"[{r['sf2_within_arm_low']:.3f}, {r['sf2_within_arm_high']:.3f}]"
                    + (
                        f"  DMF {r['dmf_at_sf0.1_median']:.3f} "
                        f"[{r['dmf_at_sf0.1_low']:.3f}, {r['dmf_at_sf0.1_high']:.3f}]"
                        if "dmf_at_sf0.1_median" in r
                        else ""
                    )
                )
    print("wrote " + ", ".join(str(f) for f in files))
    failed = _failed_arms(result)
    for line in failed:
        print(f"exosim: error: {line}", file=sys.stderr)
    return 3 if failed else 0


def _failed_arms(result) -> list[str]:
    """One line per arm without a single successful member (an error: exit 3)."""
    from exosim.scenario.runner import out_of_range
    from exosim.simulate.solver import FAILED

    lines = []
    for a, arm in enumerate(result.arms):
        members = (result.arm_index == a).nonzero()[0]
        if members.size and (result.status[members] == FAILED).all():
            named = out_of_range(result.model, result.parameters[members[0]])
            cause = "; ".join(named) if named else "every parameter is within its documented range"
            lines.append(f"no member of arm {arm!r} succeeded ({members.size} failed); its parameter set: {cause}")
    return lines


def _cmd_evidence(args: argparse.Namespace, argv: list[str]) -> int:
    import time

    from exosim.analysis.evidence import EvidenceError, load_evidence, pass_rates, run_evidence
    from exosim.io.outputs import write_scorecard
    from exosim.io.provenance import evidence_record
    from exosim.util.atomic import claim_output

    start = time.perf_counter()
    try:
        ev = load_evidence(args.path, with_hypotheses=args.with_hypotheses).select(args.role, args.entry)
    except EvidenceError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    outdir = Path(args.outdir)
    claim_output(outdir)
    rows = run_evidence(ev, solver=args.solver, progress=True)
    rates = pass_rates(rows)
    record = evidence_record(ev, rates, wall=time.perf_counter() - start, command=["exosim"] + argv)
    record["solver"] = args.solver or "each protocol's own"
    files = write_scorecard(rows, rates, outdir, record)
    for role, r in rates.items():
        if r["entries"]:
            print(
                f"{role}: {r['passed']}/{r['entries']} within uncertainty ({r['rate']:.0%})"
                + (f", {r['failed_runs']} failed runs" if r["failed_runs"] else "")
            )
    for r in rows:
        if r["within"] != "yes":
            unit = "" if r["unit"] == "1" else " " + r["unit"]
            shown = "failed: " + r["message"] if r["status"] == "failed" else f"model {r['model']:.3g}{unit}"
            print(f"  outside: {r['entry']} ({r['role']}): observed {r['observed']:.3g}{unit}, {shown}")
    print(f"{len(rows)} entries in {time.perf_counter() - start:.1f} s; wrote " + ", ".join(str(f) for f in files))
    return 0


def _cmd_calibrate(args: argparse.Namespace, argv: list[str]) -> int:
    import time

    from exosim.analysis.calibrate import calibrate
    from exosim.analysis.evidence import EvidenceError, load_evidence, pass_rates, run_evidence
    from exosim.io.outputs import write_calibration
    from exosim.io.provenance import evidence_record
    from exosim.util.atomic import claim_output

    start = time.perf_counter()
    params = [p.strip() for p in args.params.split(",") if p.strip()]
    try:
        ranges = {}
        for text in args.range:
            name, _, span = text.partition("=")
            low, _, high = span.partition(":")
            try:
                ranges[name.strip()] = (float(low), float(high))
            except ValueError:
                raise EvidenceError(
                    "--range", text, "expected name=low:high, e.g. foci_clearance_half_time=0.5:8"
                ) from None
        unknown = sorted(set(ranges) - set(params))
        if unknown:
            raise EvidenceError("--range", unknown[0], f"not among --params {params}")
        ev = load_evidence(args.path)
        claim_output(Path(args.outdir))
        if args.sample < 0 or (args.sample and (args.walkers < 2 * len(params) or args.walkers % 2)):
            raise EvidenceError(
                "--walkers", str(args.walkers), f"expected an even number >= {2 * len(params)} (2 x parameters)"
            )
        if args.sample:
            import importlib.util

            if importlib.util.find_spec("emcee") is None:
                raise EvidenceError("--sample", "", 'needs emcee: pip install "exosim[bayes]"')
        if args.write_catalogue and not args.sample:
            raise EvidenceError("--write-catalogue", "", "needs --sample STEPS: the catalogue keeps the posterior")
        result = calibrate(ev, params, ranges=ranges, solver=args.solver, profile_points=args.profile_points)
    except EvidenceError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    posterior = None
    if args.sample:
        from exosim.analysis.posterior import TAU_MULTIPLE, sample_posterior

        posterior = sample_posterior(
            ev,
            params,
            ranges=ranges,
            start=result.estimates,
            walkers=args.walkers,
            steps=args.sample,
            seed=args.seed,
            solver=args.solver,
        )
    rows = run_evidence(ev, parameters=result.estimates, solver=args.solver)
    rates = pass_rates(rows)
    record = evidence_record(
        ev, rates, wall=time.perf_counter() - start, command=["exosim"] + argv, parameters=result.estimates
    )
    record["solver"] = args.solver or "each protocol's own"
    record["calibration"] = {
        "objective": result.objective,
        "objective_at_catalogue_values": result.nominal_objective,
        "evaluations": result.evaluations,
        "profiles": result.profiles,
        "entries": result.entries,
    }
    if posterior is not None:
        record["posterior"] = posterior.diagnostics()
    files = write_calibration(result, rows, rates, args.outdir, record, posterior)
    if args.write_catalogue:
        from exosim.io.outputs import calibration_yaml
        from exosim.model import catalogue as cat
        from exosim.util.atomic import atomic_write

        target = Path(str(cat.calibration_path()))
        atomic_write(target, calibration_yaml(result, record, posterior))
        files.append(target)
    print(
        f"chi-square over {len(result.entries)} calibration entries: {result.nominal_objective:.3g} at the catalogue "
        f"values, {result.objective:.3g} calibrated ({result.evaluations} evaluations)"
    )
    for n in params:
        lo, hi = result.intervals[n]
        lo_open, hi_open = result.open_ends.get(n, (False, False))
        shown = f"[{lo:.3g}{' (open)' if lo_open else ''}, {hi:.3g}{' (open)' if hi_open else ''}]"
        print(
            f"  {n} = {result.estimates[n]:.4g} (catalogue {result.nominal[n]:.4g}; 95 % profile {shown}"
            + (
                ""
                if result.identified[n]
                else "; NOT identified by the evidence"
                if result.profiles
                else "; not profiled"
            )
            + ")"
        )
    if posterior is not None:
        d = posterior.diagnostics()
        print(
            f"posterior: {posterior.walkers} walkers x {posterior.steps} steps ({posterior.seconds:.0f} s), "
            f"acceptance {d['acceptance_fraction']:.2f}, "
            + ("converged" if posterior.converged else f"NOT converged (needs > {TAU_MULTIPLE} x tau steps)")
        )
        for n, summary in posterior.summary().items():
            lo, hi = summary["interval_95"]
            print(
                f"  {n}: median {summary['median']:.4g}, 95 % [{lo:.3g}, {hi:.3g}], "
                f"tau {summary['tau_steps']:.1f} steps, ESS {summary['effective_samples']:.0f}"
            )
    for role, r in rates.items():
        if r["entries"]:
            print(f"{role} after calibration: {r['passed']}/{r['entries']} within uncertainty ({r['rate']:.0%})")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from exosim.model.assemble import ModelError
    from exosim.scenario.load import load_scenario_with_warnings
    from exosim.scenario.runner import compile_scenario
    from exosim.scenario.schema import ScenarioError

    failed = 0
    for path in args.scenarios:  # every file is checked, each problem reported as one line
        try:
            sc, found = load_scenario_with_warnings(path, strict=args.strict)
            for warning in found:
                print(f"exosim: warning: {warning}", file=sys.stderr)
            # the model assembles, every override names a parameter it has, the record fits in memory
            compile_scenario(sc).check_size()
            if sc.calibration is not None:  # its data read and its parameters found, as `exosim figures` will
                from exosim.analysis import fit as _fit

                try:
                    _fit.calibration_problem(sc)
                except _fit.FitError as exc:
                    raise ScenarioError(sc.source, "calibration", str(exc)) from None
        except ScenarioError as exc:
            print(f"exosim: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        except ModelError as exc:
            print(f"exosim: error: {path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(
            f"{path}: ok ({sc.name}, {len(sc.arms) or 1} arms, "
            f"{len(sc.dose_grid.values) if sc.dose_grid else 1} grid doses"
            + (f", {len(sc.hypotheses)} hypothesis block(s)" if sc.hypotheses else "")
            + ")"
        )
    return 2 if failed else 0


def _cmd_export(args: argparse.Namespace) -> int:
    from exosim.scenario.load import load_scenario
    from exosim.scenario.runner import compile_scenario

    if _missing_extra("sbml", "SBML export"):
        return 2
    from exosim.io.sbml import SBMLExportError, export, select_member, write_validated
    from exosim.model.units import QuantityError

    compiled = compile_scenario(load_scenario(args.scenario))
    try:
        member = select_member(compiled, arm=args.arm, dose=args.dose)  # for the report line
    except QuantityError as exc:
        print(f"exosim: error: --dose: {exc}", file=sys.stderr)
        return 2
    try:
        doc = export(compiled, arm=args.arm, dose=args.dose)
        result = write_validated(doc, args.output)
    except SBMLExportError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    arm = compiled.arms[compiled.arm_index[member]].name
    print(f"wrote {args.output} ({arm!r}, member {member}; {len(result.warnings)} unit warnings)")
    return 0


def _cmd_export_petab(args: argparse.Namespace) -> int:
    if _missing_extra("petab", "PEtab export"):
        return 2
    from exosim.analysis.fit import FitError
    from exosim.io.petab import PetabExportError, export_petab
    from exosim.io.sbml import SBMLExportError
    from exosim.scenario.load import load_scenario
    from exosim.util.atomic import claim_output

    scenario = load_scenario(args.scenario)  # ScenarioError: exit 2 in main
    outdir = args.outdir or f"results/{scenario.name}-petab"
    claim_output(outdir)  # writable and locked before any work (OutputError: exit 2 in main)
    try:
        params = [p.strip() for p in args.params.split(",") if p.strip()]
        export = export_petab(
            scenario,
            args.data,
            params,
            outdir,
            likelihood=args.likelihood,
            normalise=args.normalise,
            ranges=_ranges(args.range, FitError),
            backend=args.backend,
        )
    except (FitError, PetabExportError, SBMLExportError) as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    n_obs = len(export.measurements)
    print(
        f"PEtab problem of {scenario.name!r}: {len(export.members)} conditions, {n_obs} measurements, "
        f"estimated {', '.join(f'{k} ({v})' for k, v in export.petab_ids.items())}; petab lint passed"
    )
    print("wrote " + ", ".join(str(f) for f in export.files))
    return 0


def _cmd_export_models(args: argparse.Namespace) -> int:
    if _missing_extra("sbml", "SBML export"):
        return 2
    from exosim.io.sbml import SBMLExportError, write_models
    from exosim.util.atomic import claim_output, staged_outputs

    outdir = claim_output(args.outdir)  # writable and locked first (OutputError: one line, exit 2 in main)
    try:
        with staged_outputs(outdir) as tmp:  # the files appear together, or none
            written = write_models(tmp)
    except SBMLExportError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    for path, result in written:
        print(f"wrote {outdir / path.name} ({len(result.warnings)} warnings)")
    return 0


def _cmd_sensitivity(args: argparse.Namespace, argv: list[str]) -> int:
    import os
    import time

    from exosim.analysis import sensitivity as sa
    from exosim.analysis.engine import EngineError, make_engine, usable_cores
    from exosim.io.outputs import OutputError, write_analysis
    from exosim.io.provenance import sensitivity_record
    from exosim.model.catalogue import parameter_table
    from exosim.scenario.load import load_scenario, with_dose_grid
    from exosim.scenario.schema import ScenarioError
    from exosim.util.atomic import claim_output

    if args.method != "local" and _missing_extra("sensitivity", f"--method {args.method}"):
        return 2
    scenario = load_scenario(args.scenario, hypotheses=not args.no_hypotheses)
    for statement in scenario.hypotheses:
        print(
            f"exosim: note: analyses a hypothesis (not catalogue biology): {' '.join(statement.split())}",
            file=sys.stderr,
        )
    if args.method == "local":  # no sampling: each factor is moved about the scenario's own value
        given = (("-N", args.N is not None), ("--seed", args.seed is not None), ("--range", bool(args.range)))
        unused = [option for option, used in given if used]
        if unused:
            print(f"exosim: note: --method local does not use {', '.join(unused)}", file=sys.stderr)
    args.N = 1024 if args.N is None else args.N
    args.seed = 0 if args.seed is None else args.seed
    outdir = args.outdir or f"results/{scenario.name}-{args.method}"
    claim_output(outdir)  # writable and locked before any sample (OutputError: exit 2 in main)
    n = args.N
    cap = os.environ.get("EXOSIM_SENSITIVITY_MAX_N", "").strip()
    if cap:
        try:
            limit = int(cap)
        except ValueError:
            limit = 0
        if limit < 1:
            print(f"exosim: error: EXOSIM_SENSITIVITY_MAX_N: expected a positive integer, got {cap!r}", file=sys.stderr)
            return 2
        if limit < n:
            if args.method == "sobol" and limit >= 2:  # Sobol N stays a power of two: the one below
                limit = 1 << (limit.bit_length() - 1)
            print(f"exosim: note: -N {n} capped at {limit} by EXOSIM_SENSITIVITY_MAX_N", file=sys.stderr)
            n = limit
    try:
        ranges = _ranges(args.range, sa.SensitivityError)
        space = sa.ParameterSpace.from_table(args.group, [k for k in args.params.split(",") if k], ranges)
        table = parameter_table()
        for key, (low, high) in ranges.items():
            doc_low, doc_high = (float(x) for x in table[key]["range"])
            if low < doc_low or high > doc_high:
                print(
                    f"exosim: warning: --range {key}={low:g}:{high:g} reaches outside its documented range "
                    f"[{doc_low:g}, {doc_high:g}] {table[key]['unit']}",
                    file=sys.stderr,
                )
        if args.doses is not None:
            try:
                doses = [float(d) for d in args.doses.split(",")]
            except ValueError:
                raise sa.SensitivityError(f"--doses {args.doses!r}: expected comma-separated numbers") from None
            try:
                scenario = with_dose_grid(scenario, doses)
            except ScenarioError as exc:  # the values came from the command line, not the file
                where = exc.path.removeprefix("dose_grid.values")
                raise sa.SensitivityError(
                    f"--doses {args.doses}{' ' + where if where else ''}: {exc.problem}"
                ) from None
        if args.scheduler and args.workers is not None:
            print(
                f"exosim: note: --workers {args.workers} is not used with --scheduler: the cluster's workers "
                "run the tasks",
                file=sys.stderr,
            )
        elif args.workers is not None and args.workers > usable_cores():
            cores = usable_cores()
            print(
                f"exosim: warning: --workers {args.workers} on {cores} usable core{'s' if cores != 1 else ''}: the "
                f"processes share them (no faster than --workers {cores}; --workers auto picks it)",
                file=sys.stderr,
            )
        engine = make_engine(args.workers, args.scheduler)
    except (sa.SensitivityError, EngineError, ScenarioError) as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    finished = False
    try:
        evaluator = sa.ScenarioEvaluator(
            scenario, arm=args.arm, engine=engine, chunk_members=args.chunk_members, backend=args.backend
        )
        start = time.perf_counter()
        analysis = sa.analyse(evaluator, space, args.method, n, args.seed)
        wall = time.perf_counter() - start
        finished = True
    except sa.SensitivityError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.close(abort=not finished)  # interrupted: the workers end now
    prov = sensitivity_record(
        scenario,
        evaluator,
        space,
        analysis,
        method=args.method,
        n=n,
        n_requested=args.N,
        seed=args.seed,
        engine=engine,
        chunk_members=args.chunk_members,
        wall=wall,
        table=parameter_table(),
        command=["exosim"] + argv,
    )
    try:
        files = write_analysis(analysis, outdir, prov)
    except OutputError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    for key in prov["inert_factors"]:
        print(
            f"exosim: warning: {key!r} does not occur in {scenario.name!r}; it is sampled but has no effect",
            file=sys.stderr,
        )
    if analysis.failed.any():
        print(
            f"exosim: warning: {int(analysis.failed.sum())} of {analysis.samples.shape[0]} samples failed; "
            f"{analysis.dropped} blocks dropped (see provenance.json)",
            file=sys.stderr,
        )
    print(
        f"{args.method} sensitivity of {evaluator.target_name!r}: {analysis.samples.shape[0]} samples, "
        f"{evaluator.counts.get('runs', 0)} model runs in {wall:.1f} s ({engine.describe()})"
    )
    print("wrote " + ", ".join(str(f) for f in files))
    if analysis.failed.all():
        print("exosim: error: every sample failed: no index could be computed (see provenance.json)", file=sys.stderr)
        return 3
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    from exosim.analysis import fit as _fit
    from exosim.analysis.engine import make_engine, parse_workers, usable_cores
    from exosim.io.figures import parse_formats
    from exosim.scenario.load import load_scenario
    from exosim.util.atomic import claim_output, staged_outputs
    from exosim.util.progress import progress

    try:
        formats = parse_formats(args.format)
    except ValueError as exc:
        print(f"exosim: error: --format: {exc}", file=sys.stderr)
        return 2
    if args.dpi is not None and args.dpi <= 0:
        print(f"exosim: error: --dpi: expected a positive integer, got {args.dpi}", file=sys.stderr)
        return 2
    try:
        workers = parse_workers(args.workers)
    except ValueError as exc:
        print(f"exosim: error: --workers: {exc}", file=sys.stderr)
        return 2
    scenarios = [load_scenario(p) for p in args.scenarios]  # all validated before anything is written
    problems = {}
    for sc in scenarios:
        if sc.calibration is not None:
            try:
                problems[sc.name] = _fit.calibration_problem(sc)
            except _fit.FitError as exc:
                print(f"exosim: error: {sc.source}: calibration: {exc}", file=sys.stderr)
                return 2
    record = None
    if args.bands:
        from exosim.model import catalogue as cat

        record = cat.calibration()
        if not record or "posterior" not in record:
            print("exosim: error: the catalogue has no posterior to draw bands from", file=sys.stderr)
            return 2
    outdir = claim_output(args.outdir)  # writable and locked before any run (OutputError: exit 2 in main)
    # every figure is drawn into one staging folder and all move into place together at the end
    # (an error or a signal leaves the folder as it was); other files in the folder stay untouched
    stage = staged_outputs(outdir)
    engine = make_engine(min(usable_cores() if workers is None else workers, len(scenarios)))
    finished = False
    try:
        with stage as tmp:
            # scenarios travel to the workers; compiled models do not pickle, so each builds its own
            tasks = [(sc, sc.name in problems, tmp, formats, args.dpi, args.bands, record) for sc in scenarios]
            failed = []
            for lines in progress(
                engine.map(_figures_of, tasks), total=len(tasks), desc="exosim figures", unit="scenario"
            ):
                failed += lines
        finished = True
    finally:
        engine.close(abort=not finished)  # interrupted: the workers end now, not after their scenario
    for path in stage.written:
        print(f"wrote {path}")
    for line in failed:  # drawn all the same (like exosim run), but an arm without results is an error
        print(f"exosim: error: {line}", file=sys.stderr)
    return 3 if failed else 0


def _figures_of(task: tuple) -> list[str]:
    """The figures of one scenario (a top-level function: figure workers run it in their process);
    returns the arms of the scenario without a single successful member."""
    from exosim.analysis import fit as _fit
    from exosim.io.figures import plot_fit, plot_survival, plot_timecourses, save_options
    from exosim.scenario.runner import run

    sc, calibrated, tmp, formats, dpi, draws, record = task
    with save_options(formats, dpi):
        # time courses for medium transfer (their own figure) and for protocols without a dose
        # grid (the survival figure is then the scored cells' survival over the protocol)
        result = run(sc, time_courses=sc.type == "medium_transfer" or sc.dose_grid is None)
        bands = None
        if draws:
            from exosim.analysis.posterior import prediction_bands

            bands = prediction_bands(sc, record, draws=draws, solver="auto")
        plot_survival(result, result.survival_rows(), tmp / f"{sc.name}.png", bands=bands)
        if sc.type == "medium_transfer":  # time courses of the key states, at the largest grid dose
            plot_timecourses(result, tmp / f"{sc.name}_timecourses.png")
        if calibrated:
            problem = _fit.calibration_problem(sc)
            plot_fit(problem, _fit.fit(problem), tmp / f"{sc.name}_calibration.png")
    return [f"{sc.source}: {line}" for line in _failed_arms(result)]


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (the handler :func:`main` installs), so that, as for
    Ctrl-C's KeyboardInterrupt, staging folders and locks are cleaned up on the way out."""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line ``exosim: warning: ...`` (scenario warnings name file and key path)."""
    print(f"exosim: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``exosim`` command; returns the exit code.

    Exit codes: 0 success; 2 bad input, an unwritable output folder (checked before any
    simulation) or another exosim command writing to the same folder; 130 interrupted
    (SIGINT, Ctrl-C) and 143 terminated (SIGTERM), each reported as one line: the staging
    folder is removed and the output folder left as it was (or, if the signal came during
    the final move, complete).
    """
    import os
    import signal

    pid = os.getpid()

    from exosim.util import atomic

    def on_sigterm(signum, frame):
        if os.getpid() != pid:  # a forked worker process: end as SIGTERM's default would
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        atomic.note_signal(Terminated)  # raised below; recorded in case a C callback drops it
        raise Terminated

    def on_sigint(signum, frame):
        if os.getpid() == pid:
            atomic.note_signal(KeyboardInterrupt)
        raise KeyboardInterrupt

    previous_hook = sys.unraisablehook

    def unraisable(info):
        # a signal's exception raised inside a callback whose exceptions Python drops (a fork
        # handler, a finaliser, numba's compiler callbacks) is recorded above and raised again
        # later; it is not an error to print
        if not (isinstance(info.exc_value, (KeyboardInterrupt, Terminated)) and atomic.pending_signal()):
            previous_hook(info)

    sys.unraisablehook = unraisable
    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
        previous_int = signal.signal(signal.SIGINT, on_sigint)
        installed = True
    except ValueError:  # not the main thread (main() called from a thread): no handler
        installed = False
    atomic.clear_signal()
    try:
        from exosim.model.assemble import ModelError
        from exosim.scenario.schema import ScenarioError
        from exosim.util.atomic import OutputError, output_claims

        argv = sys.argv[1:] if argv is None else list(argv)
        args = _parser().parse_args(argv)
        with warnings.catch_warnings(), output_claims():  # claimed folders are unlocked however it ends
            warnings.showwarning = _show_warning  # scenario warnings as one line, like errors
            try:
                commands = {
                    "run": lambda: _cmd_run(args, argv),
                    "figures": lambda: _cmd_figures(args),
                    "delivery": lambda: _cmd_delivery(args),
                    "fit": lambda: _cmd_fit(args, argv),
                    "export": lambda: _cmd_export(args),
                    "export-sbml": lambda: _cmd_export_models(args),
                    "export-petab": lambda: _cmd_export_petab(args),
                    "sensitivity": lambda: _cmd_sensitivity(args, argv),
                    "evidence": lambda: _cmd_evidence(args, argv),
                    "calibrate": lambda: _cmd_calibrate(args, argv),
                }
                code = commands[args.command]() if args.command in commands else _cmd_validate(args)
                atomic.raise_pending()  # a signal whose exception was dropped ends the command as it should
                return code
            except (ScenarioError, ModelError, OutputError) as exc:
                print(f"exosim: error: {exc}", file=sys.stderr)
                return 2
    except SystemError:
        # a signal's exception raised inside compiled code (numba's clock or dispatcher) comes out
        # as "returned a result with an exception set": the recorded signal is what happened
        pending = atomic.pending_exception()
        if pending is None:
            raise
        print(
            "exosim: interrupted" if issubclass(pending, KeyboardInterrupt) else "exosim: terminated", file=sys.stderr
        )
        return 130 if issubclass(pending, KeyboardInterrupt) else 143
    except BrokenPipeError:  # the reader of stdout went away (| head): stop quietly, as a shell tool does
        import os as _os

        _os.dup2(_os.open(_os.devnull, _os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("exosim: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("exosim: terminated", file=sys.stderr)
        return 143
    finally:
        atomic.remove_staging()  # a signal handled just as a staging block ended skipped its clean-up
        atomic.clear_signal()
        sys.unraisablehook = previous_hook
        if installed:  # as they were (a handler not set from Python reads as None: the default)
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
            signal.signal(signal.SIGINT, signal.default_int_handler if previous_int is None else previous_int)


def entry() -> None:
    """The ``exosim`` command: :func:`main`, then exit with its code.

    Once the command has ended (its outputs complete), the exit hooks of the libraries run (worker
    pools, temporary folders) and the process exits at once, without the interpreter's tear-down
    of every module (about 0.2 s, in which Python has already restored the default signal
    handlers: a signal then ended the process silently, or with a traceback from a hook).  A
    signal during the hooks ends it with one line and the signal's code (130 SIGINT, 143 SIGTERM).
    """
    import atexit
    import os
    import signal

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader gone (| head), a closed stream: nothing to flush to
                pass

    def late(signum, frame):
        interrupted = signum == signal.SIGINT
        word = "interrupted" if interrupted else "terminated"
        try:
            flush()
            print(f"exosim: {word} (after the command had ended: its outputs are complete)", file=sys.stderr)
            flush()
        finally:
            os._exit(130 if interrupted else 143)

    try:
        try:
            code = main()
        except SystemExit as exc:  # argparse: --help, a usage error
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        signal.signal(signal.SIGINT, late)
        signal.signal(signal.SIGTERM, late)
    except KeyboardInterrupt:  # between main's end and the handlers above
        late(signal.SIGINT, None)
    try:
        atexit._run_exitfuncs()  # the libraries' exit hooks, with the handlers above in place
    finally:
        flush()
        os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
