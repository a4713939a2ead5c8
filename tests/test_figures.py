"""Figures a journal would accept: distinct arm styles, readable ticks, no blank figures."""

from __future__ import annotations

import numpy as np
import pytest

import exosim
from conftest import SCENARIOS
from exosim.io import figures


def test_every_arm_has_its_own_colour_marker_and_line_style():
    assert ":" not in figures.ARM_LINES and (0, (1, 1)) not in figures.ARM_LINES  # dotted is the LQ curve's
    styles = [figures.arm_style(k, control=False) for k in range(len(figures.ARM_LINES))]
    keys = {(s["color"], s["marker"], str(s["linestyle"])) for s in styles}
    assert len(keys) == len(styles)
    assert len({s["marker"] for s in styles}) == len(styles)
    control = figures.arm_style(0, control=True)
    assert control["color"] == "black" and control["marker"] not in {s["marker"] for s in styles[:1]}
    assert all(s["color"] in figures.OKABE_ITO for s in styles)


def _ink(path) -> float:
    """Share of pixels that are not background white."""
    import matplotlib.image as mpimg

    img = mpimg.imread(path)[..., :3]
    return float(np.mean(img.sum(axis=2) < 2.9))


def test_a_scenario_without_a_dose_grid_draws_its_survival_over_the_protocol(tmp_path):
    sc = exosim.load_scenario(SCENARIOS / "fractionated_course_exosome_buildup.yaml")
    res = exosim.run(sc, time_courses=True)
    out = tmp_path / "course.png"
    figures.plot_survival(res, res.survival_rows(), out)
    empty = tmp_path / "empty.png"
    fig = figures._canvas((6.4, 4.6))
    fig.add_subplot()
    fig.savefig(empty, dpi=150)
    # the course figure carries far more ink than an empty axis (the blank figure it replaces)
    assert _ink(out) > 3 * _ink(empty)


def test_narrow_survival_ranges_get_decimal_ticks(tmp_path):
    """A bystander effect of 5e-4 is drawn on a linear axis with plain decimals, not as
    9.999 x 10^-1 labels."""
    fig = figures._canvas((4, 3))
    ax = fig.add_subplot()
    y = np.array([1.0, 0.9998, 0.9995])
    ax.plot([0, 1, 2], y)
    ax.set_yscale("log")
    figures._readable_survival_axis(ax, y)
    fig.savefig(tmp_path / "narrow.png")
    assert ax.get_yscale() == "linear"
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all("10^" not in t and "times" not in t for t in labels)


def test_figures_command_writes_the_requested_formats(tmp_path, capsys):
    from exosim.cli import main

    out = tmp_path / "figs"
    args = ["figures", str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml"), "-o", str(out)]
    assert main([*args, "--format", "svg,pdf", "--dpi", "90"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"mir22_exosome_radiosensitisation.svg", "mir22_exosome_radiosensitisation.pdf"} <= names
    assert not any(n.endswith(".png") for n in names)
    assert (out / "mir22_exosome_radiosensitisation.svg").read_text().lstrip().startswith("<?xml")


def test_figures_command_refuses_an_unknown_format_and_writes_nothing(tmp_path, capsys):
    from exosim.cli import main

    out = tmp_path / "figs"
    args = ["figures", str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml"), "-o", str(out)]
    assert main([*args, "--format", "png,tiff"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--format" in err and "'tiff'" in err and "png, pdf, svg" in err
    assert not out.exists()
    assert main([*args, "--dpi", "0"]) == 2
    assert "--dpi" in capsys.readouterr().err and not out.exists()


def test_figure_workers_draw_the_same_files_as_one_process(tmp_path, capsys):
    """``--workers 2`` draws each scenario in its own process (a calibration refit included):
    the same files, byte for byte, as the serial run."""
    from exosim.cli import main

    paths = [
        str(SCENARIOS / n) for n in ("mir22_exosome_radiosensitisation.yaml", "iccm_bystander_medium_transfer.yaml")
    ]
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert main(["figures", *paths, "-o", str(serial), "--format", "png", "--workers", "1"]) == 0
    assert main(["figures", *paths, "-o", str(parallel), "--format", "png", "--workers", "2"]) == 0
    names = sorted(p.name for p in serial.glob("*.png"))
    assert "iccm_bystander_medium_transfer_calibration.png" in names and len(names) == 5
    assert names == sorted(p.name for p in parallel.glob("*.png"))
    for name in names:
        assert (serial / name).read_bytes() == (parallel / name).read_bytes(), name
    for bad in ("0", "many"):
        assert main(["figures", *paths, "-o", str(tmp_path / "none"), "--workers", bad]) == 2
        assert "--workers" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_workers_auto_is_one_per_usable_core():
    """``--workers auto`` (the default of ``exosim figures``): one worker per core this process may
    use; explicit counts must be positive integers."""
    import os

    from exosim.analysis.engine import parse_workers, usable_cores

    assert parse_workers("auto") is None and parse_workers(" AUTO ") is None
    assert parse_workers("3") == 3
    for bad in ("0", "-2", "2.5", "", "all"):
        with pytest.raises(ValueError, match="positive integer or 'auto'"):
            parse_workers(bad)
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or cores)
    if hasattr(os, "sched_getaffinity"):
        assert cores == len(os.sched_getaffinity(0))


def test_sensitivity_panels_say_when_an_output_is_undefined_or_unmoved(tmp_path, monkeypatch):
    from types import SimpleNamespace

    captured = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path, dpi: captured.setdefault("fig", fig))
    rows = [
        {"output": "sf2", "parameter": "a", "coefficient": 0.3},
        {"output": "sf2", "parameter": "b", "coefficient": -0.1},
        {"output": "bystander_survival", "parameter": "a", "coefficient": 0.0},
        {"output": "bystander_survival", "parameter": "b", "coefficient": 0.0},
        {"output": "dmf_at_sf0.1", "parameter": "a", "coefficient": float("nan")},
        {"output": "dmf_at_sf0.1", "parameter": "b", "coefficient": float("nan")},
        {"output": "beta_eff", "parameter": "a", "coefficient": 0.0},
        {"output": "beta_eff", "parameter": "b", "coefficient": 0.0},
    ]
    constant = "constant over the samples\n(within the solver's tolerance)"
    analysis = SimpleNamespace(
        method="local",
        outputs=["sf2", "bystander_survival", "dmf_at_sf0.1", "beta_eff"],
        indices=rows,
        space=SimpleNamespace(names=["a", "b"]),
        screening={"beta_eff": {"constant": True, "note": constant}},  # what the analysis found
    )
    figures.plot_analysis(analysis, tmp_path / "s.png")
    texts = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in captured["fig"].axes}
    assert texts["sf2"] == []
    assert "every index is 0" in texts["bystander_survival"][0]
    assert texts["dmf_at_sf0.1"] == ["not defined for this scenario\nand dose grid"]
    assert texts["beta_eff"] == [constant]  # not "every index is 0": nothing varied to move


def test_scorecard_counts_entries_drawn_at_one_point(tmp_path, monkeypatch):
    """Two entries with the same observed and model values would hide one marker under the other:
    the point says how many it holds."""
    captured = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path, dpi: captured.setdefault("fig", fig))
    role = next(iter(figures.ROLE_STYLE))

    def row(observed, model):
        return {
            "role": role,
            "observed": observed,
            "low": observed / 2,
            "high": observed * 2,
            "model": model,
            "within": "yes",
            "status": "ok",
        }

    rows = [row(0.6, 0.55), row(0.6, 0.55), row(2.0, 3.0)]
    figures.plot_scorecard(rows, {role: {"passed": 3, "entries": 3}}, tmp_path / "s.png")
    texts = [t.get_text() for t in captured["fig"].axes[0].texts]
    assert texts.count("x2") == 1 and not any(t.startswith("x") and t != "x2" for t in texts if len(t) <= 3)
