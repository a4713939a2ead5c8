"""Command-line interface: ``exosim run | validate | figures | export | export-sbml``.

Exit codes: 0 success (failed members are reported in the outputs and on
stderr, never an abort), 2 bad input or unwritable output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__

EXAMPLES = """examples:
  exosim run scenarios/hnscc_exosome_radioresistance.yaml -o results/hnscc
  exosim validate scenarios/*.yaml
  exosim figures scenarios/*.yaml -o figures
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

FIGURES_EXAMPLE = """example:
  exosim figures scenarios/*.yaml -o figures

writes one survival-curve figure per scenario, named after the scenario.
"""

RUN_EXAMPLE = """example:
  exosim run scenarios/hnscc_exosome_radioresistance.yaml -o results/hnscc

writes survival.csv (survival vs dose per arm and member), summary.csv (alpha_eff,
beta_eff, SF2, D10, DMF per arm), timecourses.csv, provenance.json and survival.png.
"""

VALIDATE_EXAMPLE = """example:
  exosim validate scenarios/*.yaml
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exosim",
        description="Mechanistic simulator of radiation-induced exosome signalling coupled to "
                    "linear-quadratic cell survival.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"exosim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and write tables, provenance and figure",
                         epilog=RUN_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("scenario", help="scenario YAML file")
    run.add_argument("-o", "--outdir", help="output folder (default: results/<scenario name>)")
    run.add_argument("--no-timecourses", action="store_true", help="skip timecourses.csv (faster)")
    run.add_argument("--no-figure", action="store_true", help="skip survival.png")
    val = sub.add_parser("validate", help="check scenario files without running them",
                         epilog=VALIDATE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    val.add_argument("scenarios", nargs="+", help="scenario YAML files")
    exp = sub.add_parser("export", help="write one arm and dose of a scenario as SBML",
                         epilog=EXPORT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    exp.add_argument("scenario", help="scenario YAML file")
    exp.add_argument("-o", "--output", required=True, help="SBML file to write")
    exp.add_argument("--arm", help="arm name (default: the first arm)")
    exp.add_argument("--dose", type=float, help="grid dose in the grid's unit (default: the largest)")
    mod = sub.add_parser("export-sbml", help="regenerate the SBML files in models/",
                         epilog=MODELS_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_argument("-o", "--outdir", default="models", help="folder (default: models)")
    fig = sub.add_parser("figures", help="regenerate the survival figure of each scenario",
                         epilog=FIGURES_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    fig.add_argument("scenarios", nargs="+", help="scenario YAML files")
    fig.add_argument("-o", "--outdir", default="figures", help="folder for the figures (default: figures)")
    return parser


def _cmd_run(args: argparse.Namespace, argv: list[str]) -> int:
    from ._outputs import OutputError, summary_table, survival_table, write_outputs
    from ._protocol import run
    from ._scenario import load_scenario

    scenario = load_scenario(args.scenario)
    result = run(scenario, time_courses=not args.no_timecourses)
    outdir = Path(args.outdir) if args.outdir else Path("results") / scenario.name
    try:
        files = write_outputs(result, outdir, argv=["exosim"] + argv, figure=not args.no_figure)
    except OutputError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    for msg in result.messages:
        if msg:
            print(f"exosim: warning: {msg}", file=sys.stderr)
    rows = summary_table(result, survival_table(result))
    print(f"{scenario.name}: {result.arm_index.size} members in {result.timing['seconds']:.2f} s")
    for r in rows:
        extra = (f"  SF2 {r['sf2_within_arm']:.3f}  D10 {r['d10_Gy']:.2f} Gy  DMF {r['dmf_at_sf0.1']:.3f}"
                 if "d10_Gy" in r else "")
        print(f"  {r['arm']:<48} alpha {r['alpha_eff_per_Gy']:.4f}/Gy  beta {r['beta_eff_per_Gy2']:.4f}/Gy2"
              f"  SF(0) {r['sf0_vs_untreated']:.3f}{extra}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ._scenario import load_scenario

    for path in args.scenarios:
        sc = load_scenario(path)
        print(f"{path}: ok ({sc.name}, {len(sc.arms) or 1} arms, "
              f"{len(sc.dose_grid.values) if sc.dose_grid else 1} grid doses)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from ._protocol import compile_scenario
    from ._scenario import ScenarioError, load_scenario
    from ._units import parse_quantity

    scenario = load_scenario(args.scenario)
    compiled = compile_scenario(scenario)
    names = [a.name for a in compiled.arms]
    arm = names.index(args.arm) if args.arm is not None and args.arm in names else 0
    if args.arm is not None and args.arm not in names:
        raise ScenarioError(args.scenario, "arms", f"no arm named {args.arm!r}; arms: {', '.join(names)}")
    rows = np.flatnonzero(compiled.arm_index == arm)
    grid = compiled.grid[rows]
    if args.dose is None:
        member = int(rows[np.nanargmax(grid)]) if np.isfinite(grid).any() else int(rows[0])
    else:
        unit = scenario.dose_grid.unit if scenario.dose_grid else "Gy"
        dose = parse_quantity(f"{args.dose} {unit}", "dose")
        hit = np.flatnonzero(np.isclose(grid, dose))
        if not hit.size:
            raise ScenarioError(args.scenario, "dose_grid", f"dose {args.dose:g} {unit} is not on the grid")
        member = int(rows[hit[0]])
    try:
        from ._sbml import SBMLExportError, export_member, write_validated
    except ImportError:  # pragma: no cover - depends on the installed extras
        print('exosim: error: SBML export needs the sbml extra: pip install "exosim[sbml]"', file=sys.stderr)
        return 2
    try:
        doc, _ = export_member(compiled, member)
        result = write_validated(doc, args.output)
    except SBMLExportError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({names[arm]!r}, member {member}; {len(result.warnings)} unit warnings)")
    return 0


def _cmd_export_models(args: argparse.Namespace) -> int:
    from ._sbml import SBMLExportError, write_models
    try:
        for path, result in write_models(args.outdir):
            print(f"wrote {path} ({len(result.warnings)} warnings)")
    except SBMLExportError as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    import os
    import tempfile

    from ._outputs import plot_survival, survival_table
    from ._protocol import run
    from ._scenario import load_scenario

    scenarios = [load_scenario(p) for p in args.scenarios]  # all validated before anything is written
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for sc in scenarios:
        result = run(sc, time_courses=False)
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=outdir, prefix=".exosim-")
        os.close(fd)
        try:
            plot_survival(result, survival_table(result), Path(tmp))
            os.replace(tmp, outdir / f"{sc.name}.png")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        print(f"wrote {outdir / (sc.name + '.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``exosim`` command; returns the exit code."""
    from ._assemble import ModelError
    from ._scenario import ScenarioError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args, argv)
        if args.command == "figures":
            return _cmd_figures(args)
        if args.command == "export":
            return _cmd_export(args)
        if args.command == "export-sbml":
            return _cmd_export_models(args)
        return _cmd_validate(args)
    except (ScenarioError, ModelError) as exc:
        print(f"exosim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
