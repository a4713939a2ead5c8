"""Reading scenario files: bounded YAML, validation against the schema, consistency checks.

Loading is strict: YAML is read with a bounded ``yaml.SafeLoader`` (no object
construction; at most :data:`MAX_FILE_BYTES`, :data:`MAX_YAML_NODES` nodes counting
every use of an alias, :data:`MAX_YAML_DEPTH` levels; duplicate keys rejected), unknown
keys are rejected with the nearest valid key suggested, dimensional quantities need
units, and every reference (population, medium, cargo, cell line, agent, variable) is
checked.  Every problem is reported as one :class:`~exosim.scenario.schema.ScenarioError`
naming the file, the key path and what was expected.  A parameter override outside the
documented range of the parameter table is a
:class:`~exosim.scenario.schema.ScenarioWarning` (an error with ``strict=True``).

A scenario states protocol only: biology (every parameter the table does not mark
``protocol``, and every cargo field) comes from the catalogues, and a file changes it only
in a ``hypothesis:`` block (of the scenario or of one arm).  The loader merges those blocks
into the places they address and keeps them on the scenario, so runs are flagged; with
``hypotheses=False`` it leaves them out (catalogue biology, as the evidence scorecard runs).
"""

from __future__ import annotations

import difflib
import hashlib
import math
import types
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from exosim.model import catalogue as cat
from exosim.model.units import QuantityError, parse_parameter_value, parse_quantity, short_repr
from exosim.scenario.schema import (
    DoseGrid,
    Event,
    Scenario,
    ScenarioError,
    ScenarioWarning,
    _dose_limit_problem,
    as_written,
)

__all__ = [
    "load_scenario",
    "load_scenario_with_warnings",
    "parse_scenario",
    "with_parameters",
    "with_dose_grid",
    "read_yaml_mapping",
    "suggest",
    "check_run_size",
    "MAX_RUN_BYTES",
]

#: largest scenario file read (bytes); the shipped scenarios are a few kB
MAX_FILE_BYTES = 5_000_000
#: most YAML nodes a scenario may expand to, each use of an alias counting its whole content
#: (the shipped scenarios have about 200); stops "billion laughs" alias bombs before they expand
MAX_YAML_NODES = 100_000
#: deepest nesting of YAML mappings and lists (a scenario needs about 6)
MAX_YAML_DEPTH = 64


def load_scenario(path: str | Path, *, strict: bool = False, hypotheses: bool = True) -> Scenario:
    """Read, parse and validate a scenario file.

    Parameters
    ----------
    path : the scenario file
    strict : a parameter override outside its documented range is an error, not a
        :class:`ScenarioWarning`
    hypotheses : apply the file's ``hypothesis:`` blocks (default); ``False`` runs the
        protocol on catalogue biology alone (the blocks are still checked)

    Raises
    ------
    ScenarioError
        Unreadable or too large file, invalid YAML, or any schema or consistency problem.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScenarioError(str(path), "", f"cannot read file: {exc.strerror or exc}") from None
    return parse_scenario(raw, source=str(path), strict=strict, hypotheses=hypotheses)


def load_scenario_with_warnings(
    path: str | Path, *, strict: bool = False, hypotheses: bool = True
) -> tuple[Scenario, list[ScenarioWarning]]:
    """:func:`load_scenario`, returning the :class:`ScenarioWarning` s instead of issuing them
    (for the command line, which prints each as one line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScenarioWarning)
        sc = load_scenario(path, strict=strict, hypotheses=hypotheses)
    found = [w.message for w in caught if isinstance(w.message, ScenarioWarning)]
    for w in caught:  # anything else is shown as it would have been
        if not isinstance(w.message, ScenarioWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return sc, found


def parse_scenario(
    raw: bytes | str, source: str = "<scenario>", *, strict: bool = False, hypotheses: bool = True
) -> Scenario:
    """Parse and validate scenario text (YAML); see :func:`load_scenario`."""
    data_bytes = raw.encode() if isinstance(raw, str) else raw
    data = read_yaml_mapping(data_bytes, source, "scenario keys")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc, source) from None
    sc = sc.model_copy(update={"source": source, "sha256": hashlib.sha256(data_bytes).hexdigest()})
    _check_protocol_only(sc)
    merged, where = _apply_hypotheses(sc)
    if hypotheses:
        _check_consistency(merged, strict=strict, where=where)
        return merged.model_copy(update={"written": where})
    # left out: its hypotheses must still be well formed (errors), but a value of theirs outside
    # its documented range is neither noted nor refused (--strict): it is not used
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScenarioWarning)
        _check_consistency(merged, strict=False, where=where)
    plain = sc.model_copy(
        update={"hypothesis": None, "arms": [a.model_copy(update={"hypothesis": None}) for a in sc.arms]}
    )
    _check_consistency(plain, strict=strict)
    return plain


def read_yaml_mapping(data_bytes: bytes, source: str, what: str) -> dict:
    """A YAML file of exosim's (scenario, evidence) as a mapping: at most
    :data:`MAX_FILE_BYTES`, read by the bounded loader; :class:`ScenarioError` otherwise."""
    if len(data_bytes) > MAX_FILE_BYTES:
        raise ScenarioError(
            source, "", f"file too large: more than {MAX_FILE_BYTES / 1e6:g} MB (this file is a few kB)"
        )
    data = _load_yaml(data_bytes, source)
    if data is None:
        raise ScenarioError(source, "", f"the file is empty (or only comments): expected a YAML mapping of {what}")
    if not isinstance(data, dict):
        kind = {"list": "a list", "str": "a single text", "int": "a number", "float": "a number"}.get(
            type(data).__name__, type(data).__name__
        )
        raise ScenarioError(source, "", f"expected a YAML mapping of {what}, got {kind}")
    return data


def _biology_message(key: str, path: str, suggestion: str) -> str:
    table = cat.parameter_table()
    entry = table[key]
    where = {
        "cell_line": "the cell-line catalogue (cell_lines.yaml) or the parameter table",
        "cargo": "the cargo catalogue (cargo.yaml)",
        "cargo_target": "the cargo catalogue (cargo.yaml)",
        "target": "the cargo catalogue's targets (cargo.yaml)",
        "medium": "the media catalogue (media.yaml; choose the medium's 'kind')",
    }.get(str(entry["scope"]), "the parameter table (parameters.yaml)")
    return (
        f"{key!r} is biology, not protocol: its value comes from {where}; a scenario states "
        f"protocol only. To test another value, state it as a hypothesis: {suggestion} "
        "(docs/evidence.md, 'One parameter set')"
    )


def _check_protocol_only(sc: Scenario) -> None:
    """Biological parameter or cargo values outside a ``hypothesis:`` block are an error."""
    table = cat.parameter_table()

    def check(path: str, key: str, hyp_key: str, hyp_path: str) -> None:
        if key in table and not cat.is_protocol(key):
            suggestion = f"'{hyp_path}: {{statement: ..., parameters: {{{hyp_key}: ...}}}}'"
            raise ScenarioError(sc.source, path, _biology_message(key, path, suggestion))

    for k in sc.parameters:
        check(f"parameters.{k}", k, k, "hypothesis")
    for group, items in (("populations", sc.populations), ("media", sc.media)):
        for n, spec in items.items():
            for k in spec.parameters:
                check(f"{group}.{n}.parameters.{k}", k, f"{n}.{k}", "hypothesis")
    for a, arm in enumerate(sc.arms):
        for k in arm.parameters:
            check(f"arms[{a}].parameters.{k}", k.split(".", 1)[-1], k, f"arms[{a}].hypothesis")
    for c, fields in sc.cargo.items():
        for k in fields:
            raise ScenarioError(
                sc.source,
                f"cargo.{c}.{k}",
                f"a scenario lists its cargo by name only ({c}: {{}}); {k!r} is biology and comes from "
                "the cargo catalogue (cargo.yaml). To test another value, state it as a hypothesis: "
                f"'hypothesis: {{statement: ..., cargo: {{{c}: {{{k}: ...}}}}}}' (docs/evidence.md, "
                "'One parameter set')",
            )


def _apply_hypotheses(sc: Scenario) -> tuple[Scenario, dict[str, str]]:
    """``sc`` with its hypothesis blocks merged into the places they address, and a map from
    those places' key paths to the paths written in the file (for messages)."""
    where: dict[str, str] = {}
    top = dict(sc.parameters)
    pops = {n: dict(p.parameters) for n, p in sc.populations.items()}
    meds = {n: dict(m.parameters) for n, m in sc.media.items()}
    cargo = {c: dict(v) for c, v in sc.cargo.items()}
    if sc.hypothesis is not None:
        for name, q in sc.hypothesis.parameters.items():
            ns, key = name.split(".", 1) if "." in name else (None, name)
            written = f"hypothesis.parameters.{name}"
            if ns is None:
                top[key], at = q, f"parameters.{key}"
            elif ns in pops:
                pops[ns][key], at = q, f"populations.{ns}.parameters.{key}"
            elif ns in meds:
                meds[ns][key], at = q, f"media.{ns}.parameters.{key}"
            else:
                raise ScenarioError(
                    sc.source, written, f"unknown population or medium {ns!r}" + suggest(ns, list(pops) + list(meds))
                )
            where[at] = written
        for c, fields in sc.hypothesis.cargo.items():
            if c not in cargo:
                raise ScenarioError(
                    sc.source,
                    f"hypothesis.cargo.{c}",
                    f"cargo {c!r} is not listed under the scenario's 'cargo'" + suggest(c, list(cargo)),
                )
            cargo[c].update(fields)
            where.update({f"cargo.{c}.{k}": f"hypothesis.cargo.{c}.{k}" for k in fields})
    arms = []
    for a, arm in enumerate(sc.arms):
        if arm.hypothesis is not None:
            params = dict(arm.parameters)
            for k, q in arm.hypothesis.parameters.items():
                params[k] = q
                where[f"arms[{a}].parameters.{k}"] = f"arms[{a}].hypothesis.parameters.{k}"
            arm = arm.model_copy(update={"parameters": params})
        arms.append(arm)
    merged = sc.model_copy(
        update={
            "parameters": top,
            "populations": {n: p.model_copy(update={"parameters": pops[n]}) for n, p in sc.populations.items()},
            "media": {n: m.model_copy(update={"parameters": meds[n]}) for n, m in sc.media.items()},
            "cargo": cargo,
            "arms": arms,
        }
    )
    return merged, where


class _YamlLimit(Exception):
    """The YAML document exceeds a limit of the bounded loader."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops composing past :data:`MAX_YAML_NODES` nodes (aliases
    included) or :data:`MAX_YAML_DEPTH` levels, before anything is constructed."""

    def __init__(self, stream: bytes):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent, index):
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise _YamlLimit(_too_many_nodes())
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _YamlLimit(f"YAML nested deeper than {MAX_YAML_DEPTH} levels (at line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _too_many_nodes() -> str:
    return (
        f"too many YAML values: the document has, or its aliases expand to, more than {MAX_YAML_NODES} "
        "values (each use of an alias counts its whole content; a scenario has a few hundred, a timeline "
        "of a thousand events about ten thousand)"
    )


def _load_yaml(data_bytes: bytes, source: str) -> Any:
    """The YAML document, read with :class:`_BoundedLoader` and checked by :func:`_check_nodes`."""
    loader = None
    try:
        if not data_bytes.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its mark is read by PyYAML
            data_bytes.decode("utf-8")  # anything else must be UTF-8: one clear message, not a reader error
        loader = _BoundedLoader(data_bytes)  # reads the encoding mark: may raise a ReaderError
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, source)
        return loader.construct_document(node)
    except ScenarioError:
        raise
    except _YamlLimit as exc:
        raise ScenarioError(source, "", str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", exc)).split())  # one line
        problem = problem if len(problem) <= 200 else problem[:197] + "..."
        raise ScenarioError(source, "", f"not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ScenarioError(source, "", "not a text (UTF-8) YAML file") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        text = " ".join(str(exc).split())
        raise ScenarioError(source, "", f"not valid YAML: {text if len(text) <= 120 else text[:117] + '...'}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_nodes(root: yaml.Node, source: str) -> None:
    """Expanded size and depth (aliases counted at every use), recursive aliases and duplicate keys."""
    sizes: dict[int, tuple[int, int]] = {}  # node -> (expanded size, expanded height)
    active: set[int] = set()

    def size(node: yaml.Node, depth: int) -> tuple[int, int]:
        if depth > MAX_YAML_DEPTH:
            raise ScenarioError(source, "", f"YAML nested deeper than {MAX_YAML_DEPTH} levels (aliases expanded)")
        key = id(node)
        if key in sizes:
            total, height = sizes[key]
            if depth + height - 1 > MAX_YAML_DEPTH:
                raise ScenarioError(source, "", f"YAML nested deeper than {MAX_YAML_DEPTH} levels (aliases expanded)")
            return total, height
        if key in active:
            raise ScenarioError(
                source, "", f"recursive YAML alias at line {node.start_mark.line + 1} (a value containing itself)"
            )
        active.add(key)
        total, height = 1, 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        for child in children:
            s, h = size(child, depth + 1)
            total, height = total + s, max(height, h + 1)
            if total > MAX_YAML_NODES:
                raise ScenarioError(source, "", _too_many_nodes())
        active.discard(key)
        sizes[key] = (total, height)
        return total, height

    size(root, 1)

    # visits at most MAX_YAML_NODES nodes, at most MAX_YAML_DEPTH deep
    def duplicates(node: yaml.Node, loc: tuple) -> None:
        if isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                duplicates(child, loc + (i,))
        elif isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    ident = (k.tag, k.value)
                    if ident in seen:
                        a, b = seen[ident].start_mark, k.start_mark
                        where = (
                            f"line {a.line + 1}, columns {a.column + 1} and {b.column + 1}"
                            if a.line == b.line
                            else f"lines {a.line + 1} and {b.line + 1}"
                        )
                        raise ScenarioError(
                            source,
                            _loc_path(loc),
                            f"duplicate key {short_repr(k.value)} ({where}); YAML would silently keep only the last",
                        )
                    seen[ident] = k
                duplicates(v, loc + (k.value if isinstance(k, yaml.ScalarNode) else "?",))

    duplicates(root, ())


def _loc_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            out += ("." if out else "") + (text if len(text) <= 80 else text[:77] + "...")
    return out


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The schema class at a key path, for suggesting valid keys (None if not a model)."""
    node: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            node = _unwrap(node) if not (isinstance(node, type) and issubclass(node, BaseModel)) else node
            continue
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part) or next(
                (f for f in node.model_fields.values() if f.alias == part), None
            )
            if field is None:
                return None
            node = _unwrap(field.annotation)
        elif typing.get_origin(node) is dict:
            node = _unwrap(typing.get_args(node)[1])  # the key of a mapping selects its value type
        else:
            return None
    node = _unwrap(node)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated/list wrappers; a dict annotation is returned as is."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, tuple):
        return _unwrap(args[0])
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _unwrap(inner[0]) if len(inner) == 1 else annotation
    if origin is Annotated:
        return _unwrap(args[0])
    return annotation


#: the schema's name patterns, in words for messages
_PATTERN_WORDS = {
    r"^[A-Za-z][A-Za-z0-9_]*$": "a name of ASCII letters, digits and underscores that starts with a letter",
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$": "a name of ASCII letters, digits, '_', '-' and '.' that starts with a letter "
    "or digit (it names the output folder)",
}


def _first_error(exc: ValidationError, source: str) -> ScenarioError:
    errors = exc.errors()
    err = errors[0]
    if err["type"] == "missing":  # a misspelt required key: name the unknown key beside it instead
        parent = tuple(err["loc"])[:-1]
        err = next((e for e in errors if e["type"] == "extra_forbidden" and tuple(e["loc"])[:-1] == parent), err)
    loc = tuple(err["loc"])
    if loc and loc[-1] == "[key]":  # pydantic's marker for a mapping's key (a name): the name is the path
        loc = loc[:-1]
    path = _loc_path(loc)
    kind = err["type"]
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        words = _PATTERN_WORDS.get(pattern, f"the pattern {pattern}")
        return ScenarioError(source, path, f"expected {words}, got {short_repr(err.get('input'))}")
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        valid = (
            # (``source`` and ``sha256`` of a scenario are set by the loader; a transfer's ``source`` is ``from``)
            sorted({f.alias or n for n, f in parent.model_fields.items() if f.alias or n not in ("source", "sha256")})
            if parent
            else []
        )
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return ScenarioError(
            source, path, f"unknown key {short_repr(loc[-1])}{hint} Valid keys here: {', '.join(valid)}"
        )
    if kind == "missing":
        return ScenarioError(source, path, "required key is missing")
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    return ScenarioError(source, path, f"{msg} (got {short_repr(err.get('input'))})" if kind != "value_error" else msg)


def suggest(name: str, valid: list[str], otherwise: str | None = None) -> str:
    """``; did you mean 'x'?``, or else ``otherwise`` if given (a list too long to print), or the
    valid names (nothing when there are none)."""
    near = difflib.get_close_matches(name, valid, n=1)
    if near:
        return f"; did you mean {near[0]!r}?"
    if otherwise is not None:
        return otherwise
    return f"; expected one of: {', '.join(sorted(valid))}" if valid else ""


def _check_consistency(sc: Scenario, strict: bool = False, where: dict[str, str] | None = None) -> None:
    """References, ordering and the dose grid; raises :class:`ScenarioError` (``strict``: also
    for parameter overrides outside their documented range, otherwise a :class:`ScenarioWarning`).
    ``where`` maps key paths of merged hypothesis values to the paths the file wrote."""
    src = sc.source
    where = where or {}

    def err(path: str, msg: str) -> ScenarioError:
        return ScenarioError(src, as_written(path, where), msg)

    media, pops = list(sc.media), list(sc.populations)
    lines = cat.cell_lines()
    catalogue = cat.cargo_catalogue()
    overlap = set(media) & set(pops)
    if overlap:
        raise err("populations", f"names used for both a medium and a population: {sorted(overlap)}")
    for c in sc.cargo:
        if c not in catalogue:
            raise err(f"cargo.{c}", f"unknown cargo {c!r}" + suggest(c, list(catalogue)))
    for name, pop in sc.populations.items():
        if pop.cell_line not in lines:
            raise err(
                f"populations.{name}.cell_line",
                f"unknown cell line {pop.cell_line!r}" + suggest(pop.cell_line, list(lines)),
            )
        if pop.medium not in sc.media:
            raise err(f"populations.{name}.medium", f"unknown medium {pop.medium!r}" + suggest(pop.medium, media))
        for i, c in enumerate(pop.packages):
            if c in pop.packages[:i]:
                raise err(f"populations.{name}.packages[{i}]", f"cargo {c!r} is listed twice")
            if c not in sc.cargo:
                raise err(
                    f"populations.{name}.packages[{i}]",
                    f"cargo {c!r} is not listed under the scenario's 'cargo'" + suggest(c, list(sc.cargo)),
                )
    for name, med in sc.media.items():
        if med.kind not in cat.media():
            raise err(
                f"media.{name}.kind", f"unknown kind of medium {med.kind!r}" + suggest(med.kind, list(cat.media()))
            )
    for i, link in enumerate(sc.links):
        for key, m in (("from", link.source), ("to", link.target)):
            if m not in sc.media:
                raise err(f"links[{i}].{key}", f"unknown medium {m!r}" + suggest(m, media))
        if link.source == link.target:
            raise err(f"links[{i}]", "a link needs two different media")
    tumours = [n for n, pop in sc.populations.items() if pop.tumour_volume is not None]
    for n in tumours:
        if not sc.populations[n].tumour_volume > 0:
            raise err(f"populations.{n}.tumour_volume", "expected a positive tumour volume, e.g. '100 mm3'")
    if sc.immune is not None:
        if sc.immune.medium not in sc.media:
            raise err("immune.medium", f"unknown medium {sc.immune.medium!r}" + suggest(sc.immune.medium, media))
        if len(tumours) < 2:
            raise err(
                "immune",
                "the immune arm needs an irradiated and a distant tumour: two populations with a "
                f"tumour_volume (found {len(tumours)})",
            )
        agonists = [c for c in sc.cargo if catalogue.get(c, {}).get("immune_role") == "sting_agonist"]
        if not agonists:
            raise err(
                "immune",
                "the immune arm senses tumour dsDNA: list a cargo with immune_role sting_agonist (tumour_dsdna)",
            )
    _check_parameters(sc, err, strict=strict, where=where)
    if sc.dose_grid is not None:
        _check_grid_limit(sc.dose_grid, err)

    grid_uses = []
    scores = []
    variables_needed: set[tuple[str, str]] = set()
    all_events = [(f"timeline[{i}]", e) for i, e in enumerate(sc.timeline)]
    for a, arm in enumerate(sc.arms):
        all_events += [(f"arms[{a}].events[{i}]", e) for i, e in enumerate(arm.events)]
    for path, ev in all_events:
        act, kind = ev.action, ev.kind
        key = "harvest" if ev.harvest is not None else kind
        p = f"{path}.{key}"
        if kind == "score":
            for j, other in enumerate(act.also):
                if other not in sc.populations or other == act.population:
                    raise err(
                        f"{p}.also[{j}]",
                        f"expected another population of this scenario ({', '.join(sc.populations)}), got {other!r}",
                    )
        if kind in ("irradiate", "intervene", "score") and act.population not in sc.populations:
            raise err(f"{p}.population", f"unknown population {act.population!r}" + suggest(act.population, pops))
        if kind in ("add", "treat", "change_medium") and act.medium not in sc.media:
            raise err(f"{p}.medium", f"unknown medium {act.medium!r}" + suggest(act.medium, media))
        if kind == "transfer":
            for k2, m in (("from", act.source), ("to", act.target)):
                if m not in sc.media:
                    raise err(f"{p}.{k2}", f"unknown medium {m!r}" + suggest(m, media))
            if act.source == act.target:
                raise err(p, "a transfer needs two different media")
        if kind == "add":
            for c in act.cargo:
                if c not in sc.cargo:
                    raise err(
                        f"{p}.cargo.{c}",
                        f"cargo {c!r} is not listed under the scenario's 'cargo'" + suggest(c, list(sc.cargo)),
                    )
        if kind == "intervene" and act.agent not in cat.agents():
            raise err(f"{p}.agent", f"unknown agent {act.agent!r}" + suggest(act.agent, list(cat.agents())))
        if kind == "intervene" and act.efficacy is not None and "efficacy_range" in cat.agents()[act.agent]:
            low, high = (float(x) for x in cat.agents()[act.agent]["efficacy_range"])
            if not low <= act.efficacy <= high:
                msg = (
                    f"efficacy {act.efficacy:g} of {act.agent} is outside its documented range [{low:g}, {high:g}] "
                    f"({' '.join(str(cat.agents()[act.agent].get('source', 'assumed')).split())})"
                )
                if strict:
                    raise err(f"{p}.efficacy", msg)
                warnings.warn(ScenarioWarning(src, as_written(f"{p}.efficacy", where), msg), stacklevel=2)
        if (
            kind == "intervene"
            and cat.agents()[act.agent]["process"] == "checkpoint"
            and (sc.immune is None or act.population not in tumours)
        ):
            raise err(
                f"{p}.population",
                f"checkpoint blockade ({act.agent}) acts on the T cells at a tumour: expected a tumour population "
                "of a scenario with an immune arm" + (f" ({', '.join(tumours)})" if tumours else ""),
            )
        if kind == "treat" and act.treatment not in cat.treatments():
            raise err(
                f"{p}.treatment",
                f"unknown treatment {act.treatment!r}" + suggest(act.treatment, list(cat.treatments())),
            )
        if kind == "irradiate":
            if act.dose == "grid":
                grid_uses.append(p)
            elif isinstance(act.dose, str):
                variables_needed.add((act.dose[1:], f"{p}.dose"))
            if act.dose_rate is not None and act.dose_rate <= 0:
                raise err(f"{p}.dose_rate", "expected a positive dose rate")
        if kind == "score":
            if not path.startswith("timeline"):
                raise err(p, "score belongs in the main timeline, not in an arm")
            scores.append((p, ev))
    if len(scores) != 1:
        raise err("timeline", f"expected exactly one score event, found {len(scores)}")
    if sc.dose_grid is None and grid_uses:
        raise err(grid_uses[0] + ".dose", "uses 'grid' but the scenario has no dose_grid")
    if sc.dose_grid is not None and len(grid_uses) != 1:
        raise err("dose_grid", f"expected exactly one irradiate event with 'dose: grid', found {len(grid_uses)}")
    if grid_uses and not grid_uses[0].startswith("timeline") and len(sc.arms) > 1:
        raise err(
            grid_uses[0],
            "the grid irradiation belongs in the main timeline: the other arms would be reported at grid "
            "doses they never received",
        )
    for name, path in sorted(variables_needed):
        arms = sc.arms or []
        if name not in sc.variables and not (arms and all(name in a.variables for a in arms)):
            lacking = [a.name for a in arms if name not in a.variables]
            partly = f"; the arms without it: {', '.join(map(repr, lacking))}" if len(lacking) < len(arms) else ""
            raise err(
                path,
                f"variable {name!r} is not defined under 'variables' (or in every arm){partly}"
                + (suggest(name, list(sc.variables)) if not partly else ""),
            )
    for scope, variables in [("variables", sc.variables)] + [
        (f"arms[{i}].variables", a.variables) for i, a in enumerate(sc.arms)
    ]:
        for k, v in variables.items():
            if isinstance(v, str) and v.startswith("$"):
                raise err(f"{scope}.{k}", "a variable cannot refer to another variable")
            try:
                gray = parse_quantity(v, "dose")
            except QuantityError as exc:
                raise err(f"{scope}.{k}", str(exc)) from None
            problem = _dose_limit_problem(gray, short_repr(v))
            if problem:
                raise err(f"{scope}.{k}", problem)
    controls = [a.name for a in sc.arms if a.control]
    if len(controls) > 1:
        raise err("arms", f"at most one arm may be the control, found {controls}")
    if len({a.name for a in sc.arms}) != len(sc.arms):
        raise err("arms", "arm names must be unique")
    score_path, score_ev = scores[0]
    t_score = score_ev.at
    scored = score_ev.score.population
    no_cells = [] if sc.populations[scored].cells > 0 else [f"populations.{scored}.cells"]
    for a, arm in enumerate(sc.arms):
        cells = arm.parameters.get(f"{scored}.cells")
        if cells is not None and not cells.value > 0:
            no_cells.append(f"arms[{a}].parameters.{scored}.cells")
    for path in no_cells if _grid_on(sc, scored) else []:  # (a cell-free protocol, vesicles in a dish, scores no curve)
        warnings.warn(
            ScenarioWarning(
                src,
                as_written(path, where),
                f"the scored population {scored!r} has no cells: its survival means nothing (only the time "
                "courses of a cell-free protocol do)",
            ),
            stacklevel=2,
        )
    _warn_degenerate_curve(sc, scored)
    for path, ev in all_events:
        if ev.at > t_score:
            raise err(f"{path}.at", f"event at {ev.at:g} h comes after the score at {t_score:g} h")
        if sc.start is not None and ev.at < sc.start:
            raise err(
                f"{path}.at", f"event at {ev.at:g} h comes before the start of the simulation (start: {sc.start:g} h)"
            )
    for path, ev in all_events:
        if ev.kind == "irradiate":
            _check_course(sc, f"{path}.irradiate", ev, t_score, err)
    # a harvest must follow an irradiation of a population living in the harvested medium
    for path, ev in all_events:
        if ev.kind != "transfer":
            continue
        donors = [n for n, pop in sc.populations.items() if pop.medium == ev.action.source]
        if not donors and not any(link.target == ev.action.source for link in sc.links):
            # a cell-free medium holds only what events put into it (a harvest, an addition)
            fills = [
                e.at
                for _, e in all_events
                if (e.kind == "transfer" and e.action.target == ev.action.source)
                or (e.kind == "add" and e.action.medium == ev.action.source)
            ]
            if not any(t <= ev.at for t in fills):
                later = f" (the first content arrives at {min(fills):g} h)" if fills else ""
                raise err(
                    f"{path}.at",
                    f"transfer from {ev.action.source!r} at {ev.at:g} h: this medium has no cells and nothing is "
                    f"put into it before then{later}, so nothing would be transferred",
                )
        irr = [e.at for _, e in all_events if e.kind == "irradiate" and e.action.population in donors]
        if irr and ev.at < min(irr):
            raise err(
                f"{path}.at",
                f"harvest from {ev.action.source!r} at {ev.at:g} h is scheduled before the "
                f"irradiation of its cells at {min(irr):g} h",
            )


def _grid_on(sc: Scenario, population: str) -> bool:
    """Whether the grid irradiation is given to ``population`` (a survival curve of it is asked for)."""
    return any(
        e.irradiate is not None and e.irradiate.dose == "grid" and e.irradiate.population == population
        for e in sc.timeline + [e for a in sc.arms for e in a.events]
    )


def _warn_degenerate_curve(sc: Scenario, scored: str) -> None:
    """Warnings for a survival curve whose summary cannot be computed: no 0 Gy grid dose (survival
    relative to 0 Gy, SF2, D10), or several arms and no control (the dose-modifying factor)."""
    on_scored = _grid_on(sc, scored)
    if sc.dose_grid is not None and on_scored and 0 not in sc.dose_grid.values:
        warnings.warn(
            ScenarioWarning(
                sc.source,
                "dose_grid.values",
                "no 0 dose: survival relative to 0 Gy, SF2 and D10 are not computed (add 0 to the grid)",
            ),
            stacklevel=3,
        )
    if sc.dose_grid is not None and on_scored and len(sc.arms) > 1 and not any(a.control for a in sc.arms):
        warnings.warn(
            ScenarioWarning(
                sc.source, "arms", "no arm is the control (control: true): the dose-modifying factor is not computed"
            ),
            stacklevel=3,
        )


def _doses(sc: Scenario, dose: float | str) -> list[float]:
    """The total doses (Gy) an irradiation gives in some member: the grid's, a variable's values
    (scenario and arms), or the number."""
    if dose == "grid":
        return sc.dose_grid.in_gray() if sc.dose_grid is not None else []
    if isinstance(dose, str):
        name = dose[1:]
        values = [v[name] for v in [sc.variables] + [a.variables for a in sc.arms] if name in v]
        return [parse_quantity(v, "dose") for v in values]
    return [float(dose)]


def _check_course(sc: Scenario, path: str, ev: Event, t_score: float, err) -> None:
    """An irradiation's schedule: a week's fractions fit in the week, a protracted fraction ends
    before the next starts, and the whole course (the largest dose at its dose rate) is given
    before the score: dose given at or after the score would be silently lost."""
    act = ev.irradiate
    if act.days_per_week and act.fractions > 1 and (act.days_per_week - 1) * act.interval >= 7 * 24.0:
        raise err(
            f"{path}.interval",
            f"{act.days_per_week} fractions a week {act.interval:g} h apart do not fit in a week (168 h): "
            f"the next week would start before this one ends",
        )
    doses = _doses(sc, act.dose)
    if not doses:
        return
    largest = max(doses)
    if act.dose_rate and act.fractions > 1 and largest / act.fractions / act.dose_rate > act.interval:
        raise err(
            f"{path}.dose_rate",
            f"a fraction of {largest / act.fractions:g} Gy at {act.dose_rate:g} Gy/h takes "
            f"{largest / act.fractions / act.dose_rate:g} h, longer than the {act.interval:g} h between fractions",
        )
    end = ev.at + act.duration(largest)
    if end >= t_score:
        what = (
            f"the last of its {act.fractions} fractions starts at {ev.at + act.offsets()[-1]:g} h"
            if act.fractions > 1
            else f"it starts at {ev.at:g} h"
        )
        if act.dose_rate:
            what += f" and the exposure ({largest:g} Gy at {act.dose_rate:g} Gy/h) ends at {end:g} h"
        raise err(
            path,
            f"the irradiation is not over before the score at {t_score:g} h ({what}): dose given at or after "
            "the score would not count; score later, or shorten the course",
        )


#: largest memory estimate of a run's record (bytes): members x recorded times x (states +
#: observables) x 8 bytes.  The shipped scenarios need a few MB (HNSCC: 45 members x 74 times x
#: 104 values, 2.8 MB); 2 GiB is about 35,000 HNSCC members (a grid of 7,000 doses), more than a
#: laptop holds once the solver's working copies and the tables written from it are added, and
#: many minutes of integration
MAX_RUN_BYTES = 2 * 1024**3


def check_run_size(sc: Scenario, members: int, times: int, states: int, observables: int) -> int:
    """The memory estimate of a run's record (bytes); a :class:`ScenarioError` above
    :data:`MAX_RUN_BYTES` naming ``dose_grid.values`` when there are more members than recorded
    times, else ``output.time_step``."""
    estimate = members * max(times, 1) * (states + observables) * 8
    if estimate > MAX_RUN_BYTES:
        # the larger factor is the one to name: many grid doses, or many recorded times
        path = "dose_grid.values" if sc.dose_grid is not None and members > times else "output.time_step"
        raise ScenarioError(
            sc.source,
            path,
            f"the run would record about {estimate / 1024**3:.1f} GiB ({members} members x {max(times, 1)} "
            f"recorded times x ({states} states + {observables} observables) x 8 bytes), above the limit of "
            f"{MAX_RUN_BYTES / 1024**3:g} GiB; use fewer grid doses, a larger output.time_step or "
            "no time courses (--no-timecourses)",
        )
    return estimate


def _check_grid_limit(grid: DoseGrid, err) -> None:
    """Every grid dose at most :data:`MAX_DOSE_GY`."""
    for i, (x, gray) in enumerate(zip(grid.values, grid.in_gray())):
        problem = _dose_limit_problem(gray, f"{x:g} {grid.unit}")
        if problem:
            raise err(f"dose_grid.values[{i}]", problem)


def _documented(entry: dict) -> tuple[float, float, str]:
    """A parameter table entry's range (low, high) and its source, for messages."""
    low, high = (float(x) for x in entry["range"])  # YAML reads '1.0e3' (no exponent sign) as text
    if entry.get("source"):
        origin = f"source: {entry['source']}"
    else:
        origin = f"assumed: {entry.get('reason', 'no reason given')}"
    origin = " ".join(str(origin).split())
    return low, high, origin if len(origin) <= 200 else origin[:197] + "..."


def _check_parameters(sc: Scenario, err, strict: bool = False, where: dict[str, str] | None = None) -> None:
    """Overrides: known keys, units, finite; negative values only where the documented range
    allows them; outside the documented range a :class:`ScenarioWarning` (``strict``: an error)."""
    table = cat.parameter_table()
    keys = list(table)
    where = where or {}

    def check_value(path: str, key: str, value: Any) -> None:
        unit = str(table[key]["unit"])
        in_unit = f" in {unit}" if unit != "1" else ""
        try:
            q = parse_parameter_value(value)
        except QuantityError:
            raise err(path, f"expected a finite number{in_unit}, got {short_repr(value)}") from None
        if q.unit is not None and q.unit != unit:
            raise err(path, f"unit {short_repr(q.unit)} does not match the parameter's unit {unit!r}")
        if q.unit is None and unit not in ("1", "cells"):
            raise err(path, f"missing unit: expected '{q.value:g} {unit}'")
        if not math.isfinite(q.value):  # parse_parameter_value refuses these; kept as the invariant
            raise err(path, f"expected a finite number{in_unit}, got {q.value!r}")
        low, high, origin = _documented(table[key])
        shown = f"{q.value:g} {unit}" if unit != "1" else f"{q.value:g}"
        span = f"[{low:g}, {high:g}]" + (f" {unit}" if unit != "1" else "")
        physical = table[key].get("physical")
        if physical and not physical[0] <= q.value <= physical[1]:
            raise err(path, f"{shown} is outside the physical range [{physical[0]:g}, {physical[1]:g}] {unit}")
        if table[key].get("positive") and not q.value > 0:
            raise err(path, f"expected a positive value, got {shown} (documented range {span}; {origin})")
        if q.value < 0 <= low:
            raise err(path, f"expected a non-negative value, got {shown} (documented range {span}; {origin})")
        if not cat.within_documented_range(key, q.value, low, high):
            msg = f"{shown} is outside the documented range {span} ({origin})"
            if strict:
                raise err(path, msg)
            warnings.warn(ScenarioWarning(sc.source, as_written(path, where), msg), stacklevel=2)

    for k, v in sc.parameters.items():
        if k not in table:
            raise err(f"parameters.{k}", f"unknown parameter {k!r}" + suggest(k, keys))
        check_value(f"parameters.{k}", k, v)
    for group, items in (("populations", sc.populations), ("media", sc.media)):
        for n, spec in items.items():
            for k, v in spec.parameters.items():
                if k not in table:
                    raise err(f"{group}.{n}.parameters.{k}", f"unknown parameter {k!r}" + suggest(k, keys))
                check_value(f"{group}.{n}.parameters.{k}", k, v)
    # the protocol's own amounts, against the same documented ranges (a volume must be positive:
    # concentrations divide by it)
    for n, pop in sc.populations.items():
        check_value(f"populations.{n}.cells", "cells", pop.cells)
    for n, med in sc.media.items():
        check_value(f"media.{n}.volume", "volume", f"{med.volume!r} mL")
    for c, override in sc.cargo.items():
        for k, v in override.items():
            if k in ("effects",):
                if not isinstance(v, dict):
                    raise err(f"cargo.{c}.effects", "expected a mapping of target -> signed strength")
                for t, strength in v.items():
                    if t not in cat.targets():
                        raise err(f"cargo.{c}.effects.{t}", f"unknown target {t!r}" + suggest(t, list(cat.targets())))
                    if isinstance(strength, str):  # YAML 1.1 reads 1e-1 (no dot) as text
                        try:
                            strength = float(strength)
                        except ValueError:
                            pass
                    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
                        raise err(
                            f"cargo.{c}.effects.{t}",
                            f"expected a signed fractional strength (a number), got {short_repr(strength)}",
                        )
                    if strength <= -1.0:
                        raise err(
                            f"cargo.{c}.effects.{t}",
                            f"a repression of {strength:g} removes 100 % or more of the target: expected > -1",
                        )
                    check_value(f"cargo.{c}.effects.{t}", "cargo_effect_strength", strength)
                continue
            if k not in table or table[k]["scope"] != "cargo":
                cargo_keys = [x for x in keys if table[x]["scope"] == "cargo"] + ["effects"]
                raise err(f"cargo.{c}.{k}", f"unknown cargo field {k!r}" + suggest(k, cargo_keys))
            check_value(f"cargo.{c}.{k}", k, v)
    for a, arm in enumerate(sc.arms):
        for k, v in arm.parameters.items():
            base = k.split(".", 1)[-1]
            ns = k.split(".", 1)[0] if "." in k else None
            if ns is not None and ns not in sc.populations and ns not in sc.media:
                raise err(
                    f"arms[{a}].parameters.{k}",
                    f"unknown population or medium {ns!r}" + suggest(ns, list(sc.populations) + list(sc.media)),
                )
            if base not in table:
                raise err(f"arms[{a}].parameters.{k}", f"unknown parameter {base!r}" + suggest(base, keys))
            check_value(f"arms[{a}].parameters.{k}", base, v)


def with_parameters(sc: Scenario, parameters: dict[str, Any]) -> Scenario:
    """A copy of ``sc`` with parameter overrides, written as in a scenario file: ``key`` (the
    scenario's ``parameters:`` block) or ``population.key`` / ``medium.key`` (that population's
    or medium's block); checked like the file's (unknown keys, units)."""
    top = dict(sc.parameters)
    pops = {n: dict(p.parameters) for n, p in sc.populations.items()}
    meds = {n: dict(m.parameters) for n, m in sc.media.items()}
    for name, value in parameters.items():
        ns, key = name.split(".", 1) if "." in name else (None, name)
        path = f"parameters.{name}"
        try:
            q = parse_parameter_value(value)
        except QuantityError as exc:
            raise ScenarioError(sc.source, path, str(exc)) from None
        if ns is None:
            top[key] = q
        elif ns in pops:
            pops[ns][key] = q
        elif ns in meds:
            meds[ns][key] = q
        else:
            raise ScenarioError(
                sc.source, path, f"unknown population or medium {ns!r}" + suggest(ns, list(pops) + list(meds))
            )
    out = sc.model_copy(
        update={
            "parameters": top,
            "populations": {n: p.model_copy(update={"parameters": pops[n]}) for n, p in sc.populations.items()},
            "media": {n: m.model_copy(update={"parameters": meds[n]}) for n, m in sc.media.items()},
        }
    )
    _check_parameters(out, lambda path, msg: ScenarioError(sc.source, path, msg))
    return out


def with_dose_grid(sc: Scenario, values: list[float]) -> Scenario:
    """A copy of ``sc`` whose dose grid has ``values`` (in the grid's unit), checked like the file's."""
    if sc.dose_grid is None:
        raise ScenarioError(sc.source, "dose_grid", "the scenario has no dose grid to replace")
    try:
        grid = DoseGrid(values=list(values), unit=sc.dose_grid.unit, label=sc.dose_grid.label)
    except ValidationError as exc:
        raise ScenarioError(
            sc.source, "dose_grid.values", exc.errors()[0]["msg"].removeprefix("Value error, ")
        ) from None
    _check_grid_limit(grid, lambda path, msg: ScenarioError(sc.source, path, msg))
    return sc.model_copy(update={"dose_grid": grid})
