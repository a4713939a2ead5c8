"""Estimate model parameters from survival, colony and time-course data: maximum likelihood
with profile-likelihood intervals.

* :mod:`.data` reads and checks data files (survival points, colony counts, time courses);
* :mod:`.problem` builds the fit problem (scenario subset, parameters, model values);
* :mod:`.likelihood` holds the likelihoods and goodness of fit;
* :mod:`.optimise` finds the maximum-likelihood estimate;
* :mod:`.profile` computes profile-likelihood intervals;
* :mod:`.result` is the :class:`FitResult`.
"""

from exosim.analysis.fit.data import FitError, Observations, default_likelihood, read_observations
from exosim.analysis.fit.optimise import check_level, fit
from exosim.analysis.fit.problem import FitProblem, calibration_problem
from exosim.analysis.fit.result import FitResult

__all__ = [
    "FitError",
    "Observations",
    "read_observations",
    "default_likelihood",
    "FitProblem",
    "calibration_problem",
    "FitResult",
    "fit",
    "check_level",
]
