"""User text made safe to show: names from the data (class folders, `classes.txt`, labels,
captions, file names) reach the terminal and the Markdown reports through `printable`, so an
escape sequence in a folder name cannot recolour, move or clear the user's terminal.
Machine-readable outputs (results.json, CSV) keep the exact text."""

from __future__ import annotations

import re

# C0 controls (tab and newline too: a name holds neither), DEL and C1 controls.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with every control character as a visible escape, as `repr` writes it (ESC ->
    `\\x1b`, BEL -> `\\x07`, a tab -> `\\t`); every other character, "é" or "花", as it is."""
    return CONTROL_CHARACTERS.sub(lambda found: repr(found.group())[1:-1], text)
