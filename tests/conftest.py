"""Shared fixtures: tiny open_clip architectures registered for tests only; the generated
datasets of `data_fixtures` (`tiny_dataset`) and `train_fixtures` (`train_data`) are plugins,
so every test module can ask for them by name."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import pytest
import torch

pytest_plugins = ["data_fixtures", "train_fixtures"]

TEST_CONFIGS = {
    # 32 px, patch 8, width 64, 2 layers, context 16: a forward in milliseconds.
    "test-tiny": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    # CLIPA-like: average pool, norm after pooling, no pre-norm, text pooled from the last token.
    "test-tiny-clipa": {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 8,
            "no_ln_pre": True,
            "pool_type": "avg",
            "final_ln_after_pool": True,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
            "pool_type": "last",
            "no_causal_mask": True,
        },
    },
}
TEST_MBDC = {"heads": 2, "reduced_dim": 8}


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    folder = Path(tempfile.mkdtemp(prefix="dalip-test-configs-"))
    for name, model_config in TEST_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(model_config))
    if not all(name in open_clip.list_models() for name in TEST_CONFIGS):
        open_clip.add_model_config(folder)


@pytest.fixture
def tiny_model():
    """(model, preprocess_train, preprocess_val, tokenizer) of `test-tiny`, seeded, eval mode."""
    import dalip

    torch.manual_seed(0)
    model, train_transform, val_transform, tokenizer = dalip.create_model("test-tiny", **TEST_MBDC)
    return model.eval(), train_transform, val_transform, tokenizer


@pytest.fixture
def captions() -> list[str]:
    return [
        "a photo of a serrate ovate leaf",
        "Quercus rubra, red oak",
        "a cordate leaf with brown spots on a dark background",
        "two blue squares",
    ]
