"""The frontier benchmark: tuning recipes from one start model over paired seeds, compared by
general accuracy at matched plant gain (`dalip frontier`), with 95% intervals.

Data and start model are the quickstart's (`dalip.quickstart`: plant 10 : general 3, the
general part covering every other concept), with larger evaluation splits (`--test-per-class`,
the validation split half of it) so that sampling error is not the main noise. Each recipe
tunes from the start model with the same data, steps and seed per pair (the quickstart's
tuning config plus the recipe's options); every run, sweep and the start model are cached in
`--out`, so a stopped benchmark continues where it was and adding seeds costs only those.
Choose settings with `--split val`; report the test split once.

`--architecture` and `--form` change the model family and the loss form of every stage, start
model included: `--architecture dalip-tiny-sigmoid --form sigmoid` starts from a SigLIP-style
tiny model (timm ViT with `map` pooling) trained with the sigmoid loss, and "clip" is then plain
SigLIP tuning (first order only), "dalip" the DALIP-sigmoid loss.

    python benchmarks/frontier.py --out bench-frontier --seeds 0,1,2,3,4 --split val
    python benchmarks/frontier.py --out bench-frontier --seeds 0,1 --recipes clip,dalip --start-from quickstart/start
    python benchmarks/frontier.py --out bench-frontier --seeds 0,1,2,3,4 --split test   # once, at the end

A method option is compared the same way, as a variant: a recipe of its own whose name ends in
the loss it tunes with and whose options override the quickstart's tuning config (the ablation
of README "The method"), e.g.

    python benchmarks/frontier.py --out bench-frontier --seeds 0,1,2 --recipes clip,dalip \
        --variant weighting-none-dalip=model.weighting=none --variant alpha75-dalip=model.alpha=0.75
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from dalip.cli import main as dalip_main  # noqa: E402
from dalip.config import (  # noqa: E402
    DistillConfig,
    L2SPConfig,
    LoRAConfig,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    from_dict,
)
from dalip.experiments import (  # noqa: E402
    BUDGETS,
    generate_data,
    run_config,
    train_stage,
    without_mode_choice,
)
from dalip.frontier.curves import curve_from_sweep, frontier, paired_interval  # noqa: E402

RECIPES = [f"{method}{loss}" for method in ("", "lora-", "l2sp-", "distill-") for loss in ("clip", "dalip")]
MODES = ("fused", "first", "second")  # every sweep scores each; DALIP recipes are read in each


@dataclasses.dataclass(frozen=True)
class Settings:
    """The retention methods' settings (each recipe is one method with one loss). The LoRA
    learning rate and the L2-SP coefficient are the better of a val-split screen on seed 0
    (LoRA 3e-3 / 1e-2, L2-SP 0.1 / 1.0: RESULTS.md); 1e-3 left LoRA almost untuned."""

    lora_rank: int = 4
    lora_lr: float = 1e-2
    l2sp: float = 0.1
    distill: float = 1.0

    def options(self, recipe: str) -> tuple[str, dict[str, Any]]:
        """recipe -> (loss, the options it adds to the quickstart's tuning config)."""
        method, _, loss = recipe.rpartition("-")
        rank = self.lora_rank
        return loss, {
            "": {},
            "lora": {"lora": LoRAConfig(rank=rank, alpha=float(rank)), "optim": {"lr": self.lora_lr}},
            "l2sp": {"l2sp": L2SPConfig(coefficient=self.l2sp)},
            "distill": {"distill": DistillConfig(coefficient=self.distill)},
        }[method]


@dataclasses.dataclass(frozen=True)
class Family:
    """The model family of every stage: an architecture and the loss form ("auto": the
    architecture's own, sigmoid for a config with a logit bias)."""

    architecture: str = "dalip-tiny"
    form: str = "auto"

    def apply(self, config: Any) -> Any:
        """`config` (a quickstart stage's) on this family; the default family leaves it as it is,
        so the runs cached by earlier versions of this benchmark stay valid."""
        if self == Family():
            return config
        model = dataclasses.replace(config.model, name=self.architecture)
        return dataclasses.replace(config, model=model, loss=dataclasses.replace(config.loss, form=self.form))


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`--variant NAME=KEY=VALUE[,KEY=VALUE]` -> (NAME, ["KEY=VALUE", ...]). NAME ends in `-clip` or
    `-dalip`, the loss the variant tunes with; the keys are `dalip train --set` fields."""
    name, _, pairs = text.partition("=")
    overrides = [pair for pair in pairs.split(",") if pair.strip()]
    if not name.endswith(("-clip", "-dalip")) or name in RECIPES or not overrides:
        raise ValueError(
            f"--variant {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE] with NAME ending in -clip or -dalip "
            f"(not one of the recipes), e.g. weighting-none-dalip=model.weighting=none"
        )
    return name, overrides


def recipe_config(
    out: Path,
    data: Path,
    budget: Any,
    seed: int,
    recipe: str,
    settings: Settings,
    family: Family = Family(),
    overrides: list[str] | None = None,
) -> Any:
    """The quickstart's tuning config of `recipe`'s loss, with the recipe's options; a variant
    (`overrides` given) is its loss's plain recipe with those `--set` overrides instead."""
    if overrides is None:
        loss, options = settings.options(recipe)
    else:
        loss, options = recipe.rpartition("-")[2], {}
    config = family.apply(run_config(out, data, budget, seed, f"tuned-{loss}"))
    # Every mode is read from the sweeps; benchmarks/answer_modes.py replays the choice on val.
    config = without_mode_choice(config)
    if overrides:
        config = from_dict(TrainConfig, apply_overrides(config_to_dict(config), overrides))
    optim = dataclasses.replace(config.optim, **options.get("optim", {}))
    extra = {key: value for key, value in options.items() if key != "optim"}
    return dataclasses.replace(config, optim=optim, out_dir=str(out / "runs" / f"{recipe}@{seed}"), **extra)


def train_start(
    out: Path, data: Path, budget: Any, steps: int, every: int, family: Family = Family()
) -> list[tuple[int, float]]:
    """Train (or reuse) the start model for `steps`, with a zero-shot check on the general
    validation split every `every` steps; returns [(step, general val top-1)], to show it
    reached a plateau."""
    config = family.apply(run_config(out, data, budget, 0, "start"))
    config = dataclasses.replace(
        config,
        steps=steps,
        optim=dataclasses.replace(config.optim, warmup_steps=max(1, steps // 10)),
        checkpoint_every=max(1, steps // 2),
        log_every=max(1, steps // 50),
        eval_every=every,
        data=dataclasses.replace(config.data, val=str(data / "general/val"), val_templates="generic"),
    )
    train_stage(config, cacheable=True)
    records = [json.loads(line) for line in (out / "start" / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["eval"]["modes"]["first"]["top1"]) for r in records if "eval" in r]


def needed_seeds(spread: float, effect: float = 0.01, power: float = 0.8) -> int | None:
    """Paired seeds for a two-sided 5% test to detect `effect` with `power`, at the paired
    standard deviation `spread` (normal approximation, then t-corrected once)."""
    if spread <= 0:
        return None
    z = stats.norm.ppf(0.975) + stats.norm.ppf(power)
    n = max(2, math.ceil((z * spread / effect) ** 2))
    t = stats.t.ppf(0.975, n - 1) + stats.t.ppf(power, n - 1)
    return max(2, math.ceil((t * spread / effect) ** 2))


def noise_summary(report: dict[str, Any], baseline: str) -> dict[str, Any]:
    """Per recipe: the paired standard deviation of general accuracy at full baseline gain,
    and the seeds a 1-point difference needs at it."""
    rows = {(row["recipe"], row["seed"]): row for row in report["curves"]}
    summary = {}
    for recipe in report["paired"]:
        pairs = [
            rows[(recipe, seed)]["general_at_level"]["1"] - rows[(baseline, seed)]["general_at_level"]["1"]
            for seed in report["paired"][recipe]["seeds"]
            if rows[(recipe, seed)]["general_at_level"].get("1") is not None
            and rows[(baseline, seed)]["general_at_level"].get("1") is not None
        ]
        spread = stats.tstd(pairs) if len(pairs) > 1 else None
        summary[recipe] = {"pairs": len(pairs), "sd": spread, "seeds_for_1_point": needed_seeds(spread or 0)}
    return summary


def _text(summary: dict[str, Any] | None) -> str:
    """A paired summary in points: mean [95% t interval]."""
    if summary is None:
        return "-"
    if summary["low"] is None:
        return f"{100 * summary['mean']:+.1f}"
    return f"{100 * summary['mean']:+.1f} [{100 * summary['low']:+.1f}, {100 * summary['high']:+.1f}]"


def summary(report: dict[str, Any], baseline: str, measures: str) -> _common.Summary:
    """RESULTS.md's row: paired differences to the baseline; beyond 3 recipes, dalip's and those of
    the recipe that keeps the most general accuracy at half the baseline's gain."""
    paired = report["paired"]

    def at_half(name: str) -> float:
        reading = paired[name]["general_at_level"].get("0.5")
        return -1.0 if reading is None else reading["mean"]

    shown = (
        list(paired) if len(paired) <= 3 else [n for n in paired if n in ("dalip", max(paired, key=at_half))]
    )
    return _common.Summary(
        measures,
        "; ".join(
            f"{name} - {baseline}: plant gain {_text(paired[name]['gain'])}, general (tuned) "
            f"{_text(paired[name]['general'])}, general at 50% gain "
            f"{_text(paired[name]['general_at_level'].get('0.5'))}"
            for name in shown
        ),
        f"none (paired differences to {baseline}, mean [95% t interval], points)",
    )


def mode_readings(
    sweeps: Path, recipes: list[str], seeds: list[int], levels: tuple[float, ...] = (0.5, 0.75)
) -> str:
    """Markdown: each DALIP recipe answering in each similarity mode, paired with CLIP tuning (which
    answers first order) on the same seeds; then the same tuned weights (w = 1) answering first or
    second order minus fused, paired by seed. (The mode each would choose on val:
    benchmarks/answer_modes.py.)"""
    curves = []
    for seed in seeds:
        for recipe in recipes:
            results = json.loads((sweeps / f"{recipe}@{seed}" / "results.json").read_text())
            for mode in MODES if recipe.endswith("dalip") else ("first",):
                name = f"{recipe} ({mode})" if recipe.endswith("dalip") else recipe
                curves.append(curve_from_sweep(results, name, str(seed), "plant", "general", mode))
    report = frontier(curves, "clip", levels)
    at = " | ".join(f"general at {100 * level:g}% gain" for level in levels)
    lines = [
        "Each DALIP recipe answering in each mode minus CLIP tuning (first order), paired by seed "
        "(mean [95% t interval], points; in brackets: seeds whose curve reaches the level):",
        "",
        f"| recipe (mode) | seeds | plant gain | general (tuned) | {at} |",
        "|" + " --- |" * (4 + len(levels)),
    ]
    for name, paired in report["paired"].items():
        if "(" not in name:
            continue
        cells = []
        for level in (f"{value:g}" for value in levels):
            reading = paired["general_at_level"][level]
            cells.append("-" if reading is None else f"{_text(reading)} ({reading['reached']})")
        lines.append(
            f"| {name} | {len(paired['seeds'])} | {_text(paired['gain'])} | {_text(paired['general'])} | "
            f"{' | '.join(cells)} |"
        )
    lines += ["", "The same tuned weights (w = 1) answering in another mode, minus fused (points):", ""]
    lines += ["| recipe | mode | seeds | plant | general |", "| --- | --- | --- | --- | --- |"]
    by_name = {(c.recipe, c.seed): c for c in curves}
    for recipe in (r for r in recipes if r.endswith("dalip")):
        for mode in MODES[1:]:
            pairs = [
                (by_name[(f"{recipe} ({mode})", str(s))], by_name[(f"{recipe} (fused)", str(s))])
                for s in seeds
            ]
            plant = paired_interval([ours.domain[-1] - fused.domain[-1] for ours, fused in pairs])
            general = paired_interval([ours.general[-1] - fused.general[-1] for ours, fused in pairs])
            lines.append(f"| {recipe} | {mode} | {len(pairs)} | {_text(plant)} | {_text(general)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="cache and report folder")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="paired seeds (default %(default)s)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"some of {', '.join(RECIPES)}")
    parser.add_argument(
        "--split", choices=["val", "test"], default="val", help="evaluation split (default val)"
    )
    parser.add_argument(
        "--budget", choices=list(BUDGETS), default="small", help="the quickstart budget (default small)"
    )
    parser.add_argument(
        "--test-per-class", type=int, default=60, help="test images per class (default 60; val: half)"
    )
    parser.add_argument("--start-from", help="a quickstart folder whose start model (and data) to reuse")
    parser.add_argument(
        "--start-steps", type=int, default=1500, help="start model's steps (default %(default)s)"
    )
    parser.add_argument(
        "--start-eval-every",
        type=int,
        default=250,
        help="zero-shot general val accuracy of the start model every N steps (default %(default)s)",
    )
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag,
            type=int if field.type == "int" else float,
            default=field.default,
            help=f"{field.name.replace('_', ' ')} (default %(default)s)",
        )
    parser.add_argument(
        "--weights", default="0,0.25,0.5,0.75,1", help="WiSE-FT weights of each sweep (default %(default)s)"
    )
    parser.add_argument(
        "--architecture", default="dalip-tiny", help="every stage's model (default %(default)s)"
    )
    parser.add_argument(
        "--form", choices=["auto", "softmax", "sigmoid"], default="auto", help="every stage's loss form"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE[,KEY=VALUE]",
        help="a recipe of its own: NAME ends in -clip or -dalip (its loss), the overrides are "
        "dalip train --set fields, e.g. weighting-none-dalip=model.weighting=none (repeatable)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    recipes = [r for r in args.recipes.split(",") if r.strip()]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown or "clip" not in recipes:
        parser.error(f"--recipes: expected some of {', '.join(RECIPES)}, including the baseline clip")
    try:
        variants = dict(parse_variant(text) for text in args.variant)
    except ValueError as error:
        parser.error(str(error))
    recipes += [name for name in variants if name not in recipes]
    settings = Settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)})
    family = Family(args.architecture, args.form)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = dataclasses.replace(BUDGETS[args.budget], test_per_class=args.test_per_class)
    started = time.perf_counter()
    plateau: list[tuple[int, float]] = []
    if args.start_from:  # the quickstart's own data and start model: its test split as it is
        data, start = Path(args.start_from) / "data", Path(args.start_from) / "start" / "model.safetensors"
    else:
        data = generate_data(out, budget, seed=0)
        plateau = train_start(out, data, budget, args.start_steps, args.start_eval_every, family)
        start = out / "start" / "model.safetensors"
    for seed in seeds:
        for recipe in recipes:
            config = recipe_config(out, data, budget, seed, recipe, settings, family, variants.get(recipe))
            config = dataclasses.replace(
                config, model=dataclasses.replace(config.model, pretrained=str(start))
            )
            train_stage(config, cacheable=True)
    suite = _write_suite(out, data, args.split)
    frontier_dir = out / f"frontier-{args.split}"
    tuned = [
        f"{recipe}@{seed}={out / 'runs' / f'{recipe}@{seed}' / 'model.safetensors'}"
        for seed in seeds
        for recipe in recipes
    ]
    if frontier_dir.exists() and not (frontier_dir / ".dalip-output.json").exists():
        shutil.rmtree(frontier_dir)
    command = [
        "frontier",
        "--start",
        str(start),
        "--suite",
        str(suite),
        "--out",
        str(frontier_dir),
        "--force",
        "-q",
        "--weights",
        args.weights,
    ]
    status = dalip_main([*command, "--baseline", "clip", "--tuned", *tuned])
    if status:
        return status
    report = json.loads((frontier_dir / "frontier.json").read_text())
    split_size = {d: len(list((data / d / args.split).rglob("*.jpg"))) for d in ("plant", "general")}
    sizes = f"{split_size['plant']} plant and {split_size['general']} general {args.split} images"
    noise = noise_summary(report, "clip")
    family_text = "" if family == Family() else f"model {family.architecture}, loss form {family.form}; "
    text = (frontier_dir / "frontier.md").read_text()
    lines = []
    for recipe, figures in noise.items():
        spread = "-" if figures["sd"] is None else f"{100 * figures['sd']:.2f}"
        lines.append(f"| {recipe} | {figures['pairs']} | {spread} | {figures['seeds_for_1_point'] or '-'} |")
    body = (
        f"Split: {args.split}; seeds {args.seeds}; budget {args.budget}; {family_text}data: {sizes}; "
        f"{time.perf_counter() - started:.0f} s (cached runs and sweeps are reused).\n\n{text}\n"
        f"Noise (paired SD of general at full gain, points) and the seeds a 1-point difference "
        f"needs (two-sided 5%, power 0.8):\n\n"
        + "\n".join(["| recipe | pairs | SD | seeds |", "| --- | --- | --- | --- |", *lines])
    )
    if plateau:
        curve = ", ".join(f"{step}: {100 * top1:.1f}" for step, top1 in plateau)
        body = (
            f"Start model: {args.start_steps} steps of first-order training on the general data; general val "
            f"top-1 (%) by step: {curve}.\n\n{body}"
        )
    body += "\n\n" + mode_readings(frontier_dir / "sweeps", recipes, seeds)
    print(body)
    if not args.no_record:
        info = _common.machine("cpu")
        header = _common.run_header("frontier.py", argv if argv is not None else sys.argv[1:], info)
        title = f"Frontier benchmark (frontier.py, {args.split})"
        if family != Family():
            title = f"Frontier benchmark, {family.architecture} {family.form} (frontier.py, {args.split})"
        measures = (
            f"general top-1 at matched plant gain, {len(recipes)} recipes x {len(seeds)} paired seeds "
            f"({family.architecture}, {family.form}; {args.split} split)"
        )
        _common.record_section(title, header + "\n\n" + body, summary(report, "clip", measures))
    return 0


def _write_suite(out: Path, data: Path, split: str) -> Path:
    suite = {
        "name": f"frontier-{split}",
        "modes": list(MODES),
        "batch_size": 64,
        "datasets": [
            {
                "name": "plant",
                "task": "zeroshot",
                "domain": "plant",
                "path": str(data / f"plant/{split}"),
                "templates": "plant",
            },
            {
                "name": "general",
                "task": "zeroshot",
                "domain": "general",
                "path": str(data / f"general/{split}"),
                "templates": "generic",
            },
        ],
    }
    path = out / f"suite-{split}.json"
    path.write_text(json.dumps(suite, indent=1))
    return path


if __name__ == "__main__":
    raise SystemExit(main())
