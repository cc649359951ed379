"""`dalip mixlaw`: choose the domain mix from pilot tunings with a data mixing law."""

from __future__ import annotations

import argparse
from pathlib import Path

from dalip.cli.common import add_set_flag, count
from dalip.config import TrainConfig, load_train_config
from dalip.inference.runtime import Runtime
from dalip.mixlaw.build import build_study
from dalip.mixlaw.embedded import EPS, HELD_OUT, SHARES, embedded_base
from dalip.mixlaw.study import Study, run_study, summary_lines
from dalip.outputs import OutputFolder


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mixlaw",
        help="choose the domain:general mix from pilot tunings (a data mixing law)",
        description="Tune at a few pilot mixtures (ordinary dalip runs, cached), measure each domain's "
        "held-out contrastive loss, fit L(r) = c + k exp(t . r) per domain, and recommend the mixture "
        "your objective asks for, with bootstrap intervals; report in OUT (mixlaw.json, report.md, "
        "mixlaw.png). Reruns into OUT reuse finished pilots.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", "-c", help="base tuning config: two or more sources, each with a domain")
    where.add_argument(
        "--embedded", action="store_true", help="the quickstart's data and start model (minutes)"
    )
    add_set_flag(parser, "optim.lr=1e-4 (the base config's)")
    parser.add_argument("--out", required=True, help="the study's folder (pilots, measures, report)")
    parser.add_argument(
        "--quickstart",
        metavar="DIR",
        default="quickstart",
        help="--embedded: reuse this quickstart folder's data and start model, read only, when they "
        "match (default ./quickstart); else they are made in OUT",
    )
    _pilot_flags(parser.add_argument_group("pilots"))
    _measure_flags(parser.add_argument_group("measurement"))
    _objective_flags(parser.add_argument_group("objective"))
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="train the recommended mixture for every seed and report its measured losses against the prediction",
    )
    parser.add_argument("--budget", choices=("small", "test"), default="small", help=argparse.SUPPRESS)
    parser.set_defaults(handler=run_mixlaw)


def _pilot_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--shares",
        help="pilot shares of --domain, comma-separated (two domains), e.g. 0.5,0.65,0.8,0.9,0.95 "
        "(the default with --embedded)",
    )
    group.add_argument("--mixtures", metavar="CSV", help="pilot mixtures: one column per domain, a row each")
    group.add_argument(
        "--holdout",
        metavar="SHARES|CSV",
        help="mixtures trained and measured but left out of the fit, to "
        "test its predictions (shares of --domain, or a CSV like --mixtures; --embedded: 10:3)",
    )
    group.add_argument("--seeds", default="0", help="seeds, comma-separated (default 0)")
    group.add_argument("--steps", help="pilot step budgets, comma-separated (default: the config's steps)")
    group.add_argument(
        "--full-steps",
        type=count(1),
        help="with two or more budgets: predict each pilot's losses at this "
        "budget with laws in steps, and fit the mixing law there",
    )


def _measure_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--val",
        action="append",
        default=[],
        metavar="DOMAIN=CSV",
        help="a domain's validation caption CSV (one per domain; repeatable)",
    )
    group.add_argument(
        "--zeroshot",
        action="append",
        default=[],
        metavar="DOMAIN=PATH",
        help="a labelled folder or CSV of a domain: its zero-shot top-1 is reported beside",
    )
    group.add_argument(
        "--templates",
        action="append",
        default=[],
        metavar="DOMAIN=SET",
        help="the prompt templates of a domain's zero-shot (default generic)",
    )
    group.add_argument(
        "--mode",
        choices=("fused", "first", "second"),
        help="the similarity whose loss is fitted (default: model.answer_mode of the config when "
        "it names one, else first)",
    )
    group.add_argument(
        "--pairs-per-batch", type=count(2), default=64, help="contrastive batch size (default 64)"
    )
    group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _objective_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--domain", help="the domain to gain (default: the first source's)")
    group.add_argument("--keep", help="the domain whose loss is held (default: the other of two)")
    group.add_argument(
        "--eps",
        type=float,
        help="the kept domain's loss may rise at most this much above the start model's "
        "(required without --weight; --embedded: 0.4)",
    )
    group.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="DOMAIN=W",
        help="instead: minimise the sum of W x loss over the domains (repeatable)",
    )
    group.add_argument("--resamples", type=count(10), default=200, help="bootstrap refits (default 200)")
    group.add_argument(
        "--extrapolate",
        action="store_true",
        help="let the recommendation lie outside the pilots' range of shares, where the laws extrapolate "
        "(it is flagged); by default it is the best mixture within that range",
    )


def pairs(items: list[str], option: str, number: bool = False) -> dict[str, object]:
    found: dict[str, object] = {}
    for item in items:
        name, sign, value = item.partition("=")
        if not sign or not name or not value:
            raise ValueError(f"{option}: expected DOMAIN={'W' if number else 'VALUE'}, got {item!r}")
        if number:
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{option}: expected a number after {name}=, got {value!r}") from None
        if name in found:
            raise ValueError(f"{option}: domain {name!r} is given twice; give each domain once")
        found[name] = value
    return found


def integers(text: str, option: str, minimum: int) -> list[int]:
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"{option}: expected integers separated by commas, got {text!r}") from None
    if min(values) < minimum or len(set(values)) != len(values):
        raise ValueError(f"{option}: expected distinct integers >= {minimum}, got {text!r}")
    return values


def run_mixlaw(args: argparse.Namespace) -> int:

    out = Path(args.out)
    if args.embedded and args.overrides:
        raise ValueError("--set: changes a --config file; --embedded has its own config")
    base = None if args.embedded else load_train_config(args.config, args.overrides)
    with OutputFolder(out, "mixlaw", resume=True) as folder:
        if args.embedded:
            base = embedded_defaults(args, out)
            folder.record()
        study = study_from_args(args, base)
        results = run_study(study, out, Runtime(device=args.device), folder)
    for line in summary_lines(results, base):
        print(line)
    print(f"\nReport: {out / 'report.md'}, figure: {out / 'mixlaw.png'}, data: {out / 'mixlaw.json'}")
    return 0


def embedded_defaults(args: argparse.Namespace, out: Path) -> TrainConfig:
    """--embedded: the quickstart's data, start model and base config, with the embedded
    study's pilots and validation data wherever the command line leaves them unset."""

    base, data = embedded_base(out, quickstart_dir=Path(args.quickstart), budget_name=args.budget)
    if args.mixtures is None:
        args.shares = args.shares or ",".join(map(str, SHARES))
    args.holdout = args.holdout or ",".join(map(str, HELD_OUT))  # 10/13 to the last digit
    args.val = args.val or [
        f"plant={data}/plant/val/captions.csv",
        f"general={data}/general/val/captions.csv",
    ]
    args.zeroshot = args.zeroshot or [f"plant={data}/plant/val", f"general={data}/general/val"]
    args.templates = args.templates or ["plant=plant", "general=generic"]
    if args.eps is None and not args.weight:
        args.eps = EPS
    if args.budget == "test":  # the test data's val splits hold a dozen pairs
        args.pairs_per_batch = min(args.pairs_per_batch, 4)
    return base


def study_from_args(args: argparse.Namespace, base: TrainConfig) -> Study:

    return build_study(
        base,
        shares=args.shares,
        mixtures=args.mixtures,
        holdout=args.holdout,
        seeds=integers(args.seeds, "--seeds", 0),
        steps=integers(args.steps, "--steps", 1) if args.steps else [],
        full_steps=args.full_steps,
        val=pairs(args.val, "--val"),
        zeroshot=pairs(args.zeroshot, "--zeroshot"),
        templates=pairs(args.templates, "--templates"),
        mode=args.mode,
        batch_size=args.pairs_per_batch,
        target=args.domain,
        keep=args.keep,
        eps=args.eps,
        weights=pairs(args.weight, "--weight", number=True) or None,
        confirm=args.confirm,
        resamples=args.resamples,
        extrapolate=args.extrapolate,
    )
