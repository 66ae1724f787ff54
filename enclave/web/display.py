"""What the researcher's and reviewer's pages draw: SQL with marked tokens, and charts of released values.

Both are computed here and drawn by the templates as plain HTML and inline SVG with presentation attributes
(the pages' CSP forbids inline styles and scripts). Nothing here sees data: only released cells.
"""

from __future__ import annotations

from dataclasses import dataclass

from enclave.disclosure.release import Cell, Release


@dataclass(frozen=True)
class Segment:
    text: str
    marked: bool = False
    title: str = ""


@dataclass(frozen=True)
class Mark:
    """Characters to mark on one line: 1-based line and column, a length, and what the mark means."""

    line: int
    col: int
    length: int
    title: str


def marked_lines(source: str, marks: list[Mark]) -> list[list[Segment]]:
    """The source line by line (as str.splitlines() counts lines), each split into plain and marked runs."""
    lines = source.splitlines() or [""]
    out = []
    for number, line in enumerate(lines, start=1):
        spans: list[tuple[int, int, str]] = []
        for mark in marks:
            if mark.line == number and 1 <= mark.col <= len(line):
                start = mark.col - 1
                spans.append((start, min(len(line), start + max(1, mark.length)), mark.title))
        segments, at = [], 0
        for start, end, title in sorted(spans):
            if end <= at:
                continue
            start = max(start, at)
            if start > at:
                segments.append(Segment(line[at:start]))
            segments.append(Segment(line[start:end], True, title))
            at = end
        segments.append(Segment(line[at:]))
        out.append([s for s in segments if s.text or not s.marked])
    return out


@dataclass(frozen=True)
class Bar:
    label: str
    y: float
    text_y: float
    cell: Cell
    x: float = 0.0
    width: float = 0.0
    low_x: float = 0.0
    high_x: float = 0.0


@dataclass(frozen=True)
class Chart:
    column: str
    width: int
    height: int
    plot_left: float
    plot_right: float
    axis_y: float
    bars: list[Bar]
    ticks: list[tuple[float, str]]


WIDTH, LABEL_WIDTH, ROW, TOP = 760, 230, 24, 8


def _shown(cell: Cell) -> bool:
    return not cell.suppressed and isinstance(cell.value, int | float) and not isinstance(cell.value, bool)


def charts(release: Release) -> list[Chart]:
    """One horizontal bar chart per numeric output: a bar per group, its interval as an error bar; a
    suppressed group (or one without an estimate) gets a label and no bar."""
    keys = [i for i, column in enumerate(release.columns) if column.kind == "key"]
    out = []
    for index, column in enumerate(release.columns):
        if column.kind == "key":
            continue
        cells = [row[index] for row in release.rows]
        numbers = [0.0]
        for cell in cells:
            if _shown(cell):
                numbers.append(float(cell.value))  # type: ignore[arg-type]
                numbers += list(cell.interval or ())
        low, high = min(numbers), max(numbers)
        high = high if high > low else low + 1
        left, right = LABEL_WIDTH + 10.0, WIDTH - 40.0

        def x(value: float, low: float = low, high: float = high, left: float = left, right: float = right
              ) -> float:
            return round(left + (value - low) / (high - low) * (right - left), 2)

        bars = []
        for position, (row, cell) in enumerate(zip(release.rows, cells, strict=True)):
            label = ", ".join("(none)" if row[k].value is None else str(row[k].value) for k in keys) or "all"
            y = TOP + position * ROW
            drawn: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # no bar
            if _shown(cell):
                value = float(cell.value)  # type: ignore[arg-type]
                low_end, high_end = cell.interval or (value, value)
                drawn = (min(x(0), x(value)), abs(x(value) - x(0)), x(low_end), x(high_end))
            bars.append(Bar(label, y + 5, y + ROW / 2 + 4, cell, *drawn))
        axis = TOP + len(cells) * ROW + 4
        ticks = sorted({(x(v), f"{v:g}") for v in (low, 0.0, high)})
        out.append(Chart(column.name, WIDTH, int(axis + 24), left, right, axis, bars, ticks))
    return out
