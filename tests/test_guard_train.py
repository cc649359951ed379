"""`dalip train` never reports a wrong run as a success: values out of
range are refused before anything runs, one out_dir holds one run at a time, a resume
continues the run it belongs to, and a run whose data or weights went bad stops."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from guard_helpers import files_under, user_error
from train_fixtures import write_config

from dalip.cli import main
from dalip.outputs import LOCK_NAME
from dalip.train.run_log import read_metrics


@pytest.mark.parametrize(
    "override, field",
    [
        ("optim.lr=.nan", "optim.lr"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.lr=-1e-3", "optim.lr"),
        ("optim.grad_clip=-1", "optim.grad_clip"),
        ("optim.mbdc_lr=-1e-4", "optim.mbdc_lr"),
        ("optim.weight_decay=-0.1", "optim.weight_decay"),
        ("optim.warmup_steps=-5", "optim.warmup_steps"),
        ("optim.min_lr_ratio=1.5", "optim.min_lr_ratio"),
        ("eval_every=-1", "eval_every"),
        ("lock.image_unlocked_groups=-1", "lock.image_unlocked_groups"),
        ("lock.text_unlocked_layers=-2", "lock.text_unlocked_layers"),
        ("optim.beta1=2", "optim.beta1"),
        ("optim.eps=0", "optim.eps"),
        ("model.image_size=0", "model.image_size"),
        ("model.context_length=0", "model.context_length"),
        ("data.num_samples=-5", "data.num_samples"),
        ("model.dropout=1.5", "model.dropout"),
        ("model.alpha=.nan", "model.alpha"),
        ("seed=-1", "seed"),
        ("device=tpu", "device"),
        ("loss.combine=product", "loss.combine"),
        ("data.workers=-1", "data.workers"),
    ],
)
def test_out_of_range_values_are_refused_before_anything_runs(train_data, tmp_path, capsys, override, field):
    config = write_config(train_data, tmp_path / "run")
    message = user_error(capsys, "train", "--config", config, "--set", override)
    assert f"error: {field}: expected" in message
    assert not (tmp_path / "run").exists()


def test_an_infinite_source_weight_is_refused(train_data, tmp_path, capsys):
    path = train_data / "plant/train/captions.csv"
    config = write_config(
        train_data,
        tmp_path / "run",
        data={"sources": [{"kind": "csv", "path": str(path), "weight": float("inf")}]},
    )
    assert "data.sources[0].weight: expected a finite number > 0, got inf" in user_error(
        capsys, "train", "--config", config
    )


def test_broken_yaml_in_an_override_and_scalar_sections(train_data, tmp_path, capsys):
    config = write_config(train_data, tmp_path / "run")
    assert "'optim.lr=[1,'" in user_error(capsys, "train", "--config", config, "--set", "optim.lr=[1,")
    scalar = tmp_path / "scalar.yaml"
    for section in ("data", "model"):
        scalar.write_text(f"{section}: 3\n")
        message = user_error(capsys, "train", "--config", scalar)
        assert "scalar.yaml" in message and f"{section!r}" in message
    scalar.write_bytes("model: {name: caf\xe9}\n".encode("latin-1"))
    assert "scalar.yaml: not UTF-8" in user_error(capsys, "train", "--config", scalar)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(train_data, tmp_path, capsys):
    config = write_config(train_data, tmp_path / "run")
    message = user_error(capsys, "train", "--config", config, "--set", "device=cuda")
    assert "device 'cuda'" in message and "not available" in message


def test_relative_paths_in_a_config_are_relative_to_the_file(train_data, tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").mkdir()
    (tmp_path / "cwd").mkdir()
    config = tmp_path / "configs" / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "name": "test-tiny",
                    "config_file": "../model.json",
                    "pretrained": "../start.safetensors",
                },
                "data": {"sources": [{"kind": "csv", "path": "../data.csv"}]},
                "out_dir": "../runs/x",
            }
        )
    )
    for name in ("model.json", "start.safetensors", "data.csv"):
        (tmp_path / name).write_text("{}")
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["train", "--config", str(config), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["out_dir"] == str(tmp_path / "runs" / "x")
    assert printed["model"]["config_file"] == str(tmp_path / "model.json")
    assert printed["model"]["pretrained"] == str(tmp_path / "start.safetensors")
    assert printed["data"]["sources"][0]["path"] == str(tmp_path / "data.csv")


def test_the_shipped_tiny_config_writes_inside_the_checkout(monkeypatch, tmp_path, capsys):
    checkout = tmp_path / "checkout"
    (checkout / "configs").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml", checkout / "configs")
    data = checkout / "data" / "synthetic"
    for folder in ("plant/train", "general/train", "plant/val"):
        (data / folder).mkdir(parents=True)
    (data / "plant/train/captions.csv").write_text("filepath,caption\n")
    monkeypatch.chdir(checkout)  # as README runs it: from the checkout
    assert main(["train", "--config", "configs/tiny-cpu.yaml", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["out_dir"] == str(checkout / "runs" / "tiny-dalip")
    assert printed["data"]["val"] == str(data / "plant/val")


def test_a_folder_in_use_by_a_running_train_is_refused(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    hold = (
        "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        message = user_error(capsys, "train", "--config", write_config(train_data, out))
        assert "in use by another dalip command" in message and LOCK_NAME in message
    finally:
        holder.kill()
        holder.wait()
    assert files_under(out) == {LOCK_NAME}


def test_a_folder_of_someone_else_is_refused(train_data, tmp_path, capsys):
    out = tmp_path / "home"
    out.mkdir()
    (out / "config.yaml").write_text("mine: true\n")
    assert "not empty" in user_error(capsys, "train", "--config", write_config(train_data, out))
    assert files_under(out) == {"config.yaml"} and (out / "config.yaml").read_text() == "mine: true\n"


def test_resume_refuses_changed_fields_and_applies_allowed_ones(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(train_data, out, steps=4, checkpoint_every=2)
    assert main(["train", "--config", str(config), "--set", "steps=2"]) == 0
    before = {name: (out / name).read_text() for name in ("config.yaml", "metrics.jsonl")}
    message = user_error(
        capsys, "train", "--config", config, "--resume", "latest", "--set", "batch_size=4", "--set", "seed=3"
    )
    for field in ("batch_size: 8 -> 4", "seed: 0 -> 3", "steps: 2 -> 4", "--allow-change steps"):
        assert field in message
    assert {name: (out / name).read_text() for name in before} == before
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--resume",
                "latest",
                "--set",
                "optim.lr=2e-3",
                "--allow-change",
                "steps",
                "--allow-change",
                "optim.lr",
            ]
        )
        == 0
    )
    records = read_metrics(out / "metrics.jsonl")
    change = next(r for r in records if "resumed_with_changes" in r)
    assert change["step"] == 2 and change["resumed_with_changes"]["optim.lr"] == [1e-3, 2e-3]
    # 4-step cosine after 2 warmup steps: step 3 runs at the new peak lr
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert lr[3] == pytest.approx(2e-3 * 0.5 * (1 + __import__("math").cos(__import__("math").pi * 0.5)))
    state = torch.load(out / "checkpoints" / "step_000000004.pt", weights_only=True)
    assert state["resume_changes"][0]["changed"]["steps"] == [2, 4]


def test_resume_tidies_half_written_files_and_repeated_steps(train_data, tmp_path):
    out = tmp_path / "run"
    config = write_config(train_data, out, steps=4, checkpoint_every=2)
    assert main(["train", "--config", str(config)]) == 0
    (out / "checkpoints" / "step_000000004.pt").unlink()  # as if killed between step 3 and 4's checkpoint
    (out / "model.safetensors").unlink()
    leftovers = [out / "checkpoints" / ".step_000000004.pt.k2j3.tmp", out / ".model.safetensors.a8x.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 5, "lo')
    assert main(["train", "--config", str(config), "--resume", "latest"]) == 0
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4]
    assert not any(path.exists() for path in leftovers)


def test_force_starts_over_keeping_files_it_did_not_write(train_data, tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(train_data, out, steps=2, epochs=1, data={"num_samples": 8})
    assert main(["train", "--config", str(config), "--set", "steps=null", "--set", "epochs=2"]) == 0
    quiet = capsys.readouterr().err  # a clean from-scratch run over two epochs says nothing of that
    assert "initialized randomly" not in quiet and "no samples skipped" not in quiet, quiet
    config = write_config(train_data, out, steps=2)
    (out / "notes.txt").write_text("mine")
    assert "--resume latest" in user_error(capsys, "train", "--config", config)
    assert main(["train", "--config", str(config), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2]


def test_weights_that_went_non_finite_are_never_saved_as_a_result(train_data, tmp_path, monkeypatch, capsys):
    original = torch.optim.AdamW.step

    def poisoning_step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    out = tmp_path / "run"
    assert main(["train", "--config", str(write_config(train_data, out, steps=2, max_nonfinite=5))]) == 1
    assert "not finite" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()


def test_a_source_whose_every_sample_is_bad_stops_the_run(train_data, tmp_path, capsys):
    bad = tmp_path / "broken.csv"
    bad.write_text("filepath,caption\n" + "".join(f"missing/{i}.jpg,a leaf\n" for i in range(8)))
    good = train_data / "plant/train/captions.csv"
    sources = [
        {"kind": "csv", "path": str(good), "weight": 1},
        {"kind": "csv", "path": str(bad), "weight": 1},
    ]
    config = write_config(train_data, tmp_path / "run", steps=50, data={"sources": sources})
    message = user_error(capsys, "train", "--config", config, alone=False)  # after the skip counts
    assert "data.sources[1]" in message and "broken.csv" in message and "missing_file" in message
    assert not (tmp_path / "run" / "model.safetensors").exists()
