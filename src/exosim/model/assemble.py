"""Assemble module blocks into one model and compile its vectorised right-hand side.

The model contract::

    rhs(t, y[N, n], p[N, k]) -> dy[N, n]

over a batch of N members.  The compiled source is generated from the block
declarations (:mod:`exosim.model.modules`), the same declarations the SBML export
reads, so each equation exists once.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from exosim.model import catalogue as cat
from exosim.model import expr as _expr
from exosim.model.declare import SEP, Block
from exosim.model.modules import cargo_effects, immune, medium, medium_link, release, repair, tumour, uptake
from exosim.model.modules.cargo_effects import MODIFIERS

__all__ = ["PopulationSpec", "ParameterInfo", "Model", "ModelError"]


class ModelError(ValueError):
    """A model that cannot be assembled (unknown symbol, cycle, bad catalogue entry).

    ``key_paths``: the scenario keys whose values caused it, where known (``cargo.c.effects.k``).
    """

    def __init__(self, message: str, key_paths: tuple[str, ...] = ()):
        super().__init__(message)
        self.key_paths = key_paths


@dataclass(frozen=True)
class PopulationSpec:
    """A cell population: where it lives and what it packages.

    Attributes
    ----------
    name : identifier, the namespace of its symbols
    medium : name of the medium it releases into and takes up from
    cell_line : key of the cell-line catalogue
    packaged : cargo species loaded into its vesicles
    assays : markers scored in it beyond survival (``foci``: gamma-H2AX foci)
    tumour : a tumour whose volume is followed (module ``immune``)
    """

    name: str
    medium: str
    cell_line: str
    packaged: tuple[str, ...] = ()
    assays: tuple[str, ...] = ()
    tumour: bool = False


@dataclass(frozen=True)
class ParameterInfo:
    """One parameter of the assembled model with its unit and provenance."""

    name: str
    key: str
    module: str
    unit: str
    value: float
    low: float
    high: float
    source: str
    assumed: bool
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SymbolInfo:
    """A state, derived constant or rule of the assembled model."""

    name: str
    kind: str  # "state" | "derived" | "rule"
    unit: str
    description: str
    module: str
    expr: ast.expr | None = None
    scale: float = 1.0
    initial: ast.expr | None = None


_hill = _expr.hill_numpy()


class Model:
    """The coupled exosome -> uptake -> cargo -> repair -> survival model.

    Parameters
    ----------
    populations : cell populations
    media : medium names (wells, tubes, blood)
    cargos : cargo species followed by the model (keys of the cargo catalogue,
        or of ``cargo_records``)
    links : (source, target) medium pairs with first-order vesicle transfer
    cargo_records : cargo catalogue entries, possibly overridden by a scenario;
        defaults to the shipped catalogue
    immune_medium : medium whose tumour dsDNA the immune arm senses; ``None``: no immune arm

    Notes
    -----
    States, parameters, derived constants and rules are ordered and indexed
    once; :meth:`rhs` evaluates the whole batch with numpy.
    """

    def __init__(
        self,
        populations: Iterable[PopulationSpec],
        media: Iterable[str],
        cargos: Iterable[str] = (),
        links: Iterable[tuple[str, str]] = (),
        cargo_records: Mapping[str, dict] | None = None,
        immune_medium: str | None = None,
    ):
        self.populations = tuple(populations)
        self.media = tuple(media)
        self.cargos = tuple(cargos)
        self.links = tuple(links)
        self.cargo_records = (
            dict(cargo_records) if cargo_records is not None else {c: cat.cargo_catalogue()[c] for c in self.cargos}
        )
        self.immune_medium = immune_medium
        self._check_names()
        self.repressor_records = self._repressors()
        self.target_records = self._targets()
        self.blocks = self._blocks()
        self._collect()
        self._compile()
        self._relevant: dict[frozenset[str], list[int]] = {}  # relevant_states, per set of outputs
        self._trees: dict[int, tuple] = {}  # evaluate_tree: per tree (kept alive), its names and code

    # ------------------------------------------------------------------ structure
    def _check_names(self) -> None:
        names = [p.name for p in self.populations] + list(self.media)
        for n in names + list(self.cargos):
            if not n.isidentifier() or SEP in n or n.startswith("_"):
                raise ModelError(f"name {n!r} must be an identifier without '__' and no leading '_'")
        if len(set(names)) != len(names):
            raise ModelError(f"population and medium names must be distinct: {names}")
        if "immune" in names:
            raise ModelError("'immune' is the namespace of the immune arm; name the population or medium otherwise")
        for p in self.populations:
            if p.medium not in self.media:
                raise ModelError(f"population {p.name!r} lives in unknown medium {p.medium!r}")
            if p.cell_line not in cat.cell_lines():
                raise ModelError(f"unknown cell line {p.cell_line!r}")
            for c in p.packaged:
                if c not in self.cargos:
                    raise ModelError(f"population {p.name!r} packages {c!r}, which is not a model cargo")
        for c in self.cargos:
            if c not in self.cargo_records:
                raise ModelError(f"unknown cargo {c!r}")
            scaled_by = self.cargo_records[c].get("free_release_with")
            if scaled_by is not None and scaled_by not in MODIFIERS:
                raise ModelError(
                    f"cargo {c!r}: free_release_with {scaled_by!r} is not a modifier ({', '.join(MODIFIERS)})"
                )
        if self.immune_medium is not None:
            if self.immune_medium not in self.media:
                raise ModelError(f"the immune arm senses unknown medium {self.immune_medium!r}")
            if sum(p.tumour for p in self.populations) < 2:
                raise ModelError(
                    "the immune arm needs an irradiated and a distant tumour: two populations with a tumour_volume"
                )
            if not self._immune_cargo("sting_agonist"):
                raise ModelError("the immune arm needs a cargo with immune_role: sting_agonist (tumour_dsdna)")

    def _immune_cargo(self, role: str) -> list[str]:
        """Model cargo with ``immune_role`` ``role`` in its catalogue entry."""
        return [c for c in self.cargos if self.cargo_records[c].get("immune_role") == role]

    def _repressors(self) -> dict[str, dict[str, float]]:
        """Endogenous repressors some model cargo sponges -> {target: signed effect}."""
        known = cat.repressors()
        used: dict[str, dict[str, float]] = {}
        for c in self.cargos:
            for r, sites in (self.cargo_records[c].get("sponges") or {}).items():
                if r not in known:
                    raise ModelError(f"cargo {c!r} sponges unknown repressor {r!r}; known: {', '.join(sorted(known))}")
                if not float(sites) > 0:
                    raise ModelError(f"cargo {c!r}: sponge sites for {r!r} must be positive, got {sites!r}")
                used[r] = {k: float(v) for k, v in known[r]["represses"].items()}
        return used

    def _targets(self) -> dict[str, dict[str, float]]:
        known = cat.targets()
        used: dict[str, dict[str, float]] = {}
        for c in self.cargos:
            for k in self.cargo_records[c].get("effects", {}) or {}:
                if k not in known:
                    raise ModelError(f"cargo {c!r} acts on unknown target {k!r}")
                used[k] = dict(known[k]["modifiers"])
                bad = set(used[k]) - set(MODIFIERS)
                if bad:
                    raise ModelError(f"target {k!r} feeds unknown modifiers {sorted(bad)}")
        for r in self.repressor_records.values():
            for k in r:
                if k not in known:
                    raise ModelError(f"an endogenous repressor acts on unknown target {k!r}")
                used[k] = dict(known[k]["modifiers"])
        for k in used:
            parts = {c: float((self.cargo_records[c].get("effects", {}) or {}).get(k, 0.0)) for c in self.cargos}
            parts = {c: v for c, v in parts.items() if v < 0.0}
            repression = sum(parts.values())
            if repression <= -1.0:
                each = ", ".join(f"{c}.effects.{k} = {v:g}" for c, v in parts.items())
                raise ModelError(
                    f"the repression of target {k!r} by the cargos together ({each}) sums to {repression:g}; "
                    "it must stay above -1 (a target cannot be repressed below zero): lower one of them",
                    tuple(f"cargo.{c}.effects.{k}" for c in parts),
                )
        return used

    def _blocks(self) -> list[Block]:
        blocks = [medium(m, list(self.cargos)) for m in self.media]
        blocks += [medium_link(s, t, list(self.cargos)) for s, t in self.links]
        effects = {c: dict(self.cargo_records[c].get("effects", {}) or {}) for c in self.cargos}
        damaging = [c for c in self.cargos if float(self.cargo_records[c].get("damage_max_rate", 0.0)) > 0]
        signalling = [c for c in self.cargos if self.cargo_records[c].get("bystander_signal", False)]
        for p in self.populations:
            blocks += [
                repair(p.name, foci="foci" in p.assays),
                release(
                    p.name,
                    p.medium,
                    list(p.packaged),
                    list(self.cargos),
                    tumour=p.tumour,
                    lesion_loaded=tuple(
                        c for c in p.packaged if float(self.cargo_records[c].get("loading_per_lethal_lesion", 0.0)) > 0
                    ),
                    free_release_with={
                        c: self.cargo_records[c]["free_release_with"]
                        for c in p.packaged
                        if self.cargo_records[c].get("free_release_with")
                    },
                ),
                uptake(p.name, p.medium, list(self.cargos)),
                cargo_effects(
                    p.name,
                    list(self.cargos),
                    effects,
                    self.target_records,
                    damaging,
                    signalling,
                    sponges={c: dict(self.cargo_records[c].get("sponges") or {}) for c in self.cargos},
                    repressors=self.repressor_records,
                ),
            ]
            if p.tumour:
                ligands = self._immune_cargo("checkpoint_ligand")
                blocks.append(tumour(p.name, p.medium, ligands, immune=self.immune_medium is not None))
        if self.immune_medium is not None:
            blocks.append(immune(self.immune_medium, self._immune_cargo("sting_agonist")))
        return blocks

    def _collect(self) -> None:
        table = cat.parameter_table()
        self.states: list[SymbolInfo] = []
        self.derived: list[SymbolInfo] = []
        self.rules: list[SymbolInfo] = []
        self.parameters: list[ParameterInfo] = []
        seen: dict[str, str] = {}
        rate_terms: dict[str, list[ast.expr]] = {}
        pending_rates = []

        def claim(name: str, kind: str) -> None:
            if name in seen:
                raise ModelError(f"symbol {name!r} declared twice ({seen[name]} and {kind})")
            seen[name] = kind

        for b in self.blocks:
            q = b.qualify
            for local, key in b.parameters.items():
                name = q(local)
                if name in seen and seen[name] == "parameter":
                    continue  # a parameter shared by two modules of one namespace (cells)
                if key not in table:
                    raise ModelError(f"parameter {key!r} of module {b.module} is not in the parameter table")
                claim(name, "parameter")
                context = dict(b.context) | b.param_context.get(local, {})
                self.parameters.append(self._parameter_info(name, key, table[key], context))
            for s in b.states:
                claim(q(s.name), "state")
                self.states.append(
                    SymbolInfo(
                        q(s.name),
                        "state",
                        s.unit,
                        s.description,
                        b.module,
                        scale=s.scale,
                        initial=_expr.rename(_expr.parse(s.initial), q, fresh=True),
                    )
                )
            for d in b.derived:
                claim(q(d.name), "derived")
                self.derived.append(
                    SymbolInfo(
                        q(d.name),
                        "derived",
                        d.unit,
                        d.description,
                        b.module,
                        expr=_expr.rename(_expr.parse(d.expr), q, fresh=True),
                    )
                )
            for r in b.rules:
                claim(q(r.name), "rule")
                self.rules.append(
                    SymbolInfo(
                        q(r.name),
                        "rule",
                        r.unit,
                        r.description,
                        b.module,
                        expr=_expr.rename(_expr.parse(r.expr), q, fresh=True),
                    )
                )
            for rate in b.rates:
                pending_rates.append((q(rate.state), _expr.rename(_expr.parse(rate.expr), q, fresh=True), b.module))
        state_names = {s.name for s in self.states}
        for target, tree, module in pending_rates:
            if target not in state_names:
                raise ModelError(f"module {module} adds a rate to unknown state {target!r}")
            rate_terms.setdefault(target, []).append(tree)
        self.rate_terms = rate_terms
        self.kinds = seen
        # every name used must be declared
        for group in (self.derived, self.rules):
            for s in group:
                self._check_refs(s.name, s.expr)
        for s in self.states:
            self._check_refs(s.name, s.initial, allowed=("parameter", "derived"))
        for target, trees in rate_terms.items():
            for tree in trees:
                self._check_refs(target, tree)
        for d in self.derived:
            self._check_refs(d.name, d.expr, allowed=("parameter", "derived"))
        self.derived = self._toposort(self.derived)
        self.rules = self._toposort(self.rules)
        self.state_index = {s.name: i for i, s in enumerate(self.states)}
        self.parameter_index = {p.name: i for i, p in enumerate(self.parameters)}

    def _parameter_info(self, name: str, key: str, row: dict, context: dict) -> ParameterInfo:
        value = float(row["value"])
        source = row.get("source", "")
        assumed = bool(row.get("assumed", False))
        scope = row.get("scope")
        if scope == "cell_line":
            pop = next(p for p in self.populations if p.name == context["population"])
            line = cat.cell_lines()[pop.cell_line]
            value = float(line[key])
            source = f"cell line {pop.cell_line}: {line.get('source', '')}"
            assumed = key in (line.get("assumed") or [])
        elif key == "cargo_effect_strength":
            rec = self.cargo_records[context["cargo"]]
            value = float(rec["effects"][context["target"]])
            source, assumed = self._cargo_source(context["cargo"], rec)
        elif key == "target_modifier_weight":
            value = float(self.target_records[context["target"]][context["modifier"]])
            source, assumed = "cargo catalogue, targets", True
        elif key == "target_turnover_rate" and "turnover_rate" in cat.targets()[context["target"]]:
            value = float(cat.targets()[context["target"]]["turnover_rate"])
        elif key == "repressor_effect_strength":
            value = self.repressor_records[context["repressor"]][context["target"]]
            source, assumed = self._repressor_source(context["repressor"])
        elif key == "sponge_sites":
            value = float(self.cargo_records[context["cargo"]]["sponges"][context["repressor"]])
            source, assumed = self._cargo_source(context["cargo"], self.cargo_records[context["cargo"]])
        elif "repressor" in context:
            rec = cat.repressors()[context["repressor"]]
            field = {"repressor_copies": "copies_per_cell", "repressor_target_sites": "target_sites_per_cell"}.get(
                key, key
            )
            if field in rec:
                value = float(rec[field])
                source, assumed = self._repressor_source(context["repressor"])
        elif scope == "cargo" and "cargo" in context:
            rec = self.cargo_records[context["cargo"]]
            if key in rec:
                value = float(rec[key])
                source, assumed = self._cargo_source(context["cargo"], rec)
        if not source and not assumed:
            raise ModelError(f"parameter {key!r} has neither a source nor an assumed flag")
        low, high = (float(v) for v in row["range"])
        return ParameterInfo(
            name,
            key,
            row["module"],
            str(row["unit"]),
            value,
            low,
            high,
            source or f"assumed: {row.get('reason', '')}",
            assumed,
            context,
        )

    @staticmethod
    def _repressor_source(name: str) -> tuple[str, bool]:
        rec = cat.repressors()[name]
        return f"repressor catalogue {name}: {rec.get('source', '')}".strip(), bool(rec.get("assumed"))

    @staticmethod
    def _cargo_source(name: str, rec: dict) -> tuple[str, bool]:
        src = f"cargo catalogue {name}: {rec.get('source', '')}".strip()
        return src, bool(rec.get("assumed"))

    def _check_refs(self, owner: str, tree: ast.expr, allowed: tuple[str, ...] | None = None) -> None:
        for n in _expr.names(tree):
            if n not in self.kinds:
                raise ModelError(f"{owner!r} uses undeclared symbol {n!r}")
            if allowed and self.kinds[n] not in allowed:
                raise ModelError(f"{owner!r} may only use {allowed}, not {self.kinds[n]} {n!r}")

    @staticmethod
    def _toposort(items: list[SymbolInfo]) -> list[SymbolInfo]:
        by_name = {s.name: s for s in items}
        order: list[SymbolInfo] = []
        state: dict[str, int] = {}

        def visit(s: SymbolInfo) -> None:
            if state.get(s.name) == 2:
                return
            if state.get(s.name) == 1:
                raise ModelError(f"cyclic definition involving {s.name!r}")
            state[s.name] = 1
            for n in sorted(_expr.names(s.expr)):  # sorted: the same order in every process
                if n in by_name:
                    visit(by_name[n])
            state[s.name] = 2
            order.append(s)

        for s in items:
            visit(s)
        return order

    # ------------------------------------------------------------------ compile
    def rate_expression(self, state: str) -> ast.expr:
        """The full right-hand side of ``d(state)/dt`` as one expression tree."""
        terms = self.rate_terms.get(state, [])
        if not terms:
            return ast.Constant(0.0)
        tree = terms[0]
        for t in terms[1:]:
            tree = ast.BinOp(left=tree, op=ast.Add(), right=t)
        return tree

    def _rate_symbols(self) -> tuple[list[ast.expr], set[str]]:
        """The rate trees and every name they need, directly or through derived constants and
        rules (observables that no rate reads are left out)."""
        rates = [self.rate_expression(s.name) for s in self.states]
        needed = set().union(*(_expr.names(t) for t in rates))
        for sym in reversed(self.derived + self.rules):  # reverse topological order
            if sym.name in needed:
                needed |= _expr.names(sym.expr)
        return rates, needed

    def rate_dependencies(self) -> tuple[list[SymbolInfo], list[SymbolInfo]]:
        """The derived constants and rules the rates need, in evaluation order, split into the
        static ones (parameters only, transitively: constant over a segment) and the rest."""
        _, needed = self._rate_symbols()
        static_names = {q.name for q in self.parameters}
        static, dynamic = [], []
        for sym in self.derived + self.rules:
            if sym.name not in needed:
                continue
            if _expr.names(sym.expr) <= static_names:
                static_names.add(sym.name)
                static.append(sym)
            else:
                dynamic.append(sym)
        return static, dynamic

    def _compile(self) -> None:
        static, dynamic = self.rate_dependencies()
        k = len(self.parameters)
        rates, _ = self._rate_symbols()
        rate_lines = [f"    dy[:, {i}] = {_expr.to_numpy(tree)}" for i, tree in enumerate(rates)]
        # rhs(t, y, p): the reference form, every needed constant computed from p
        lines = ["def rhs(t, y, p):"]
        lines += [f"    {s.name} = y[:, {i}]" for i, s in enumerate(self.states)]
        lines += [f"    {q.name} = p[:, {i}]" for i, q in enumerate(self.parameters)]
        lines += [f"    {d.name} = {_expr.to_numpy(d.expr)}" for d in static + dynamic]
        lines.append("    dy = np.empty_like(y)")
        lines += rate_lines
        lines.append("    return dy")
        # prepare(p) -> P: p with the static constants appended as columns (once per segment);
        # rhs_prepared(t, y, P) reads them instead of recomputing them at every stage
        lines.append("def prepare(p):")
        lines += [f"    {q.name} = p[:, {i}]" for i, q in enumerate(self.parameters)]
        lines += [f"    {d.name} = {_expr.to_numpy(d.expr)}" for d in static]
        lines.append(f"    out = np.empty((p.shape[0], {k + len(static)}))")
        lines.append(f"    out[:, :{k}] = p")
        lines += [f"    out[:, {k + j}] = {d.name}" for j, d in enumerate(static)]
        lines.append("    return out")
        used = set().union(*(_expr.names(t) for t in rates), *(_expr.names(d.expr) for d in dynamic))
        lines.append("def rhs_prepared(t, y, p):")
        lines += [f"    {s.name} = y[:, {i}]" for i, s in enumerate(self.states) if s.name in used]
        lines += [f"    {q.name} = p[:, {i}]" for i, q in enumerate(self.parameters) if q.name in used]
        lines += [f"    {d.name} = p[:, {k + j}]" for j, d in enumerate(static) if d.name in used]
        lines += [f"    {d.name} = {_expr.to_numpy(d.expr)}" for d in dynamic]
        lines.append("    dy = np.empty_like(y)")
        lines += rate_lines
        lines.append("    return dy")
        # observables: derived constants and rules, stacked
        lines.append("def observe(y, p):")
        lines += [f"    {s.name} = y[:, {i}]" for i, s in enumerate(self.states)]
        lines += [f"    {q.name} = p[:, {i}]" for i, q in enumerate(self.parameters)]
        lines += [f"    {d.name} = {_expr.to_numpy(d.expr)}" for d in self.derived]
        lines += [f"    {r.name} = {_expr.to_numpy(r.expr)}" for r in self.rules]
        names = [d.name for d in self.derived] + [r.name for r in self.rules]
        lines.append("    n = y.shape[0]")
        lines.append(
            "    return np.stack([np.broadcast_to(np.asarray(v, dtype=float), (n,)) for v in ("
            + ", ".join(names)
            + (",)" if len(names) == 1 else ")")
            + "], axis=1)"
        )
        lines.append("def initial(p):")
        lines += [f"    {q.name} = p[:, {i}]" for i, q in enumerate(self.parameters)]
        lines += [f"    {d.name} = {_expr.to_numpy(d.expr)}" for d in self.derived]
        lines.append(f"    y = np.zeros((p.shape[0], {len(self.states)}))")
        for i, s in enumerate(self.states):
            lines.append(f"    y[:, {i}] = {_expr.to_numpy(s.initial)}")
        lines.append("    return y")
        self.source = "\n".join(lines)
        namespace: dict = {"np": np, "_hill": _hill}
        exec(compile(self.source, "<exosim model>", "exec"), namespace)  # noqa: S102 - generated from declarations
        self._rhs: Callable = namespace["rhs"]
        self._prepare: Callable = namespace["prepare"]
        self._rhs_prepared: Callable = namespace["rhs_prepared"]
        self._observe: Callable = namespace["observe"]
        self._initial: Callable = namespace["initial"]
        self.observable_names = names
        self.observable_index = {n: i for i, n in enumerate(names)}

    def prepared_scalar_source(
        self,
        prepare: str = "prep1",
        rhs: str = "rhsp",
        power: str | None = None,
        frozen: Collection[int] = (),
    ) -> str:
        """Per-member right-hand side split like :meth:`prepare` / :meth:`rhs_prepared`, as scalar source.

        ``prepare(p[k], P)`` writes ``p``, the static derived constants (:meth:`rate_dependencies`:
        parameters only, constant over a segment) and every larger parameter-only subexpression
        of the rates and dynamic rules (``log(2)/half_life``, ``cells*unbinding_rate``) to ``P``,
        once per member and segment; ``rhs(y[n], P, dy[n])`` reads them instead of recomputing
        them at every stage.  ``P`` has :meth:`prepared_size` entries.  ``power`` as in
        :func:`exosim.model.expr.to_scalar`.  Uses ``np`` and ``_hill`` (and ``power``).  The
        compiled backend's kernel (:mod:`exosim.simulate.dopri5_numba`).

        ``frozen``: states whose derivative ``rhs`` sets to 0 without computing it; the rules only
        they read are not computed (the last segment of a run that reads a few outputs,
        :meth:`relevant_states`).
        """
        rates, static, dynamic, hoisted = self._prepared_trees()
        if frozen:
            rates = [ast.Constant(0.0) if i in frozen else tree for i, tree in enumerate(rates)]
            needed = set().union(*(_expr.names(t) for t in rates))
            kept = []
            for name, tree in reversed(dynamic):  # reverse evaluation order: what the kept rates need
                if name in needed:
                    needed |= _expr.names(tree)
                    kept.append((name, tree))
            dynamic = kept[::-1]
        k = len(self.parameters)
        used = set().union(*(_expr.names(t) for t in rates), *(_expr.names(t) for _, t in dynamic))
        lines = [f"def {prepare}(p, P):"]
        lines += [f"    {q.name} = p[{i}]" for i, q in enumerate(self.parameters)]
        lines += [f"    {d.name} = {_expr.to_scalar(d.expr, power=power)}" for d in static]
        lines += [f"    {name} = {_expr.to_scalar(tree, power=power)}" for name, tree in hoisted]
        lines.append(f"    P[:{k}] = p[:{k}]")
        constants = [d.name for d in static] + [name for name, _ in hoisted]
        lines += [f"    P[{k + j}] = {name}" for j, name in enumerate(constants)]
        lines.append(f"def {rhs}(y, P, dy):")
        lines += [f"    {s.name} = y[{i}]" for i, s in enumerate(self.states) if s.name in used]
        lines += [f"    {q.name} = P[{i}]" for i, q in enumerate(self.parameters) if q.name in used]
        lines += [f"    {name} = P[{k + j}]" for j, name in enumerate(constants) if name in used]
        lines += [f"    {name} = {_expr.to_scalar(tree, power=power)}" for name, tree in dynamic]
        lines += [f"    dy[{i}] = {_expr.to_scalar(tree, power=power)}" for i, tree in enumerate(rates)]
        return "\n".join(lines) + "\n"

    def prepared_size(self) -> int:
        """Length of the prepared parameter vector ``P`` of :meth:`prepared_scalar_source`."""
        _, static, _, hoisted = self._prepared_trees()
        return len(self.parameters) + len(static) + len(hoisted)

    def _prepared_trees(self):
        """Rates and dynamic rules with their parameter-only subexpressions hoisted out as
        ``_c0, _c1, ...`` (each a tree over parameters and static constants)."""
        rates, _ = self._rate_symbols()
        static, dynamic = self.rate_dependencies()
        constant = {q.name for q in self.parameters} | {d.name for d in static}
        hoisted: list[tuple[str, ast.expr]] = []
        seen: dict[str, str] = {}

        known: dict[int, bool] = {}  # id of a node (the trees live through the call) -> constant

        def is_constant(node: ast.expr) -> bool:
            # every name in it (a call's function included) a parameter or static constant
            key = id(node)
            if key not in known:
                if isinstance(node, ast.Constant):
                    known[key] = True
                elif isinstance(node, ast.Name):
                    known[key] = node.id in constant
                elif isinstance(node, ast.Call):
                    known[key] = is_constant(node.func) and all(is_constant(a) for a in node.args)
                else:
                    known[key] = all(is_constant(c) for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr))
            return known[key]

        def hoist(node: ast.expr) -> ast.expr:
            if isinstance(node, (ast.Name, ast.Constant)):
                return node
            if is_constant(node) and not (
                isinstance(node, ast.UnaryOp) and isinstance(node.operand, (ast.Name, ast.Constant))
            ):
                key = ast.dump(node)
                if key not in seen:
                    seen[key] = f"_c{len(hoisted)}"
                    hoisted.append((seen[key], node))
                return ast.Name(id=seen[key], ctx=ast.Load())
            node = copy.copy(node)
            for part in ("left", "right", "operand"):
                if hasattr(node, part):
                    setattr(node, part, hoist(getattr(node, part)))
            if isinstance(node, ast.Call):
                node.args = [hoist(a) for a in node.args]
            return node

        rates = [hoist(t) for t in rates]
        dynamic = [(d.name, hoist(d.expr)) for d in dynamic]
        return rates, static, dynamic, hoisted

    def state_reads(self) -> Callable[[str], frozenset[int]]:
        """A function giving the states (indices) a symbol reads, directly or through rules and
        derived constants (a state reads itself; a parameter none)."""
        trees = {d.name: d.expr for d in self.derived + self.rules}
        index = {s.name: i for i, s in enumerate(self.states)}
        found: dict[str, frozenset[int]] = {}

        def reads(name: str) -> frozenset[int]:
            if name not in found:
                if name in index:
                    found[name] = frozenset([index[name]])
                else:
                    found[name] = frozenset().union(
                        *(reads(n) for n in _expr.names(trees.get(name, ast.Constant(0.0))))
                    )
            return found[name]

        return reads

    def jacobian_pattern(self) -> list[list[int]]:
        """Per state ``i``, the states its rate reads, directly or through rules and derived
        constants (sorted indices): where the Jacobian ``d(rate_i)/d(y_j)`` can be non-zero.
        Cumulative counters are read by no rate."""
        rates, _ = self._rate_symbols()
        reads = self.state_reads()
        return [sorted(frozenset().union(*(reads(n) for n in _expr.names(tree)))) for tree in rates]

    def relevant_states(self, outputs: Iterable[str]) -> list[int]:
        """The states (sorted indices) on which the values of ``outputs`` (states, rules) at the end
        of an integration without events can depend: the states they read and, transitively, the
        states the rates of those read.  The others (the donors of a medium already harvested,
        cumulative counters) can be held constant over such a segment without changing the outputs."""
        outputs = frozenset(outputs)
        if outputs in self._relevant:
            return list(self._relevant[outputs])
        reads = self.state_reads()
        pattern = self.jacobian_pattern()
        seen = set().union(*(reads(o) for o in outputs))
        todo = list(seen)
        while todo:
            for j in pattern[todo.pop()]:
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        self._relevant[outputs] = sorted(seen)
        return sorted(seen)

    # ------------------------------------------------------------------ API
    @property
    def n_states(self) -> int:
        """Number of states n."""
        return len(self.states)

    @property
    def n_parameters(self) -> int:
        """Number of parameters k."""
        return len(self.parameters)

    @property
    def state_names(self) -> list[str]:
        """State symbols in column order of ``y``."""
        return [s.name for s in self.states]

    def default_parameters(self) -> np.ndarray:
        """Nominal parameter vector, shape (k,), from the table and catalogues."""
        return np.array([q.value for q in self.parameters], dtype=float)

    def rhs(self, t: float, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Time derivatives of a batch.

        Parameters
        ----------
        t : float, h
            Time (the model is autonomous between events; kept for the contract).
        y : ndarray, shape (N, n)
            States of N members, units as in :attr:`states`.
        p : ndarray, shape (N, k)
            Parameters of N members, units as in :attr:`parameters`.

        Returns
        -------
        ndarray, shape (N, n)
            dy/dt in state units per hour.
        """
        return self._rhs(t, y, p)

    def prepare(self, p: np.ndarray) -> np.ndarray:
        """``p`` (N, k) with the constants the rates need that depend on parameters only
        appended as columns: the argument of :meth:`rhs_prepared` for one segment."""
        return self._prepare(p)

    def rhs_prepared(self, t: float, y: np.ndarray, prepared: np.ndarray) -> np.ndarray:
        """:meth:`rhs` with the parameter-only constants read from ``prepared`` (:meth:`prepare`)
        instead of computed at every call; the same values, from the same expression trees."""
        return self._rhs_prepared(t, y, prepared)

    def initial_state(self, p: np.ndarray) -> np.ndarray:
        """Initial states (N, n) for parameters (N, k): unperturbed steady state."""
        return self._initial(p)

    def observe(self, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Derived constants and rules (N, len(:attr:`observable_names`)); NaN for failed members."""
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return self._observe(y, p)

    def evaluate_tree(
        self,
        tree: ast.expr,
        y: np.ndarray,
        p: np.ndarray,
        constants: Mapping[str, np.ndarray] | None = None,
        observed: dict | None = None,
    ) -> np.ndarray:
        """Evaluate an expression of qualified model symbols (and bare-named ``constants``) for a batch.

        Used by events (:mod:`exosim.scenario.actions`): states and parameters are read
        from ``y`` and ``p``, derived constants and rules from :meth:`observe`.  ``observed``: a
        dict in which :meth:`observe` of ``y`` and ``p`` is kept for the next expressions of the
        same values (the assignments of one event).
        """
        cached = self._trees.get(id(tree))
        if cached is None or cached[0] is not tree:  # events evaluate the same trees at every run
            code = compile(_expr.to_numpy(tree), "<event>", "eval")
            cached = self._trees[id(tree)] = (tree, sorted(_expr.names(tree)), code)
        _, names, code = cached
        env: dict = {"np": np, "_hill": _hill, **dict(constants or {})}
        observed = {} if observed is None else observed
        for n in names:
            if n in env:
                continue
            kind = self.kinds.get(n)
            if kind == "state":
                env[n] = y[:, self.state_index[n]]
            elif kind == "parameter":
                env[n] = p[:, self.parameter_index[n]]
            elif kind in ("derived", "rule"):
                if "observables" not in observed:
                    observed["observables"] = self.observe(y, p)
                env[n] = observed["observables"][:, self.observable_index[n]]
            else:
                raise ModelError(f"expression uses undeclared symbol {n!r}")
        value = eval(code, env)  # noqa: S307 - rendered from a checked expression tree
        return np.broadcast_to(np.asarray(value, dtype=float), (y.shape[0],)).copy()
