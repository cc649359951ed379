"""mkdocs hooks: the pages generated from the code (the configuration and command-line references),
filled in at build time so that they cannot drift from what `dalip` checks and parses."""

from __future__ import annotations

import re
from pathlib import Path

from dalip.cli.reference import cli_reference
from dalip.config_reference import config_reference

README = Path(__file__).resolve().parents[1] / "README.md"
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def readme_page() -> str:
    """README.md as the site's home page: its links into docs/ relative to the site, its
    documentation section (this site) left out."""
    text = README.read_text().replace("](docs/", "](")
    return re.sub(r"^## Documentation\n.*?(?=^## )", "", text, flags=re.S | re.M)


def results_summary() -> str:
    """The summary table at the top of benchmarks/RESULTS.md (one row per benchmark)."""
    lines = RESULTS.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| benchmark |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


GENERATED = {
    "<!-- generated: the summary table of benchmarks/RESULTS.md -->": results_summary,
    "<!-- generated: the README (docs/hooks.py), its links made relative to this site -->": readme_page,
    "<!-- generated: config reference (dalip.config_reference) -->": config_reference,
    "<!-- generated: command-line reference (dalip.cli.reference) -->": cli_reference,
}


def on_page_markdown(markdown: str, **_: object) -> str:
    for marker, generate in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
