"""`dalip quickstart`: DALIP against CLIP tuning on the embedded data, end to end. run.py composes
the experiments' stages, their evaluation and WiSE-FT sweeps; report.py writes report.md."""

from dalip.quickstart.run import RUNS, WISE_FT_WEIGHTS, quickstart, suite

__all__ = ["RUNS", "WISE_FT_WEIGHTS", "quickstart", "suite"]
