"""exosim: mechanistic simulation of radiation-induced exosome signalling.

The chain modules -> integrate -> survival -> scenario -> outputs:

* :class:`Model` assembles the four ODE modules (release, transport and
  uptake, cargo effects, repair) into one vectorised model
  ``rhs(t, y[N, n], p[N, k])``;
* :func:`integrate` integrates a batch with per-member error control;
* :func:`load_scenario` reads a scenario file, :func:`run` runs all its arms
  and doses as one batch, :func:`write_outputs` writes tables, provenance and
  the survival figure.

References
----------
.. [1] McMahon SJ, et al. (2013) PLoS ONE 8:e54526 (bystander signalling model).
.. [2] Kundrat P, Friedland W (2015) Radiat Prot Dosim 166:148.
.. [3] Mutschelknaus L, et al. (2016) PLoS ONE 11:e0152213.
"""

from exosim._version import __version__

from exosim.model.assemble import Model, ModelError, ParameterInfo, PopulationSpec
from exosim.simulate.dopri5 import BatchSolution, SolverOptions, integrate
from exosim.model.lq import dose_at_survival, lea_catcheside, lq_neg_log_survival, survival_at_dose
from exosim.io.outputs import OutputError, summary_table, survival_table, write_outputs
from exosim.scenario.runner import CompiledScenario, RunResult, compile_scenario, run
from exosim.scenario.schema import Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = [
    "__version__",
    "Model", "ModelError", "ParameterInfo", "PopulationSpec",
    "BatchSolution", "SolverOptions", "integrate",
    "dose_at_survival", "lea_catcheside", "lq_neg_log_survival", "survival_at_dose",
    "OutputError", "summary_table", "survival_table", "write_outputs",
    "CompiledScenario", "RunResult", "compile_scenario", "run",
    "Scenario", "ScenarioError", "load_scenario", "parse_scenario",
]
