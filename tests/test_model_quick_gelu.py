"""Weights trained with QuickGELU (OpenAI's tags) get a QuickGELU model, without network:
open_clip's download is pointed at a local file the test writes."""

from __future__ import annotations

import open_clip
import pytest
import torch
from conftest import TEST_MBDC
from open_clip.transformer import QuickGELU

import dalip
from dalip.inference.specs import load_model


@pytest.fixture
def quick_gelu_tag(tmp_path, monkeypatch):
    """A pretrained tag `local_openai` for test-tiny, trained with QuickGELU, served from a local file."""
    torch.manual_seed(0)
    reference = open_clip.create_model("test-tiny", force_quick_gelu=True)
    path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), path)
    tags = {
        "local_openai": {
            "file": str(path),
            "quick_gelu": True,
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
        }
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "test-tiny", tags)
    return reference.eval()


def _uses_quick_gelu(module: torch.nn.Module) -> bool:
    return any(isinstance(m, QuickGELU) for m in module.modules())


def test_create_model_builds_quick_gelu_for_a_quick_gelu_tag(quick_gelu_tag, tmp_path, caplog):
    with caplog.at_level("INFO", logger="dalip"):
        model, *_ = dalip.create_model("test-tiny", pretrained="local_openai", **TEST_MBDC)
    assert _uses_quick_gelu(model.clip)
    assert "QuickGELU" in caplog.text
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval().encode_image(images).first,
            torch.nn.functional.normalize(quick_gelu_tag.encode_image(images), dim=-1),
        )
    # the checkpoint remembers it: a reload builds QuickGELU again
    model.save(tmp_path / "tuned.safetensors")
    assert _uses_quick_gelu(dalip.load_checkpoint(tmp_path / "tuned.safetensors").clip)


def test_plain_open_clip_spec_uses_quick_gelu_too(quick_gelu_tag):
    loaded = load_model("openclip:test-tiny:local_openai")
    assert _uses_quick_gelu(loaded.model.clip)


def test_architectures_without_a_quick_gelu_tag_keep_gelu():
    model, *_ = dalip.create_model("test-tiny", **TEST_MBDC)
    assert not _uses_quick_gelu(model.clip)
