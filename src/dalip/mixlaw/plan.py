"""The pilot runs of a mixing-law study: domains, mixtures, and each pilot's training config.

A base tuning config names each source's `domain`. A mixture gives each domain a share of
the training samples; within a domain the share is divided among its sources in proportion
to their base weights, so a pilot's source weight is `share(domain) * w / sum(w in domain)`
(the weights of a mix are sampling probabilities, `dalip.data.mixing`).
"""

from __future__ import annotations

import copy
import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dalip.config import TrainConfig
from dalip.data.files import read_text_lines
from dalip.mixlaw.law import parameters

DOMAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")


@dataclass(frozen=True)
class Pilot:
    """One pilot tuning: `mixture` (a share per domain, in the plan's domain order)."""

    mixture: tuple[float, ...]
    seed: int
    steps: int
    held_out: bool = False

    def name(self, domains: Sequence[str]) -> str:
        """The pilot's folder: 4 decimals per share, 8 where 4 would round (10/13: 0.76923077),
        so that two mixtures `check_mixtures` lets through never share a folder."""
        shares = "-".join(f"{domain}{_decimals(share)}" for domain, share in zip(domains, self.mixture))
        return f"{shares}-seed{self.seed}-steps{self.steps}"


def _decimals(share: float) -> str:
    return f"{share:.4f}" if abs(share - round(share, 4)) < 1e-12 else f"{share:.8f}"


def domains_of(config: TrainConfig) -> list[str]:
    """The domains of the config's sources in order of first appearance; ValueError naming
    the source without one, or when fewer than two domains remain."""
    domains: list[str] = []
    for index, source in enumerate(config.data.sources):
        where = f"data.sources[{index}] ({source.path})"
        if source.domain is None:
            raise ValueError(
                f"{where}: no domain; dalip mixlaw needs each source's domain (e.g. domain: plant)"
            )
        if not DOMAIN_NAME.fullmatch(source.domain):
            raise ValueError(
                f"{where}.domain: expected 1-40 letters, digits, '-' or '_', got {source.domain!r}"
            )
        if source.domain not in domains:
            domains.append(source.domain)
    if len(domains) < 2:
        count = len(config.data.sources)
        raise ValueError(
            f"data.sources: {count} source{'s' if count != 1 else ''} of one domain "
            f"({domains[0] if domains else 'none'}); dalip mixlaw mixes two or more domains"
        )
    return domains


def parse_shares(
    text: str, domains: Sequence[str], target: str, option: str = "--shares"
) -> list[tuple[float, ...]]:
    """--shares "0.5,0.8,..." (the share of domain `target`, two domains) -> mixtures."""
    if len(domains) != 2:
        raise ValueError(
            f"{option}: the config has {len(domains)} domains ({', '.join(domains)}); "
            "give their mixtures with --mixtures FILE"
        )
    shares = []
    for item in text.split(","):
        try:
            share = float(item)
        except ValueError:
            raise ValueError(
                f"{option}: expected numbers separated by commas, got {item.strip()!r}"
            ) from None
        if not 0.0 < share < 1.0:
            raise ValueError(
                f"{option}: {item.strip()} is outside (0, 1); a share of {target} is between 0 and 1"
            )
        shares.append(share)
    first = list(domains).index(target) == 0
    return [(s, 1.0 - s) if first else (1.0 - s, s) for s in shares]


def read_mixtures(
    path: str | os.PathLike, domains: Sequence[str], option: str = "--mixtures"
) -> list[tuple[float, ...]]:
    """A CSV (or .tsv) with one column per domain and one mixture per row (shares in (0, 1)
    summing to 1, each mixture once); ValueError naming the file (and line) otherwise."""
    lines = read_text_lines(path, f"{option} file")  # a missing file, or a device: one line
    delimiter = "\t" if str(path).lower().endswith(".tsv") else ","
    rows = list(csv.DictReader(lines, delimiter=delimiter))
    header = list(rows[0]) if rows else []
    if sorted(header) != sorted(domains):
        raise ValueError(
            f"{path}: expected the columns {', '.join(domains)} (one per domain), got {', '.join(header)}"
        )
    mixtures: list[tuple[float, ...]] = []
    lines_of: dict[tuple[float, ...], int] = {}  # a mixture's key -> its line
    for number, row in enumerate(rows, start=2):
        try:
            mixture = tuple(float(row[domain]) for domain in domains)
        except (TypeError, ValueError):
            raise ValueError(f"{path}, line {number}: expected a number per domain") from None
        if not all(0.0 < share < 1.0 for share in mixture) or not math.isclose(
            sum(mixture), 1.0, abs_tol=1e-6
        ):
            raise ValueError(f"{path}, line {number}: shares must lie in (0, 1) and sum to 1, got {row}")
        if _key(mixture) in lines_of:
            raise ValueError(
                f"{path}, line {number}: the mixture {_shown(mixture)} repeats line "
                f"{lines_of[_key(mixture)]}; give each pilot mixture once"
            )
        lines_of[_key(mixture)] = number
        mixtures.append(mixture)
    return mixtures


def check_mixtures(
    mixtures: Sequence[tuple[float, ...]], held_out: Sequence[tuple[float, ...]], where: str
) -> None:
    """Repeated mixtures (`where`: the option that gave the fitted ones; held-out ones come
    from --holdout), and fewer fitted mixtures than one law's parameters, are refused."""
    fitted: set[tuple[float, ...]] = set()
    for mixture in mixtures:
        if _key(mixture) in fitted:
            raise ValueError(
                f"{where}: the mixture {_shown(mixture)} is given twice; each pilot mixture once"
            )
        fitted.add(_key(mixture))
    held: set[tuple[float, ...]] = set()
    for mixture in held_out:
        if _key(mixture) in fitted:
            raise ValueError(
                f"--holdout: the mixture {_shown(mixture)} is also a fitted pilot mixture; "
                "hold out mixtures that are not fitted"
            )
        if _key(mixture) in held:
            raise ValueError(f"--holdout: the mixture {_shown(mixture)} is given twice; each mixture once")
        held.add(_key(mixture))
    needed = parameters(len(mixtures[0])) + 1 if mixtures else 4
    if len(mixtures) < needed:
        raise ValueError(
            f"{where}: {len(mixtures)} pilot mixtures to fit (held-out ones left aside) fit no law of "
            f"{needed - 1} parameters per domain; give at least {needed}"
        )


def _key(mixture: Sequence[float]) -> tuple[float, ...]:
    """Two mixtures are one when their shares agree to 8 decimals (as their pilot folders' names)."""
    return tuple(round(share, 8) for share in mixture)


def _shown(mixture: Sequence[float]) -> str:
    return ":".join(f"{share:g}" for share in mixture)


def pilot_config(base: TrainConfig, domains: Sequence[str], pilot: Pilot, out: Path) -> TrainConfig:
    """The base config with the pilot's source weights, seed, steps and folder (warmup and
    checkpoints scaled with the steps)."""
    config = copy.deepcopy(base)
    for source, weight in zip(config.data.sources, domain_weights(base, domains, pilot.mixture)):
        source.weight = weight
    ratio = pilot.steps / base.steps
    config.steps, config.seed = pilot.steps, pilot.seed
    config.optim.warmup_steps = min(pilot.steps, max(0, round(base.optim.warmup_steps * ratio)))
    config.checkpoint_every = max(1, min(pilot.steps, round(base.checkpoint_every * ratio)))
    config.keep_last = 1
    config.out_dir = str(out)
    return config


def domain_weights(base: TrainConfig, domains: Sequence[str], mixture: Sequence[float]) -> list[float]:
    """The `weight:` of each base source for `mixture` (what `pilot_config` sets)."""
    weights = []
    for source in base.data.sources:
        total = sum(s.weight for s in base.data.sources if s.domain == source.domain)
        weights.append(mixture[list(domains).index(source.domain)] * source.weight / total)
    return weights
