"""Figures a journal would accept: distinct arm styles, readable ticks, no blank figures."""

from __future__ import annotations

import numpy as np

import exosim
from conftest import SCENARIOS
from exosim.io import figures


def test_every_arm_has_its_own_colour_marker_and_line_style():
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
