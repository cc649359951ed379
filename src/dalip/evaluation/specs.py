"""Moved to `dalip.inference.specs` in 0.6; this name stays for 0.6 only."""

from dalip.inference.specs import *  # noqa: F403
