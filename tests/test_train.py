import logging
import math

import pytest
import torch
import yaml
from cli_helpers import saved_checkpoint
from safetensors.torch import load_file
from train_fixtures import step_gradients, write_config

import dalip
from dalip.cli import main
from dalip.config import DEFAULT_ALPHA, OptimConfig, load_train_config
from dalip.data import build_loader, build_train_dataset
from dalip.train.distributed import DistributedContext
from dalip.train.loop import Trainer
from dalip.train.optim import create_optimizer, lr_factor, parameter_groups
from dalip.train.run_log import read_metrics
from dalip.train.task import MAX_LOGIT_SCALE, TrainingTask


def weights(path):
    return load_file(str(path))


@pytest.mark.parametrize("kind", ["dalip", "clip"])
def test_tiny_run_for_both_losses(train_data, tmp_path, kind, capsys):
    out = tmp_path / "run"
    config = write_config(train_data, out, loss={"kind": kind})
    assert main(["train", "--config", str(config)]) == 0
    records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        assert math.isfinite(record["loss"]) and record["images_per_second"] > 0
        assert {"lr", "first_order_loss", "second_order_loss", "logit_scale", "skipped_samples"} <= set(
            record
        )
    model = dalip.load_checkpoint(out / "model.safetensors")
    heads_changed = not torch.equal(model.image_mbdc.mix.weight, _initial_heads())
    if kind == "clip":  # first order only: heads frozen, fused similarity is first order
        assert model.alpha == 1.0 and not heads_changed
        assert records[-1]["second_order_loss"] == 0.0
    else:
        assert model.alpha == DEFAULT_ALPHA and heads_changed
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_000000002.pt",
        "step_000000004.pt",
    ]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["loss"]["kind"] == kind


def _initial_heads():
    """The image head's weights a run with seed 0 starts from (it seeds before building)."""
    torch.manual_seed(0)
    fresh, *_ = dalip.create_model("test-tiny", heads=2, reduced_dim=8, dropout=0.0)
    return fresh.image_mbdc.mix.weight


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown field 'optim.lrr'"),
        ("batch_size=eight", "batch_size: expected int, got str"),
        ("precision=fp8", "precision: expected one of fp32, bf16, amp"),
        (
            "data.sources=[{kind: csv, path: /nowhere/x.csv}]",
            r"data.sources\[0\].path: not found: /nowhere/x.csv",
        ),
        ("optim.accumulation=3", "batch_size: 8 is not divisible by world size x optim.accumulation = 1 x 3"),
    ],
)
def test_config_errors_are_one_line_with_exit_2(train_data, tmp_path, capsys, override, message):
    config = write_config(train_data, tmp_path / "run")
    assert main(["train", "--config", str(config), "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dalip train: error:")
    assert __import__("re").search(message, err), err


def test_missing_config_file(capsys):
    assert main(["train", "--config", "/nowhere/run.yaml"]) == 2
    assert "config file not found: /nowhere/run.yaml" in capsys.readouterr().err


def test_refuses_to_overwrite_a_run(train_data, tmp_path, capsys):
    config = write_config(train_data, tmp_path / "run", steps=2)
    assert main(["train", "--config", str(config)]) == 0
    assert main(["train", "--config", str(config)]) == 2
    assert "already holds checkpoints; pass --resume latest" in capsys.readouterr().err


@pytest.mark.parametrize(("augment", "retain"), [(False, False), (True, False), (False, True)])
def test_resume_continues_to_the_same_weights_in_process(train_data, tmp_path, augment, retain):
    # workers 0: augmentation would share the main process's RNG with dropout if it were
    # not seeded per sample, and replaying the data on resume would shift it.
    settings = dict(steps=6, data={"augment": augment}, model={"dropout": 0.2 if augment else 0.0})
    if retain:  # LoRA adapters (with their rank dropout), L2-SP and distillation resume exactly too
        start, _, _ = saved_checkpoint(tmp_path)
        settings["model"] = {"pretrained": str(start)}
        settings.update(
            lora={"rank": 2, "dropout": 0.5, "targets": ["q", "v", "out"]},
            l2sp={"coefficient": 0.1},
            distill={"coefficient": 1.0},
            optim={"lr": 0.01},
        )
    full = write_config(train_data, tmp_path / "full", **settings)
    assert main(["train", "--config", str(full)]) == 0
    part = write_config(train_data, tmp_path / "part", **settings)
    assert main(["train", "--config", str(part), "--set", "steps=4"]) == 0
    # Continue the 4-step run to 6 steps: the schedule is that of a 6-step run only if
    # steps is the same, so this checks the position and RNG replay on the same total.
    (tmp_path / "part" / "model.safetensors").unlink()
    for old in (tmp_path / "part" / "checkpoints").glob("step_000000004.pt"):
        old.unlink()
    assert main(["train", "--config", str(part), "--resume", "latest", "--allow-change", "steps"]) == 0
    ours, reference = (
        weights(tmp_path / "part" / "model.safetensors"),
        weights(tmp_path / "full" / "model.safetensors"),
    )
    for name, value in reference.items():
        assert torch.equal(ours[name], value), name


def test_bf16_run_has_finite_loss(train_data, tmp_path):
    out = tmp_path / "bf16"
    assert main(["train", "--config", str(write_config(train_data, out, precision="bf16", steps=3))]) == 0
    assert all(math.isfinite(r["loss"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r)


def test_accumulated_gradient_is_the_full_batch_gradient(train_data, tmp_path):
    gradients = []
    for accumulation in (1, 2):
        path = write_config(train_data, tmp_path / f"acc{accumulation}", optim={"accumulation": accumulation})
        trainer = Trainer(load_train_config(path), DistributedContext())
        trainer.dataset.set_epoch(0)
        images, texts = next(iter(build_loader(trainer.dataset, 8, 0)))
        micro = [
            (images[i : i + 8 // accumulation], texts[i : i + 8 // accumulation])
            for i in range(0, 8, 8 // accumulation)
        ]
        gradients.append(step_gradients(trainer, micro)[0])
    assert gradients[0].keys() == gradients[1].keys()
    for name, value in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], value, rtol=0, atol=1e-6, msg=name)


def test_accumulation_matches_one_big_batch(train_data, tmp_path):
    # Adam's first steps are close to lr * sign(gradient), which turns float summation
    # noise into lr-sized differences; lr 1e-4 keeps those below the tolerance.
    whole = write_config(train_data, tmp_path / "whole", steps=3, optim={"lr": 1e-4})
    split = write_config(train_data, tmp_path / "split", steps=3, optim={"lr": 1e-4, "accumulation": 2})
    assert main(["train", "--config", str(whole)]) == 0
    assert main(["train", "--config", str(split)]) == 0
    a, b = (
        weights(tmp_path / "whole" / "model.safetensors"),
        weights(tmp_path / "split" / "model.safetensors"),
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)


def test_nonfinite_loss_skips_the_step_then_stops(train_data, tmp_path, monkeypatch, capsys):
    original = TrainingTask.losses
    calls = {"n": 0}

    def sometimes_nan(self, *args, **kwargs):
        calls["n"] += 1
        losses = original(self, *args, **kwargs)
        if calls["n"] == 2 or calls["n"] >= 4:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(TrainingTask, "losses", sometimes_nan)
    out = tmp_path / "nan"
    code = main(["train", "--config", str(write_config(train_data, out, steps=20, max_nonfinite=3))])
    assert code == 1
    err = capsys.readouterr().err
    assert "not finite for 3 steps in a row (last at step 6)" in err
    records = {r["step"]: r for r in read_metrics(out / "metrics.jsonl") if "loss" in r}
    assert records[2]["skipped_step"] and not records[3]["skipped_step"]
    assert records[3]["nonfinite_steps"] == 1


def test_amp_skips_a_nonfinite_step_and_keeps_training(train_data, tmp_path, monkeypatch):
    """precision amp (float16 autocast, CPU grad scaler): a NaN loss skips that step, the
    scaler backs off, and the run goes on to a finite model."""
    original = TrainingTask.losses
    calls = {"n": 0}

    def nan_at_second_step(self, *args, **kwargs):
        calls["n"] += 1
        losses = original(self, *args, **kwargs)
        if calls["n"] == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(TrainingTask, "losses", nan_at_second_step)
    out = tmp_path / "amp"
    assert main(["train", "--config", str(write_config(train_data, out, precision="amp", steps=4))]) == 0
    records = {r["step"]: r for r in read_metrics(out / "metrics.jsonl") if "loss" in r}
    assert records[2]["skipped_step"] and not records[3]["skipped_step"] and not records[4]["skipped_step"]
    assert records[4]["nonfinite_steps"] == 1
    checkpoint = torch.load(out / "checkpoints" / "step_000000004.pt", weights_only=True)
    assert checkpoint["scaler"]["scale"] < 2.0**16  # backed off once from the initial scale
    assert all(torch.isfinite(v).all() for v in weights(out / "model.safetensors").values())


def test_optimizer_groups_and_schedule(tiny_model):
    model = tiny_model[0]
    config = OptimConfig(lr=1e-3, mbdc_lr=1e-2, weight_decay=0.1, warmup_steps=10)
    groups = {g["name"]: g for g in parameter_groups(model, config)}
    assert groups["dalip_heads"]["lr"] == 1e-2 and groups["open_clip"]["lr"] == 1e-3
    no_decay = {id(p) for g in groups.values() if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.clip.logit_scale) in no_decay and id(model.clip.ln_final.weight) in no_decay
    assert id(model.clip.visual.conv1.weight) not in no_decay
    assert lr_factor(0, 100, config) == pytest.approx(0.1)
    assert lr_factor(9, 100, config) == pytest.approx(1.0)
    assert lr_factor(55, 100, config) == pytest.approx(0.5)
    assert lr_factor(99, 100, config) < 0.01


def test_fused_adamw_is_the_default_and_matches_the_default_update(tiny_model):
    """optim.fused (default true) picks torch's fused AdamW; false keeps torch's default
    implementation. Both give the same update up to float rounding, and an optimiser
    state written by one implementation keeps it when loaded (exact resume of old runs)."""
    import copy

    model = tiny_model[0]
    fused, default = OptimConfig(lr=1e-2), OptimConfig(lr=1e-2, fused=False)
    assert create_optimizer(model, fused).defaults["fused"] is True
    assert not create_optimizer(model, default).defaults["fused"]
    after = {}
    for name, config in (("fused", fused), ("default", default)):
        copied = copy.deepcopy(model).train()
        optimizer = create_optimizer(copied, config)
        for step in range(3):
            torch.manual_seed(step)
            loss = sum((p * torch.randn_like(p)).sum() for p in copied.parameters() if p.requires_grad)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        after[name] = (copied.state_dict(), optimizer.state_dict())
    moved = 0
    for key, value in after["fused"][0].items():
        torch.testing.assert_close(value, after["default"][0][key], rtol=1e-5, atol=1e-6)
        moved += not torch.equal(value, model.state_dict()[key])
    assert moved > 10  # the updates did something
    resumed = create_optimizer(model, fused)
    resumed.load_state_dict(after["default"][1])
    assert not resumed.param_groups[0]["fused"]


def test_locked_image_tower_does_not_change(train_data, tmp_path):
    out = tmp_path / "lit"
    assert main(["train", "--config", str(write_config(train_data, out, steps=2, lock={"image": True}))]) == 0
    trained = weights(out / "model.safetensors")
    torch.manual_seed(0)
    start, *_ = dalip.create_model("test-tiny", heads=2, reduced_dim=8, dropout=0.0)
    for name, value in start.state_dict().items():
        if name.startswith("clip.visual."):
            assert torch.equal(trained[name], value), name
    assert not torch.equal(trained["clip.token_embedding.weight"], start.clip.token_embedding.weight)


def test_zero_shot_evaluation_every_n_steps(train_data, tmp_path):
    out = tmp_path / "val"
    config = write_config(
        train_data,
        out,
        steps=4,
        eval_every=2,
        data={"val": str(train_data / "plant/val"), "val_templates": "plant"},
    )
    assert main(["train", "--config", str(config)]) == 0
    evaluations = [r for r in read_metrics(out / "metrics.jsonl") if "eval" in r]
    assert [r["step"] for r in evaluations] == [2, 4]
    for record in evaluations:
        modes = record["eval"]["modes"]
        assert set(modes) == {"fused", "first"}
        assert 0.0 <= modes["fused"]["top1"] <= 1.0 and record["eval"]["num_images"] == 8


@pytest.mark.parametrize("kind", ["dalip", "clip"])
def test_training_task_is_the_step_the_config_asks_for(train_data, tmp_path, kind):
    torch.manual_seed(0)
    config = load_train_config(write_config(train_data, tmp_path / "task", loss={"kind": kind}))
    task = TrainingTask.from_config(config)
    assert task.second_order == (kind == "dalip") and task.loss.alpha == task.model.alpha
    images, texts = next(
        iter(
            build_loader(
                build_train_dataset(config.data.sources, task.preprocess_val, task.tokenizer, seed=0), 8, 0
            )
        )
    )
    losses = task(images, texts)
    assert set(losses) == {"loss", "first_order_loss", "second_order_loss"} and losses["loss"].requires_grad
    losses["loss"].backward()
    heads = list(task.model.image_mbdc.parameters())
    if kind == "clip":  # the plain CLIP baseline: first order only, heads neither used nor trained
        assert task.model.alpha == 1.0 and losses["second_order_loss"] == 0
        assert all(not p.requires_grad and p.grad is None for p in heads)
    else:
        assert task.model.alpha == config.model.alpha and all(p.grad is not None for p in heads)
    with torch.no_grad():
        task.model.clip.logit_scale.fill_(10.0)
    task.clamp_temperatures()
    assert task.model.clip.logit_scale.item() == pytest.approx(MAX_LOGIT_SCALE)


def test_the_python_api_warns_when_eval_every_has_no_validate(train_data, tmp_path, caplog):
    """train() cannot evaluate by itself (the evaluation code sits above it): a config asking
    for checks without a `validate` is told so; the quickstart's stages hand theirs in."""
    from dalip.evaluation.validation import training_validation
    from dalip.train.loop import train

    data = {"val": str(train_data / "plant/val"), "val_templates": "plant"}
    config = load_train_config(write_config(train_data, tmp_path / "a", steps=2, eval_every=2, data=data))
    with caplog.at_level(logging.WARNING, logger="dalip.train.loop"):
        train(config)
    assert "eval_every is set but train() was given no validate" in caplog.text
    assert not [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if "eval" in r]
    config = load_train_config(write_config(train_data, tmp_path / "b", steps=2, eval_every=2, data=data))
    train(config, validate=training_validation(config))
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "eval" in r] == [2]
