"""The result of a fit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FitResult"]


@dataclass(frozen=True)
class FitResult:
    """Estimates, profile intervals, goodness of fit and the fitted values."""

    params: list[str]
    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    nll: float
    dispersion: float
    gof: dict
    predicted: np.ndarray  # at the observations of all data sets, in order (problem.slices)
    plating_efficiency: float | None  # of the colony data set, if there is exactly one
    nuisance: dict  # closed-form nuisance estimates: plating efficiencies, relative scale factors
    profiles: dict
    evaluations: int
    converged: bool
    message: str
    #: per parameter: "", "low", "high" or "low, high" -- sides where the profile stays below the
    #: threshold up to the search range, so the interval ends at the range (not identifiable there)
    open_ends: list[str] = field(default_factory=list)
