"""`dalip.load(spec)`: every model spec the command line accepts -> (model, preprocess,
tokenizer), in eval mode, with the features of the loader each kind of spec had before."""

from __future__ import annotations

import importlib

import open_clip
import pytest
import torch
from conftest import TEST_MBDC
from train_fixtures import train_data, write_config  # noqa: F401 (fixture)

import dalip
from dalip.cli import main
from dalip.inference.specs import OpenCLIPModel, load_model
from dalip.model.preprocess import create_tokenizer, create_transforms

CAPTIONS = ["a serrate ovate leaf", "a fern"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A DALIP model file and its exports: an open_clip file, a fused and a plain folder."""
    root = tmp_path_factory.mktemp("load")
    torch.manual_seed(5)
    model, *_ = dalip.create_model("test-tiny", alpha=0.4, **TEST_MBDC)
    model.save(root / "model.safetensors")
    for form, out in (("open_clip", "plain.safetensors"), ("fused-dir", "fused"), ("open_clip-dir", "plain")):
        assert main(["export", str(root / "model.safetensors"), str(root / out), "--format", form]) == 0
    return root


def _encode(model, preprocess, tokenizer):
    torch.manual_seed(6)
    from PIL import Image

    image = Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy())
    with torch.no_grad():
        return model.encode_image(preprocess(image)[None]), model.encode_text(tokenizer(CAPTIONS))


@pytest.mark.parametrize(
    "spec, second_order",
    [
        ("{root}/model.safetensors", True),
        ("local-dir:{root}/fused", True),
        ("local-dir:{root}/plain", False),
        ("openclip:local-dir:{root}/fused", False),
        ("openclip:test-tiny:{root}/plain.safetensors", False),
    ],
)
def test_every_spec_loads_model_preprocess_and_tokenizer(trained, spec, second_order):
    spec = spec.format(root=trained)
    model, preprocess, tokenizer = dalip.load(spec)
    assert not model.training and model.has_second_order is second_order
    assert isinstance(model, dalip.DALIPModel if second_order else OpenCLIPModel)
    reference = dalip.load_checkpoint(trained / "model.safetensors")
    image, text = _encode(model, preprocess, tokenizer)
    expected_image, expected_text = _encode(reference, *_transform_and_tokenizer(reference))
    torch.testing.assert_close(image.first, expected_image.first)
    torch.testing.assert_close(text.first, expected_text.first)
    if second_order:
        torch.testing.assert_close(image.second, expected_image.second)
        assert model.alpha == pytest.approx(0.4)
    loaded = load_model(spec)  # the loader every command uses: the same three
    assert type(loaded.model) is type(model) and type(loaded.preprocess) is type(preprocess)


def _transform_and_tokenizer(model):
    return create_transforms(model)[1], create_tokenizer(model)


def test_a_training_checkpoint_and_a_model_in_memory_load_too(train_data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    assert main(["train", "--config", str(write_config(train_data, out)), "--set", "steps=2"]) == 0
    step = sorted((out / "checkpoints").glob("step_*.pt"))[-1]
    from_step, *_ = dalip.load(step)
    from_file, *_ = dalip.load(out / "model.safetensors")
    for name, value in from_file.state_dict().items():
        assert torch.equal(from_step.state_dict()[name], value), name
    in_memory, preprocess, tokenizer = dalip.load(from_file)
    assert in_memory is from_file and tokenizer(CAPTIONS).shape[0] == 2


def test_a_bad_spec_is_the_same_one_line_error_as_on_the_command_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        dalip.load(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="expected openclip:ARCH:WEIGHTS"):
        dalip.load("openclip:test-tiny")


def test_the_open_clip_tokenizer_of_a_plain_model_is_open_clips(trained):
    _, _, tokenizer = dalip.load(f"local-dir:{trained}/plain")
    expected = open_clip.get_tokenizer(f"local-dir:{trained}/plain")(CAPTIONS)
    assert torch.equal(tokenizer(CAPTIONS), expected)


@pytest.mark.parametrize(
    "old, new, name",
    [
        ("dalip.evaluation.specs", "dalip.inference.specs", "load_model"),
        ("dalip.evaluation.runtime", "dalip.inference.runtime", "Runtime"),
        ("dalip.evaluation.predict", "dalip.inference.predict", "predict"),
        ("dalip.evaluation.taxon_predict", "dalip.inference.taxon_predict", "predict_taxa"),
        ("dalip.evaluation.labels", "dalip.inference.labels", "read_label_file"),
        ("dalip.evaluation.templates", "dalip.inference.templates", "load_templates"),
        ("dalip.evaluation.zero_shot", "dalip.inference.classes", "embed_classes"),
        ("dalip.evaluation.datasets", "dalip.inference.images", "list_image_files"),
    ],
)
def test_the_names_before_the_inference_package_still_import(old, new, name):
    """0.6 moved these to dalip.inference; the old names stay for 0.6."""
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)
