"""What a mixing law is fitted to: each domain's held-out contrastive loss (and, where a
labelled split is given, zero-shot top-1) of one trained model, cached beside the study.

A measurement is kept in `measures/<run>.json` with the key it was made under (the SHA-256
of the model file and of each validation CSV, the zero-shot data, batch size, modes); a run
whose key still matches is not measured again, and an edited file is measured anew whatever
its size and time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalip.atomic import write_text
from dalip.data.files import check_regular_file
from dalip.evaluation.contrastive import contrastive_loss
from dalip.evaluation.datasets import read_caption_csv
from dalip.evaluation.zero_shot import zero_shot
from dalip.inference.runtime import Runtime
from dalip.inference.specs import file_sha256, load_model
from dalip.readers import read_json


@dataclass(frozen=True)
class Measures:
    """The held-out data of each domain: `val` caption CSVs (required, one per domain) and
    optional labelled `zeroshot` folders/CSVs with their template sets."""

    val: Mapping[str, str]
    zeroshot: Mapping[str, str] = field(default_factory=dict)
    templates: Mapping[str, str] = field(default_factory=dict)
    modes: Sequence[str] = ("fused",)
    batch_size: int = 64
    seed: int = 0

    def check(self, domains: Sequence[str]) -> None:
        """Every domain has a validation CSV with captions; no option names another domain."""
        for option, given in (
            ("--val", self.val),
            ("--zeroshot", self.zeroshot),
            ("--templates", self.templates),
        ):
            for domain in given:
                if domain not in domains:
                    raise ValueError(
                        f"{option}: no source is of domain {domain!r}; the domains are {', '.join(domains)}"
                    )
        for domain in domains:
            if domain not in self.val:
                raise ValueError(
                    f"--val: no validation caption CSV for domain {domain!r} (give --val {domain}=FILE)"
                )
        for domain, path in self.val.items():
            check_regular_file(path, f"--val {domain} caption CSV")  # missing, or a device (/dev/zero)
            read_caption_csv(path)  # a missing caption column: one line naming the file

    def key(self, checkpoint: str | os.PathLike) -> dict[str, Any]:
        """What a measurement depends on: each file by its path and content (SHA-256); a
        zero-shot folder by its path."""

        def content(path: str | os.PathLike) -> Any:
            return (
                [os.path.abspath(path), file_sha256(path)] if os.path.isfile(path) else os.path.abspath(path)
            )

        return {
            "model": content(checkpoint),
            "val": {domain: content(path) for domain, path in sorted(self.val.items())},
            "zeroshot": {domain: content(path) for domain, path in sorted(self.zeroshot.items())},
            "templates": dict(sorted(self.templates.items())),
            "modes": list(self.modes),
            "batch_size": self.batch_size,
            "seed": self.seed,
        }


def measure(
    checkpoint: str | os.PathLike, measures: Measures, cache: Path, runtime: Runtime
) -> dict[str, Any]:
    """{"loss": {domain: {mode: loss}}, "contrastive": {domain: contrastive_loss result},
    "zero_shot": {domain: {mode: top1}}} of one checkpoint, from `cache` when its key matches."""
    key = measures.key(checkpoint)
    if cache.is_file():
        try:
            stored = read_json(cache, "measures cache")
        except (OSError, ValueError):  # unreadable or not ours: measured again
            stored = None
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["result"]
    loaded = load_model(str(checkpoint))
    model, tokenizer, preprocess = loaded.model, loaded.tokenizer, loaded.preprocess
    contrastive = {
        domain: contrastive_loss(
            model, path, tokenizer, preprocess, measures.modes, measures.batch_size, measures.seed, runtime
        )
        for domain, path in measures.val.items()
    }
    accuracy = {}
    for domain, path in measures.zeroshot.items():
        templates = measures.templates.get(domain, "generic")
        found = zero_shot(model, path, tokenizer, preprocess, templates, measures.modes, runtime)
        accuracy[domain] = {mode: found["modes"][mode]["top1"] for mode in found["modes"]}
    result = {
        "loss": {d: {mode: r["loss"] for mode, r in c["modes"].items()} for d, c in contrastive.items()},
        "contrastive": contrastive,
        "zero_shot": accuracy,
    }
    write_text(cache, json.dumps({"key": key, "result": result}, indent=1) + "\n")
    return result
