"""Moved to `dalip.inference.predict` in 0.6; this name stays for 0.6 only."""

from dalip.inference.predict import *  # noqa: F403
