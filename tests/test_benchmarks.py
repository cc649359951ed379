"""The benchmark scripts run end to end in a tiny configuration and report what they claim.

No timing is asserted (the machine is shared); these check that each script's `main`
runs, prints one JSON object with the documented keys, refuses to time a reference that
disagrees with dalip, and writes RESULTS.md sections without touching others.
"""

from __future__ import annotations

import json
import math
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

TINY_MBDC = ["--threads", "1", "--batch", "3", "--tokens", "9", "--width", "16", "--heads", "2",
             "--reduced-dim", "4", "--repeats", "1", "--warmup", "0", "--json", "--no-record"]


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


def test_reference_mbdc_is_the_same_math_as_dalip():
    torch.manual_seed(0)
    module = bench_mbdc.MBDC(12, heads=3, reduced_dim=5, learnable_temperature=True).double().eval()
    with torch.no_grad():
        module.log_temperature.fill_(0.3)
    tokens, summary = torch.randn(2, 7, 12, dtype=torch.float64), torch.randn(2, 12, dtype=torch.float64)
    torch.testing.assert_close(bench_mbdc.reference_mbdc(module, tokens, summary), module(tokens, summary),
                               rtol=0, atol=1e-12)


def test_bench_mbdc_refuses_to_time_a_disagreeing_reference(monkeypatch):
    original = bench_mbdc.reference_mbdc
    monkeypatch.setattr(bench_mbdc, "reference_mbdc", lambda m, t, s: original(m, t, s) * (1 + 1e-6))
    with pytest.raises(AssertionError, match="disagree in float64"):
        bench_mbdc.main(TINY_MBDC)


def test_bench_step_reports_ratios_and_extra_parameters(capsys):
    figures = bench_step.main(["--threads", "1", "--models", "dalip-tiny:2", "--repeats", "1",
                               "--warmup", "0", "--memory-steps", "2", "--json", "--no-record"])
    assert printed_json(capsys)["models"].keys() == {"dalip-tiny"}
    tiny = figures["models"]["dalip-tiny"]
    for key in ("time_ratio", "memory_ratio", "memory_ratio_total", "extra_parameters",
                "extra_parameters_percent", "time_target_met", "memory_target_met"):
        assert key in tiny, key
    assert tiny["time_ratio"] > 0 and tiny["peak_was_reset"] in (True, False)
    # dalip-tiny's MBDC (4 heads x 16, width 128), twice: token projection, reduction,
    # LayerNorm, 544 x 544 mix and 544 -> 128 output projection per tower.
    vector = 4 * 16 * 17 // 2
    per_tower = 128 * 128 + 128 + 32 * 16 + 16 + 2 * 16 + 2 * vector + vector * vector + vector \
        + vector * 128 + 128
    assert tiny["extra_parameters"] == 2 * per_tower
    # The resident-set method sees what a step allocates: at least gradients and AdamW's
    # two moments in float32 (12 bytes per parameter).
    assert tiny["clip_step_peak_mib"] >= 0.9 * 12 * tiny["base_parameters"] / 2**20
    all_parameters = tiny["base_parameters"] + tiny["extra_parameters"]
    assert tiny["dalip_step_peak_mib"] >= 0.9 * 12 * all_parameters / 2**20


def test_bench_step_options_parse():
    args = bench_step.parse_args(["--models", "ViT-B-16:8,dalip-tiny:64", "--mbdc", "reduced_dim=16",
                                  "--shared-mbdc"])
    assert args.model_list == [("ViT-B-16", 8), ("dalip-tiny", 64)]
    assert args.mbdc == {"reduced_dim": 16}
    assert bench_step.variant_label(args) == "reduced_dim=16, shared MBDC"
    with pytest.raises(ValueError, match="NAME:BATCH"):
        bench_step.parse_args(["--models", "ViT-B-16"])


def test_bench_data_reports_loader_and_step_rates(capsys, tmp_path):
    figures = bench_data.main(["--threads", "1", "--batch", "8", "--train-per-class", "2", "--repeats", "1",
                               "--step-repeats", "1", "--warmup", "0", "--fed-steps", "1",
                               "--data-dir", str(tmp_path / "data"), "--json", "--no-record"])
    assert printed_json(capsys)["sources"].keys() == set(bench_data.SOURCE_KINDS)
    assert figures["step_samples_per_s"] > 0 and figures["generator"]["images"] > 0
    for kind, source in figures["sources"].items():
        assert source["samples_per_s"] > 0, kind
        assert source["epoch_samples"] > 0, kind
        assert source["fed_step_samples_per_s"] > 0, kind
        assert isinstance(source["target_met"], bool)


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
