"""`dalip train`: a YAML config, `--set` overrides, `--resume`."""

from __future__ import annotations

import argparse
import sys

import yaml

from dalip.cli.common import add_set_flag
from dalip.config import (
    DEFAULT_ANSWER_MODE,
    TrainConfig,
    config_to_dict,
    experimental_settings,
    load_train_config,
)
from dalip.evaluation.validation import answer_mode_choice, training_validation
from dalip.train.loop import train
from dalip.train.optim import NonFiniteLossError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a model (single process or under torchrun)",
        description="Train a DALIP (or plain CLIP) model from a YAML config. Any field can be "
        "overridden, e.g. --set optim.lr=1e-4 --set batch_size=256.",
    )
    parser.add_argument("--config", "-c", help="YAML run config (see configs/)")
    add_set_flag(parser, "loss.kind=clip")
    parser.add_argument("--out-dir", help="shorthand for --set out_dir=DIR")
    parser.add_argument(
        "--resume",
        metavar="latest|PATH",
        help="continue from the newest checkpoint in out_dir, or from a file",
    )
    parser.add_argument(
        "--allow-change",
        dest="allow_changes",
        action="append",
        default=[],
        metavar="FIELD",
        help="with --resume: let FIELD (e.g. optim.lr, steps) differ from the checkpoint's "
        "config; the change is applied and recorded (repeatable)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="start over in an out_dir that holds an earlier run (deletes only the files it wrote)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"out_dir={args.out_dir}"] if args.out_dir else [])
    config = load_train_config(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    if args.allow_changes and not args.resume:
        raise ValueError("--allow-change only applies with --resume")
    if args.force and args.resume:
        raise ValueError("--force starts over and --resume continues: give one of them")
    experimental = experimental_settings(config)
    if experimental:
        print(
            f"dalip train: experimental options set: {', '.join(experimental)} (the ablations found "
            f'none of them better than the defaults; docs: "The method")'
        )
    try:
        summary = train(
            config,
            resume=args.resume,
            validate=training_validation(config),
            choose_mode=answer_mode_choice(config),
            force=args.force,
            allow_changes=args.allow_changes,
        )
    except NonFiniteLossError as error:
        print(f"dalip train: error: {error}", file=sys.stderr)
        return 1
    if summary["interrupted_by_signal"]:
        print(
            f"dalip train: stopped by signal {summary['interrupted_by_signal']} at step {summary['step']}; "
            f"checkpoint saved; continue with --resume latest",
            file=sys.stderr,
        )
        return 128 + summary["interrupted_by_signal"]
    print(f"dalip train: done, {summary['step']} steps; model: {summary['out_dir']}/model.safetensors")
    if config.loss.kind == "dalip" and config.model.alpha < 1.0:
        print(f"dalip train: {answer_mode_line(config, summary['answer_mode'])}")
    return 0


def answer_mode_line(config: TrainConfig, stored: str | None) -> str:
    """What the DALIP model answers with, and why."""
    if config.model.answer_mode != "auto":
        return f"answers with {stored} (model.answer_mode)"
    if stored is not None:
        return f"answers with {stored} (chosen on data.val and data.val_general; see metrics.jsonl)"
    return (
        f"answers with {DEFAULT_ANSWER_MODE} (dalip's default; set data.val and data.val_general to "
        f"choose between fused and first on validation data, or model.answer_mode)"
    )
