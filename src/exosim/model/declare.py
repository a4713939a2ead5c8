"""Declarations from which the model is assembled.

A module instance is a :class:`Block`: its states, parameters, derived
constants, rules and rate terms, each declared once.  Names inside a block are
local (``dsb``); a name that already contains ``__`` is fully qualified
(``recipient_well__vesicles``) and refers to another block's symbol.  The
assembler prefixes local names with the block's namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["State", "Derived", "Rule", "Rate", "Block", "SEP"]

#: separator between namespace and local name in model symbols
SEP = "__"


@dataclass(frozen=True)
class State:
    """A dynamic variable.

    Attributes
    ----------
    name : local name
    unit : unit of the state (per cell quantities say so)
    description : one line, what it is
    scale : typical magnitude, sets the absolute tolerance of the integrator
    initial : expression of parameters and derived constants at the start
    """

    name: str
    unit: str
    description: str
    scale: float = 1.0
    initial: str = "0"


@dataclass(frozen=True)
class Derived:
    """A constant computed from parameters (an SBML initial assignment)."""

    name: str
    expr: str
    unit: str
    description: str


@dataclass(frozen=True)
class Rule:
    """A quantity computed from states and parameters at every time (an assignment rule)."""

    name: str
    expr: str
    unit: str
    description: str


@dataclass(frozen=True)
class Rate:
    """A term added to ``d(state)/dt``; ``state`` may be qualified (another block's)."""

    state: str
    expr: str


@dataclass
class Block:
    """One instance of a module in one namespace.

    Attributes
    ----------
    module : module name (``release``, ``transport``, ``cargo_effects``, ``repair``)
    namespace : population or medium name the local names are prefixed with
    parameters : local parameter name -> key of the parameter table
    context : where the block lives (``population`` or ``medium`` name), for the
        parameter resolver
    param_context : per local parameter, extra context (``cargo``, ``target``)
    """

    module: str
    namespace: str
    states: list[State] = field(default_factory=list)
    derived: list[Derived] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    rates: list[Rate] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    context: dict[str, str] = field(default_factory=dict)
    param_context: dict[str, dict[str, str]] = field(default_factory=dict)

    def qualify(self, name: str) -> str:
        """The model-wide symbol of a local or qualified name."""
        return name if SEP in name else f"{self.namespace}{SEP}{name}"
