"""The experiment harness on the embedded data: budgets, the generated dataset, each stage's
config and cached, resumable runs. The quickstart, `dalip mixlaw --embedded` and the
benchmarks are built from it."""

from dalip.experiments.budgets import BUDGETS, MODEL_NAME, Budget
from dalip.experiments.data import generate_data, tuning_subset
from dalip.experiments.runs import run_config, train_stage, train_start, trained_with, without_mode_choice

__all__ = [
    "BUDGETS",
    "MODEL_NAME",
    "Budget",
    "generate_data",
    "run_config",
    "train_stage",
    "train_start",
    "trained_with",
    "tuning_subset",
    "without_mode_choice",
]
