"""Which DALIP recipe tunes best? Paired-seed ablation against CLIP tuning on the quickstart benchmark.

For each seed the quickstart's data and start model are made once (the same code path as
`dalip quickstart`); the start model is tuned once with the CLIP loss and once per DALIP
variant, with the same data, steps and seed. Each variant changes one factor of the base
recipe (or, for the "winners" rows, several). Every tuned model is scored by zero-shot
top-1 on the plant and general splits (`--split val` to choose, `--split test` once for
the finalists); the table gives paired differences against the CLIP-tuned model of the
same seed, mean ± standard deviation over seeds:

- plant gain: DALIP plant top-1 - CLIP plant top-1;
- general retention: DALIP general top-1 - CLIP general top-1 (the general test covers
  every concept, the tuning mix only half of them);
- their mean, the paper's "overall" direction.

    python benchmarks/ablate.py --split val                          # screen every variant
    python benchmarks/ablate.py --split val --tune-steps 150         # a cheaper screen
    python benchmarks/ablate.py --split test --variants base weighting=after_norm
    python benchmarks/ablate.py --split test --scratch               # also train from scratch

Runs are cached under --out (a run whose config is unchanged is not trained again), so
the script can be stopped and re-run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine, record_section, run_header  # noqa: E402

from dalip.config import TrainConfig, apply_overrides, config_to_dict, from_dict  # noqa: E402
from dalip.evaluation.suite import run_suite  # noqa: E402
from dalip.experiments import (  # noqa: E402
    BUDGETS,
    generate_data,
    run_config,
    train_stage,
    without_mode_choice,
)

# dalip 0.1's recipe: the base every one-factor variant departs from (every factor spelt
# out, so a run means the same whatever the package's defaults are).
BASE = {
    "model.weighting": "before_norm",
    "model.dropout_kind": "element",
    "model.dropout": "0.1",
    "model.alpha": "0.5",
    "loss.combine": "losses",
}
VARIANTS: dict[str, dict[str, str]] = {
    "base": {},
    "weighting=after_norm": {"model.weighting": "after_norm"},
    "weighting=batchnorm": {"model.weighting": "batchnorm"},
    "weighting=none": {"model.weighting": "none"},
    "dropout=channel-0.5": {"model.dropout_kind": "channel", "model.dropout": "0.5"},
    "dropout=channel-0.1": {"model.dropout_kind": "channel", "model.dropout": "0.1"},
    "dropout=0": {"model.dropout": "0.0"},
    "alpha=0.25": {"model.alpha": "0.25"},
    "alpha=0.75": {"model.alpha": "0.75"},
    "combine=similarity": {"loss.combine": "similarity"},
    "head-warmup": {"optim.head_warmup_steps": "FIFTH"},
    "second-temperature": {"model.separate_second_temperature": "true"},
    "mbdc-lr=10x": {"optim.mbdc_lr": "3e-3"},
}
DOMAINS = ("plant", "general")
# Settings of every run of the recorded ablation that are not the package's defaults now.
PINNED = {"model.alpha": BASE["model.alpha"], "data.workers": "2", "optim.fused": "false"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", default="small", choices=tuple(BUDGETS))
    parser.add_argument("--tune-steps", type=int, default=None, help="screen with fewer tuning steps")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), metavar="NAME", help=f"from: {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--combine",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE[,KEY=VALUE]",
        help="an extra variant with several overrides on the base, e.g. "
        "winners=model.weighting=after_norm,model.dropout=0.0",
    )
    parser.add_argument(
        "--scratch",
        action="store_true",
        help="also train DALIP and CLIP from random weights on the tuning mix",
    )
    parser.add_argument(
        "--scratch-recipe",
        metavar="NAME",
        default=None,
        help="the variant whose recipe the from-scratch DALIP run uses (default: the first given)",
    )
    parser.add_argument("--out", default="runs/ablate")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    return args


def variant_overrides(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    chosen = {name: VARIANTS[name] for name in args.variants}
    for entry in args.combine:
        name, _, pairs = entry.partition("=")
        chosen[name] = dict(pair.split("=", 1) for pair in pairs.split(","))
    return chosen


def stage_config(out: Path, data: Path, budget: Any, seed: int, stage: str) -> TrainConfig:
    """The quickstart's config of a stage with the settings of the recorded ablation pinned
    (`PINNED`), so that its command gives the recorded figures whatever the package's
    defaults become. CLIP-loss runs ignore alpha, but it is part of their config; the
    sample order depends on the number of DataLoader workers; the fused AdamW kernel
    rounds differently from the default one the ablation ran with."""
    config = without_mode_choice(run_config(out, data, budget, seed, stage))  # reads fused and first itself
    pinned = apply_overrides(config_to_dict(config), [f"{key}={value}" for key, value in PINNED.items()])
    return from_dict(TrainConfig, pinned)


def tuned_config(base: TrainConfig, run_dir: Path, overrides: dict[str, str], steps: int) -> TrainConfig:
    """`base` (the quickstart's tuning config) with the overrides, written to `run_dir`."""
    values = {
        key: (str(max(1, steps // 5)) if value == "FIFTH" else value) for key, value in overrides.items()
    }
    data = apply_overrides(config_to_dict(base), [f"{key}={value}" for key, value in values.items()])
    data.update(out_dir=str(run_dir), steps=steps, checkpoint_every=steps)
    return from_dict(TrainConfig, data)


def scored(checkpoint: Path, data: Path, split: str, out: Path) -> dict[str, dict[str, float]]:
    """{mode: {domain: zero-shot top-1}} on `split`, cached beside the checkpoint."""
    cache = out / f"zeroshot-{split}.json"
    if cache.exists() and cache.stat().st_mtime >= checkpoint.stat().st_mtime:
        return json.loads(cache.read_text())
    suite = {
        "name": f"ablate-{split}",
        "modes": ["fused", "first"],
        "batch_size": 64,
        "workers": 2,
        "datasets": [
            {
                "name": domain,
                "task": "zeroshot",
                "domain": domain,
                "path": str(data / domain / split),
                "templates": "plant" if domain == "plant" else "generic",
            }
            for domain in DOMAINS
        ],
    }
    result = run_suite({"model": str(checkpoint)}, suite, out / f"eval-{split}")["models"]["model"][
        "datasets"
    ]
    modes = result[DOMAINS[0]]["modes"]
    scores = {mode: {domain: result[domain]["modes"][mode]["top1"] for domain in DOMAINS} for mode in modes}
    cache.write_text(json.dumps(scores))
    return scores


def train_cached(config: TrainConfig) -> Path:
    train_stage(config, cacheable=True)
    return Path(config.out_dir) / "model.safetensors"


def run_seed(args: argparse.Namespace, seed: int, variants: dict[str, dict[str, str]]) -> dict[str, Any]:
    budget = BUDGETS[args.budget]
    steps = args.tune_steps or budget.tune_steps
    out = Path(args.out) / f"seed-{seed}"
    data = generate_data(out, budget, seed)
    start = train_cached(stage_config(out, data, budget, seed, "start"))
    scores = {"start": scored(start, data, args.split, start.parent)}
    clip_base = stage_config(out, data, budget, seed, "tuned-clip")
    clip = train_cached(tuned_config(clip_base, out / f"clip-{steps}", {}, steps))
    scores["clip"] = scored(clip, data, args.split, clip.parent)
    dalip_base = stage_config(out, data, budget, seed, "tuned-dalip")
    for name, overrides in variants.items():
        run_dir = out / f"{name}-{steps}"
        model = train_cached(tuned_config(dalip_base, run_dir, {**BASE, **overrides}, steps))
        scores[name] = scored(model, data, args.split, run_dir)
    if args.scratch:
        scratch_steps = budget.start_steps + steps
        recipe = {**BASE, **variants[args.scratch_recipe or next(iter(variants))]}
        for kind, base, overrides in (("scratch-clip", clip_base, {}), ("scratch-dalip", dalip_base, recipe)):
            scratch = replace(
                base,
                model=replace(base.model, pretrained=None),
                optim=replace(base.optim, lr=1e-3, warmup_steps=max(1, scratch_steps // 10)),
            )
            model = train_cached(
                tuned_config(scratch, out / f"{kind}-{scratch_steps}", overrides, scratch_steps)
            )
            scores[kind] = scored(model, data, args.split, model.parent)
    return scores


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):+.1f} ± {100 * std:.1f}"


def paired_rows(per_seed: list[dict[str, Any]], names: list[str]) -> list[list[str]]:
    """One row per (variant, mode): paired differences against CLIP (or scratch CLIP)."""
    rows = []
    for name in names:
        reference = "scratch-clip" if name == "scratch-dalip" else "clip"
        for mode in ("fused", "first"):
            plant = [s[name][mode]["plant"] - s[reference]["first"]["plant"] for s in per_seed]
            general = [s[name][mode]["general"] - s[reference]["first"]["general"] for s in per_seed]
            both = [(p + g) / 2 for p, g in zip(plant, general)]
            wins = sum(value > 0 for value in both)
            rows.append(
                [name, mode, _mean_std(plant), _mean_std(general), _mean_std(both), f"{wins}/{len(both)}"]
            )
    return rows


def absolute_rows(per_seed: list[dict[str, Any]], names: list[str]) -> list[list[str]]:
    rows = []
    for name in names:
        mode = "first" if name in ("start", "clip", "scratch-clip") else "fused"
        cells = []
        for domain in DOMAINS:
            values = [s[name][mode][domain] for s in per_seed]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{100 * statistics.fmean(values):.1f} ± {100 * std:.1f}")
        rows.append([name, mode, *cells])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    variants = variant_overrides(args)
    if args.scratch_recipe is not None and args.scratch_recipe not in variants:
        raise SystemExit(
            f"ablate.py: error: --scratch-recipe {args.scratch_recipe!r} is not among the variants {list(variants)}"
        )
    per_seed = [run_seed(args, seed, variants) for seed in args.seeds]
    names = list(variants) + (["scratch-dalip"] if args.scratch else [])
    paired = format_table(
        ["variant", "mode", "plant gain", "general retention", "mean", "seeds > 0 (mean)"],
        paired_rows(per_seed, names),
    )
    absolute = format_table(
        ["model", "mode", f"plant top-1 ({args.split})", f"general top-1 ({args.split})"],
        absolute_rows(per_seed, ["start", "clip", *names] + (["scratch-clip"] if args.scratch else [])),
    )
    print(paired, "\n", absolute, sep="\n")
    steps = args.tune_steps or BUDGETS[args.budget].tune_steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ablate-{args.split}-{steps}.json").write_text(
        json.dumps({"seeds": args.seeds, "scores": per_seed}, indent=1)
    )
    if not args.no_record:
        body = "\n".join(
            [
                run_header("ablate.py", argv, info),
                f"- budget: {args.budget}, tuning steps: {steps}; split: {args.split}; seeds: {args.seeds}",
                f"- base recipe (dalip 0.1): {BASE}; each variant changes the listed factor(s)",
                "- paired differences in points against the CLIP-tuned model of the same seed (CLIP scored "
                "first order), mean ± standard deviation over seeds; zero-shot top-1",
                "",
                paired,
                "",
                "Absolute scores (%, mean ± std):",
                "",
                absolute,
            ]
        )
        scratch = ", and from scratch" if args.scratch else ""
        record_section(
            f"Ablation: DALIP variants vs CLIP tuning ({args.split}, {steps} tuning steps{scratch})", body
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
