"""Every architecture open_clip registers gets a verdict: supported (its DALIP model builds on the
meta device, no memory, and encodes a batch there to features of the right shapes) or refused
with a reason (at config time, as `dalip train` refuses it). Slow: about 3 minutes on 2 cores."""

from __future__ import annotations

import open_clip
import pytest

from dalip.model.catalog import architectures, build_on_meta
from dalip.model.registry import check_supported_architecture

# The image tower families the models issue asks for, each with at least one pretrained model.
FAMILIES = {
    "open_clip ViT": "ViT-B-16",
    "open_clip ViT + attentional pool": "coca_ViT-B-32",
    "open_clip ModifiedResNet": "RN50",
    "timm ViT": "ViT-B-16-SigLIP2",
    "timm EVA": "PE-Core-B-16",
    "timm ViTamin": "ViTamin-B",
    "timm ConvNeXt": "convnext_base",
    "timm FastViT": "MobileCLIP2-S0",
}


@pytest.mark.slow
def test_every_architecture_is_supported_and_builds_or_is_refused_with_a_reason():
    seen = architectures()
    assert {a.name for a in seen} == set(open_clip.list_models())
    failures = []
    for architecture in seen:
        if not architecture.supported:
            assert architecture.reason, architecture.name
            with pytest.raises(ValueError, match="is not supported by DALIP"):
                check_supported_architecture(architecture.name)
            continue
        try:
            model, shapes = build_on_meta(architecture.name)
        except Exception as error:  # collected: the assertion lists every architecture that failed
            failures.append(f"{architecture.name}: {type(error).__name__}: {error}")
            continue
        width = model.embed_dim
        assert shapes == {
            "image_first": (2, width),
            "image_second": (2, width),
            "text_first": (2, width),
            "text_second": (2, width),
        }, architecture.name
    assert not failures, failures
    supported = {a.image_tower.split(" (")[0] for a in seen if a.supported}
    assert set(FAMILIES) <= supported
    for family, example in FAMILIES.items():
        described = next(a for a in seen if a.name == example)
        assert described.supported and described.pretrained and described.image_tower.startswith(family)


def test_the_refused_architectures_are_the_hugging_face_text_towers():
    refused = [a for a in architectures() if not a.supported]
    assert refused and all(a.text_tower.startswith("Hugging Face") for a in refused)
    assert all("Hugging Face transformers model" in a.reason for a in refused)
    sigmoid = [a.name for a in architectures() if a.loss_form == "sigmoid" and a.supported]
    assert "ViT-B-16-SigLIP2" in sigmoid and "ViT-B-16" not in sigmoid


def test_dalip_models_lists_them(capsys):
    from dalip.cli import main

    assert main(["models", "*SigLIP2*", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "ViT-B-16-SigLIP2 " in out and "sigmoid" in out and "supported" in out
    assert main(["models", "--unsupported", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all('"supported": false' in line for line in lines)
    assert main(["models", "no-such-*"]) == 2
    assert "no architecture matches" in capsys.readouterr().err
