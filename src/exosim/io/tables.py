"""CSV text of result tables: one number format for every file exosim writes."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from exosim.scenario.result import RunResult

__all__ = ["fmt", "rows_csv", "matrix_csv", "timecourses_csv"]


def fmt(v) -> str:
    """A cell: booleans as true/false, floats with 10 significant digits, NaN as empty."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{float(v):.10g}"
    return str(v)


def _quote(text: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text])
    return buf.getvalue()


def rows_csv(rows: list[dict]) -> str:
    """CSV of rows sharing the first row's keys (header from the first row)."""
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(rows[0]))
    for r in rows:
        w.writerow([fmt(v) for v in r.values()])
    return buf.getvalue()


def matrix_csv(header: list[str], rows) -> str:
    """CSV of a header and rows of cells (formatted with :func:`fmt`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([fmt(v) for v in row])
    return buf.getvalue()


def timecourses_csv(result: RunResult) -> str:
    """timecourses.csv of a run: arm, grid dose, time and one column per recorded series.

    Missing values (NaN, failed members) are written as empty cells, cell by cell.
    """
    header, block, arms = result.timecourse_block()
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(header)
    quoted = {a: _quote(a) for a in set(arms)}
    # one %-format per row (four times faster than numpy's string formatting of the block)
    line = ",".join(["%.10g"] * block.shape[1])
    for a, row in zip(arms, block.tolist()):
        text = line % tuple(row)
        if "nan" in text:
            text = ",".join("" if cell == "nan" else cell for cell in text.split(","))
        buf.write(f"{quoted[a]},{text}\n")
    return buf.getvalue()
