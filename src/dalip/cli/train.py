"""`dalip train`: a YAML config, `--set` overrides, `--resume`."""

from __future__ import annotations

import argparse
import sys

import yaml

from dalip.config import config_to_dict, load_train_config
from dalip.evaluation.zero_shot import training_validation
from dalip.train.loop import NonFiniteLossError, train


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a model (single process or under torchrun)",
        description="Train a DALIP (or plain CLIP) model from a YAML config. Any field can be "
                    "overridden, e.g. --set optim.lr=1e-4 --set batch_size=256.",
    )
    parser.add_argument("--config", "-c", help="YAML run config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field (repeatable), e.g. loss.kind=clip")
    parser.add_argument("--out-dir", help="shorthand for --set out_dir=DIR")
    parser.add_argument("--resume", metavar="latest|PATH",
                        help="continue from the newest checkpoint in out_dir, or from a file")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"out_dir={args.out_dir}"] if args.out_dir else [])
    config = load_train_config(args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    try:
        summary = train(config, resume=args.resume, validate=training_validation(config))
    except NonFiniteLossError as error:
        print(f"dalip train: error: {error}", file=sys.stderr)
        return 1
    if summary["interrupted_by_signal"]:
        print(f"dalip train: stopped by signal {summary['interrupted_by_signal']} at step {summary['step']}; "
              f"checkpoint saved; continue with --resume latest", file=sys.stderr)
        return 128 + summary["interrupted_by_signal"]
    print(f"dalip train: done, {summary['step']} steps; model: {summary['out_dir']}/model.safetensors")
    return 0
