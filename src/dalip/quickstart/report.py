"""The quickstart's report: report.md, results.json and the figures, from its results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from dalip.atomic import write_json, write_text
from dalip.data.files import list_image_folder
from dalip.frontier.report import frontier_table
from dalip.inference.predict import predict
from dalip.inference.specs import load_model
from dalip.report.figures import new_figure, save_figure
from dalip.train.run_log import read_metrics

# (dataset, metric key, label) rows of the table; zero-shot first, then retrieval.
ZERO_SHOT_METRICS = (("top1", "top-1"), ("top5", "top-5"), ("mean_per_class_recall", "per-class recall"))
RETRIEVAL_METRICS = (("image_to_text_R@1", "I->T R@1"), ("text_to_image_R@1", "T->I R@1"))
LABELS = {
    "start": "start (CLIP, general only)",
    "tuned-clip": "tuned, CLIP loss",
    "tuned-dalip": "tuned, DALIP loss",
}


def model_columns(evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    """(model, mode) columns: every model in first order, the DALIP model also fused."""
    columns = []
    for name, entry in evaluation["models"].items():
        for mode in entry["modes"]:
            if mode == "fused" and name != "tuned-dalip":
                continue  # CLIP-loss models have alpha = 1: fused is first order
            columns.append((name, mode))
    return columns


def column_label(evaluation: dict[str, Any], name: str, mode: str) -> str:
    """ "LABEL [mode]", " *" added to the mode a model with several answers with by default."""
    entry = evaluation["models"][name]
    marked = len(entry["modes"]) > 1 and entry.get("answer_mode") == mode
    return f"{LABELS[name]} [{mode}]" + (" *" if marked else "")


def answer_note(evaluation: dict[str, Any]) -> str:
    """Which mode the DALIP-tuned model answers with, and where that came from."""
    entry = evaluation["models"]["tuned-dalip"]
    how = (
        "chosen by `dalip train` on the val splits" if entry.get("answer_mode_stored") else "dalip's default"
    )
    return (
        f"* the mode the DALIP-tuned model answers with when none is named: {entry.get('answer_mode')} "
        f"({how}; `--mode` chooses another)."
    )


def metric_rows(evaluation: dict[str, Any]) -> list[tuple[str, str, dict[tuple[str, str], float]]]:
    rows = []
    datasets = next(iter(evaluation["models"].values()))["datasets"]
    for dataset, first in datasets.items():
        metrics = ZERO_SHOT_METRICS if first["task"] == "zeroshot" else RETRIEVAL_METRICS
        for key, label in metrics:
            values = {
                (name, mode): evaluation["models"][name]["datasets"][dataset]["modes"][mode][key]
                for name, mode in model_columns(evaluation)
            }
            rows.append((dataset, label, values))
        for rank in first.get("ranks", {}):  # zero-shot at each rank, from the taxonomic texts
            values = {
                (name, mode): evaluation["models"][name]["datasets"][dataset]["ranks"][rank]["modes"][mode][
                    "top1"
                ]
                for name, mode in model_columns(evaluation)
            }
            rows.append((dataset, f"{rank} top-1 (taxonomic text)", values))
    return rows


def paper_numbers(evaluation: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The paper's comparison, DALIP-tuned minus CLIP-tuned zero-shot top-1, per DALIP mode:
    plant gain, general retention (the general test covers concepts tuning never saw) and their mean."""
    models = evaluation["models"]

    def top1(name: str, mode: str, dataset: str) -> float:
        return models[name]["datasets"][dataset]["modes"][mode]["top1"]

    numbers = {}
    for mode in models["tuned-dalip"]["modes"]:
        plant = top1("tuned-dalip", mode, "plant-zeroshot") - top1("tuned-clip", "first", "plant-zeroshot")
        general = top1("tuned-dalip", mode, "general-zeroshot") - top1(
            "tuned-clip", "first", "general-zeroshot"
        )
        numbers[mode] = {"plant_gain": plant, "general_retention": general, "mean": (plant + general) / 2}
    return numbers


def paper_table(numbers: dict[str, dict[str, float]], answer_mode: str | None = None) -> str:
    lines = ["| DALIP mode | plant gain | general retention | mean |", "|---|---|---|---|"]
    for mode, entry in numbers.items():
        mark = " *" if mode == answer_mode else ""
        lines.append(
            f"| {mode}{mark} | {100 * entry['plant_gain']:+.1f} | {100 * entry['general_retention']:+.1f} | "
            f"{100 * entry['mean']:+.1f} |"
        )
    return "\n".join(lines) + "\n"


def comparison_table(results: dict[str, Any]) -> str:
    """The main result: a sentence on the setup, then one row per split and metric (Markdown)."""
    evaluation = results["evaluation"]
    columns = model_columns(evaluation)
    header = (
        ["split", "metric"]
        + [column_label(evaluation, n, m) for n, m in columns]
        + [f"{column_label(evaluation, n, m)} vs start" for n, m in columns if n != "start"]
    )
    lines = [
        f"Budget `{results['budget']}`, seed {results['seed']}; dalip-tiny on the embedded data "
        f"(plant 10 : general 3 for tuning). Scores in %; the last columns are differences in points "
        f"against the start model (first order): plant gain and general retention.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    for dataset, label, values in metric_rows(evaluation):
        start = values[("start", "first")]
        cells = [f"{100 * values[c]:.1f}" for c in columns]
        cells += [f"{100 * (values[c] - start):+.1f}" for c in columns if c[0] != "start"]
        lines.append("| " + " | ".join([dataset, label] + cells) + " |")
    lines += [
        "",
        answer_note(evaluation),
        "",
        "DALIP-tuned minus CLIP-tuned zero-shot top-1, in points (the paper's comparison). Tuning "
        "saw every other general concept; the general test covers all of them, so its difference "
        "measures what each loss retains.",
        "",
        paper_table(paper_numbers(evaluation), evaluation["models"]["tuned-dalip"].get("answer_mode")),
    ]
    return "\n".join(lines)


def markdown_report(results: dict[str, Any]) -> str:
    """report.md: the comparison table, the WiSE-FT table, timings and where the figures are."""
    lines = ["# dalip quickstart", "", comparison_table(results)]
    lines += ["", "## WiSE-FT (zero-shot top-1, weights from start w=0 to tuned w=1)", ""]
    lines += [wise_ft_table(results["wise_ft"])]
    if "frontier" in results:  # reports of dalip <= 0.2 have none
        lines += [
            "## Frontier (one seed: no interval)",
            "",
            frontier_table(results["frontier"], "plant", "general"),
        ]
    lines += ["## Time", ""]
    lines += [f"- {stage}: {seconds:.0f} s" for stage, seconds in results["timings_seconds"].items()]
    lines += [
        "",
        "Figures: `figures/loss_curves.png`, `figures/accuracy.png`, `figures/predictions.png`, "
        "`figures/wiseft.png`. Full results: `results.json`, `eval/results.md`.",
        "",
    ]
    return "\n".join(lines)


def wise_ft_table(wise_ft: dict[str, Any]) -> str:
    lines = ["| tuned with | mode | w | plant | general |", "|---|---|---|---|---|"]
    for kind, results in wise_ft.items():
        for point in results["interpolation"]:
            for mode, summary in point["summary"].items():
                domains = summary["domains"]
                lines.append(
                    f"| {kind} | {mode} | {point['weight']:g} | {100 * domains['plant']:.1f} | "
                    f"{100 * domains['general']:.1f} |"
                )
    return "\n".join(lines) + "\n"


def loss_curves(out: Path, path: Path) -> None:
    figure, (axes,) = new_figure(6, 4)
    for run in ("tuned-clip", "tuned-dalip"):
        records = [r for r in read_metrics(out / run / "metrics.jsonl") if "loss" in r]
        axes.plot([r["step"] for r in records], [r["loss"] for r in records], label=f"{run}: total")
        if run == "tuned-dalip":
            axes.plot(
                [r["step"] for r in records],
                [r["first_order_loss"] for r in records],
                linestyle="--",
                label=f"{run}: first order",
            )
    axes.set(xlabel="step", ylabel="training loss", title="Domain tuning from the same start model")
    axes.legend(fontsize="small")
    save_figure(figure, path, dpi=110)


def accuracy_bars(evaluation: dict[str, Any], path: Path) -> None:
    zero_shot = [(d, label, v) for d, label, v in metric_rows(evaluation) if label == "top-1"]
    columns = model_columns(evaluation)
    figure, (axes,) = new_figure(7, 4)
    width = 0.8 / len(columns)
    for number, column in enumerate(columns):
        positions = [i + (number - (len(columns) - 1) / 2) * width for i in range(len(zero_shot))]
        axes.bar(
            positions,
            [100 * v[column] for _, _, v in zero_shot],
            width=width,
            label=column_label(evaluation, *column),
        )
    axes.set_xticks(range(len(zero_shot)), [d for d, _, _ in zero_shot])
    axes.set(ylabel="zero-shot top-1 (%)", ylim=(0, 100), title="Held-out test splits")
    axes.legend(fontsize="small")
    save_figure(figure, path, dpi=110)


def wise_ft_plot(wise_ft: dict[str, Any], path: Path) -> None:
    figure, (axes,) = new_figure(6, 4.5)
    for kind, results in wise_ft.items():
        mode = results.get("answer_mode", "fused" if kind == "dalip" else "first")
        points = [(p["weight"], p["summary"][mode]["domains"]) for p in results["interpolation"]]
        xs, ys = [100 * d["general"] for _, d in points], [100 * d["plant"] for _, d in points]
        axes.plot(xs, ys, marker="o", label=f"start -> tuned ({kind} loss, {mode})")
        for (weight, _), x, y in zip(points, xs, ys):
            axes.annotate(f"{weight:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    axes.set(
        xlabel="general zero-shot top-1 (%)",
        ylabel="plant zero-shot top-1 (%)",
        title="WiSE-FT: plant gain vs general retention (labels: w)",
    )
    axes.legend(fontsize="small")
    save_figure(figure, path, dpi=110)


def prediction_grid(out: Path, data: Path, path: Path, count: int = 6) -> None:
    """A few plant test images with the top-3 zero-shot predictions of each tuned model."""
    source = list_image_folder(data / "plant/test")
    picks = source.samples[:: max(1, len(source.samples) // count)][:count]
    paths = [image_path for image_path, _ in picks]
    predictions = {}
    for run in ("tuned-clip", "tuned-dalip"):
        loaded = load_model(out / run / "model.safetensors")
        found = predict(
            loaded.model,
            paths,
            source.classes,
            loaded.tokenizer,
            loaded.preprocess,
            templates="plant",
            top_k=3,
        )
        predictions[run] = {entry["image"]: entry["predictions"] for entry in found}
    figure, axes = new_figure(2.8 * len(picks), 3.4, len(picks))
    for axis, (image_path, label) in zip(axes, picks):
        axis.imshow(Image.open(image_path).convert("RGB"))
        axis.set_axis_off()
        lines = [f"true: {source.classes[label]}"]
        for run, by_image in predictions.items():
            top = by_image.get(image_path, [])
            lines.append(run.removeprefix("tuned-") + ":")
            lines += [f"  {p['label']} {p['probability']:.0%}" for p in top]
        axis.set_title("\n".join(lines), fontsize=6, loc="left")
    save_figure(figure, path, dpi=110)


def write_report(out: Path, results: dict[str, Any], data: Path) -> None:
    figures = out / "figures"
    loss_curves(out, figures / "loss_curves.png")
    accuracy_bars(results["evaluation"], figures / "accuracy.png")
    prediction_grid(out, data, figures / "predictions.png")
    wise_ft_plot(results["wise_ft"], figures / "wiseft.png")
    write_json(out / "results.json", {**results, "dalip_vs_clip": paper_numbers(results["evaluation"])})
    write_text(out / "report.md", markdown_report(results))
