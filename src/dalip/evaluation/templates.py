"""Moved to `dalip.inference.templates` in 0.6; this name stays for 0.6 only."""

from dalip.inference.templates import *  # noqa: F403
