"""The benchmark scripts run end to end in a tiny configuration and report what they claim.

No timing is asserted (the machine is shared); these check that each script's `main`
runs, prints one JSON object with the documented keys, refuses to time a reference that
disagrees with dalip, and writes RESULTS.md sections without touching others.
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


def test_workers_per_gpu_rounds_up():
    assert bench_data.workers_per_gpu(2000, 356) == 6
    assert bench_data.workers_per_gpu(356, 356) == 1
    assert bench_data.workers_per_gpu(357, 356) == 2


def test_record_section_replaces_its_own_section_and_keeps_others(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Data generator\n\nkept as is\n")
    _common.record_section("Mine", "first run", path)
    _common.record_section("Other", "other text\n\n| a |\n", path)
    _common.record_section("Mine", "second run", path)
    text = path.read_text()
    assert text.count("## Mine") == 1 and "second run" in text and "first run" not in text
    assert "## Data generator\n\nkept as is\n" in text and "other text" in text
    assert text.index("## Data generator") < text.index("## Mine") < text.index("## Other")


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
