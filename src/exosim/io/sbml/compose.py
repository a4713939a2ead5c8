"""Modular SBML: one model per exosim module and their hierarchical (comp) composition.

The files in ``models/`` are generated here from one canonical configuration
(:data:`CANONICAL`): a standalone model per module instance, with ports and
placeholders for the symbols other modules provide; the composed model, one
submodel per module instance with the shared symbols replaced by the parent's;
and its flattened form, which simulates like the directly assembled flat model
(:func:`exosim.io.sbml.build.flat_document`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from exosim.io.sbml.build import (
    _FUNCTIONS,
    SBO_COMPARTMENT,
    SBO_MATERIAL,
    SBO_PARAMETER,
    _compartment_of,
    _describe,
    _notes,
    _sbo_for,
    display_name,
    to_document,
    variable,
)
from exosim.io.sbml.literals import LiteralUnits
from exosim.io.sbml.units import _is_species, _unit_definitions, model_units, unit_id
from exosim.io.sbml.units import rate_unit as _rate_unit
from exosim.io.sbml.validate import SBMLExportError, Validation, validate, write_validated
from exosim.model import expr as _expr
from exosim.model.assemble import Model
from exosim.model.declare import SEP

__all__ = [
    "CANONICAL",
    "MODULE_FILES",
    "canonical_model",
    "composed_document",
    "flatten",
    "module_documents",
    "write_models",
]

#: the configuration of the shipped composed model: donors and recipients sharing one medium
#: (co-culture), one cargo that exercises targets, modifiers and bystander damage; the
#: recipients score gamma-H2AX foci, so the repair module carries the marker
CANONICAL = {
    "populations": [
        ("donors", "medium", "hnscc_pooled", ("mir_1246_bystander",)),
        ("recipients", "medium", "hnscc_pooled", (), ("foci",)),
    ],
    "media": ["medium"],
    "cargos": ["mir_1246_bystander"],
}
#: module file name -> (module, namespace) of the canonical block it is generated from
MODULE_FILES = {
    "exosim_release": ("release", "donors"),
    "exosim_uptake": ("transport", "recipients"),
    "exosim_medium": ("transport", "medium"),
    "exosim_cargo": ("cargo_effects", "recipients"),
    "exosim_repair": ("repair", "recipients"),
}


def canonical_model() -> Model:
    """The assembled model the files in ``models/`` are generated from (:data:`CANONICAL`)."""
    from exosim.model.assemble import PopulationSpec

    return Model([PopulationSpec(*p) for p in CANONICAL["populations"]], CANONICAL["media"], CANONICAL["cargos"])


class _Ownership:
    """Which block owns, uses and contributes to which symbol of an assembled model.

    Attributes
    ----------
    owner : dict of str to int
        Symbol -> index of the block that declares it (the first, for shared declarations).
    uses : dict of int to set of str
        Block -> model symbols its expressions read.
    contrib : dict of int to dict of str to list
        Block -> state -> the block's rate terms (expression trees) for that state.
    """

    def __init__(self, model: Model):
        self.model = model
        self.owner: dict[str, int] = {}
        self.uses: dict[int, set[str]] = {}
        self.contrib: dict[int, dict[str, list]] = {}
        for i, b in enumerate(model.blocks):
            q = b.qualify
            own = (
                [q(n) for n in b.parameters]
                + [q(s.name) for s in b.states]
                + [q(d.name) for d in b.derived]
                + [q(r.name) for r in b.rules]
            )
            for n in own:
                self.owner.setdefault(n, i)
        for i, b in enumerate(model.blocks):
            q = b.qualify
            used: set[str] = set()
            exprs = [d.expr for d in b.derived] + [r.expr for r in b.rules] + [s.initial for s in b.states]
            for e in exprs:
                used |= _expr.names(_expr.rename(_expr.parse(e), q))
            self.contrib[i] = {}
            for rate in b.rates:
                tree = _expr.rename(_expr.parse(rate.expr), q)
                used |= _expr.names(tree)
                self.contrib[i].setdefault(q(rate.state), []).append(tree)
            self.uses[i] = {n for n in used if n in model.kinds}

    def owned(self, i: int) -> list[str]:
        """Symbols block i owns, in declaration order."""
        return [n for n, o in self.owner.items() if o == i]

    def foreign(self, i: int) -> set[str]:
        """Symbols block i uses but does not own (placeholders in its module definition)."""
        return {n for n in self.uses[i] if self.owner.get(n) != i}

    def external_contributors(self, state: str) -> list[int]:
        """Blocks other than the owner that have rate terms for ``state``."""
        return [i for i, c in self.contrib.items() if state in c and self.owner[state] != i]


def _sum(trees: list, sf: LiteralUnits, unit: str) -> str:
    """SBML formula of the sum of expression trees in ``unit`` (``0`` for none)."""
    return " + ".join(f"({sf(t, unit)})" for t in trees) if trees else f"0 {unit_id(unit)}"


def _module_definition(model: Model, own: _Ownership, i: int, values: np.ndarray, *, standalone: bool):
    """sbmlutils (Model|ModelDefinition) of block i: owned elements, placeholders, ports.

    Parameters
    ----------
    model : Model
        The assembled model.
    own : _Ownership
        Ownership of its symbols.
    i : int
        Index of the block in ``model.blocks``.
    values : numpy.ndarray
        Parameter values.
    standalone : bool
        A standalone ``Model`` (a file of its own, with the comp package) instead of a
        ``ModelDefinition`` of the composed document.
    """
    from sbmlutils.factory import (
        AssignmentRule,
        Compartment,
        Function,
        InitialAssignment,
        ModelDefinition,
        Port,
        RateRule,
        Species,
    )
    from sbmlutils.factory import (
        Model as SbModel,
    )

    b = model.blocks[i]
    sid = f"{b.module}_{b.namespace}"
    # baseline values: placeholders start where the full model starts (modifiers 1, drives 0)
    y0 = model.initial_state(values[None])[0]
    obs0 = model.observe(y0[None], values[None])[0]
    baseline = {
        **{s.name: y0[k] for k, s in enumerate(model.states)},
        **{n: obs0[k] for k, n in enumerate(model.observable_names)},
    }
    states = {s.name: s for s in model.states}
    params = {q.name: (j, q) for j, q in enumerate(model.parameters)}
    derived = {d.name: d for d in model.derived}
    rules = {r.name: r for r in model.rules}
    units: set[str] = {"h", "mL", "1", "particles"}
    sf = LiteralUnits(model)
    comps, species, parameters, assigns, arules, rrules, ports = {}, [], [], [], [], [], []

    def port(x: str) -> None:
        ports.append(Port(f"{x}_port", idRef=x))

    def compartment_for(name: str) -> str:
        cid = _compartment_of(model, name)
        if cid not in comps:
            if cid.endswith(f"{SEP}volume"):
                j = model.parameter_index[cid]
                comps[cid] = Compartment(
                    cid, float(values[j]), unit=unit_id("mL"), spatialDimensions=3, sboTerm=SBO_COMPARTMENT
                )
            else:
                comps[cid] = Compartment(cid, 1.0, unit=unit_id("1"), spatialDimensions=0, sboTerm=SBO_COMPARTMENT)
            port(cid)
        return cid

    def element(name: str, placeholder: bool) -> None:
        if name in states:
            s = states[name]
            units.add(s.unit)
            init = s.initial
            numeric = isinstance(init, ast.Constant)
            value = float(baseline[name])
            if _is_species(s.unit):
                species.append(
                    Species(
                        name,
                        compartment_for(name),
                        initialAmount=value,
                        substanceUnit=unit_id(s.unit),
                        hasOnlySubstanceUnits=True,
                        sboTerm=SBO_MATERIAL,
                        name=display_name(name, s.description),
                    )
                )
            else:
                parameters.append(
                    variable(name, value, s.unit, name=display_name(name, s.description), notes=s.description)
                )
            if not placeholder and not numeric:
                assigns.append(
                    InitialAssignment(name, sf(init, s.unit), unit=unit_id(s.unit), name=f"initial {s.description}")
                )
        elif name in params:
            j, q = params[name]
            if q.key == "volume":
                compartment_for(name.split(SEP)[0] + f"{SEP}vesicles")
                return
            units.add(q.unit)
            parameters.append(
                variable(
                    name,
                    float(values[j]),
                    q.unit,
                    name=display_name(name, name.split(SEP, 1)[-1]),
                    notes=_notes(q),
                    constant=q.key not in ("dose_rate",) and not q.key.endswith("_factor"),
                    sbo=_sbo_for(q.key, q.unit),
                )
            )
        else:
            item = derived.get(name) or rules[name]
            units.add(item.unit)
            parameters.append(
                variable(
                    name,
                    float(baseline[name]) if placeholder else None,
                    item.unit,
                    name=display_name(name, name.split(SEP, 1)[-1]),
                    notes=item.description,
                    constant=name in derived and not placeholder,
                )
            )
            if not placeholder:
                if name in derived:
                    assigns.append(
                        InitialAssignment(
                            name, sf(item.expr, item.unit), unit=unit_id(item.unit), name=item.description
                        )
                    )
                else:
                    arules.append(
                        AssignmentRule(name, sf(item.expr, item.unit), unit=unit_id(item.unit), name=item.description)
                    )
        if name not in comps:
            port(name)

    for name in own.owned(i):
        element(name, placeholder=False)
    for name in sorted(own.foreign(i)):
        element(name, placeholder=True)
    for target, trees in own.contrib[i].items():
        unit = states[target].unit
        rate_unit = _rate_unit(unit)
        units.add(rate_unit)
        if own.owner[target] == i:
            terms = _sum(trees, sf, rate_unit)
            if own.external_contributors(target):
                inflow = f"{target}_inflow"
                parameters.append(
                    variable(
                        inflow,
                        0.0,
                        rate_unit,
                        name=f"inflow to {target}",
                        notes=f"rate terms of other modules for {target}",
                    )
                )
                port(inflow)
                terms = f"{terms} + {inflow}"
            rrules.append(RateRule(target, terms, unit=unit_id(rate_unit), name=f"d/dt {target}"))
        else:
            flux = f"{target}_from_{sid}"
            parameters.append(
                variable(
                    flux,
                    None,
                    rate_unit,
                    name=f"{sid} terms of {target}",
                    notes=f"this module's rate terms for {target}",
                )
            )
            arules.append(
                AssignmentRule(
                    flux, _sum(trees, sf, rate_unit), unit=unit_id(rate_unit), name=f"{sid} terms of {target}"
                )
            )
            port(flux)
    # owned states without any rate term of their own still need their inflow
    for name in own.owned(i):
        if name in states and name not in own.contrib[i] and own.external_contributors(name):
            s = states[name]
            rate_unit = _rate_unit(s.unit)
            units.add(rate_unit)
            inflow = f"{name}_inflow"
            parameters.append(variable(inflow, 0.0, rate_unit, name=f"inflow to {name}"))
            port(inflow)
            rrules.append(RateRule(name, inflow, unit=unit_id(rate_unit), name=f"d/dt {name}"))
    cls = SbModel if standalone else ModelDefinition
    kwargs = dict(
        units=_unit_definitions(units | sf.texts, sf.extra),
        model_units=model_units(),
        functions=[Function(k, v) for k, v in _FUNCTIONS.items()],
        compartments=list(comps.values()),
        species=species,
        parameters=parameters,
        assignments=assigns,
        rules=arules,
        rate_rules=rrules,
        ports=ports,
    )
    if standalone:
        from sbmlutils.factory import Package

        kwargs["packages"] = [Package.COMP_V1]
        kwargs["notes"] = (
            f"exosim module {b.module!r} for {b.namespace!r}, generated from "
            f"src/exosim/model/modules/{b.module}.py. Placeholders (parameters or species with ports, at "
            f"their baseline values) stand for symbols other modules provide; the composed model "
            f"replaces them."
        )
    return cls(sid, name=f"exosim {b.module} module ({b.namespace})", **kwargs)


def composed_document(model: Model | None = None):
    """Hierarchical (comp) document: one submodel per module instance, shared symbols replaced.

    Parameters
    ----------
    model : Model, optional
        Default :func:`canonical_model`.

    Returns
    -------
    libsbml.SBMLDocument
        Not validated.
    """
    from sbmlutils.factory import (
        AssignmentRule,
        Compartment,
        Package,
        ReplacedElement,
        Species,
        Submodel,
    )
    from sbmlutils.factory import (
        Model as SbModel,
    )

    model = model or canonical_model()
    values = model.default_parameters()
    own = _Ownership(model)
    defs = [_module_definition(model, own, i, values, standalone=False) for i in range(len(model.blocks))]
    subs = [Submodel(f"sub_{d.sid}", modelRef=d.sid) for d in defs]
    states = {s.name: s for s in model.states}
    # every symbol that appears in more than one definition lives in the parent
    holders: dict[str, list[int]] = {}
    for i in range(len(model.blocks)):
        for n in set(own.owned(i)) | own.foreign(i):
            holders.setdefault(n, []).append(i)
    shared = set(holders)  # every symbol lives in the parent, so flattened ids equal exosim's names
    comps_needed = {_compartment_of(model, n) for n in shared if n in states and _is_species(states[n].unit)}
    comps_needed |= {n for n in shared if n.endswith(f"{SEP}volume")}
    units: set[str] = {"h", "mL", "1", "particles"}
    compartments, species, parameters, rules, replaced = [], [], [], [], []

    def replace(parent_id: str, local_id: str, blocks: list[int]) -> None:
        for i in blocks:
            replaced.append(
                ReplacedElement(sid=None, elementRef=parent_id, submodelRef=subs[i].sid, portRef=f"{local_id}_port")
            )

    comp_holders: dict[str, list[int]] = {}
    for i, d in enumerate(defs):
        for c in d.compartments or []:
            comp_holders.setdefault(c.sid, []).append(i)
    for cid, blocks in comp_holders.items():
        if cid.endswith(f"{SEP}volume"):
            compartments.append(
                Compartment(
                    cid,
                    float(values[model.parameter_index[cid]]),
                    unit=unit_id("mL"),
                    spatialDimensions=3,
                    sboTerm=SBO_COMPARTMENT,
                )
            )
        else:
            compartments.append(Compartment(cid, 1.0, unit=unit_id("1"), spatialDimensions=0, sboTerm=SBO_COMPARTMENT))
        replace(cid, cid, blocks)
    for n in sorted(shared - comps_needed - set(comp_holders)):
        init = states[n].initial if n in states else None
        start = float(init.value) if isinstance(init, ast.Constant) else 0.0
        if n in states and _is_species(states[n].unit):
            units.add(states[n].unit)
            species.append(
                Species(
                    n,
                    _compartment_of(model, n),
                    initialAmount=start,
                    substanceUnit=unit_id(states[n].unit),
                    hasOnlySubstanceUnits=True,
                    sboTerm=SBO_MATERIAL,
                    name=display_name(n, states[n].description),
                )
            )
        else:
            unit = (
                states[n].unit
                if n in states
                else next(
                    (x.unit for x in list(model.derived) + list(model.rules) if x.name == n),
                    next((q.unit for q in model.parameters if q.name == n), "1"),
                )
            )
            units.add(unit)
            j = model.parameter_index.get(n)
            val = float(values[j]) if j is not None else start
            info = model.parameters[j] if j is not None else None
            parameters.append(
                variable(
                    n,
                    val,
                    unit,
                    name=display_name(n, n.split(SEP, 1)[-1]),
                    notes=_notes(info) if info else _describe(model, n),
                    sbo=_sbo_for(info.key, info.unit) if info else SBO_PARAMETER,
                )
            )
        replace(n, n, holders[n])
    # rate contributions across modules: parent fluxes and inflows
    for target in states:
        contributors = own.external_contributors(target)
        if not contributors:
            continue
        unit = states[target].unit
        rate_unit = _rate_unit(unit)
        units.add(rate_unit)
        names = []
        for i in contributors:
            local = f"{target}_from_{defs[i].sid}"
            parameters.append(variable(local, 0.0, rate_unit, name=f"{defs[i].sid} terms of {target}"))
            replace(local, local, [i])
            names.append(local)
        inflow = f"{target}_inflow"
        parameters.append(variable(inflow, 0.0, rate_unit, name=f"inflow to {target}"))
        rules.append(AssignmentRule(inflow, " + ".join(names), unit=unit_id(rate_unit), name=f"inflow to {target}"))
        replace(inflow, inflow, [own.owner[target]])
    top = SbModel(
        "exosim_composed",
        name="exosim composed model (donors and recipients in co-culture)",
        notes=(
            "Hierarchical composition of the exosim modules (SBML comp): one submodel per module "
            "instance, symbols shared between modules replaced by the parent's elements, rate terms "
            "of one module for another module's state passed through *_from_* and *_inflow "
            "parameters. Configuration: donors (packaging mir_1246_bystander) and recipients, "
            "both hnscc_pooled, sharing one medium."
        ),
        packages=[Package.COMP_V1],
        units=_unit_definitions(units),
        model_units=model_units(),
        model_definitions=defs,
        submodels=subs,
        compartments=compartments,
        species=species,
        parameters=parameters,
        rules=rules,
        replaced_elements=replaced,
    )
    return to_document(top)


def flatten(doc):
    """Flatten a comp document with libsbml's CompFlatteningConverter.

    Parameters
    ----------
    doc : libsbml.SBMLDocument
        A comp document; it is left unchanged (a clone is flattened).

    Returns
    -------
    libsbml.SBMLDocument

    Raises
    ------
    SBMLExportError
        The converter failed.
    """
    import libsbml

    props = libsbml.ConversionProperties()
    props.addOption("flatten comp", True)
    props.addOption("leave_ports", False)
    clone = doc.clone()
    status = clone.convert(props)
    if status != libsbml.LIBSBML_OPERATION_SUCCESS:
        msgs = [clone.getError(i).getMessage() for i in range(clone.getNumErrors())]
        raise SBMLExportError("comp flattening failed: " + "; ".join(msgs[:5]))
    # read back from text: the converter's in-memory result misses the units of the literals in
    # the function calls it renamed (libsbml then warns of 99505 that the written file has not)
    return libsbml.readSBMLFromString(libsbml.writeSBMLToString(clone))


def module_documents() -> dict[str, object]:
    """Standalone SBML document of each module of :data:`MODULE_FILES` (file name -> document)."""
    model = canonical_model()
    values = model.default_parameters()
    own = _Ownership(model)
    out = {}
    for fname, (module, ns) in MODULE_FILES.items():
        i = next(k for k, b in enumerate(model.blocks) if b.module == module and b.namespace == ns)
        out[fname] = to_document(_module_definition(model, own, i, values, standalone=True))
    return out


def write_models(outdir: str | Path = "models") -> list[tuple[Path, Validation]]:
    """Regenerate ``models/``: module files, the comp model and its flattened form; all validated.

    Parameters
    ----------
    outdir : str or Path
        Folder, created if missing.

    Returns
    -------
    list of (Path, Validation)
        Each file written and its check result.

    Raises
    ------
    SBMLExportError
        Any document has validation errors (then none is written), or a file cannot be written.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    docs = dict(module_documents())
    comp = composed_document()
    docs["exosim_composed_comp"] = comp
    docs["exosim_composed_flat"] = flatten(comp)
    results = []
    checked = {name: validate(doc) for name, doc in docs.items()}
    bad = {n: r.errors for n, r in checked.items() if not r.ok}
    if bad:
        raise SBMLExportError(
            "SBML validation failed, nothing written: " + "; ".join(f"{n}: {e[0]}" for n, e in bad.items())
        )
    for name, doc in docs.items():
        results.append((outdir / f"{name}.xml", write_validated(doc, outdir / f"{name}.xml")))
    return results
