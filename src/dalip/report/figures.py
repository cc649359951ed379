"""Figures: matplotlib's object API on an Agg canvas (no pyplot, no global backend switch),
so charts work headless and do not disturb a notebook's backend; saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dalip.atomic import atomic_write


def new_figure(width: float, height: float, columns: int = 1) -> tuple[Figure, Any]:
    """A constrained-layout figure (inches) and its row of `columns` axes."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def save_figure(figure: Figure, path: str | Path, dpi: int = 120) -> None:
    """Write the figure as PNG, atomically (the folder is created when missing)."""
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=dpi))
