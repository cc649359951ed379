"""Moved to `dalip.inference.runtime` in 0.6; this name stays for 0.6 only."""

from dalip.inference.runtime import *  # noqa: F403
