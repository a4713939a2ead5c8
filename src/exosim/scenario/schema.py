"""The scenario schema: what a scenario file may contain, as typed (pydantic) classes.

A scenario is data: media, populations, cargo, a timeline of events and the arms to
compare (see docs/architecture.md and scenarios/README.md).  Quantities are parsed to
exosim's base units as the file is validated; parameter overrides are parsed to
:class:`~exosim.model.units.Quantity`.  Reading files, the consistency checks and the
error messages live in :mod:`exosim.scenario.load`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from exosim.model.units import Quantity, QuantityError, parse_parameter_value, parse_quantity, short_repr

if TYPE_CHECKING:  # pragma: no cover
    from exosim.scenario.result import RunResult
    from exosim.simulate.solver import Solver

__all__ = [
    "Scenario",
    "ScenarioError",
    "ScenarioWarning",
    "Event",
    "Arm",
    "ArmHypothesis",
    "Hypothesis",
    "DoseGrid",
    "MAX_DOSE_GY",
    "parameter_value",
    "quantity_validator",
]

#: largest dose of one irradiation or grid point (Gy): no clonogenic assay reaches it (with the
#: LQ coefficients of the catalogued cell lines survival is below 1e-10 at 30 Gy and below
#: 1e-90 at 100 Gy, far beneath one colony per dish), so a larger value is a typo or a unit
#: mistake (cGy written as Gy)
MAX_DOSE_GY = 100.0


class ScenarioError(ValueError):
    """Invalid scenario input: names the file, the key path and what was expected."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path, self.problem = source, path, message
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + message)


class ScenarioWarning(UserWarning):
    """Questionable but accepted scenario input (a parameter outside its documented range):
    names the file, the key path and the problem, like :class:`ScenarioError`."""

    def __init__(self, source: str, path: str, message: str):
        self.source, self.path, self.problem = source, path, message
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + message)


def _dose_limit_problem(gray: float, written: Any) -> str | None:
    """The message for a dose above :data:`MAX_DOSE_GY`, or None."""
    if gray > MAX_DOSE_GY:
        return (
            f"dose {written} is above the limit of {MAX_DOSE_GY:g} Gy per irradiation "
            "(no clonogenic assay reaches it; a unit mistake?)"
        )
    return None


def quantity_validator(kind: str, allow_negative: bool = False) -> BeforeValidator:
    """A pydantic validator parsing a quantity of ``kind`` (``2 Gy``, ``30 min``) to base units."""

    def convert(v: Any) -> float:
        try:
            return parse_quantity(v, kind, allow_negative=allow_negative)
        except QuantityError as exc:
            raise ValueError(str(exc)) from None

    return BeforeValidator(convert)


#: largest time (h) a timeline may name, before or after 0: about eleven years, beyond any
#: culture or animal protocol (a larger number is a unit mistake, and would take the solver hours)
MAX_TIME_H = 1.0e5


def _within_time_limit(v: float) -> float:
    if abs(v) > MAX_TIME_H:
        raise ValueError(f"time {v:g} h is beyond the limit of {MAX_TIME_H:g} h (11 years; a unit mistake?)")
    return v


Time = Annotated[float, quantity_validator("time", allow_negative=True), AfterValidator(_within_time_limit)]
Duration = Annotated[float, quantity_validator("time"), AfterValidator(_within_time_limit)]
#: a duration that must be positive (the output time step)
Step = Annotated[Duration, Field(gt=0)]
Volume = Annotated[float, quantity_validator("volume")]
Cells = Annotated[float, quantity_validator("cells")]
Particles = Annotated[float, quantity_validator("particles")]
Concentration = Annotated[float, quantity_validator("concentration")]
DoseRate = Annotated[float, quantity_validator("dose_rate")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


def _parameter(v: Any) -> Quantity:
    try:
        return parse_parameter_value(v)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


#: a parameter override: a number and its unit, parsed when the file is read (the unit is
#: checked against the parameter table by the consistency check, which knows the key)
ParameterValue = Annotated[Quantity, BeforeValidator(_parameter)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MediumSpec(_Strict):
    """A medium: culture well, conditioned-medium tube, blood.

    ``kind`` names its entry in the media catalogue (``culture_medium``, ``blood``,
    ``interstitium``), which sets its biology (vesicle and free-cargo decay)."""

    volume: Volume
    kind: Name = "culture_medium"
    parameters: dict[str, ParameterValue] = {}


class PopulationSpecModel(_Strict):
    """A cell population in a medium."""

    cell_line: str
    cells: Cells
    medium: Name
    packages: list[Name] = []
    #: markers the protocol scores beyond survival: ``foci`` (gamma-H2AX foci per cell)
    assays: list[Literal["foci"]] = []
    #: a tumour whose volume is followed from this initial volume (``100 mm3``; immune arm)
    tumour_volume: Volume | None = None
    parameters: dict[str, ParameterValue] = {}


class ImmuneSpec(_Strict):
    """The immune arm of a systemic scenario: dendritic cells sense the tumour dsDNA of
    ``medium`` and prime T cells that act on every tumour (docs/model.md section 3.5)."""

    medium: Name


class LinkSpec(_Strict):
    """First-order transfer of vesicles between two media (systemic wiring)."""

    source: Name = Field(alias="from")
    target: Name = Field(alias="to")
    rate: Annotated[float, Field(gt=0)]


class DoseGrid(_Strict):
    """The dose series solved as one batch; one irradiate event uses ``dose: grid``."""

    values: list[float]
    unit: Literal["Gy", "cGy", "mGy"] = "Gy"
    label: str | None = None

    @field_validator("values")
    @classmethod
    def _check(cls, v: list[float]) -> list[float]:

        if not v:
            raise ValueError("expected at least one dose; the dose grid is empty")
        for x in v:
            if not math.isfinite(x) or x < 0:
                raise ValueError(f"expected finite non-negative doses, got {x!r}")
        for a, b in zip(v, v[1:]):
            if b == a:
                raise ValueError(f"dose {a:g} is listed twice; each grid dose is one member")
            if b < a:
                raise ValueError(
                    f"expected the doses in increasing order ({b:g} follows {a:g}): survival curves, D10 and "
                    "the per-arm summary read them in order"
                )
        return v

    def in_gray(self) -> list[float]:
        """Grid values in Gy."""
        return [parse_quantity(f"{x} {self.unit}", "dose") for x in self.values]


DoseValue = float | str


class Irradiate(_Strict):
    """Irradiation of a population: acute, protracted (dose_rate) or fractionated."""

    population: Name
    dose: DoseValue
    dose_rate: DoseRate | None = None
    fractions: Annotated[int, Field(ge=1)] = 1
    interval: Duration = 24.0
    days_per_week: Annotated[int, Field(ge=1, le=7)] | None = None

    @field_validator("dose", mode="before")
    @classmethod
    def _dose(cls, v: Any) -> DoseValue:
        if isinstance(v, str) and (v == "grid" or v.startswith("$")):
            return v
        try:
            gray = parse_quantity(v, "dose")
        except QuantityError as exc:
            raise ValueError(f"{exc}, 'grid' or '$variable'") from None
        problem = _dose_limit_problem(gray, short_repr(v))
        if problem:
            raise ValueError(problem)
        return gray

    def offsets(self) -> list[float]:
        """Start of each fraction after the event's time (h): every ``interval``, or with
        ``days_per_week`` that many a week, ``interval`` apart, each week starting 168 h after
        the last."""
        n = self.fractions
        if self.days_per_week:
            return [(k // self.days_per_week) * 7 * 24.0 + (k % self.days_per_week) * self.interval for k in range(n)]
        return [k * self.interval for k in range(n)]

    def duration(self, dose: float) -> float:
        """Hours from the first fraction's start to the end of the last, for a total ``dose`` (Gy)."""
        exposure = dose / self.fractions / self.dose_rate if self.dose_rate else 0.0
        return self.offsets()[-1] + exposure


class Transfer(_Strict):
    """Move (harvest) medium content from one medium to another."""

    source: Name = Field(alias="from")
    target: Name = Field(alias="to")
    fraction: Fraction = 1.0
    replace: bool = True
    purify: bool = False
    recovery: Fraction = 1.0
    dilution: Annotated[float, Field(ge=1.0)] = 1.0


class Add(_Strict):
    """Add exosomes (e.g. engineered) with chosen cargo to a medium."""

    medium: Name
    particles: Particles | None = None
    concentration: Concentration | None = None
    cargo: dict[Name, Annotated[float, quantity_validator("copies_per_particle")]] = {}

    @model_validator(mode="after")
    def _one_amount(self) -> Add:
        if (self.particles is None) == (self.concentration is None):
            raise ValueError("give exactly one of 'particles' or 'concentration'")
        return self


class Intervene(_Strict):
    """Apply an inhibitor (GW4869, Rab27a knockdown, heparin, ...) to a population."""

    population: Name
    agent: str
    efficacy: Fraction | None = None


class Treat(_Strict):
    """Treat a medium: rnase, rnase_with_detergent, heat, destabilise."""

    medium: Name
    treatment: str


class ChangeMedium(_Strict):
    """Discard a medium's content (fresh medium)."""

    medium: Name


class Score(_Strict):
    """Score clonogenic survival of a population (``also``: report more populations' survival)."""

    population: Name
    also: list[Name] = []


ACTIONS: dict[str, type[_Strict]] = {
    "irradiate": Irradiate,
    "transfer": Transfer,
    "harvest": Transfer,
    "add": Add,
    "intervene": Intervene,
    "treat": Treat,
    "change_medium": ChangeMedium,
    "score": Score,
}


class Event(_Strict):
    """One timeline entry: a time and exactly one action."""

    at: Time
    label: str | None = None
    irradiate: Irradiate | None = None
    transfer: Transfer | None = None
    harvest: Transfer | None = None
    add: Add | None = None
    intervene: Intervene | None = None
    treat: Treat | None = None
    change_medium: ChangeMedium | None = None
    score: Score | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Event:
        given = [k for k in ACTIONS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"expected exactly one action of {sorted(ACTIONS)}, got {given or 'none'}")
        return self

    @property
    def kind(self) -> str:
        """Action name (``harvest`` is reported as ``transfer``)."""
        k = next(k for k in ACTIONS if getattr(self, k) is not None)
        return "transfer" if k == "harvest" else k

    @property
    def action(self) -> Any:
        """The action object."""
        return next(getattr(self, k) for k in ACTIONS if getattr(self, k) is not None)


class ArmHypothesis(_Strict):
    """A biological change one arm tests (``arms[i].hypothesis``): a statement and the
    parameter changes, written as in the arm's ``parameters``."""

    statement: Annotated[str, Field(min_length=1)]
    parameters: dict[str, ParameterValue] = {}


class Hypothesis(ArmHypothesis):
    """A biological change the scenario tests: what is claimed, and the parameter and cargo
    values that differ from the catalogues.  Parameters are written ``key`` (every
    instance), ``population.key`` or ``medium.key``; ``cargo`` gives catalogue fields of a
    cargo (or a whole new cargo).  Runs of such a scenario are flagged in their outputs and
    figures, and the evidence scorecard does not count them."""

    cargo: dict[Name, dict[str, Any]] = {}


class Arm(_Strict):
    """One experimental arm: variable values, protocol parameter changes (cell numbers,
    volumes, intervention factors) and extra events; a biological change goes in its
    ``hypothesis``."""

    name: str
    control: bool = False
    variables: dict[Name, Any] = {}
    parameters: dict[str, ParameterValue] = {}
    events: list[Event] = []
    hypothesis: ArmHypothesis | None = None


class OutputSpec(_Strict):
    """What the run writes."""

    time_step: Step = 1.0


class SolverSpec(_Strict):
    """Integrator tolerances (per member, per component) and backend.

    ``backend``: ``numpy`` (batched, shared steps; no compilation), ``numba``
    (compiled, per-member steps; needs ``exosim[fast]``, ~5 s compile once per model
    structure, cached on disk) or ``auto`` (numba when installed, else numpy: for long
    protocols, where the numpy solver's per-step overhead dominates). Both use the same
    method and tolerances; members they give up on as stiff get an implicit second try
    (``stiff_fallback``, :mod:`exosim.simulate.implicit`).
    """

    rtol: Annotated[float, Field(gt=0, lt=1)] = 1e-7
    atol: Annotated[float, Field(gt=0)] = 1e-9
    backend: Literal["numpy", "numba", "auto"] = "numpy"
    #: wall-clock seconds one segment (the time between two events) may take; members still
    #: being integrated then fail (e.g. a stiff member whose rate is far outside its range)
    max_seconds: Annotated[float, Field(gt=0)] = 120.0
    #: members too stiff for explicit steps: ``rosenbrock`` (compiled Rodas4; the numba solver
    #: switches a member as soon as its steps are stability-limited, :mod:`exosim.simulate.rosenbrock`),
    #: ``bdf`` (the members the explicit solver fails for step size or step budget are integrated
    #: again, alone, with scipy's BDF) or ``none`` (they fail)
    stiff_fallback: Literal["rosenbrock", "bdf", "none"] = "rosenbrock"
    #: the explicit pair: ``dopri5`` (Dormand-Prince 5(4)) or ``dop853`` (Dormand-Prince 8(5,3):
    #: twice the work per step, fewer steps at tight tolerances on smooth protocols; measure it
    #: with ``python benchmarks/bench_order.py``)
    method: Literal["dopri5", "dop853"] = "dopri5"


class CalibrationSpec(_Strict):
    """Data the scenario is calibrated to (``exosim figures`` refits and plots it).

    ``data`` is a CSV path relative to the scenario file (format of ``exosim fit``), or a
    list of them fitted jointly.
    """

    data: str | list[str]
    params: list[str]
    ranges: dict[str, tuple[float, float]] = {}
    likelihood: Literal["auto", "normal", "poisson", "quasipoisson"] = "auto"
    normalise: Literal["control", "within_arm", "none"] = "control"


class Scenario(_Strict):
    """A complete scenario file."""

    exosim: Literal[1] = 1
    #: names the default output folder (results/<name>) and figure files: letters, digits, ``_``,
    #: ``-`` and ``.``, starting with a letter or digit (no path separators, no ``..``)
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=120)]
    #: a human title for figures and reports (default: the name, underscores as spaces)
    title: str | None = None
    type: Literal["medium_transfer", "coculture", "partial_field", "systemic", "custom"]
    description: str
    references: list[str] = []
    assumptions: list[str] = []
    media: dict[Name, MediumSpec]
    populations: dict[Name, PopulationSpecModel]
    links: list[LinkSpec] = []
    immune: ImmuneSpec | None = None
    cargo: dict[Name, dict[str, Any]] = {}
    parameters: dict[str, ParameterValue] = {}
    variables: dict[Name, Any] = {}
    dose_grid: DoseGrid | None = None
    #: when the simulated culture begins; default: the earliest event of the timeline or
    #: of any arm, or 0 h.  Every arm starts here, so adding an arm with an earlier event
    #: (a pre-treatment) does not change the other arms once ``start`` is set.
    start: Time | None = None
    timeline: list[Event]
    arms: list[Arm] = []
    output: OutputSpec = OutputSpec()
    solver: SolverSpec = SolverSpec()
    calibration: CalibrationSpec | None = None
    hypothesis: Hypothesis | None = None

    # filled by the loader, not by the file
    source: str = Field(default="<scenario>", exclude=True)
    sha256: str = Field(default="", exclude=True)
    #: key paths of values merged from hypothesis blocks -> the paths the file wrote them at
    written: dict[str, str] = Field(default_factory=dict, exclude=True)

    def as_written(self, path: str) -> str:
        """A key path as the file wrote it (:func:`as_written` with the scenario's merged values)."""
        return as_written(path, self.written)

    @property
    def hypotheses(self) -> list[str]:
        """The statements of the scenario's and its arms' ``hypothesis`` blocks (empty when
        the scenario runs on catalogue biology alone)."""
        out = [self.hypothesis.statement] if self.hypothesis else []
        return out + [f"{a.name}: {a.hypothesis.statement}" for a in self.arms if a.hypothesis]

    @property
    def biology_changes(self) -> list[str]:
        """Biological values this scenario sets beside the catalogues (from its hypothesis
        blocks, or from overrides given through the API, ``with_parameters``), as ``path``."""
        from exosim.model.catalogue import is_protocol, parameter_table

        table = parameter_table()

        def bio(key: str) -> bool:
            key = key.split(".", 1)[-1]
            return key in table and not is_protocol(key)

        out = [f"parameters.{k}" for k in self.parameters if bio(k)]
        for group, items in (("populations", self.populations), ("media", self.media)):
            out += [f"{group}.{n}.parameters.{k}" for n, spec in items.items() for k in spec.parameters if bio(k)]
        out += [f"arms[{i}].parameters.{k}" for i, arm in enumerate(self.arms) for k in arm.parameters if bio(k)]
        out += [f"cargo.{c}.{k}" for c, fields in self.cargo.items() for k in fields]
        return out

    @property
    def timeline_start(self) -> float:
        """Start of the simulation (h): ``start`` or the earliest event (of any arm) or 0."""
        if self.start is not None:
            return self.start
        return min([0.0] + [e.at for e in self.timeline] + [e.at for a in self.arms for e in a.events])

    def run(self, *, time_courses: bool = True, solver: str | Solver | None = None) -> RunResult:
        """Run every arm and dose as one batch; see :func:`exosim.scenario.runner.run`.

        Parameters
        ----------
        time_courses : record states and rules every ``output.time_step``
        solver : ``numpy``, ``numba``, ``auto`` or a :class:`~exosim.simulate.solver.Solver`;
            default ``solver.backend`` of the scenario
        """
        from exosim.scenario.runner import run

        return run(self, time_courses=time_courses, solver=solver)

    def subset(self, **update) -> Scenario:
        """A copy with some arms, grid doses or settings changed that keeps the timeline start,
        so that every kept member is simulated exactly as in the whole scenario."""
        return self.model_copy(update={"start": self.timeline_start, **update})


# ---------------------------------------------------------------------- loading


def as_written(path: str, written: dict[str, str]) -> str:
    """A key path as the file wrote it: a value merged from a hypothesis block (or a key below
    one, such as ``cargo.c.effects.target``) is named under its ``hypothesis`` block; ``written``
    maps merged paths to written ones."""
    if path in written:
        return written[path]
    for merged, at in written.items():
        if path.startswith(merged + "."):
            return at + path[len(merged) :]
    return path


def parameter_value(value: Any) -> float:
    """Numeric part of a checked parameter value (a :class:`Quantity`, or a cargo field as written)."""
    return parse_parameter_value(value).value
