"""`dalip frontier`: which tuning recipe keeps more general accuracy for the domain accuracy it
gains. curves.py reads a WiSE-FT sweep as a curve and compares curves at matched gain (paired
seeds, t intervals); sweeps.py finds or runs the sweeps; report.py writes the table, JSON and
plot."""

from dalip.frontier.curves import DEFAULT_LEVELS, Curve, curve_from_sweep, frontier, paired_interval
from dalip.frontier.report import frontier_table, write_frontier_report
from dalip.frontier.sweeps import cached_sweep, read_sweep

__all__ = [
    "DEFAULT_LEVELS",
    "Curve",
    "cached_sweep",
    "curve_from_sweep",
    "frontier",
    "frontier_table",
    "paired_interval",
    "read_sweep",
    "write_frontier_report",
]
