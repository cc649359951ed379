"""benchmarks/ablate.py: variant recipes, paired differences and argument checks (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablate  # noqa: E402

from dalip.config import SourceConfig, TrainConfig  # noqa: E402


def _scores(clip: tuple[float, float], dalip: tuple[float, float]) -> dict:
    first = {"plant": clip[0], "general": clip[1]}
    fused = {"plant": dalip[0], "general": dalip[1]}
    return {"clip": {"first": first, "fused": first}, "v": {"fused": fused, "first": fused}}


def test_paired_rows_are_differences_against_clip_of_the_same_seed():
    per_seed = [_scores((0.20, 0.40), (0.25, 0.40)), _scores((0.30, 0.50), (0.33, 0.46))]
    fused = ablate.paired_rows(per_seed, ["v"])[0]
    # plant +5 and +3 points; general 0 and -4; their means +2.5 and -0.5
    assert fused[:2] == ["v", "fused"]
    assert fused[2] == "+4.0 ± 1.4" and fused[3] == "-2.0 ± 2.8" and fused[4] == "+1.0 ± 2.1"
    assert fused[5] == "1/2"


def test_variants_spell_out_every_factor_of_the_base(tmp_path):
    """A variant's run must not depend on the package defaults: the base names each factor."""
    # the factors whose package defaults a later release may change
    assert {"model.weighting", "model.dropout_kind", "model.dropout", "model.alpha", "loss.combine"} <= set(
        ablate.BASE
    )
    base = TrainConfig(out_dir=str(tmp_path / "tuned"))
    base.data.sources = [SourceConfig(kind="csv", path=str(tmp_path / "captions.csv"))]
    config = ablate.tuned_config(base, tmp_path / "run", {**ablate.BASE, **ablate.VARIANTS["alpha=0.75"]}, 7)
    mbdc = config.model.mbdc
    assert (mbdc.weighting, mbdc.dropout_kind, mbdc.dropout) == ("before_norm", "element", 0.1)
    assert config.model.alpha == 0.75 and config.loss.combine == "losses" and config.steps == 7
    warm = ablate.tuned_config(base, tmp_path / "run", ablate.VARIANTS["head-warmup"], 200)
    assert warm.optim.head_warmup_steps == 40


def test_combined_variants_and_argument_checks():
    args = ablate.parse_args(["--variants", "base", "--combine", "w=model.weighting=none,model.alpha=0.75"])
    assert ablate.variant_overrides(args)["w"] == {"model.weighting": "none", "model.alpha": "0.75"}
    with pytest.raises(SystemExit):
        ablate.parse_args(["--variants", "no-such-variant"])
    with pytest.raises(SystemExit, match="scratch-recipe"):
        ablate.main(["--variants", "base", "--scratch", "--scratch-recipe", "other", "--no-record"])


def test_stage_configs_pin_the_recorded_ablation_settings(tmp_path):
    """The recorded tables ran with alpha 0.5 in the CLIP stages, 2 loader workers and
    torch's default AdamW: the command must still run that, whatever the quickstart's
    budget and the package's defaults say now."""
    from dalip.experiments import BUDGETS

    config = ablate.stage_config(tmp_path, tmp_path / "data", BUDGETS["small"], 0, "start")
    assert (config.model.alpha, config.data.workers, config.optim.fused) == (0.5, 2, False)
    assert config.steps == BUDGETS["small"].start_steps and config.loss.kind == "clip"
