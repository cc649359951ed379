"""benchmarks/bench_vs_open_clip.py: its pure parts (both tools' logs, the step-count
arithmetic, the ratio summary), the data and flags it hands to each tool (checked by the
tools' own parsers), and one quick end-to-end run (slow: two fresh training processes).

No timing is asserted: the machine is shared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_vs_open_clip as bench  # noqa: E402

# Two epochs of 3 steps of 16 each (open_clip_train's log format, --log-every-n-steps 2).
OPEN_CLIP_LOG = """\
2026-12-01,10:00:00 | INFO | Start epoch 0
2026-12-01,10:00:04 | INFO | Train Epoch: 0 [16/48 (33%)] Data (t): 0.500 Batch (t): 4.000, 4.0/s, 4.0/s/gpu LR: 0.000250 Logit Scale: 14.286 Contrastive_loss: 2.7613 (2.7613) Loss: 2.7613 (2.7613)
2026-12-01,10:00:05 | INFO | Train Epoch: 0 [48/48 (100%)] Data (t): 0.010 Batch (t): 0.300, 53.3/s, 53.3/s/gpu LR: 0.000500 Logit Scale: 14.282 Contrastive_loss: 3.1880 (2.9746) Loss: 3.1880 (2.9746)
2026-12-01,10:00:05 | INFO | Start epoch 1
2026-12-01,10:00:07 | INFO | Train Epoch: 1 [16/48 (33%)] Data (t): 0.400 Batch (t): 1.000, 16.0/s, 16.0/s/gpu LR: 0.000500 Logit Scale: 14.276 Contrastive_loss: 2.9123 (2.9538) Loss: 2.9123 (2.9538)
2026-12-01,10:00:08 | INFO | Train Epoch: 1 [48/48 (100%)] Data (t): 0.020 Batch (t): 0.200, 80.0/s, 80.0/s/gpu LR: 0.000073 Logit Scale: 14.262 Contrastive_loss: 2.7004 (2.8468) Loss: 2.7004 (2.8468)
"""


def test_open_clip_log_becomes_windows_counted_over_epochs():
    windows = bench.open_clip_windows(OPEN_CLIP_LOG, batch_size=16)
    assert [(w.end_step, w.steps) for w in windows] == [(1, 1), (3, 2), (4, 1), (6, 2)]
    assert [w.batch_seconds for w in windows] == [4.0, 0.3, 1.0, 0.2]
    assert windows[0].data_seconds == 0.5


def test_dalip_records_become_windows_from_batch_time():
    records = [
        {"step": 2, "loss": 3.0, "batch_time": 2.0, "data_time": 0.5, "images_per_second": 8.0},
        {"step": 2, "eval": {"top1": 0.1}},  # a zero-shot record is no step record
        {"step": 4, "loss": 2.9, "batch_time": 0.25, "data_time": 0.01, "images_per_second": 64.0},
        {"step": 5, "loss": 2.8, "batch_time": 0.5, "data_time": 0.02, "images_per_second": 32.0},
    ]
    windows, basis = bench.dalip_windows(records, batch_size=16)
    assert basis == "batch_time"
    assert [(w.end_step, w.steps, w.batch_seconds) for w in windows] == [
        (2, 2, 2.0),
        (4, 2, 0.25),
        (5, 1, 0.5),
    ]


def test_dalip_records_without_batch_time_fall_back_to_images_per_second():
    windows, basis = bench.dalip_windows([{"step": 3, "loss": 1.0, "images_per_second": 32.0}], batch_size=16)
    assert basis == "images_per_second"
    assert windows == [bench.Window(3, 1, 0.5)]


def test_steady_step_seconds_leaves_out_the_first_steps():
    windows = bench.open_clip_windows(OPEN_CLIP_LOG, batch_size=16)
    # skip 1: windows (2-3), (4), (5-6) -> (2 * 0.3 + 1.0 + 2 * 0.2) / 5
    assert bench.steady_step_seconds(windows, 1) == pytest.approx(2.0 / 5)
    assert bench.steady_step_seconds(windows, 3) == pytest.approx((1.0 + 0.4) / 3)
    assert bench.steady_step_seconds(windows, 0) == pytest.approx((4.0 + 0.6 + 1.0 + 0.4) / 6)
    assert bench.steady_step_seconds(windows, 6) is None


def test_step_counts_match():
    for steps, batch in ((5, 8), (40, 64), (200, 256)):
        assert bench.open_clip_steps(bench.csv_rows(steps, batch), batch) == steps
    assert bench.open_clip_steps(100, 64) == 1  # the last partial batch is dropped


def test_ratio_summary_is_dalip_over_open_clip_per_round():
    def run(wall, step):
        return {"wall_seconds": wall, "cpu_seconds": 2 * wall, "peak_mib": 100.0, "step_seconds": step}

    rounds = [
        {"open_clip": run(10.0, 0.5), "dalip_clip": run(11.0, 0.5), "dalip_dalip": run(12.0, None)},
        {"open_clip": run(20.0, 1.0), "dalip_clip": run(18.0, 0.9), "dalip_dalip": run(30.0, None)},
        {"open_clip": run(10.0, 0.5), "dalip_clip": run(10.0, 0.6), "dalip_dalip": run(15.0, None)},
    ]
    ratios = bench.ratio_summary(rounds)
    assert ratios["dalip_clip"]["wall_seconds"] == pytest.approx({"median": 1.0, "min": 0.9, "max": 1.1})
    assert ratios["dalip_clip"]["step_seconds"] == pytest.approx({"median": 1.0, "min": 0.9, "max": 1.2})
    assert ratios["dalip_clip"]["peak_mib"] == {"median": 1.0, "min": 1.0, "max": 1.0}
    assert ratios["dalip_dalip"]["wall_seconds"]["median"] == pytest.approx(1.5)
    assert ratios["dalip_dalip"]["step_seconds"] is None
    assert bench.target_verdict(ratios) == {"whole_run": True, "per_step": True}
    assert bench.absolute_summary(rounds)["open_clip"]["wall_seconds"]["median"] == 10.0
    two_variants = [{k: v for k, v in r.items() if k != "dalip_dalip"} for r in rounds]
    assert set(bench.ratio_summary(two_variants)) == {"dalip_clip"}


@pytest.fixture
def training_csv(tmp_path: Path) -> Path:
    (tmp_path / "data" / "a").mkdir(parents=True)
    for name in ("x.jpg", "y.jpg"):
        (tmp_path / "data" / "a" / name).write_bytes(b"not read here")
    (tmp_path / "data" / "captions.csv").write_text(
        'filepath,caption,label\na/x.jpg,"a leaf, serrate",0\na/y.jpg,a cordate leaf,1\n'
    )
    target = tmp_path / "train.csv"
    bench.write_training_csv(tmp_path / "data" / "captions.csv", target, rows=5)
    return target


def test_training_csv_is_read_by_open_clip_train_as_given(training_csv: Path):
    from open_clip_train.data import CsvDataset

    dataset = CsvDataset(str(training_csv), None, img_key="filepath", caption_key="caption", sep=",")
    assert len(dataset) == 5
    assert dataset.captions[:3] == ["a leaf, serrate", "a cordate leaf", "a leaf, serrate"]
    assert all(Path(path).is_absolute() and Path(path).exists() for path in dataset.images)


def test_open_clip_train_parses_the_flags(tmp_path: Path):
    from open_clip_train.params import parse_args

    args = bench.parse_args(
        ["--batch", "32", "--steps", "20", "--warmup", "4", "--log-every", "3", "--precision", "bf16"]
    )
    parsed = parse_args(bench.open_clip_argv(args, tmp_path / "train.csv", tmp_path / "logs", "round-0"))
    assert (parsed.model, parsed.batch_size, parsed.epochs, parsed.workers) == (bench.MODEL, 32, 1, 1)
    assert (parsed.precision, parsed.device, parsed.warmup, parsed.log_every_n_steps) == (
        "amp_bf16",
        "cpu",
        4,
        3,
    )
    assert (parsed.lr, parsed.wd, parsed.beta2, parsed.eps, parsed.grad_clip_norm) == (
        5e-4,
        0.2,
        0.98,
        1e-6,
        1.0,
    )
    assert (parsed.dataset_type, parsed.csv_separator, parsed.csv_img_key) == ("csv", ",", "filepath")


def test_dalip_config_loads_as_the_same_run(training_csv: Path, tmp_path: Path):
    import yaml

    from dalip.config import load_train_config

    args = bench.parse_args(["--batch", "32", "--steps", "20", "--warmup", "4", "--precision", "bf16"])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(bench.dalip_config(args, training_csv, tmp_path / "out")))
    config = load_train_config(path, ["loss.kind=clip"])
    assert (config.model.name, config.batch_size, config.steps, config.precision) == (
        bench.MODEL,
        32,
        20,
        "bf16",
    )
    assert (config.data.workers, config.optim.warmup_steps, config.optim.lr, config.optim.grad_clip) == (
        1,
        4,
        5e-4,
        1.0,
    )
    assert config.checkpoint_every > config.steps and config.loss.kind == "clip" and not config.tensorboard


def test_options():
    quick = bench.parse_args(["--quick"])
    assert (
        quick.variants == ("open_clip", "dalip_clip")
        and quick.repeats == 1
        and quick.steps > quick.skip_steps
    )
    assert bench.parse_args([]).variants == bench.VARIANTS
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "5", "--skip-steps", "5"])


def test_cuda_is_refused_without_a_gpu(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--device", "cuda"])
    assert exit_info.value.code == 2 and "cuda requested" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_reports_ratios(capsys):
    figures = bench.main(["--quick", "--json", "--no-record"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(figures))
    (round_,) = figures["rounds"]
    for variant in ("open_clip", "dalip_clip"):
        assert round_[variant]["wall_seconds"] > 0 and round_[variant]["peak_mib"] > 0
        assert round_[variant]["step_seconds"] > 0
    assert round_["dalip_clip"]["step_basis"] in ("batch_time", "images_per_second")
    clip = figures["ratios"]["dalip_clip"]
    assert clip["wall_seconds"]["median"] > 0 and clip["step_seconds"]["median"] > 0
    assert set(figures["target_met"]) == {"whole_run", "per_step"}
