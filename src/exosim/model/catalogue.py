"""The data exosim ships: parameter table, cell lines, media, cargo catalogue.

The YAML files in ``exosim/model/data``; they are read once and cached.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

__all__ = [
    "parameter_table",
    "cell_lines",
    "cargo_catalogue",
    "targets",
    "repressors",
    "agents",
    "treatments",
    "media",
    "calibration",
    "calibration_path",
    "is_protocol",
    "within_documented_range",
]


#: the catalogues are the package's own files: libyaml's parser (same resolver and constructor
#: as ``yaml.SafeLoader``) reads them about ten times faster where PyYAML was built with it
_CATALOGUE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(name: str) -> dict:
    with resources.files("exosim.model").joinpath("data").joinpath(name).open("r", encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_CATALOGUE_LOADER)  # noqa: S506 - a safe loader


@cache
def parameter_table() -> dict[str, dict]:
    """Parameter key -> {module, scope, unit, value, range, source | assumed+reason, description}."""
    return _load("parameters.yaml")


@cache
def cell_lines() -> dict[str, dict]:
    """Cell line -> {alpha0 (1/Gy), beta0 (1/Gy^2), repair_half_time (h), source, ...}."""
    return _load("cell_lines.yaml")


@cache
def media() -> dict[str, dict]:
    """Medium kind -> {description, parameter values, source | assumed}."""
    return _load("media.yaml")


def calibration_path():
    """Where the catalogue's calibration record lives (``data/calibration.yaml`` of the package)."""
    return resources.files("exosim.model").joinpath("data").joinpath("calibration.yaml")


def calibration() -> dict | None:
    """The catalogue's calibration record: calibrated values, their posterior draws and the
    provenance (evidence hash, date, objective); None when no calibration has been written.
    Written by ``exosim calibrate --sample N --write-catalogue``; read by prediction bands."""
    path = calibration_path()
    if not path.is_file():
        return None
    with path.open("r", encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_CATALOGUE_LOADER)  # noqa: S506 - a safe loader


#: fields of a catalogue entry that are not parameter values
DESCRIPTIVE = frozenset({"description", "source", "assumed", "note", "reason"})


def is_protocol(key: str) -> bool:
    """Whether parameter ``key`` is set by the experiment (cell numbers, volumes, dose rates,
    intervention factors) rather than by biology; biology changes only in a hypothesis."""
    return bool(parameter_table()[key].get("protocol", False))


@cache
def _cargo_file() -> dict:
    return _load("cargo.yaml")


def cargo_catalogue() -> dict[str, dict]:
    """Cargo -> {kind, direction, effects {target: r}, source, optional parameter values}."""
    return _cargo_file()["cargo"]


def targets() -> dict[str, dict]:
    """Target -> {modifiers {modifier: weight}, optional turnover_rate}."""
    return _cargo_file()["targets"]


def repressors() -> dict[str, dict]:
    """Endogenous repressor (miRNA or RNA-binding protein of the recipient) -> {kind,
    copies_per_cell, represses {target: signed change at saturation}, source | assumed}."""
    return _cargo_file().get("repressors") or {}


def agents() -> dict[str, dict]:
    """Intervention agent -> {process, efficacy, source}."""
    return _cargo_file()["agents"]


def treatments() -> dict[str, dict]:
    """Medium treatment -> {destroys {cargo kind: [free | vesicular]}, lyses_vesicles, note}."""
    return _cargo_file()["treatments"]


#: parameters for which the value 0 removes something (``donors.cells: 0``: an arm without donor
#: cells) rather than being a value of the documented range
ZERO_MEANS_ABSENT = frozenset({"cells"})


def within_documented_range(key: str, value: float, low: float, high: float) -> bool:
    """Whether ``value`` of parameter ``key`` lies in its documented range [low, high] (or is
    a 0 that means absent)."""
    return low <= value <= high or (value == 0 and key in ZERO_MEANS_ABSENT)
