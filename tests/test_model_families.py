"""Every tower family open_clip builds gets DALIP heads: the tiny member of each family (timm's
SigLIP-style ViT, EVA-02, PE-Core, MobileCLIP's FastViT, ConvNeXt; open_clip's ModifiedResNet and
CoCa) reads tokens from the library's own modules, keeps its first order bit for bit, trains
every parameter, saves and loads; LoRA, locks and the stored-config checks know timm towers."""

from __future__ import annotations

import open_clip
import pytest
import torch

import dalip
from dalip.checkpoint import load_checkpoint
from dalip.loss import DALIPLoss
from dalip.model.factory import TINY_ARCHITECTURES, wrap_clip
from dalip.model.lora import add_low_rank_adapters, merge_low_rank
from dalip.model.preprocess import create_tokenizer
from dalip.model.stored_config import check_model_config

FAMILIES = [name for name in TINY_ARCHITECTURES if name != "dalip-tiny"]


def _image_size(model) -> int:
    size = model.clip.visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else size


def _batch(model, tokenizer, count=4):
    size = _image_size(model)
    images = torch.randn(count, 3, size, size)
    texts = tokenizer(
        ["a serrate ovate leaf", "two blue squares", "Quercus rubra, red oak", "a fern"][:count]
    )
    return images, texts


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    torch.manual_seed(0)
    model, _, preprocess, tokenizer = dalip.create_model(request.param, dropout=0.0)
    return request.param, model, preprocess, tokenizer


def test_first_order_is_the_plain_models_bit_for_bit_and_second_order_has_its_shape(family):
    name, model, _, tokenizer = family
    model.eval()
    images, texts = _batch(model, tokenizer)
    image, text = model.encode_image(images), model.encode_text(texts)
    assert torch.equal(image.first, model.clip.encode_image(images, normalize=True))
    assert torch.equal(text.first, model.clip.encode_text(texts, normalize=True))
    assert image.second.shape == text.second.shape == (4, model.embed_dim)
    for features in (image.second, text.second):
        torch.testing.assert_close(features.norm(dim=-1), torch.ones(4))
    described = model.describe_tokens()
    assert described["image"]["family"] and described["text"]["family"] == "open_clip TextTransformer"


def test_every_trainable_parameter_gets_a_finite_gradient(family):
    name, model, _, tokenizer = family
    model.train()
    with torch.no_grad():  # open_clip's ResNet starts each block's last BatchNorm at zero: no gradient flows
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith("bn3.weight"):
                parameter.fill_(1.0)
    images, texts = _batch(model, tokenizer)
    output = model(images, texts)
    loss = DALIPLoss(alpha=0.5, form=model.loss_form)
    losses = loss(
        output["image_features"],
        output["text_features"],
        output["logit_scale"],
        logit_bias=output.get("logit_bias"),
        logit_bias_second=output.get("logit_bias_second"),
    )
    model.zero_grad()
    losses["loss"].backward()
    unused = {"clip.text_decoder."}  # CoCa's caption decoder: the contrastive loss never reaches it
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad
        and not n.startswith(tuple(unused))
        and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad()


def test_save_and_load_give_identical_features(family, tmp_path):
    name, model, _, tokenizer = family
    model.eval()
    path = tmp_path / f"{name}.safetensors"
    model.save(path)
    loaded = load_checkpoint(path)
    images, texts = _batch(loaded, tokenizer)
    for ours, theirs in ((model.encode_image(images), loaded.encode_image(images)),
                         (model.encode_text(texts), loaded.encode_text(texts))):  # fmt: skip
        assert torch.equal(ours.first, theirs.first) and torch.equal(ours.second, theirs.second)
    assert loaded.loss_form == model.loss_form and loaded.text_padding == "masked"


def test_the_resnets_tokens_get_the_heads_own_projection_and_the_others_the_towers():
    torch.manual_seed(0)
    resnet, *_ = dalip.create_model("dalip-tiny-resnet")
    assert resnet.image_mbdc.input_proj is not None and resnet.image_mbdc.in_dim == 512
    for name in ("dalip-tiny-sigmoid", "dalip-tiny-eva02", "dalip-tiny-convnext", "dalip-tiny-coca"):
        model, *_ = dalip.create_model(name)
        assert model.image_mbdc.input_proj is None, name


def test_prefix_tokens_are_left_out_of_the_token_set():
    """EVA-02's class token and a register token are prefix tokens: the token set is the patches."""
    torch.manual_seed(0)
    model, *_ = dalip.create_model("dalip-tiny-eva02")
    images = torch.randn(2, 3, 64, 64)
    _, tokens = model._image_tokens.read(images)
    assert tokens.shape == (2, 64, model.embed_dim)  # 8 x 8 patches, the class token left out
    clip = open_clip.create_model("dalip-tiny-sigmoid")
    config = {"model_name": "dalip-tiny-sigmoid", "alpha": 0.5, "mbdc": {"heads": 4, "reduced_dim": 8}}
    assert wrap_clip(clip, config)._image_tokens.prefix == 0  # SigLIP: no class token


def test_siglip_family_defaults_to_the_sigmoid_form_and_clip_families_to_softmax():
    sigmoid, *_ = dalip.create_model("dalip-tiny-sigmoid")
    assert sigmoid.loss_form == "sigmoid" and sigmoid.logit_bias_second is not None
    assert torch.equal(sigmoid.logit_bias_second, sigmoid.clip.logit_bias)
    softmax, *_ = dalip.create_model("dalip-tiny-eva02")
    assert softmax.loss_form == "softmax" and softmax.clip.logit_bias is None
    forced, *_ = dalip.create_model("dalip-tiny", loss_form="sigmoid")  # a CLIP start tuned as SigLIP
    assert (
        forced.clip.logit_bias.item() == -10.0
        and forced.config()["open_clip_config"]["init_logit_bias"] == -10.0
    )
    with pytest.raises(ValueError, match="loss.form: expected auto, softmax or sigmoid"):
        dalip.create_model("dalip-tiny", loss_form="hinge")


def test_a_stored_sigmoid_model_starts_a_run_in_its_form(tmp_path):
    model, *_ = dalip.create_model("dalip-tiny", loss_form="sigmoid")
    model.save(tmp_path / "start.safetensors")
    again, *_ = dalip.create_model("dalip-tiny", pretrained=str(tmp_path / "start.safetensors"))
    assert again.loss_form == "sigmoid"
    assert torch.equal(again.clip.logit_bias, model.clip.logit_bias)


def test_lora_adapts_timm_qkv_rows_and_starts_as_the_start_model():
    torch.manual_seed(0)
    model, _, _, tokenizer = dalip.create_model("dalip-tiny-sigmoid", dropout=0.0)
    model.eval()
    images, texts = _batch(model, tokenizer)
    before = model.encode_image(images)
    adapted = add_low_rank_adapters(model.clip, ["q", "v", "out", "mlp"], rank=2, alpha=1.0)
    assert "visual.trunk.blocks.0.attn.qkv.weight" in adapted
    assert (
        "visual.trunk.blocks.0.attn.proj.weight" in adapted
        and "visual.trunk.blocks.0.mlp.fc1.weight" in adapted
    )
    assert (
        "transformer.resblocks.0.attn.in_proj_weight" not in adapted
    )  # CustomTextCLIP: the text tower is .text
    assert "text.transformer.resblocks.0.attn.in_proj_weight" in adapted
    qkv = model.clip.visual.trunk.blocks[0].attn.qkv.parametrizations.weight[0]
    assert qkv.rows == [(0, 128), (256, 384)]  # q and v of the packed q, k, v rows
    after = model.encode_image(images)
    assert torch.equal(before.first, after.first)
    assert model.clip.logit_bias.requires_grad and model.clip.logit_scale.requires_grad
    trained = [n for n, p in model.clip.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in trained if not n.startswith("logit_"))
    merged = merge_low_rank(model.clip.state_dict())
    assert "visual.trunk.blocks.0.attn.qkv.weight" in merged


def test_lora_names_a_tower_it_cannot_adapt():
    model, *_ = dalip.create_model("dalip-tiny-convnext")
    with pytest.raises(ValueError, match=r"the image tower \(ConvNeXt\) has no layer that lora.targets"):
        add_low_rank_adapters(model.clip, ["q", "k", "v"], rank=2, alpha=1.0)
    adapted = add_low_rank_adapters(model.clip, ["q", "v", "mlp"], rank=2, alpha=1.0)
    assert any(name.startswith("visual.trunk.stages.") and ".mlp.fc1" in name for name in adapted)


def test_lora_leaves_the_coca_decoder_and_its_attentional_pooler_alone():
    model, *_ = dalip.create_model("dalip-tiny-coca")
    adapted = add_low_rank_adapters(model.clip, ["q", "k", "v", "mlp"], rank=2, alpha=1.0)
    assert not [n for n in adapted if n.startswith("text_decoder.") or ".attn_pool." in n]
    assert any(n.startswith("visual.transformer.") for n in adapted)


def test_lit_lock_of_a_timm_tower_freezes_its_trunk():
    model, *_ = dalip.create_model("dalip-tiny-pe")
    model.clip.lock_image_tower(unlocked_groups=0)
    assert not any(p.requires_grad for p in model.clip.visual.trunk.parameters())
    assert all(p.requires_grad for p in model.clip.text.parameters())


def test_a_siglip_tokenizer_that_cannot_load_says_which_and_how(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name.startswith("transformers"):
            raise ImportError("No module named 'transformers'", name="transformers")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(ValueError, match=r"model 'ViT-B-16-SigLIP2': its tokenizer is the Hugging Face "
                                         r"tokenizer 'timm/ViT-B-16-SigLIP2'.*pip install 'dalip\[hf\]'"):  # fmt: skip
        create_tokenizer("ViT-B-16-SigLIP2")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": True}}, "timm"),
        ({"text_cfg": {"hf_model_name": "roberta-base"}}, "hf_model_name"),
        ({"text_cfg": {"hf_tokenizer_name": "someone/anything"}}, "hf_tokenizer_name"),
    ],
)
def test_a_stored_config_that_would_fetch_is_refused(change, field):
    model, *_ = dalip.create_model("dalip-tiny-sigmoid")
    config = model.config()
    for section, values in change.items():
        config["open_clip_config"][section] = {**config["open_clip_config"][section], **values}
    with pytest.raises(ValueError, match="fetches nothing"):
        check_model_config(config, "model.safetensors")


def test_a_stored_siglip_2_config_with_its_own_tokenizer_is_accepted():
    config = {
        "model_name": "ViT-B-16-SigLIP2",
        "open_clip_config": open_clip.get_model_config("ViT-B-16-SigLIP2"),
    }
    assert check_model_config({**config, "loss_form": "sigmoid"}, "x")["loss_form"] == "sigmoid"
    with pytest.raises(ValueError, match="loss_form"):
        check_model_config({**config, "loss_form": "hinge"}, "x")


def test_open_clip_weights_of_a_timm_family_load_as_a_start_model(tmp_path):
    """A plain open_clip checkpoint file of a SigLIP-style model (what `pretrained=TAG` downloads):
    its towers and bias load, the heads are new, and the sigmoid form comes with the bias."""
    torch.manual_seed(0)
    source = open_clip.create_model("dalip-tiny-sigmoid")
    with torch.no_grad():
        source.logit_bias.fill_(-12.5)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "open_clip.pt")
    model, *_ = dalip.create_model("dalip-tiny-sigmoid", pretrained=str(tmp_path / "open_clip.pt"))
    for name, value in source.state_dict().items():
        assert torch.equal(model.clip.state_dict()[name], value), name
    assert model.loss_form == "sigmoid" and model.logit_bias_second.item() == -12.5
    assert (
        "logit_bias_second" in model.newly_initialized
        and "image_mbdc.token_proj.weight" in model.newly_initialized
    )


def test_an_hf_hub_siglip_style_folder_answers_with_sigmoid_probabilities(tmp_path, monkeypatch):
    """`hf-hub:ORG/REPO` of a plain open_clip folder (a Hugging Face cache the test lays out,
    offline): a first-order model whose probabilities are SigLIP's, sigmoid(scale * cos + bias)."""
    import shutil

    import huggingface_hub.constants as hub

    from dalip.export.folder import export_folder
    from dalip.inference.predict import label_probabilities
    from dalip.inference.specs import load_model

    torch.manual_seed(0)
    model, *_ = dalip.create_model("dalip-tiny-sigmoid")
    exported = tmp_path / "folder"
    export_folder(model, exported)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-siglip"
    shutil.copytree(exported, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    loaded = load_model("hf-hub:someone/tiny-siglip")
    assert not loaded.has_second_order and loaded.model.loss_form == "sigmoid"
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        image = loaded.model.encode_image(images)
        text = loaded.model.encode_text(loaded.tokenizer(["a fern", "an oak leaf", "two squares"]))
        expected = (10.0 * image.first @ text.first.T - 10.0).sigmoid()
    torch.testing.assert_close(
        label_probabilities(loaded.model, image, text, "first"), expected, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", TINY_ARCHITECTURES)
def test_every_weight_is_drawn_when_built_without_weights(name, monkeypatch):
    """No parameter keeps `torch.empty`'s memory: with empty memory made NaN, a model built
    without weights (CoCa's decoder projection was left empty by open_clip) is finite."""
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        tensor = real_empty(*args, **kwargs)
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    monkeypatch.setattr(torch, "empty", nan_empty)
    model, *_ = dalip.create_model(name, heads=2, reduced_dim=8)
    broken = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    assert not broken
