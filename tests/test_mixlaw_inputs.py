"""`dalip mixlaw` under faults and bad input: Ctrl-C inside a pilot's checkpoint write, a
pilot killed before its first checkpoint, a recommendation outside the pilots' range and its
intervals, and each option's mistakes as one line (exit 2). The pilots here train nothing:
`train` claims its folder as `dalip train` does and writes a stand-in model, and `measure`
gives each domain the loss of a known law at the pilot's share."""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import files_under, save_stopped_by_ctrl_c, user_error
from data_fixtures import write_csv
from test_mixlaw import GENERAL, PLANT, _config, _sources

import dalip.experiments.runs
import dalip.mixlaw.report
import dalip.mixlaw.study
import dalip.train.state
from dalip.cli.main import main
from dalip.config import config_to_dict
from dalip.mixlaw import Measures, Objective, fit_study, measure
from dalip.outputs import LOCK_NAME, MANIFEST_NAME
from dalip.train.out_dir import claim_out_dir
from dalip.train.state import save_training_state

MEASURE = importlib.import_module("dalip.mixlaw.measure")  # dalip.mixlaw.measure is the function
FIRST = "plant0.5000-general0.5000-seed0-steps4"  # the first pilot's folder


def _argv(tmp_path: Path, *extra: str, shares: str = "0.5,0.65,0.8,0.9") -> list[str]:
    sources = _sources(tmp_path, ("plant", "general"), (1.0, 1.0))
    argv = ["mixlaw", "--config", str(_config(tmp_path, sources)), "--out", str(tmp_path / "out")]
    argv += ["--shares", shares, "--val", f"plant={sources[0].path}", "--val", f"general={sources[1].path}"]
    return argv + ["--resamples", "10", *extra]


def _share(path: str | os.PathLike) -> float:
    match = re.search(r"plant([0-9.]+)-general", str(path))
    return float(match.group(1)) if match else 0.0  # the start model: no plant tuning


@pytest.fixture
def pilots(monkeypatch):
    """Stand-in pilots (module docstring) and no figure; returns each train call's (folder, resume)."""
    calls = []

    def train(config, resume=None, validate=None, choose_mode=None):
        run = Path(config.out_dir)
        calls.append((run.name, resume))
        with claim_out_dir(run, is_main=True, device=torch.device("cpu"), resume=resume, force=False):
            (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
            (run / "model.safetensors").write_bytes(b"a stand-in model")
        return {"interrupted_by_signal": None, "step": config.steps}

    def measured(checkpoint, measures, cache, runtime):
        share = np.array([_share(checkpoint)])
        losses = {"plant": float(PLANT(share)[0]), "general": float(GENERAL(share)[0])}
        return {
            "loss": {domain: dict.fromkeys(measures.modes, loss) for domain, loss in losses.items()},
            "zero_shot": {},
        }

    monkeypatch.setattr(dalip.experiments.runs, "train", train)
    monkeypatch.setattr(dalip.mixlaw.study, "measure", measured)
    monkeypatch.setattr(dalip.mixlaw.report, "mixlaw_plot", lambda results, path: None)  # not tested here
    return calls


# -- Ctrl-C inside a checkpoint write ----------------------------------------------------
def test_ctrl_c_while_a_pilot_writes_its_checkpoint_stops_the_study_as_train_stops(
    tmp_path, monkeypatch, capsys
):
    def train(config, resume=None, validate=None, choose_mode=None):
        checkpoint = Path(config.out_dir) / "checkpoints" / "step_000000002.pt"
        save_training_state(checkpoint, {"weights": torch.zeros(1000)})  # as the loop writes one

    monkeypatch.setattr(dalip.train.state, "save_torch", save_stopped_by_ctrl_c)
    monkeypatch.setattr(dalip.experiments.runs, "train", train)
    assert main(_argv(tmp_path, "--weight", "plant=1")) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "dalip mixlaw: interrupted", err
    assert "Traceback" not in err and "RuntimeError" not in err
    assert not list((tmp_path / "out" / "pilots" / FIRST / "checkpoints").glob("*"))


# -- a pilot killed with SIGKILL -----------------------------------------------------------
class _Killed(BaseException):
    """Stands for SIGKILL: the process ends where it is (the clean-up it runs is undone)."""


def _kill_the_first_pilot(tmp_path: Path, monkeypatch, argv: list[str]) -> Path:
    """Run the study until its first pilot has written config.yaml, metrics.jsonl and half of
    its first checkpoint, and leave the folders as SIGKILL would: the study's manifest as it
    was when the pilot started, the pilot's folder without a manifest."""
    out, seen = tmp_path / "out", {}

    def killed(config, resume=None, validate=None, choose_mode=None):
        run = seen["run"] = Path(config.out_dir)
        seen["manifest"] = (out / MANIFEST_NAME).read_text()
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
        (run / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / ".step_000000002.pt.k7x2m9qa.tmp").write_bytes(b"half a checkpoint")
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(dalip.experiments.runs, "train", killed)
        with pytest.raises(_Killed):
            main(argv)
    (out / MANIFEST_NAME).write_text(seen["manifest"])
    for name in (MANIFEST_NAME, LOCK_NAME):
        (seen["run"] / name).unlink(missing_ok=True)
    assert files_under(seen["run"]) == {
        "config.yaml",
        "metrics.jsonl",
        "checkpoints",
        "checkpoints/.step_000000002.pt.k7x2m9qa.tmp",
    }
    return seen["run"]


def test_a_pilot_killed_before_its_first_checkpoint_restarts_on_a_rerun(tmp_path, monkeypatch, pilots):
    argv = _argv(tmp_path, "--weight", "plant=1", "--weight", "general=1")
    run = _kill_the_first_pilot(tmp_path, monkeypatch, argv)
    assert main(argv) == 0
    assert pilots[0] == (FIRST, None)  # trained from the start: no checkpoint to resume
    assert files_under(run) == {"config.yaml", "model.safetensors", MANIFEST_NAME, LOCK_NAME}
    assert len(json.loads((tmp_path / "out" / "mixlaw.json").read_text())["pilots"]) == 4


def test_a_pilot_killed_after_a_checkpoint_resumes_from_it(tmp_path, monkeypatch, pilots):
    argv = _argv(tmp_path, "--weight", "plant=1")
    run = _kill_the_first_pilot(tmp_path, monkeypatch, argv)
    checkpoint = run / "checkpoints" / "step_000000001.pt"
    checkpoint.write_bytes(b"the checkpoint of step 1")
    monkeypatch.setattr(dalip.mixlaw.study, "measure", _stop)  # enough once the pilot trained
    assert main(argv) == 130
    assert pilots == [(FIRST, "latest")] and checkpoint.read_bytes() == b"the checkpoint of step 1"


def _stop(*args, **kwargs):
    raise KeyboardInterrupt


def test_a_pilot_folder_the_study_did_not_make_is_refused_and_kept(tmp_path, monkeypatch, capsys, pilots):
    argv = _argv(tmp_path, "--weight", "plant=1")
    _kill_the_first_pilot(tmp_path, monkeypatch, argv)
    theirs = tmp_path / "out" / "pilots" / "plant0.6500-general0.3500-seed0-steps4"
    theirs.mkdir()
    for name in ("config.yaml", "metrics.jsonl", "notes.txt"):
        (theirs / name).write_text("someone else's\n")
    for _ in range(2):  # and the refusal claimed nothing: the next rerun refuses it again
        line = user_error(capsys, *argv, alone=False)  # after the pilots' log lines
        assert str(theirs) in line and "holds no earlier `dalip train` output" in line
        assert files_under(theirs) == {"config.yaml", "metrics.jsonl", "notes.txt"}
    assert pilots[0] == (FIRST, None)  # the study's own killed pilot started again


# -- a recommendation outside the pilots ---------------------------------------------------
def test_a_recommendation_outside_the_pilots_is_kept_inside_or_flagged(tmp_path, capsys, pilots):
    """The general loss alone falls with the plant share toward 0: far below the pilots'
    0.5-0.9. By default the recommendation stays within their range and says where the
    law's optimum lies; with --extrapolate it goes there and is flagged as an extrapolation."""
    argv = _argv(tmp_path, "--weight", "general=1")
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "mixlaw.json").read_text())
    assert results["recommended"][0] == pytest.approx(0.5) and not results["extrapolated"]
    assert results["pilot_range"] == {"low": [0.5, pytest.approx(0.1)], "high": [0.9, 0.5]}
    assert results["optimum_outside_range"][0] == pytest.approx(0.005)
    assert "outside the pilots' range" in printed and "--extrapolate" in printed
    assert "outside the pilots' range" in (tmp_path / "out" / "report.md").read_text()
    assert main([*argv, "--extrapolate"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "mixlaw.json").read_text())
    assert results["recommended"][0] == pytest.approx(0.005) and results["extrapolated"]
    assert "Extrapolated: " in printed and "Extrapolated: " in (tmp_path / "out" / "report.md").read_text()
    assert len(pilots) == 4  # the second run reused the pilots


def _noisy_rows(shares, seed, noise=0.005):
    rng = np.random.default_rng(seed)
    return [
        {
            "mixture": [share, 1 - share],
            "seed": 0,
            "steps": 10,
            "held_out": False,
            "loss": {
                "plant": float(PLANT(np.array([share]))[0]) + rng.normal(0, noise),
                "general": float(GENERAL(np.array([share]))[0]) + rng.normal(0, noise),
            },
        }
        for share in shares
    ]


def test_every_interval_contains_its_point_estimate():
    """One seed of noisy pilots: the refits on 5 resamples fall on one side of the fit at the
    recommended share, and a plain percentile interval missed both that share and its loss."""
    rows = _noisy_rows([0.5, 0.65, 0.8, 0.9], seed=26)
    weighted = Objective("plant", weights={"plant": 1, "general": 1})
    result = fit_study(rows, ["plant", "general"], weighted, resamples=5)
    assert 0.5 < result["recommended"][0] < 0.9
    for share, (low, high) in zip(result["recommended"], result["recommended_interval"]):
        assert low <= share <= high
    for domain, predicted in result["predicted"].items():
        assert predicted["interval"][0] <= predicted["loss"] <= predicted["interval"][1], domain
    for curve in result["bands"]["curves"]:
        assert np.all(np.array(curve["low"]) <= curve["fit"]) and np.all(
            curve["fit"] <= np.array(curve["high"])
        )
    assert not result["extrapolated"]
    limited = Objective("plant", "general", 0.05, 1.55)  # general <= 1.6: below the pilots' shares
    result = fit_study(rows, ["plant", "general"], limited, resamples=5, within_range=True)
    assert result["recommended"] is None and result["optimum_outside_range"][0] < 0.5


# -- the options' mistakes -----------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--eps", "inf"], "--eps: expected a finite loss margin > 0, got inf"),
        (["--weight", "plant=1", "--weight", "plant=2"], "--weight: domain 'plant' is given twice"),
        (["--weight", "plant=inf"], "--weight: expected a finite weight >= 0 for plant, got inf"),
        (["--weight", "plant=0"], "--weight: every weight is 0"),
        (["--weight", "plant=1", "--eps", "0.1"], "--eps and --weight: give one objective"),
        (["--weight", "plant=1", "--keep", "general"], "--keep: applies to the --eps objective"),
        (["--eps", "0.1", "--full-steps", "1000"], "--full-steps: needs pilots at two or more --steps"),
        (
            ["--eps", "0.1", "--val", "plant=/dev/zero"],
            "/dev/zero: the --val plant caption CSV is not a regular file",
        ),
    ],
    ids=[
        "eps-inf",
        "weight-twice",
        "weight-inf",
        "weights-zero",
        "weight-and-eps",
        "weight-and-keep",
        "full-steps",
        "val-device",
    ],
)
def test_a_mistaken_option_is_one_line_naming_it(tmp_path, capsys, extra, message):
    argv = _argv(tmp_path, *extra)
    if "--val" in extra:  # the later --val replaces the plant one: drop the first
        at = argv.index("--val")
        del argv[at : at + 2]
    line = user_error(capsys, *argv)
    assert message in line, line
    assert not (tmp_path / "out" / "pilots").exists()


def test_a_mixture_file_that_is_a_device_or_repeats_a_row_is_named(tmp_path, capsys):
    argv = _argv(tmp_path, "--eps", "0.1")
    at = argv.index("--shares")
    line = user_error(capsys, *argv[:at], "--mixtures", "/dev/zero", *argv[at + 2 :])
    assert "/dev/zero: the --mixtures file is not a regular file" in line
    rows = [{"plant": share, "general": round(1 - share, 2)} for share in (0.5, 0.6, 0.7, 0.5, 0.8)]
    mixtures = write_csv(tmp_path / "mixtures.csv", rows)
    line = user_error(capsys, *argv[:at], "--mixtures", mixtures, *argv[at + 2 :])
    assert f"{mixtures}, line 5: the mixture 0.5:0.5 repeats line 2" in line and "--shares" not in line
    line = user_error(capsys, *argv, "--holdout", "0.8")
    assert "--holdout: the mixture 0.8:0.2 is also a fitted pilot mixture" in line


def test_the_measures_cache_is_keyed_by_content_not_size_and_time(tmp_path, monkeypatch):
    """An edited validation file (or model) with its old size and time is measured again."""
    sources = _sources(tmp_path, ("plant", "general"), (1.0, 1.0))
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights A")
    measured = []

    def contrastive(model_, path, *args):
        measured.append(path)
        return {"modes": {"fused": {"loss": 1.0}}}

    monkeypatch.setattr(MEASURE, "load_model", lambda spec: _Loaded())
    monkeypatch.setattr(MEASURE, "contrastive_loss", contrastive)
    measures = Measures({"plant": sources[0].path, "general": sources[1].path})
    cache = tmp_path / "measures" / "pilot.json"
    measure(model, measures, cache, None)
    measure(model, measures, cache, None)
    assert len(measured) == 2  # the second call came from the cache
    for path, new in ((Path(sources[1].path), None), (model, b"weights B")):
        stamp = path.stat()
        text = path.read_bytes()
        path.write_bytes(new if new is not None else text.replace(b"source1", b"sourceX"))
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        assert path.stat().st_size == stamp.st_size and path.stat().st_mtime_ns == stamp.st_mtime_ns
        before = len(measured)
        measure(model, measures, cache, None)
        assert len(measured) == before + 2, path


class _Loaded:
    model, tokenizer, preprocess = None, None, None
