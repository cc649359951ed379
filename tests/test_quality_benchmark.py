import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402


def run(clip, dalip_fused, dalip_first, start=0.1, second=0.2, own="first"):
    values = {
        "start/first": start,
        "tuned-clip/first": clip,
        "tuned-dalip/fused": dalip_fused,
        "tuned-dalip/first": dalip_first,
        "tuned-dalip/second": second,
    }
    values["tuned-dalip/own"] = values[f"tuned-dalip/{own}"]
    return {"plant-zeroshot/top1": values, "general-zeroshot/top1": values}


def test_aggregate_reports_mean_std_and_paired_differences():
    figures = quality.aggregate([run(0.5, 0.7, 0.6), run(0.3, 0.4, 0.3)])
    entry = figures["plant-zeroshot/top1"]
    assert entry["tuned-clip/first"]["mean"] == pytest.approx(0.4)
    assert entry["tuned-clip/first"]["std"] == pytest.approx(0.1414213, rel=1e-5)
    assert entry["dalip_fused_minus_clip"]["mean"] == pytest.approx(0.15)  # (0.2 + 0.1) / 2
    assert entry["dalip_first_minus_clip"]["mean"] == pytest.approx(0.05)
    assert "+15.0 ± 7.1" in quality.table(figures)
    # each mode paired with CLIP and with fused (t interval over the seeds); own: the stored mode
    assert entry["dalip_own_minus_clip"]["mean"] == pytest.approx(0.05)
    assert entry["dalip_first_minus_fused"]["interval"]["mean"] == pytest.approx(-0.1)
    (first_row,) = [line for line in quality.mode_table(figures).splitlines() if line.startswith("| first ")]
    assert "+5.0 [-58.5, +68.5]" in first_row and "-10.0 [-10.0, -10.0]" in first_row


def test_metric_values_reads_the_quickstart_layout():
    modes = lambda v: {"fused": {"top1": v}, "first": {"top1": v / 2}, "second": {"top1": v / 4}}  # noqa: E731
    datasets = {name: {"modes": modes(0.8)} for name, _ in quality.METRICS}
    for dataset in datasets.values():
        for mode in dataset["modes"].values():
            mode.update({k: mode["top1"] for _, k in quality.METRICS})
    results = {
        "evaluation": {"models": {m: {"datasets": datasets} for m in ("start", "tuned-clip", "tuned-dalip")}}
    }
    results["evaluation"]["models"]["tuned-dalip"]["answer_mode"] = "first"
    values = quality.metric_values(results)
    assert values["plant-zeroshot/top1"]["tuned-dalip/fused"] == 0.8
    assert values["plant-zeroshot/top1"]["tuned-clip/first"] == 0.4
    assert values["plant-zeroshot/top1"]["tuned-dalip/own"] == 0.4  # the mode the model answers with
    assert quality.answer_modes(results) == "first (default)"


def test_finished_quickstart_folders_are_aggregated_without_running(tmp_path, capsys):
    modes = {
        "fused": {"top1": 0.5, "top5": 0.9, "mean_per_class_recall": 0.5},
        "first": {"top1": 0.4, "top5": 0.8, "mean_per_class_recall": 0.4},
        "second": {"top1": 0.3, "top5": 0.7, "mean_per_class_recall": 0.3},
    }
    datasets = {name: {"modes": modes} for name in ("plant-zeroshot", "general-zeroshot")}
    folders = []
    for seed in (3, 5):
        results = {
            "budget": "small",
            "seed": seed,
            "timings_seconds": {"total": 300.0 + seed},
            "evaluation": {
                "models": {m: {"datasets": datasets} for m in ("start", "tuned-clip", "tuned-dalip")}
            },
        }
        folder = tmp_path / f"qs-{seed}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(results))
        folders.append(str(folder))
    assert quality.main(["--results", *folders, "--no-record", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (
        figures["seeds"] == [3, 5]
        and figures["budget"] == "small"
        and figures["seconds_per_seed"] == [303.0, 305.0]
    )
    # CLIP is scored first order (0.4), DALIP fused 0.5: +10 points in both seeds
    assert figures["metrics"]["plant-zeroshot/top1"]["dalip_fused_minus_clip"]["mean"] == pytest.approx(0.1)
    with pytest.raises(SystemExit):
        quality.parse_args(["--results", folders[0], folders[0]])  # the same seed twice
    with pytest.raises(SystemExit):
        quality.parse_args(["--results", str(tmp_path / "missing")])
