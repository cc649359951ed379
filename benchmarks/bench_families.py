"""What the second order costs on each tower family: FLOPs of DALIP over the plain model.

Each architecture is built at full size on the meta device (`dalip.model.catalog.build_on_meta`:
shapes only, no memory, no weights) and one batch of image-text pairs is encoded, with the second
order (both towers' tokens through the MBDC heads) and without (the plain open_clip towers, the
first order exactly), forward alone and forward + backward of the features' sum, under torch's
FlopCounterMode (matrix products and convolutions; element-wise work is not counted). The DALIP
/ plain ratio is the price of the second order in compute; the step-time and memory ratios of
the tiny members of every family on the CPU come from `bench_step.py --models` (RESULTS.md).

    python benchmarks/bench_families.py
    python benchmarks/bench_families.py --models ViT-B-16-SigLIP2,RN50 --batch 4 --no-record
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from dalip.model.catalog import build_on_meta, describe  # noqa: E402

DEFAULT_MODELS = "ViT-B-16,ViT-B-16-SigLIP2,PE-Core-B-16,convnext_base,RN50,MobileCLIP2-S2,coca_ViT-B-32"


def count_flops(model, batch: int, second_order: bool, backward: bool) -> int:
    """FLOPs of encoding `batch` image-text pairs on the meta device (forward, + backward)."""
    size = model.clip.visual.image_size
    height, width = size if isinstance(size, (tuple, list)) else (size, size)
    with torch.device("meta"):
        images = torch.empty(batch, 3, height, width)
        texts = torch.zeros(batch, model.clip.context_length, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        image, text = model.encode_image(images, second_order), model.encode_text(texts, second_order)
        if backward:
            total = image.first.sum() + text.first.sum()
            if second_order:
                total = total + image.second.sum() + text.second.sum()
            total.backward()
    return counter.get_total_flops()


def measure(name: str, batch: int) -> dict:
    model, _ = build_on_meta(name, batch=1)
    model.train()
    figures = {"name": name, "family": describe(name).image_tower, "tokens": model.describe_tokens()}
    for label, backward in (("forward", False), ("train", True)):
        plain = count_flops(model, batch, second_order=False, backward=backward)
        dalip = count_flops(model, batch, second_order=True, backward=backward)
        figures[label] = {
            "plain_gflop": plain / 1e9 / batch,
            "dalip_gflop": dalip / 1e9 / batch,
            "ratio": dalip / plain,
        }
    parameters = sum(p.numel() for p in model.parameters())
    heads = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("clip."))
    figures["parameters_m"], figures["head_parameters_m"] = parameters / 1e6, heads / 1e6
    return figures


def summary(rows: list[dict]) -> _common.Summary:
    """RESULTS.md's row: each architecture's forward FLOPs, DALIP over plain."""
    return _common.Summary(
        "forward FLOPs of encoding a pair, DALIP / plain, full-size towers (meta device)",
        ", ".join(f"{row['name']} {row['forward']['ratio']:.3f}" for row in rows),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma list of architectures")
    parser.add_argument("--batch", type=int, default=8, help="image-text pairs per count (default 8)")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    rows = [measure(name.strip(), args.batch) for name in args.models.split(",") if name.strip()]
    lines = [
        "| architecture | image tower | parameters (M), heads | forward GFLOP per pair, plain -> DALIP | ratio | "
        "forward + backward ratio | image tokens |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        forward, train = row["forward"], row["train"]
        lines.append(
            f"| {row['name']} | {row['family']} | {row['parameters_m']:.0f}, {row['head_parameters_m']:.1f} | "
            f"{forward['plain_gflop']:.1f} -> {forward['dalip_gflop']:.1f} | {forward['ratio']:.3f} | "
            f"{train['ratio']:.3f} | {row['tokens']['image']['tokens']} |"
        )
    body = (
        f"Batch of {args.batch} pairs, counted by FlopCounterMode on the meta device (matrix products and "
        f"convolutions), per pair; the paper's MBDC (4 heads x 46) on both towers; forward + backward of the "
        f"features' sum.\n\n" + "\n".join(lines)
    )
    print(body)
    if not args.no_record:
        info = _common.machine("cpu")
        header = _common.run_header("bench_families.py", argv if argv is not None else sys.argv[1:], info)
        _common.record_section(
            "Second-order cost per tower family (bench_families.py)", header + "\n\n" + body, summary(rows)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
