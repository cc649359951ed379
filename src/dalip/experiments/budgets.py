"""The sizes of the experiments on the embedded data: dataset size and training length."""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAME = "dalip-tiny"


@dataclass(frozen=True)
class Budget:
    """Data size and training length of one quickstart size."""

    species: int
    general_classes: int
    general_tune_classes: int  # general concepts in the tuning mix (every other one)
    train_per_class: int
    test_per_class: int
    image_size: int
    batch_size: int
    start_steps: int
    tune_steps: int
    workers: int


BUDGETS = {
    # "test" exists for the test suite: every file, in about a minute.
    "test": Budget(
        species=6,
        general_classes=4,
        general_tune_classes=2,
        train_per_class=6,
        test_per_class=4,
        image_size=64,
        batch_size=16,
        start_steps=6,
        tune_steps=6,
        workers=0,
    ),
    # "small" loads data in the training process (workers=0): on 2 cores, loader workers
    # take CPU from the step and the stages ran about 15% slower with 2 of them.
    "small": Budget(
        species=24,
        general_classes=44,
        general_tune_classes=22,
        train_per_class=40,
        test_per_class=20,
        image_size=64,
        batch_size=32,
        start_steps=500,
        tune_steps=200,
        workers=0,
    ),
    "medium": Budget(
        species=24,
        general_classes=44,
        general_tune_classes=22,
        train_per_class=100,
        test_per_class=30,
        image_size=64,
        batch_size=64,
        start_steps=1500,
        tune_steps=600,
        workers=2,
    ),
}
