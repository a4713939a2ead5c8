"""exosim.model.units: quantities in scenario files (parse_quantity: spellings, conversion to the
base units h, Gy, Gy/h, mL, particles, particles/mL, cells, fraction, and every rejection),
compound unit strings (unit_kinds, conversion_factor) and parameter values (parse_parameter_value)."""

from __future__ import annotations

import math

import pytest

from exosim.model.units import (
    DIMENSIONAL,
    UNITS,
    Quantity,
    QuantityError,
    conversion_factor,
    format_unit_choices,
    parse_parameter_value,
    parse_quantity,
    unit_kinds,
)

BASE = {
    "time": "h",
    "dose": "Gy",
    "dose_rate": "Gy/h",
    "volume": "mL",
    "particles": "particles",
    "concentration": "particles/mL",
    "cells": "cells",
    "copies_per_particle": "copies/particle",
    "fraction": "1",
}


def test_every_kind_has_its_documented_base_unit_with_factor_one():
    assert set(UNITS) == set(BASE)
    for kind, base in BASE.items():
        assert next(iter(UNITS[kind])) == base
        assert UNITS[kind][base] == 1.0
    assert DIMENSIONAL == {"time", "dose", "dose_rate", "volume", "concentration"}


@pytest.mark.parametrize(
    "value, kind, expected",
    [
        # time (base h)
        ("30 min", "time", 0.5),
        ("2 d", "time", 48.0),
        ("1.5 h", "time", 1.5),
        ("3600 s", "time", 1.0),
        ("2 days", "time", 48.0),
        ("1 day", "time", 24.0),
        ("1 week", "time", 168.0),
        ("2 weeks", "time", 336.0),
        ("4 hours", "time", 4.0),
        ("1 hour", "time", 1.0),
        ("90min", "time", 1.5),
        ("  6 h  ", "time", 6.0),
        ("0 h", "time", 0.0),
        # dose (base Gy)
        ("50 cGy", "dose", 0.5),
        ("2 Gy", "dose", 2.0),
        ("250 mGy", "dose", 0.25),
        ("2.5e-1 Gy", "dose", 0.25),
        # dose rate (base Gy/h)
        ("1 Gy/min", "dose_rate", 60.0),
        ("0.5 Gy/h", "dose_rate", 0.5),
        ("10 cGy/min", "dose_rate", 6.0),
        ("100 mGy/h", "dose_rate", 0.1),
        ("1 mGy/min", "dose_rate", 0.06),
        # volume (base mL)
        ("500 uL", "volume", 0.5),
        ("500 µL", "volume", 0.5),
        ("2 mL", "volume", 2.0),
        ("0.25 L", "volume", 250.0),
        # particles and concentrations
        ("1e9 particles", "particles", 1e9),
        (1e9, "particles", 1e9),
        ("1e6 particles/uL", "concentration", 1e9),
        ("1e9 particles/mL", "concentration", 1e9),
        ("2e12 particles/L", "concentration", 2e9),
        # counts and ratios (dimensionless kinds take bare numbers)
        ("1e5 cells", "cells", 1e5),
        (1e5, "cells", 1e5),
        (20000, "cells", 2e4),
        ("50 copies/particle", "copies_per_particle", 50.0),
        (0.3, "copies_per_particle", 0.3),
        ("50 %", "fraction", 0.5),
        ("50%", "fraction", 0.5),
        ("0.25", "fraction", 0.25),
        (0.25, "fraction", 0.25),
        ("1", "fraction", 1.0),
    ],
)
def test_quantities_convert_to_the_base_unit(value, kind, expected):
    got = parse_quantity(value, kind)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12)


def test_equivalent_spellings_give_the_same_value():
    assert parse_quantity("30 min", "time") == pytest.approx(parse_quantity("0.5 h", "time"), rel=1e-15)
    assert parse_quantity("2 d", "time") == parse_quantity("48 h", "time")
    assert parse_quantity("50 cGy", "dose") == pytest.approx(parse_quantity("0.5 Gy", "dose"), rel=1e-15)
    assert parse_quantity("1 Gy/min", "dose_rate") == parse_quantity("60 Gy/h", "dose_rate")
    assert parse_quantity("500 uL", "volume") == pytest.approx(parse_quantity("0.5 mL", "volume"), rel=1e-15)
    assert parse_quantity("1e6 particles/uL", "concentration") == parse_quantity("1e9 particles/mL", "concentration")
    assert parse_quantity("50 %", "fraction") == parse_quantity(0.5, "fraction")


@pytest.mark.parametrize("kind", sorted(DIMENSIONAL))
@pytest.mark.parametrize("value", [2, 2.0, "2", " 2.0 "])
def test_a_bare_number_is_rejected_for_dimensional_kinds(kind, value):
    with pytest.raises(QuantityError) as info:
        parse_quantity(value, kind)
    message = str(info.value)
    assert "missing unit" in message
    assert kind.replace("_", " ") in message
    assert next(iter(UNITS[kind])) in message  # suggests the base unit, e.g. '2 Gy'
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "value, kind",
    [
        ("2 Gy", "time"),
        ("30 min", "dose"),
        ("2 Gy", "dose_rate"),
        ("2 h", "volume"),
        ("1e9 particles", "concentration"),
        ("5 mL", "particles"),
        ("1e9 particles/mL", "cells"),
        ("50 %", "dose"),
        ("2 gy", "dose"),
        ("2 ml", "volume"),
        ("2 Gy/s", "dose_rate"),
        ("3 fortnights", "time"),
        ("2 Gy Gy", "dose"),
    ],
)
def test_a_unit_of_another_kind_is_rejected_naming_the_kind_and_the_accepted_units(value, kind):
    with pytest.raises(QuantityError) as info:
        parse_quantity(value, kind)
    message = str(info.value)
    assert kind.replace("_", " ") in message
    assert format_unit_choices(kind) in message
    for unit in UNITS[kind]:
        if unit != "1":
            assert unit in message


def test_format_unit_choices_lists_every_spelling_but_the_dimensionless_one():
    assert format_unit_choices("dose") == "Gy, cGy, mGy"
    assert format_unit_choices("fraction") == "%"
    assert "min" in format_unit_choices("time") and "d" in format_unit_choices("time").split(", ")


@pytest.mark.parametrize(
    "value, kind",
    [
        ("-1 Gy", "dose"),
        ("-30 min", "time"),
        (-0.5, "fraction"),
        ("-2 mL", "volume"),
        (-10, "cells"),
        ("-1e9 particles/mL", "concentration"),
    ],
)
def test_negative_values_are_rejected_unless_allowed(value, kind):
    with pytest.raises(QuantityError, match="non-negative"):
        parse_quantity(value, kind)
    assert parse_quantity(value, kind, allow_negative=True) < 0


def test_allow_negative_converts_negative_times():
    assert parse_quantity("-30 min", "time", allow_negative=True) == pytest.approx(-0.5, rel=1e-15)
    assert parse_quantity("-1 d", "time", allow_negative=True) == -24.0


@pytest.mark.parametrize(
    "value, kind",
    [
        ("nan h", "time"),
        ("inf Gy", "dose"),
        ("-inf h", "time"),
        ("NaN Gy", "dose"),
        ("Inf mL", "volume"),
        (math.nan, "fraction"),
        (math.inf, "cells"),
        (-math.inf, "particles"),
        (float("nan"), "copies_per_particle"),
    ],
)
def test_non_finite_values_are_rejected(value, kind):
    with pytest.raises(QuantityError, match="finite"):
        parse_quantity(value, kind, allow_negative=True)


@pytest.mark.parametrize("kind", sorted(UNITS))
@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_rejected(kind, value):
    with pytest.raises(QuantityError) as info:
        parse_quantity(value, kind)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [None, [2], {"value": 2}, b"2 Gy", (2, "Gy")])
def test_values_that_are_neither_numbers_nor_strings_are_rejected(value):
    with pytest.raises(QuantityError) as info:
        parse_quantity(value, "dose")
    assert type(value).__name__ in str(info.value)


@pytest.mark.parametrize("value", ["", "Gy", "two Gy", "--2 Gy", "Gy 2"])
def test_strings_without_a_leading_number_are_rejected(value):
    with pytest.raises(QuantityError) as info:
        parse_quantity(value, "dose")
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["2..0 Gy", "1e Gy", "2 Gy extra", "2,5 Gy"])
def test_malformed_numbers_are_rejected(value):
    with pytest.raises(QuantityError, match="dose"):
        parse_quantity(value, "dose")


# -- compound unit strings (parameter table, model states, data files) ----------------------


@pytest.mark.parametrize(
    "text, kinds, multiplier",
    [
        ("mL/(h*site)", {"litre": 1.0, "second": -1.0, "item": -1.0}, 1e-3 / 3600),
        ("1/Gy^2", {"gray": -2.0}, 1.0),
        ("1/Gy", {"gray": -1.0}, 1.0),
        ("1/h", {"second": -1.0}, 1 / 3600),
        ("1/min", {"second": -1.0}, 1 / 60),
        ("Gy/h", {"gray": 1.0, "second": -1.0}, 1 / 3600),
        ("particles/mL", {"item": 1.0, "litre": -1.0}, 1e3),
        ("particles/uL", {"item": 1.0, "litre": -1.0}, 1e6),
        ("copies/particle", {}, 1.0),
        ("particles/(cell*h)", {"item": 1.0, "second": -1.0}, 1 / 3600),
        ("1/(h*cells)", {"second": -1.0}, 1 / 3600),
        ("DSB/(cell*Gy)", {"gray": -1.0}, 1.0),
        ("cells", {}, 1.0),
        ("1", {}, 1.0),
        ("h", {"second": 1.0}, 3600.0),
        ("mL", {"litre": 1.0}, 1e-3),
        ("h/h", {}, 1.0),
        ("Gy^2/h^0.5", {"gray": 2.0, "second": -0.5}, 1 / 60),
        ("mL / (h * site)", {"litre": 1.0, "second": -1.0, "item": -1.0}, 1e-3 / 3600),
    ],
)
def test_unit_kinds_parses_compound_units_into_base_dimensions(text, kinds, multiplier):
    got_kinds, got_multiplier = unit_kinds(text)
    assert got_kinds == kinds
    assert got_multiplier == pytest.approx(multiplier, rel=1e-12)


@pytest.mark.parametrize("text", ["furlong", "mL/fortnight", "Gy*rad"])
def test_unit_kinds_rejects_unknown_symbols_naming_them_and_the_known_ones(text):
    with pytest.raises(QuantityError) as info:
        unit_kinds(text)
    message = str(info.value)
    assert repr(text) in message
    assert "known" in message and "Gy" in message and "mL" in message


@pytest.mark.parametrize("text", ["", "mL/", "h*", "(h*s", "h)", "mL h/", "/h"])
def test_unit_kinds_rejects_unparsable_strings(text):
    with pytest.raises(QuantityError, match="unit"):
        unit_kinds(text)


@pytest.mark.parametrize(
    "text, meaning",
    [
        ("Gy^-1", ({"gray": -1.0}, 1.0)),
        ("µL", ({"litre": 1.0}, 1e-6)),
        ("particles/µL", ({"item": 1.0, "litre": -1.0}, 1e6)),
        ("mL/h!", None),
        ("h^", None),
        ("h^x", None),
        ("mL%", None),
    ],
)
def test_unit_kinds_reads_every_character_or_rejects_the_string(text, meaning):
    """No character may be silently dropped (``Gy^-1`` read as Gy, ``µL`` as L); a string is
    either parsed with its full meaning or rejected with a QuantityError."""
    try:
        kinds, multiplier = unit_kinds(text)
    except QuantityError:
        return
    assert meaning is not None, f"{text!r} was accepted as {kinds}, x{multiplier}"
    assert kinds == meaning[0] and multiplier == pytest.approx(meaning[1], rel=1e-12), (text, kinds, multiplier)


@pytest.mark.parametrize(
    "from_unit, to_unit, factor",
    [
        ("particles/mL", "particles/uL", 1e-3),
        ("particles/uL", "particles/mL", 1e3),
        ("h", "min", 60.0),
        ("min", "h", 1 / 60),
        ("1/h", "1/min", 1 / 60),
        ("mL", "uL", 1e3),
        ("L", "mL", 1e3),
        ("mL/(h*site)", "uL/(min*site)", 1e3 / 60),
        ("Gy/min", "Gy/h", 60.0),
        ("1/Gy^2", "1/Gy^2", 1.0),
        ("cells", "1", 1.0),
    ],
)
def test_conversion_factor_gives_values_in_the_target_unit(from_unit, to_unit, factor):
    assert conversion_factor(from_unit, to_unit) == pytest.approx(factor, rel=1e-12)
    if from_unit != to_unit:
        assert conversion_factor(from_unit, to_unit) * conversion_factor(to_unit, from_unit) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "from_unit, to_unit",
    [("Gy", "h"), ("particles/mL", "particles"), ("1/h", "h"), ("mL", "particles/mL"), ("1/Gy", "1/Gy^2")],
)
def test_conversion_factor_rejects_units_of_different_dimensions(from_unit, to_unit):
    with pytest.raises(QuantityError) as info:
        conversion_factor(from_unit, to_unit)
    assert repr(from_unit) in str(info.value) and repr(to_unit) in str(info.value)


def test_unit_strings_and_the_scenario_unit_table_agree_where_both_know_a_spelling():
    compared = 0
    for kind, table in UNITS.items():
        base = next(iter(table))
        for spelling, factor in table.items():
            try:
                got = conversion_factor(spelling, base)
            except QuantityError:
                continue  # a spelling only scenario quantities use (d, week, cGy, %)
            assert got == pytest.approx(factor, rel=1e-12), (kind, spelling)
            compared += 1
    assert compared >= 10


@pytest.mark.parametrize(
    "value, expected",
    [
        (3, Quantity(3.0, None)),
        (0.25, Quantity(0.25, None)),
        ("0.5 1/h", Quantity(0.5, "1/h")),
        ("1e5 cells", Quantity(1e5, "cells")),
        ("  2  mL/(h*site) ", Quantity(2.0, "mL/(h*site)")),
        ("-1.5", Quantity(-1.5, None)),
    ],
)
def test_parse_parameter_value_splits_number_and_unit(value, expected):
    got = parse_parameter_value(value)
    assert got == expected and isinstance(got.value, float)
    assert parse_parameter_value(got) is got


@pytest.mark.parametrize("value", [True, None, [1], "", "fast", "nan 1/h", "inf", float("nan"), math.inf])
def test_parse_parameter_value_rejects_non_numbers(value):
    with pytest.raises(QuantityError):
        parse_parameter_value(value)
