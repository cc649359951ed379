"""`dalip models`: the open_clip architectures dalip can start from, with their towers, default
loss form and pretrained tags, or why one is refused (as `open_clip.list_pretrained()` for dalip)."""

from __future__ import annotations

import argparse
import fnmatch
import json
import re

from dalip.model.catalog import Architecture, architectures


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="open_clip architectures dalip supports (towers, loss form, pretrained tags) or refuses",
        description="Lists open_clip's registered architectures (and dalip's tiny ones) with the "
        "image and text tower families dalip reads tokens from, the loss form a run starting from "
        "them uses by default (sigmoid for the SigLIP family), their pretrained tags, and, for the "
        "architectures dalip cannot wrap, why.",
    )
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. '*SigLIP2*'")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--pretrained", action="store_true", help="only architectures with pretrained tags")
    which.add_argument("--unsupported", action="store_true", help="only the architectures dalip refuses")
    parser.add_argument("--json", action="store_true", help="one JSON object per architecture")
    parser.add_argument(
        "--families",
        action="store_true",
        help="one line per image tower family: counts, loss forms, examples",
    )
    parser.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    chosen = [
        a
        for a in architectures()
        if fnmatch.fnmatchcase(a.name.lower(), args.pattern.lower())
        and (a.pretrained or not args.pretrained)
        and (not a.supported or not args.unsupported)
    ]
    if not chosen:
        raise ValueError(f"no architecture matches {args.pattern!r} (see dalip models)")
    if args.families:
        print(family_table(chosen))
        return 0
    if args.json:
        for architecture in chosen:
            print(json.dumps({**vars(architecture), "supported": architecture.supported}))
        return 0
    print(table(chosen))
    supported = sum(a.supported for a in chosen)
    print(f"\n{supported} of {len(chosen)} supported")
    return 0


def table(rows: list[Architecture]) -> str:
    """Aligned text columns: name, image tower, text tower, loss form, tags, supported or why not."""
    lines = [("architecture", "image tower", "text tower", "loss", "pretrained", "dalip")]
    for a in rows:
        tags = ", ".join(a.pretrained) if len(a.pretrained) <= 2 else f"{len(a.pretrained)} tags"
        lines.append((a.name, a.image_tower, a.text_tower, a.loss_form, tags or "-", a.reason or "supported"))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:5], widths)) + "  " + line[5]
        for line in lines
    )


def family_table(rows: list[Architecture]) -> str:
    """Markdown: per image tower family, the architectures (with pretrained weights), their
    loss forms, examples with weights, and how many dalip supports (why not, in short)."""
    families: dict[str, list[Architecture]] = {}
    for a in rows:
        families.setdefault(a.image_tower.split(" (")[0], []).append(a)
    lines = [
        "| image tower family | architectures (with weights) | loss form | e.g. | dalip |",
        "| --- | --- | --- | --- | --- |",
    ]
    for family, members in sorted(families.items()):
        weighted = [a for a in members if a.pretrained]
        forms = ", ".join(sorted({a.loss_form for a in members}))
        examples = ", ".join(a.name for a in ([a for a in weighted if a.supported] or members)[:3])
        refused = [a for a in members if not a.supported]
        verdict = f"all {len(members)} supported"
        if refused:
            why = sorted({re.sub(r" '[^']*'", "", a.reason.split(";")[0]) for a in refused})
            verdict = f"{len(members) - len(refused)} supported; {len(refused)} refused ({', '.join(why)})"
        lines.append(f"| {family} | {len(members)} ({len(weighted)}) | {forms} | {examples} | {verdict} |")
    return "\n".join(lines)
