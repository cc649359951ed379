import open_clip
import pytest
import torch
from conftest import TEST_MBDC

import dalip
from dalip import DALIPLoss
from dalip.config import DEFAULT_ANSWER_MODE


def test_first_order_is_open_clips_own(tiny_model, captions):
    model, _, _, tokenizer = tiny_model
    images, texts = torch.randn(4, 3, 32, 32), tokenizer(captions)
    image, text = model.encode_image(images), model.encode_text(texts)
    assert torch.equal(image.first, model.clip.encode_image(images, normalize=True))
    assert torch.equal(text.first, model.clip.encode_text(texts, normalize=True))
    assert image.second.shape == text.second.shape == (4, 32)
    torch.testing.assert_close(image.second.norm(dim=-1), torch.ones(4))


def test_text_padding_content_is_ignored(tiny_model, captions):
    model, _, _, tokenizer = tiny_model
    texts = tokenizer(captions)
    garbage = texts.clone()
    end = texts.argmax(-1)
    for row, position in enumerate(end.tolist()):  # random ids after end-of-text, below its id
        garbage[row, position + 1 :] = torch.randint(1, 1000, (texts.shape[1] - position - 1,))
    clean, noisy = model.encode_text(texts), model.encode_text(garbage)
    torch.testing.assert_close(noisy.second, clean.second, rtol=0, atol=1e-6)


def test_second_order_can_be_skipped(tiny_model):
    model = tiny_model[0]
    features = model.encode_image(torch.randn(2, 3, 32, 32), second_order=False)
    assert features.second is None and features.first.shape == (2, 32)


def test_similarity_modes(tiny_model, captions):
    model, _, _, tokenizer = tiny_model
    image, text = model.encode_image(torch.randn(3, 3, 32, 32)), model.encode_text(tokenizer(captions))
    first, second = image.first @ text.first.T, image.second @ text.second.T
    torch.testing.assert_close(model.similarity(image, text, "first"), first)
    torch.testing.assert_close(model.similarity(image, text, "second"), second)
    a = model.alpha
    torch.testing.assert_close(model.similarity(image, text, "fused"), a * first + (1 - a) * second)
    # no mode named: the model's stored answer mode, else dalip's default (the first order)
    assert model.answer_mode is None and model.default_mode == DEFAULT_ANSWER_MODE == "first"
    torch.testing.assert_close(model.similarity(image, text), first)
    torch.testing.assert_close(model.logits(image, text), model.logits(image, text, "first"))
    model.answer_mode = "fused"
    torch.testing.assert_close(model.similarity(image, text), a * first + (1 - a) * second)
    torch.testing.assert_close(model.logits(image, text), model.logits(image, text, "fused"))
    model.answer_mode = None  # the fixture is shared
    with pytest.raises(ValueError, match="similarity mode must be one of"):
        model.similarity(image, text, "mean")


def test_clipa_style_tower_is_supported():
    torch.manual_seed(0)
    model, _, _, _ = dalip.create_model("test-tiny-clipa", **TEST_MBDC)
    model.eval()
    images = torch.randn(2, 3, 32, 32)
    texts = torch.randint(1, 1000, (2, 16))
    texts[0, 5:] = 0  # padding (open_clip's pad id 0)
    image, text = model.encode_image(images), model.encode_text(texts)
    assert torch.equal(image.first, model.clip.encode_image(images, normalize=True))
    assert image.second.shape == text.second.shape == (2, 32)
    # last-token pooling: the token set is every position but padding
    assert model.text_mask(texts).tolist() == [[True] * 5 + [False] * 11, [True] * 16]
    assert model.config()["text_padding"] == "masked"
    # a model stored before padding was masked (no text_padding field) keeps every position
    legacy = dalip.model.factory.wrap_clip(
        model.clip, {k: v for k, v in model.config().items() if k != "text_padding"}
    )
    assert legacy.text_mask(texts) is None
    empty = torch.zeros(1, 16, dtype=torch.long)  # all padding: the first position stays a token
    assert model.text_mask(empty).tolist() == [[True] + [False] * 15]


def test_every_architecture_but_the_hugging_face_text_towers_is_accepted():
    names = set(dalip.supported_model_names())
    hugging_face = {
        n for n in open_clip.list_models() if "hf_model_name" in open_clip.get_model_config(n)["text_cfg"]
    }
    assert set(open_clip.list_models()) - hugging_face == names
    families = {
        "ViT-B-16",
        "ViT-H-14-CLIPA",
        "ViT-B-16-SigLIP2",
        "PE-Core-B-16",
        "EVA02-B-16",
        "MobileCLIP2-S0",
    }
    assert families | {"convnext_base", "RN50", "coca_ViT-B-32", "ViTamin-B", "dalip-tiny"} <= names
    for name in hugging_face:
        with pytest.raises(ValueError, match="Hugging Face transformers model"):
            dalip.model.registry.check_supported_architecture(name)


def test_vit_b_32_builds_with_paper_defaults():
    model, _, preprocess, tokenizer = dalip.create_model("ViT-B-32")
    assert model.image_mbdc.vector_dim == 4324  # 4 heads x 46*47/2, as the paper
    features = model.eval().encode_image(torch.randn(1, 3, 224, 224))
    assert features.second.shape == (1, 512)


@pytest.mark.parametrize(
    "name, pretrained, message",
    [
        ("ViT-Nope-99", None, "unknown model name 'ViT-Nope-99'"),
        ("roberta-ViT-B-32", None, "text tower is the Hugging Face transformers model 'roberta-base'"),
        ("test-tiny", "missing/weights.pt", "pretrained file not found: missing/weights.pt"),
        ("ViT-B-32", "no-such-tag", "unknown pretrained tag 'no-such-tag' for ViT-B-32"),
    ],
)
def test_bad_model_arguments(name, pretrained, message):
    with pytest.raises(ValueError, match=message):
        dalip.create_model(name, pretrained=pretrained)


def test_unknown_mbdc_option():
    with pytest.raises(ValueError, match="unknown MBDC option"):
        dalip.create_model("test-tiny", head=3)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_plain_open_clip_weights_load_and_heads_are_reported(tmp_path, suffix):
    torch.manual_seed(3)
    source = open_clip.create_model("test-tiny")
    path = tmp_path / f"open_clip{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": source.state_dict()}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model, _, _, _ = dalip.create_model("test-tiny", pretrained=str(path), **TEST_MBDC)
    for name, value in source.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], value), name
    assert model.newly_initialized == model.mbdc_parameter_names()
    assert any(n.startswith("image_mbdc.") for n in model.newly_initialized)


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match=f"pretrained file {path} does not hold test-tiny weights"):
        dalip.create_model("test-tiny", pretrained=str(path))


def test_every_parameter_receives_a_gradient(tiny_model, captions):
    model, _, _, tokenizer = tiny_model
    model.train()
    model.logit_scale_second = torch.nn.Parameter(torch.tensor(2.0))
    output = model(torch.randn(4, 3, 32, 32), tokenizer(captions))
    losses = DALIPLoss()(
        output["image_features"],
        output["text_features"],
        output["logit_scale"],
        model.logit_scale_second.exp(),
    )
    losses["loss"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert model.clip.visual.conv1.weight.grad.abs().sum() > 0
    assert model.clip.token_embedding.weight.grad.abs().sum() > 0
    assert model.text_mbdc.mix.weight.grad.abs().sum() > 0


def test_dalip_tiny_fits_a_fixed_batch():
    torch.manual_seed(0)
    model, _, _, tokenizer = dalip.create_model("dalip-tiny")
    images = torch.randn(16, 3, 64, 64)
    words = [
        "oak",
        "leaf",
        "red",
        "serrate",
        "ovate",
        "spotted",
        "green",
        "blue",
        "lobed",
        "palmate",
        "maple",
        "fern",
        "moss",
        "pine",
    ]
    order = torch.stack([torch.randperm(len(words))[:4] for _ in range(16)])
    texts = tokenizer([" ".join(words[i] for i in row) for row in order.tolist()])
    loss_fn = DALIPLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    losses = []
    for _ in range(30):
        output = model(images, texts)
        loss = loss_fn(output["image_features"], output["text_features"], output["logit_scale"])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
