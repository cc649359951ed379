"""Moved to `dalip.inference.taxon_predict` in 0.6; this name stays for 0.6 only."""

from dalip.inference.taxon_predict import *  # noqa: F403
