"""Prompt template sets for zero-shot classification.

A set is a text file with one template per line; `{}` marks where the class name goes.
Blank lines and lines starting with "#" are ignored. Built-in sets: `generic` (CLIP-style
photo prompts), `plant` (plant and leaf prompts) and `none` (the class name alone), as files
beside this one; `openai` (OpenAI's 80 ImageNet prompts) and `simple` (open_clip's 7), read
from `open_clip.zero_shot_metadata` so that zero-shot numbers compare with published ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from open_clip import zero_shot_metadata

from dalip.data.captions import check_template
from dalip.data.files import read_text_lines

TEMPLATE_DIR = Path(__file__).parent
OPEN_CLIP_SETS = {
    "openai": zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES,
    "simple": zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES,
}


def builtin_template_sets() -> list[str]:
    """Names of the built-in template sets (file stems in this folder, then open_clip's)."""
    return sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt")) + sorted(OPEN_CLIP_SETS)


def template_set_name(spec: str | os.PathLike | Sequence[str]) -> str:
    """How results name a template spec: the built-in set, the file's absolute path, or "custom"."""
    if not isinstance(spec, (str, os.PathLike)):
        return "custom"
    name = os.fspath(spec)
    return name if name in builtin_template_sets() else os.path.abspath(name)


def read_template_file(path: str | os.PathLike) -> list[str]:
    """One template per non-blank, non-comment line; ValueError when a line has no `{}`."""
    lines = read_text_lines(path, "template file")
    templates = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return check_templates(templates, str(path))


def check_templates(templates: Sequence[str], where: str) -> list[str]:
    """The templates as a list; ValueError if empty or one lacks the `{}` placeholder."""
    templates = list(templates)
    if not templates:
        raise ValueError(f"{where}: no templates (expected one template per line with '{{}}')")
    return [check_template(template, where) for template in templates]


def load_templates(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """A built-in set name (`generic`, `plant`, `none`, `openai`, `simple`), a template file, or a list."""
    if not isinstance(spec, (str, os.PathLike)):
        return check_templates(spec, "templates")
    name = str(spec)
    if name in OPEN_CLIP_SETS:  # open_clip keeps them as functions of the class name
        return check_templates([template("{}") for template in OPEN_CLIP_SETS[name]], name)
    if name in builtin_template_sets():
        return read_template_file(TEMPLATE_DIR / f"{name}.txt")
    if os.path.exists(name):
        return read_template_file(name)
    raise ValueError(
        f"templates {name!r}: expected a built-in set ({', '.join(builtin_template_sets())}) "
        f"or a file with one template per line"
    )
