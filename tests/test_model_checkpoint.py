import os

import open_clip
import pytest
import torch
from conftest import TEST_MBDC

import dalip
from dalip.atomic import atomic_write
from dalip.model.file_format import read_checkpoint_config


def test_save_load_round_trip_gives_identical_features(tiny_model, captions, tmp_path):
    model, _, _, tokenizer = tiny_model
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = dalip.load_checkpoint(path)
    assert not loaded.training
    assert loaded.mbdc_options == model.mbdc_options and loaded.alpha == model.alpha
    images, texts = torch.randn(3, 3, 32, 32), tokenizer(captions)
    for ours, theirs in [
        (model.encode_image(images), loaded.encode_image(images)),
        (model.encode_text(texts), loaded.encode_text(texts)),
    ]:
        assert torch.equal(ours.first, theirs.first) and torch.equal(ours.second, theirs.second)


def test_checkpoint_carries_its_architecture(tiny_model, tmp_path, monkeypatch):
    model = tiny_model[0]
    path = tmp_path / "model.safetensors"
    model.save(path)
    # A process that never registered `test-tiny` still loads the file.
    registry = dict(open_clip.factory._MODEL_CONFIGS)
    registry.pop("test-tiny")
    monkeypatch.setattr(open_clip.factory, "_MODEL_CONFIGS", registry)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    loaded = dalip.load_checkpoint(path)
    assert torch.equal(loaded.clip.visual.proj, model.clip.visual.proj)
    assert list((tmp_path / "tmp").iterdir()) == []  # the registered config left no files
    assert "test-tiny" in open_clip.list_models()  # and stays registered after a rescan
    open_clip.add_model_config(tmp_path)  # any later add_model_config rescans every path
    assert "test-tiny" in open_clip.list_models()


def test_separate_second_temperature_round_trips(tmp_path):
    model, *_ = dalip.create_model("test-tiny", separate_second_temperature=True, **TEST_MBDC)
    with torch.no_grad():
        model.logit_scale_second.fill_(1.25)
    model.save(tmp_path / "m.safetensors")
    assert dalip.load_checkpoint(tmp_path / "m.safetensors").logit_scale_second.item() == 1.25


def test_dalip_checkpoint_as_pretrained_keeps_every_weight(tiny_model, tmp_path):
    model = tiny_model[0]
    path = tmp_path / "start.safetensors"
    model.save(path)
    same, *_ = dalip.create_model("test-tiny", pretrained=str(path), **TEST_MBDC)
    assert same.newly_initialized == []
    assert torch.equal(same.image_mbdc.mix.weight, model.image_mbdc.mix.weight)
    other, *_ = dalip.create_model("test-tiny", pretrained=str(path), heads=4, reduced_dim=3)
    assert other.newly_initialized and all("mbdc" in name for name in other.newly_initialized)


def test_training_checkpoint_as_pretrained_is_a_dalip_checkpoint(tiny_model, tmp_path):
    """README: `model.pretrained` takes a dalip checkpoint, and `dalip train`'s step_*.pt is one
    (eval and export take it too); an open_clip .pt file stays open_clip weights."""
    from dalip.model.factory import resolve_pretrained
    from dalip.train.state import save_training_state

    model = tiny_model[0]
    path = tmp_path / "checkpoints" / "step_7.pt"
    path.parent.mkdir()
    save_training_state(path, {"dalip_config": model.config(), "model": model.state_dict(), "step": 7})
    assert resolve_pretrained("test-tiny", str(path)) == "dalip"
    same, *_ = dalip.create_model("test-tiny", pretrained=str(path), **TEST_MBDC)
    assert same.newly_initialized == []
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in same.state_dict().items())
    open_clip_file = tmp_path / "epoch_1.pt"
    torch.save({"state_dict": model.clip.state_dict()}, open_clip_file)
    assert resolve_pretrained("test-tiny", str(open_clip_file)) == "file"


@pytest.mark.parametrize("content", [b"not a checkpoint at all", None])
def test_other_files_are_a_one_line_error(tmp_path, content):
    path = tmp_path / "weights.safetensors"
    if content is None:  # a real safetensors file, but not one of ours
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path} is not a dalip checkpoint") as info:
        dalip.load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        dalip.load_checkpoint(tmp_path / "nope.safetensors")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def failing_write(temporary):
        with open(temporary, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing_write)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]
    assert read_checkpoint_config(path) is None


def test_a_stored_config_without_alpha_takes_the_default_alpha(tiny_model):
    """`create_model`'s default alpha, not the paper's 0.5 (a fused folder's hand-written section)."""
    from dalip.config import DEFAULT_ALPHA
    from dalip.model.factory import wrap_clip

    config = {key: value for key, value in tiny_model[0].config().items() if key != "alpha"}
    assert (
        wrap_clip(tiny_model[0].clip, config).alpha
        == DEFAULT_ALPHA
        == dalip.create_model("test-tiny")[0].alpha
    )
