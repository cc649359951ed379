"""The frontier benchmark's own arithmetic and recipes (its runs are the quickstart's
training and `dalip frontier`, tested elsewhere): how many seeds a difference needs, and
which options each recipe adds to the tuning config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import frontier as bench  # noqa: E402

from dalip.experiments import (
    BUDGETS,  # noqa: E402
    runs,  # noqa: E402
)


def test_needed_seeds_is_the_t_corrected_power_calculation():
    # sd = effect: z-approximation (1.96 + 0.84)^2 = 7.85 -> 8, then t with 7 df -> 11
    assert bench.needed_seeds(0.01, effect=0.01) == 11
    assert bench.needed_seeds(0.0134) == 17  # the screen's "17 seeds for 1 point at SD 1.34"
    assert bench.needed_seeds(0.0) is None
    assert bench.needed_seeds(0.02) > bench.needed_seeds(0.01)


@pytest.mark.parametrize("recipe", bench.RECIPES)
def test_each_recipe_is_one_method_on_one_loss(tmp_path, monkeypatch, recipe):
    monkeypatch.setattr(runs, "tuning_subset", lambda data, budget: data / "general-tune.csv")
    settings = bench.Settings(lora_rank=2, lora_lr=5e-3, l2sp=0.5, distill=2.0)
    config = bench.recipe_config(tmp_path, tmp_path / "data", BUDGETS["test"], 3, recipe, settings)
    method = recipe.rpartition("-")[0]
    assert config.loss.kind == recipe.rpartition("-")[2] and config.seed == 3
    assert config.out_dir == str(tmp_path / "runs" / f"{recipe}@3")
    assert (config.lora.rank, config.lora.alpha) == ((2, 2.0) if method == "lora" else (0, 1.0))
    assert config.optim.lr == (5e-3 if method == "lora" else 3e-4)
    assert config.l2sp.coefficient == (0.5 if method == "l2sp" else 0.0)
    assert config.distill.coefficient == (2.0 if method == "distill" else 0.0)
    # no answer-mode choice in the runs (answer_modes.py replays it): earlier cached runs stay valid
    assert config.data.val is None and config.data.val_general is None


def test_noise_summary_pairs_recipes_with_the_baseline_by_seed():
    def row(recipe, seed, value):
        return {"recipe": recipe, "seed": seed, "general_at_level": {"1": value}}

    report = {
        "curves": [
            row("clip", "0", 0.30),
            row("clip", "1", 0.32),
            row("dalip", "0", 0.31),
            row("dalip", "1", 0.35),
        ],
        "paired": {"dalip": {"seeds": ["0", "1"]}},
    }
    summary = bench.noise_summary(report, "clip")["dalip"]
    assert summary["pairs"] == 2 and summary["sd"] == pytest.approx(stats.tstd([0.01, 0.03]))
    assert summary["seeds_for_1_point"] == bench.needed_seeds(stats.tstd([0.01, 0.03]))


def _sweep(folder: Path, modes: dict[str, tuple[float, float]], answer_mode: str | None = None) -> None:
    """A results.json of `dalip interpolate` at w = 0, 1: the start (0.1 plant, 0.5 general in every
    mode) and, per mode, the tuned model's (plant, general)."""
    points = [
        {"weight": 0.0, "summary": {m: {"domains": {"plant": 0.1, "general": 0.5}} for m in modes}},
        {
            "weight": 1.0,
            "summary": {m: {"domains": {"plant": p, "general": g}} for m, (p, g) in modes.items()},
        },
    ]
    folder.mkdir(parents=True)
    results = {"interpolation": points, "start": {"sha256": "a" * 64}}
    if answer_mode is not None:  # the mode the tuned model answers with (stored by `dalip train`)
        results["answer_mode"] = answer_mode
    (folder / "results.json").write_text(json.dumps(results))


# Equal differences give a zero-width interval, and scipy warns about them.
@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_mode_readings_pair_each_dalip_mode_with_clip_and_the_same_weights_with_fused(tmp_path):
    for seed in (0, 1, 2):
        _sweep(tmp_path / f"clip@{seed}", dict.fromkeys(bench.MODES, (0.3, 0.4)))
        first = 0.02 * seed  # first order keeps 4, 6, 8 general points more than fused
        _sweep(
            tmp_path / f"dalip@{seed}",
            {"fused": (0.35, 0.36), "first": (0.33, 0.40 + first), "second": (0.2, 0.3)},
        )
    text = bench.mode_readings(tmp_path, ["clip", "dalip"], [0, 1, 2])
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| dalip")
    }
    assert set(rows) == {"dalip (fused)", "dalip (first)", "dalip (second)", "dalip"}
    assert "| dalip (fused) | 3 | +5.0 [+5.0, +5.0] | -4.0 [-4.0, -4.0] |" in text  # vs CLIP
    spread = stats.t.ppf(0.975, 2) * 2.0 / 3**0.5  # first minus fused general: 4, 6, 8 points
    assert f"| dalip | first | 3 | -2.0 [-2.0, -2.0] | +6.0 [{6 - spread:+.1f}, {6 + spread:+.1f}] |" in text


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_answer_modes_replays_the_choice_on_val_and_reads_it_on_test(tmp_path, tiny_model, monkeypatch):
    """answer_modes.py: a run that stores its mode is read in it; one that stores none gets the
    choice `dalip train` makes (here on val folders where fused wins), read from the test sweeps."""
    import answer_modes
    from eval_fixtures import write_folder

    model = tiny_model[0]
    for seed, stored in ((0, "first"), (1, None)):
        model.answer_mode = stored
        (tmp_path / "runs" / f"dalip@{seed}").mkdir(parents=True)
        model.save(tmp_path / "runs" / f"dalip@{seed}" / "model.safetensors")
        _sweep(tmp_path / "frontier-test" / "sweeps" / f"clip@{seed}", {"first": (0.3, 0.4)})
        scores = {"fused": (0.35, 0.36), "first": (0.33, 0.40), "second": (0.2, 0.3)}
        _sweep(tmp_path / "frontier-test" / "sweeps" / f"dalip@{seed}", scores)
    model.answer_mode = None
    for domain in ("plant", "general"):
        write_folder(tmp_path / "data" / domain / "val", {"a": 2, "b": 2})
    chosen = {"chosen": "fused", "by": "val"}
    monkeypatch.setattr(
        answer_modes, "choose_answer_mode", lambda *args: chosen
    )  # tested in test_train_answer_mode.py
    table, choices = answer_modes.readings(tmp_path, ["dalip"], [0, 1])
    assert choices == {"dalip@0": {"chosen": "first", "by": "stored"}, "dalip@1": chosen}
    (own,) = [line for line in table.splitlines() if line.startswith("| dalip (own)")]
    assert "+4.0 [-8.7, +16.7]" in own  # plant - CLIP: seed 0 first (+3), seed 1 fused (+5)


def test_a_variant_is_its_loss_recipe_with_the_overrides(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "tuning_subset", lambda data, budget: data / "general-tune.csv")
    name, overrides = bench.parse_variant("weighting-none-dalip=model.weighting=none,model.alpha=0.75")
    assert (name, overrides) == ("weighting-none-dalip", ["model.weighting=none", "model.alpha=0.75"])
    settings = bench.Settings()
    plain = bench.recipe_config(tmp_path, tmp_path / "data", BUDGETS["test"], 1, "dalip", settings)
    config = bench.recipe_config(
        tmp_path, tmp_path / "data", BUDGETS["test"], 1, name, settings, overrides=overrides
    )
    assert config.loss.kind == "dalip" and config.out_dir == str(tmp_path / "runs" / "weighting-none-dalip@1")
    assert (config.model.mbdc.weighting, config.model.alpha) == ("none", 0.75)
    assert (plain.model.mbdc.weighting, plain.model.alpha) != ("none", 0.75)
    # everything else is the plain recipe's
    assert config.optim == plain.optim and config.data == plain.data and config.seed == plain.seed


@pytest.mark.parametrize(
    "text", ["dalip=model.alpha=0.5", "x-dalip=", "x=model.alpha=0.5", "clip=optim.lr=1"]
)
def test_a_variant_must_name_its_loss_and_set_something(text, capsys):
    with pytest.raises(ValueError, match="--variant"):
        bench.parse_variant(text)
    with pytest.raises(SystemExit) as stop:
        bench.main(["--out", "x", "--variant", text, "--no-record"])
    assert stop.value.code == 2 and "--variant" in capsys.readouterr().err
