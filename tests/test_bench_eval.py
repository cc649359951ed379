"""benchmarks/bench_eval.py runs end to end on a tiny dataset and reports what it claims.

No timing is asserted (the machine is shared): the script's `main` must run, print one
JSON object equal to what it returns, with a bare and a zero_shot figure per mode and
worker count, and a profile that found the encode loop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_eval  # noqa: E402


def test_bench_eval_reports_eval_and_bare_rates(capsys, tmp_path):
    figures = bench_eval.main(
        [
            "--images",
            "16",
            "--species",
            "2",
            "--batch",
            "8",
            "--workers",
            "2,0",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
            "--quick",
            "--json",
            "--no-record",
        ]
    )
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(figures))
    assert figures["images"] == 16 and figures["batch"] == 8 and figures["input_shape"] == [3, 64, 64]
    assert set(figures["results"]) == {"loading", "fused", "first"}
    assert figures["results"]["loading"]["images_per_s"]["median"] > 0
    for mode in ("fused", "first"):
        entry = figures["results"][mode]
        assert set(entry) == {"bare", "workers=2", "workers=0"}, mode
        assert entry["bare"]["images_per_s"]["median"] > 0
        assert 0 < entry["bare"]["ratio_without_spare_core"] < 1
        for workers in ("workers=2", "workers=0"):
            assert entry[workers]["ratio"] > 0 and entry[workers]["ratio_paired_median"] > 0
            assert entry[workers]["cpu_ms_per_image"] > 0
    profile = figures["results"]["fused"]["workers=2"]["profile"]
    assert profile["loop_seconds"] > 0 and 0 < profile["encode_image_share"] <= 1
    assert 0 <= profile["loader_wait_share"] <= 1 and "top" not in profile
    assert isinstance(figures["target_met"], bool) and figures["target_ratio"] == bench_eval.TARGET_RATIO
    for mode in ("fused", "first"):
        assert figures["results"][mode]["bare"]["mfu"] is None  # no peak on CPU
    # MBDC costs FLOPs: a fused image costs more than a first-order one
    assert (
        figures["results"]["fused"]["bare"]["flops_per_image"]
        > figures["results"]["first"]["bare"]["flops_per_image"]
        > 0
    )
    assert (figures["device"], figures["precision"]) == ("cpu", "fp32")


def test_bench_eval_options():
    quick = bench_eval.parse_args(["--quick"])
    assert quick.images <= 96 and quick.repeats <= 2 and quick.workers == [2, 0]
    assert bench_eval.parse_args(["--workers", "1"]).workers == [1]
    assert bench_eval.parse_args(["--precision", "bf16"]).precision == "bf16"
    for bad in ("two", "-1", ","):
        with pytest.raises(SystemExit):
            bench_eval.parse_args(["--workers", bad])


def test_bench_eval_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_eval.main(["--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_bench_eval_refuses_cuda_without_a_gpu(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        bench_eval.parse_args(["--device", "cuda"])
    assert exit_info.value.code == 2 and "cuda requested" in capsys.readouterr().err
