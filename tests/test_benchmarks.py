"""The benchmark scripts run end to end in a tiny configuration and report what they claim.

No timing is asserted (the machine is shared); these check that each script's `main`
runs, prints one JSON object with the documented keys, refuses to time a reference that
disagrees with dalip, and writes RESULTS.md sections without touching others, moving the
section a rerun replaces to the history file and keeping the summary table generated from them.
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402
import _results  # noqa: E402
import bench_data  # noqa: E402
import bench_mbdc  # noqa: E402
import bench_step  # noqa: E402

from dalip.train.task import TrainingTask  # noqa: E402

TINY_MBDC = [
    "--threads",
    "1",
    "--batch",
    "3",
    "--tokens",
    "9",
    "--width",
    "16",
    "--heads",
    "2",
    "--reduced-dim",
    "4",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--json",
    "--no-record",
]


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The scripts' --threads sets torch's global thread count; put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def printed_json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_bench_mbdc_reports_speedup_after_float64_agreement(capsys):
    figures = bench_mbdc.main(TINY_MBDC)
    assert printed_json(capsys) == json.loads(json.dumps(figures))
    assert figures["speedup"] > 0 and figures["best_possible_speedup"] > 0
    assert figures["agreement_float64"]["output_max_abs_diff"] <= 1e-8
    assert figures["agreement_float64"]["gradient_max_rel_diff"] <= 1e-8
    assert {"dalip", "reference", "dense_floor"} == set(figures["seconds"])
    assert figures["shape"]["vector_dim"] == 2 * 4 * 5 // 2
    assert figures["dalip_flops_per_call"] > 0 and figures["dalip_mfu"] is None  # no peak on CPU
    assert (figures["device"], figures["precision"]) == ("cpu", "fp32") and "gpu" not in figures["machine"]
    summary = bench_mbdc.summary(figures)  # RESULTS.md's row, copied from the section's figures
    assert summary.headline.startswith(f"speedup {figures['speedup']:.2f}x")
    assert _results.figures_not_in(summary.headline + summary.target, bench_mbdc.report(figures)) == []


def test_bench_mbdc_times_under_bf16_autocast(capsys):
    figures = bench_mbdc.main([*TINY_MBDC, "--precision", "bf16"])
    assert figures["precision"] == "bf16" and figures["speedup"] > 0
    assert figures["agreement_float64"]["output_max_abs_diff"] <= 1e-8  # the check itself stays float64
    assert "bfloat16 autocast" in bench_mbdc.report(figures)


@pytest.mark.parametrize("module", [bench_mbdc, bench_data, bench_step])
def test_cuda_is_refused_in_one_line_without_a_gpu(module, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--device", "cuda"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "cuda requested but torch.cuda.is_available() is false" in errors[0]


def test_reference_mbdc_is_the_same_math_as_dalip():
    torch.manual_seed(0)
    module = bench_mbdc.MBDC(12, heads=3, reduced_dim=5, learnable_temperature=True).double().eval()
    with torch.no_grad():
        module.log_temperature.fill_(0.3)
    tokens, summary = torch.randn(2, 7, 12, dtype=torch.float64), torch.randn(2, 12, dtype=torch.float64)
    torch.testing.assert_close(
        bench_mbdc.reference_mbdc(module, tokens, summary), module(tokens, summary), rtol=0, atol=1e-12
    )


def test_bench_mbdc_refuses_to_time_a_disagreeing_reference(monkeypatch):
    original = bench_mbdc.reference_mbdc
    monkeypatch.setattr(bench_mbdc, "reference_mbdc", lambda m, t, s: original(m, t, s) * (1 + 1e-6))
    with pytest.raises(AssertionError, match="disagree in float64"):
        bench_mbdc.main(TINY_MBDC)


def test_bench_step_reports_ratios_and_extra_parameters(capsys):
    figures = bench_step.main(
        [
            "--threads",
            "1",
            "--models",
            "dalip-tiny:2",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--memory-steps",
            "2",
            "--json",
            "--no-record",
        ]
    )
    assert printed_json(capsys)["models"].keys() == {"dalip-tiny"}
    tiny = figures["models"]["dalip-tiny"]
    for key in (
        "time_ratio",
        "memory_ratio",
        "memory_ratio_total",
        "extra_parameters",
        "extra_parameters_percent",
        "time_target_met",
        "memory_target_met",
    ):
        assert key in tiny, key
    assert tiny["time_ratio"] > 0 and tiny["peak_was_reset"]  # Linux resets the high-water mark
    # the loop's own step never waits for the device; its FLOPs are counted, MFU needs a GPU peak
    assert tiny["host_syncs_per_step"] == {"clip": 0, "dalip": 0}
    assert tiny["flops_per_step"]["dalip"] > tiny["flops_per_step"]["clip"] > 0
    assert tiny["mfu"] == {"clip": None, "dalip": None} and tiny["mfu_target"] is None
    # dalip-tiny's MBDC (4 heads x 16, width 128), twice: token projection, reduction,
    # LayerNorm, 544 x 544 mix and 544 -> 128 output projection per tower.
    vector = 4 * 16 * 17 // 2
    per_tower = (
        128 * 128 + 128 + 32 * 16 + 16 + 2 * 16 + 2 * vector + vector * vector + vector + vector * 128 + 128
    )
    assert tiny["extra_parameters"] == 2 * per_tower
    # The resident-set method sees what a step allocates: at least gradients and AdamW's
    # two moments in float32 (12 bytes per parameter).
    assert tiny["clip_step_peak_mib"] >= 0.9 * 12 * tiny["base_parameters"] / 2**20
    all_parameters = tiny["base_parameters"] + tiny["extra_parameters"]
    assert tiny["dalip_step_peak_mib"] >= 0.9 * 12 * all_parameters / 2**20
    summary = bench_step.summary(figures)
    assert summary.headline == f"dalip-tiny: time {tiny['time_ratio']:.3f}, memory {tiny['memory_ratio']:.3f}"
    assert _results.figures_not_in(summary.headline + summary.target, bench_step.report(figures)) == []


def test_bench_step_options_parse():
    args = bench_step.parse_args(
        ["--models", "ViT-B-16:8,dalip-tiny:64", "--mbdc", "reduced_dim=16", "--shared-mbdc"]
    )
    assert args.model_list == [("ViT-B-16", 8), ("dalip-tiny", 64)]
    assert args.mbdc == {"reduced_dim": 16}
    # a model list other than the default names its own RESULTS.md section
    assert bench_step.variant_label(args) == "models ViT-B-16:8,dalip-tiny:64, reduced_dim=16, shared MBDC"
    assert bench_step.variant_label(bench_step.parse_args(["--mbdc", "reduced_dim=16"])) == "reduced_dim=16"
    families = bench_step.parse_args(["--families"])
    assert [name for name, _ in families.model_list][:2] == ["dalip-tiny", "dalip-tiny-sigmoid"]
    assert bench_step.variant_label(families) == "tower families"
    with pytest.raises(ValueError, match="NAME:BATCH"):
        bench_step.parse_args(["--models", "ViT-B-16"])


def test_bench_data_reports_loader_and_step_rates(capsys, tmp_path):
    figures = bench_data.main(
        [
            "--threads",
            "1",
            "--batch",
            "8",
            "--train-per-class",
            "2",
            "--repeats",
            "1",
            "--step-repeats",
            "1",
            "--warmup",
            "0",
            "--fed-steps",
            "1",
            "--data-dir",
            str(tmp_path / "data"),
            "--json",
            "--no-record",
        ]
    )
    assert printed_json(capsys)["sources"].keys() == set(bench_data.SOURCE_KINDS)
    assert figures["step_samples_per_s"] > 0 and figures["generator"]["images"] > 0
    for kind, source in figures["sources"].items():
        assert source["samples_per_s"] > 0, kind
        assert source["epoch_samples"] > 0, kind
        assert source["fed_step_samples_per_s"] > 0, kind
        # the verdict is the reported ratio against the target (the ratio is rounded to 1e-3)
        ratio = source["ratio_to_step"]
        assert (
            source["target_met"] is (ratio >= bench_data.TARGET_RATIO)
            or abs(ratio - bench_data.TARGET_RATIO) < 1e-3
        )
    assert figures["target_met"] is all(source["target_met"] for source in figures["sources"].values())
    per_worker = figures["per_worker"]
    assert set(per_worker["workers"]) == {"1", "2"} and per_worker["image_size"] == 64
    for workers, entry in per_worker["workers"].items():
        assert entry["samples_per_s_per_worker"] == pytest.approx(
            entry["samples_per_s"] / int(workers), abs=0.1
        )
    assert per_worker["samples_per_s_per_worker"] == per_worker["workers"]["1"]["samples_per_s_per_worker"]
    assert figures["step_flops"] > 0 and figures["step_mfu"] is None
    assert "Workers per GPU = ceil(" in bench_data.report(figures)
    summary = bench_data.summary(figures)
    assert f"folder {figures['sources']['folder']['ratio_to_step']:.2f}x" in summary.headline
    assert _results.figures_not_in(summary.headline + summary.target, bench_data.report(figures)) == []


def test_workers_per_gpu_rounds_up():
    assert bench_data.workers_per_gpu(2000, 356) == 6
    assert bench_data.workers_per_gpu(356, 356) == 1
    assert bench_data.workers_per_gpu(357, 356) == 2


MINE = _common.Summary("my question", "speed 1.25x", ">= 2x: MISSED")


def test_record_section_replaces_its_own_section_and_keeps_others(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Data generator\n\nkept as is\n")
    _common.record_section("Mine", "first run", MINE, path)
    _common.record_section("Other", "other text\n\n| a |\n", MINE, path)
    _common.record_section("Mine", "second run", MINE, path)
    text = path.read_text()
    assert text.count("## Mine") == 1 and "second run" in text and "first run" not in text
    assert "## Data generator\n\nkept as is\n" in text and "other text" in text
    assert text.index("## Data generator") < text.index("## Mine") < text.index("## Other")


def test_a_replaced_section_moves_to_the_history_file(tmp_path):
    path, history = tmp_path / "RESULTS.md", tmp_path / "old.md"
    first = _common.Summary("my question", "speed 1.10x", ">= 2x: MISSED")
    _common.record_section("Mine", "- date: 2026-12-01\n\nfirst run", first, path, history)
    assert not history.exists()  # nothing replaced yet
    _common.record_section("Mine", "- date: 2026-12-09\n\nsecond run", MINE, path, history)
    _common.record_section("Mine", "- date: 2026-12-10\n\nthird run", MINE, path, history)
    old = history.read_text()
    assert old.startswith(_results.HISTORY_HEADER)
    # each replaced section, verbatim under its heading, oldest first
    assert old.count("## Mine\n") == 2 and old.index("first run") < old.index("second run")
    assert "- headline: speed 1.10x\n- target: >= 2x: MISSED\n- date: 2026-12-01\n\nfirst run" in old
    assert "third run" not in old and "third run" in path.read_text()
    # the default history file sits beside the results file
    _common.record_section("Mine", "fourth run", MINE, path)
    assert "third run" in (tmp_path / "history" / _results.HISTORY_NAME).read_text()


def test_the_summary_table_is_generated_from_the_sections(tmp_path):
    path = tmp_path / "RESULTS.md"
    records = "# Records\n\n## A quickstart check\n\n- date: 2026-12-07\n- headline: not a row\n"
    path.write_text(_results.RESULTS_HEADER + "\n" + records)
    body = "- date: 2026-12-08T10:00:00+00:00\n- machine: AMD EPYC, 2 cores; torch 2.14\n- command: `python x.py`"
    _common.record_section("Mine", body + "\n\nspeed 1.25x", MINE, path)
    other = _common.Summary("other question", "rate 533", ">= 300: met")
    _common.record_section("Other", "- machine: H; GPU: NVIDIA H200 (x1)\n\nrate 533", other, path)
    text = path.read_text()
    rows = text[text.index(_results.SUMMARY_START) : text.index(_results.SUMMARY_END)].splitlines()[1:]
    assert rows[0] == "| " + " | ".join(_results.TABLE_COLUMNS) + " |"
    assert rows[2:] == [
        "| Mine | my question | `python x.py` | speed 1.25x | >= 2x: MISSED | 2026-12-08 | AMD EPYC, 2 cores |",
        "| Other | other question | - | rate 533 | >= 300: met | - | H; GPU: NVIDIA H200 (x1) |",
    ]
    # new sections go before the Records part, which is no row and stays as it was
    assert text.index("## Other") < text.index("# Records") and text.endswith(records)
    faster = _common.Summary("my question", "speed 2.50x", ">= 2x: met")
    _common.record_section("Mine", body + "\n\nspeed 2.50x", faster, path)
    text = path.read_text()
    assert "| speed 2.50x | >= 2x: met |" in text and "speed 1.25x" not in text
    assert text.index("## Mine") < text.index("## Other")  # replaced in place
    assert _results.with_current_summary(text) == text


def test_a_benchmark_run_writes_its_section_and_its_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_results, "RESULTS_PATH", tmp_path / "RESULTS.md")
    argv = [arg for arg in TINY_MBDC if arg != "--no-record"]
    first, second = bench_mbdc.main(argv), bench_mbdc.main(argv)
    text, title = (tmp_path / "RESULTS.md").read_text(), "MBDC forward + backward (bench_mbdc.py, 1 thread)"
    assert text.count(f"## {title}\n") == 1 and text.count(f"| {title} |") == 1
    row = next(line for line in text.splitlines() if line.startswith(f"| {title} |"))
    assert (
        f"| speedup {second['speedup']:.2f}x" in row
        and "| `python benchmarks/bench_mbdc.py --threads 1" in row
    )
    old = (tmp_path / "history" / _results.HISTORY_NAME).read_text()
    assert old.count(f"## {title}\n") == 1 and f"- headline: speedup {first['speedup']:.2f}x" in old


def test_section_titles_name_the_command_not_the_machine():
    info = {"gpu": "NVIDIA H200"}
    plain = argparse.Namespace(threads=None, device="cpu", precision="fp32", quick=False)
    # torch's default thread count follows the machine's cores: a rerun elsewhere keeps the title
    assert _common.section_title(plain, "bench_x.py", "Speed", info) == "Speed (bench_x.py)"
    pinned = argparse.Namespace(threads=1, device="cpu", precision="fp32", quick=True)
    assert _common.section_title(pinned, "bench_x.py", "Speed", info, "224 px") == (
        "Speed (bench_x.py, 1 thread; 224 px, quick)"
    )
    gpu = argparse.Namespace(threads=2, device="cuda", precision="bf16", quick=False)
    assert _common.section_title(gpu, "bench_x.py", "Speed", info) == (
        "Speed (bench_x.py, 2 threads, cuda NVIDIA H200, bf16)"
    )


def test_results_md_leads_with_a_summary_of_its_sections():
    """The committed RESULTS.md: its table is what its sections generate, every benchmark section
    has a full row, and each row's figures are copied from its own section."""
    text = _results.RESULTS_PATH.read_text()
    assert _results.with_current_summary(text) == text, "regenerate the table: _results.with_current_summary"
    _, sections, records = _results.split_results(text)
    titles = [section.splitlines()[0] for section in sections]
    assert len(titles) == len(set(titles)) and records.startswith(_results.RECORDS_HEADING)
    for section in sections:
        fields = _results.section_fields(section)
        assert "-" not in fields.values(), (section.splitlines()[0], fields)
        own = section.replace(f"- headline: {fields['headline']}", "").replace(
            f"- target: {fields['target']}", ""
        )
        assert _results.figures_not_in(fields["headline"] + " " + fields["target"], own) == [], fields


def test_each_script_summarises_its_figures_as_its_report_prints_them():
    import answer_modes
    import bench_eval
    import bench_families
    import bench_generator
    import bench_retention
    import bench_vs_open_clip
    import frontier

    eval_figures = {
        "results": {"fused": {"workers=2": {"ratio": 0.8361, "ratio_paired_median": 0.8084}}},
        **{"target_ratio": 0.9, "target_met": False, "model": "dalip-tiny", "images": 1200},
    }
    assert (
        bench_eval.summary(eval_figures).headline == "eval/bare 0.836 (fused, workers=2; paired median 0.808)"
    )
    assert bench_eval.summary(eval_figures).target == ">= 0.9: MISSED"
    generator = bench_generator.summary({"make_dataset": {"images_per_s_cpu": 533.4}}, 64)
    assert (generator.headline, generator.target) == (
        "533 images per CPU second (make_dataset)",
        ">= 300: met",
    )
    ratios = {"wall_seconds": 1.0061, "step_seconds": 1.0433, "peak_mib": 0.8961}
    runs = bench_vs_open_clip.summary(
        {
            "ratios": {"dalip_clip": {name: {"median": value} for name, value in ratios.items()}},
            "target_met": {"whole_run": True, "per_step": False},
        }
    )
    assert runs.headline == "whole run 1.006, per step 1.043, peak memory 0.896"
    assert runs.target == "<= 1.05: whole run met, per step MISSED"
    costs = dict(zip(bench_retention.VARIANTS, [1.0, 0.771, 1.06, 1.364, 1.1]))
    retention = bench_retention.summary([{"model": "dalip-tiny", "batch": 64, "ratio_to_none": costs}])
    assert retention.headline == "dalip-tiny @ 64: lora 0.77, l2sp 1.06, distill 1.36, all 1.10"
    assert bench_families.summary([{"name": "RN50", "forward": {"ratio": 1.0361}}]).headline == "RN50 1.036"
    # beyond 3 models, bench_step gives ranges; beyond 3 recipes, frontier gives dalip and the best at half gain
    families = {
        name: {
            "time_ratio": time,
            "memory_ratio": memory,
            "time_target": target,
            "time_target_met": target and True,
        }
        | {"memory_target": 1.1, "memory_target_met": True}
        for name, time, memory, target in [
            ("dalip-tiny", 1.089, 1.072, 1.15),
            ("dalip-tiny-pe", 1.083, 1.089, None),
            ("dalip-tiny-eva02", 1.266, 1.087, None),
            ("dalip-tiny-coca", 1.019, 1.048, None),
        ]
    }
    step = bench_step.summary({"models": families, "dalip_options": "tower families"})
    assert step.headline == "4 models: time 1.019-1.266, memory 1.048-1.089"
    assert step.target == "memory <= 1.1: met in 4 of 4; dalip-tiny: time <= 1.15: met"

    def reading(mean: float) -> dict:
        return {"mean": mean / 100, "low": (mean - 1) / 100, "high": (mean + 1) / 100}

    paired = {
        name: {"gain": reading(gain), "general": reading(general), "general_at_level": {"0.5": half}}
        for name, gain, general, half in [
            ("dalip", 1.3, -0.4, reading(-1.2)),
            ("distill-clip", -8.9, 3.7, reading(-0.5)),
            ("l2sp-clip", -0.9, 3.6, reading(0.8)),
            ("lora-clip", -6.8, -2.2, None),
        ]
    }
    recipes = frontier.summary({"paired": paired}, "clip", "gain against retention").headline
    assert recipes == (
        "dalip - clip: plant gain +1.3 [+0.3, +2.3], general (tuned) -0.4 [-1.4, +0.6], general at 50% gain "
        "-1.2 [-2.2, -0.2]; l2sp-clip - clip: plant gain -0.9 [-1.9, +0.1], general (tuned) +3.6 [+2.6, +4.6], "
        "general at 50% gain +0.8 [-0.2, +1.8]"
    )
    rows = [
        ["dalip (fused)", 5, "+0.3", "-0.4", "+0.0", "+0.0"],
        ["dalip (own)", 5, "+0.4", "+0.8", "+0.1", "+1.2"],
    ]
    assert answer_modes.summary(rows).headline == "dalip (own): plant - CLIP +0.4, general - CLIP +0.8"


def test_scripts_have_help(capsys):
    for module in (bench_mbdc, bench_step, bench_data):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0
        assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["clip", "dalip"])
def test_bench_step_times_the_training_task(kind):
    task, config = bench_step.build_task("dalip-tiny", {}, False, 0, kind)
    assert isinstance(task, TrainingTask) and task.second_order == (kind == "dalip")
    heads, clip = task.model.image_mbdc.mix.weight.clone(), task.model.clip.text_projection.clone()
    images, texts = bench_step.random_batch(task.model.clip, 2, 0)
    assert math.isfinite(bench_step.training_step(task, config)(images, texts))
    assert not torch.equal(clip, task.model.clip.text_projection)
    assert torch.equal(heads, task.model.image_mbdc.mix.weight) == (kind == "clip")  # frozen for CLIP


# ---------------------------------------------------------------- _common's measurement helpers


@pytest.mark.parametrize(
    "name, flops",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA A10G", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_gpu_peak_flops_matches_whole_words(name, flops):
    assert _common.gpu_peak_flops(name) == flops


def test_count_flops_counts_forward_and_backward():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert _common.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    a.requires_grad_(), b.requires_grad_()
    assert _common.count_flops(lambda: (a @ b).sum().backward()) == 3 * 2 * 8 * 16 * 4  # + both gradients


def test_mfu_is_achieved_over_peak_and_none_without_a_peak():
    assert _common.mfu(1e12, 2.0, 1e12) == 0.5
    assert _common.mfu(1e12, 2.0, None) is None


def test_time_interleaved_calls_variants_in_turn():
    calls = []
    times = _common.time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1, device="cpu"
    )
    assert calls == ["a", "b"] * 4
    assert all(len(times[kind][name]) == 3 for kind in ("wall", "cpu") for name in ("a", "b"))
    seconds, cpu = _common.time_call(lambda: sum(range(10_000)))
    assert seconds > 0 and cpu >= 0


def _touch_fresh_pages(held: list, size: int) -> None:
    """`size` bytes of new anonymous memory, every page written: the resident set grows by that
    much (a tensor could reuse heap memory an earlier test freed but left resident)."""
    region = mmap.mmap(-1, size)
    region.write(b"\1" * size)
    held.append(region)


def test_peak_memory_sees_what_the_call_allocates():
    held: list = []
    result = _common.peak_memory(lambda: _touch_fresh_pages(held, 64 * 2**20), device="cpu")  # 64 MiB
    if not result["peak_was_reset"]:
        pytest.skip("this kernel does not let a process reset its resident-set high-water mark")
    assert result["region_peak_mib"] >= 60 and result["peak_mib"] >= result["before_mib"] + 60
    assert _common.process_peak_mib("cpu") >= result["peak_mib"] - 1


def test_machine_line_names_the_gpu_and_titles_name_device_and_precision():
    info = {
        **_common.machine("cpu"),
        "gpu": "NVIDIA H200",
        "gpu_count": 1,
        "cuda": "13.0",
        "gpu_peak_bf16_flops": 989e12,
    }
    assert "GPU: NVIDIA H200 (x1, CUDA 13.0, dense bf16 peak 989 TFLOP/s)" in _common.machine_line(info)
    assert "GPU" not in _common.machine_line(_common.machine("cpu"))
    gpu_bf16 = argparse.Namespace(device="cuda", precision="bf16")
    assert _common.device_label(gpu_bf16, info) == ", cuda NVIDIA H200, bf16"
    assert _common.device_label(argparse.Namespace(device="cpu", precision="fp32"), info) == ""
    assert (
        _common.conditions({"device": "cuda", "precision": "bf16", "machine": info})
        == "bfloat16 autocast on NVIDIA H200"
    )
    assert _common.conditions({"device": "cpu", "precision": "fp32", "machine": info}) == "float32"


@pytest.mark.slow
def test_bench_retention_times_each_option_against_none(capsys):
    import bench_retention

    assert bench_retention.main(["--models", "test-tiny:8", "--quick", "--no-record", "--json"]) == 0
    (result,) = printed_json(capsys)["results"]
    assert (
        set(result["ratio_to_none"]) == set(bench_retention.VARIANTS)
        and result["ratio_to_none"]["none"] == 1.0
    )
    trained = result["trained_parameters"]
    assert (
        trained["lora"] < trained["none"] == trained["l2sp"] == trained["distill"]
    )  # LoRA trains adapters only
