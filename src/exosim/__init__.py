"""exosim: mechanistic simulation of radiation-induced exosome signalling.

Exosome release by irradiated donor cells, transport and uptake by recipient
cells and cargo effects on DNA repair and apoptosis, coupled to a
linear-quadratic survival model.  The public API::

    import exosim
    s = exosim.load_scenario("scenarios/hnscc_exosome_radioresistance.yaml")
    r = s.run()                  # or exosim.run(s, solver=..., parameters=...)
    r.survival                   # pandas: one row per arm and dose (survival.csv)
    r.summary                    # per arm: alpha_eff, beta_eff, SF2, D10, DMF
    r.timecourses(long=True)     # tidy time courses; r.to_xarray() for the cube
    r.member(arm="exosomes from 6 Gy donors", dose=4)
    exosim.sensitivity(s, method="sobol", group="uptake", N=1024).to_df()
    exosim.fit(s, data=["a.csv"], params=["internalisation_rate"]).estimates
    exosim.sbml.export(s, arm="exosomes from 6 Gy donors", dose=4, path="member.xml")
    exosim.export_petab(s, data=["a.csv"], params=["internalisation_rate"], outdir="petab")
    exosim.fit_petab("petab/problem.yaml").estimates   # a PEtab problem (export-petab) fitted

The package is organised by stage (imports only downward):
``model`` (declarations, catalogues, units, LQ) <- ``simulate`` (solvers) <-
``scenario`` (schema, events, runner, results, survival observables) <-
``analysis`` (batch adapter, sensitivity, fit) <- ``io`` (tables, provenance,
figures, SBML) <- ``api``, ``cli``.  See docs/architecture.md.

References
----------
.. [1] McMahon SJ, et al. (2013) PLoS ONE 8:e54526 (bystander signalling model).
.. [2] Kundrat P, Friedland W (2015) Radiat Prot Dosim 166:148.
.. [3] Mutschelknaus L, et al. (2016) PLoS ONE 11:e0152213.
"""

from exosim._version import __version__

#: public name -> module it lives in; imported on first use, so that ``exosim --help`` and
#: ``exosim run`` do not pay for scipy.optimize, SALib, pandas or sbmlutils
_PUBLIC = {
    "load_scenario": "exosim.scenario.load",
    "parse_scenario": "exosim.scenario.load",
    "Scenario": "exosim.scenario.schema",
    "ScenarioWarning": "exosim.scenario.schema",
    "ScenarioError": "exosim.scenario.schema",
    "run": "exosim.api",
    "RunResult": "exosim.scenario.result",
    "Member": "exosim.scenario.result",
    "compile_scenario": "exosim.scenario.runner",
    "CompiledScenario": "exosim.scenario.runner",
    "sensitivity": "exosim.api",
    "SensitivityResult": "exosim.api",
    "fit": "exosim.api",
    "FitOutcome": "exosim.api",
    "export_petab": "exosim.api",
    "fit_petab": "exosim.api",
    "read_petab": "exosim.io.petab",
    "bands": "exosim.api",
    "Bands": "exosim.analysis.posterior",
    "Model": "exosim.model.assemble",
    "ModelError": "exosim.model.assemble",
    "PopulationSpec": "exosim.model.assemble",
    "lea_catcheside": "exosim.model.lq",
    "survival_at_dose": "exosim.model.lq",
    "dose_at_survival": "exosim.model.lq",
    "OutputError": "exosim.util.atomic",
}

__all__ = ["__version__", "sbml", *_PUBLIC]


def __getattr__(name: str):
    """Public names, imported on first use; ``exosim.sbml`` is :mod:`exosim.io.sbml`."""
    import importlib

    if name == "sbml":
        return importlib.import_module("exosim.io.sbml")
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'exosim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
