"""Suite results in CLIP_benchmark's JSON format: one file per (dataset, model, mode) for the
datasets read in its layout (`dalip.evaluation.clip_benchmark`), so its `clip_benchmark
build` tables take them."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from dalip.atomic import write_json

FOLDER = "clip_benchmark"


def clip_benchmark_metrics(
    task: str, metrics: dict[str, float], num_classes: int | None = None
) -> dict[str, float]:
    """Our metric names -> CLIP_benchmark's (its `acc5` is NaN under 5 classes; its
    `image_retrieval` is text->image, `text_retrieval` image->text)."""
    if task == "zeroshot":
        return {
            "acc1": metrics["top1"],
            "acc5": metrics["top5"] if (num_classes or 0) >= 5 else math.nan,
            "mean_per_class_recall": metrics["mean_per_class_recall"],
        }
    ks = sorted(int(key.split("@")[1]) for key in metrics if key.startswith("text_to_image_R@"))
    converted = {}
    for k in ks:
        converted[f"image_retrieval_recall@{k}"] = metrics[f"text_to_image_R@{k}"]
        converted[f"text_retrieval_recall@{k}"] = metrics[f"image_to_text_R@{k}"]
    return converted


def clip_benchmark_datasets(results: dict[str, Any]) -> dict[str, str]:
    """{suite dataset name: CLIP_benchmark name (`wds/NAME`)} of the suite's CLIP_benchmark datasets."""
    return {
        entry["name"]: entry["clip_benchmark"]
        for entry in results["suite"]["datasets"]
        if entry.get("clip_benchmark")
    }


def write_clip_benchmark_results(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """One CLIP_benchmark-style JSON per (dataset, model, mode) in `out_dir/clip_benchmark/`
    (nothing when the suite has no CLIP_benchmark dataset); returns the paths written."""
    written = []
    for model_name, entry in results["models"].items():
        for dataset_name, benchmark_name in clip_benchmark_datasets(results).items():
            result = entry["datasets"][dataset_name]
            task = "zeroshot_classification" if result["task"] == "zeroshot" else "zeroshot_retrieval"
            for mode, metrics in result["modes"].items():
                dump = {
                    "dataset": benchmark_name,
                    "model": model_name,
                    "pretrained": entry["spec"],
                    "task": task,
                    "metrics": clip_benchmark_metrics(result["task"], metrics, result.get("num_classes")),
                    "language": "en",
                    "similarity": mode,
                }
                if "templates" in result:
                    dump["templates"] = result["templates"]
                slug = f"{benchmark_name.replace('/', '_')}_{model_name}_{mode}_{task}.json".replace(
                    os.sep, "_"
                )
                path = Path(out_dir) / FOLDER / slug
                write_json(path, dump, indent=None)
                written.append(path)
    return written
