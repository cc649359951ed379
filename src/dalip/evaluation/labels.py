"""Moved to `dalip.inference.labels` in 0.6; this name stays for 0.6 only."""

from dalip.inference.labels import *  # noqa: F403
