"""The MBDC choices the method issue asked for: token weighting that survives the
reduction, channel dropout, and their record in checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TEST_MBDC

import dalip
from dalip import MBDC


def _cluster_shift(weighting: str, seed: int) -> float:
    """1 - cosine between the outputs for two summaries, each aimed at one of two token clusters."""
    torch.manual_seed(seed)
    dim, count = 64, 16
    module = MBDC(dim, heads=1, reduced_dim=16, weighting=weighting, dropout=0.0)
    with torch.no_grad():  # identity token map: the summary's cosine picks its cluster
        module.token_proj.weight.copy_(torch.eye(dim))
        module.token_proj.bias.zero_()
    basis = torch.linalg.qr(torch.randn(dim, dim))[0]
    a, b = basis[0], basis[1]
    tokens = torch.cat([a + 0.05 * torch.randn(count // 2, dim), b + 0.05 * torch.randn(count // 2, dim)])[
        None
    ]
    if weighting == "batchnorm":  # running statistics of a batch, then inference
        module.train()(torch.randn(8, count, dim), torch.randn(8, dim))
    module.eval()
    with torch.no_grad():
        return 1 - F.cosine_similarity(module(tokens, a[None]), module(tokens, b[None])).item()


@pytest.mark.parametrize("weighting", ["after_norm", "batchnorm"])
def test_token_weighting_survives_the_reduction(weighting):
    shift = sum(_cluster_shift(weighting, seed) for seed in range(4)) / 4
    assert shift > 0.15


def test_dalip_0_1_weighting_is_nearly_inert_and_uniform_weighting_ignores_the_summary():
    assert sum(_cluster_shift("before_norm", seed) for seed in range(4)) / 4 < 0.1
    assert _cluster_shift("none", 0) == pytest.approx(0.0, abs=1e-6)


def _dropout_zeros(kind: str) -> torch.Tensor:
    """Which reduced values the dropout zeroed, as (B, H, r, M), in one training forward
    whose reduction output is positive everywhere (so every zero comes from dropout)."""
    torch.manual_seed(0)
    module = MBDC(16, heads=2, reduced_dim=8, dropout=0.5, dropout_kind=kind)
    with torch.no_grad():
        module.reduce[1].bias.fill_(10.0)  # LayerNorm bias: ReLU passes everything
    seen = []
    handle = module.dropout.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    tokens = torch.randn(4, 10, 16)
    module.train()(tokens, tokens[:, 0])
    handle.remove()
    out = seen[0]
    if kind == "channel":  # (B*H, r, M)
        return (out == 0).view(4, 2, 8, 10)
    return (out == 0).permute(0, 2, 3, 1)  # (B, M, H, r) -> (B, H, r, M)


def test_channel_dropout_drops_whole_channels_of_a_sample_head():
    zeros = _dropout_zeros("channel")
    whole = zeros.all(dim=-1)
    assert whole.any() and (~whole).any()
    assert torch.equal(zeros.any(dim=-1), whole)  # never part of a channel
    assert not torch.equal(whole[0], whole[1])  # drawn per sample


def test_element_dropout_drops_single_values():
    zeros = _dropout_zeros("element")
    assert (zeros.any(dim=-1) & ~zeros.all(dim=-1)).any()


def test_dropout_rate_and_kind_are_validated():
    with pytest.raises(ValueError, match="dropout_kind"):
        MBDC(16, heads=2, reduced_dim=4, dropout_kind="tokens")
    with pytest.raises(ValueError, match="weighting"):
        MBDC(16, heads=2, reduced_dim=4, weighting="after_softmax")


def test_new_checkpoints_record_weighting_and_dropout_kind(tmp_path):
    model, *_ = dalip.create_model(
        "test-tiny", weighting="batchnorm", dropout_kind="channel", dropout=0.3, **TEST_MBDC
    )
    model.save(tmp_path / "m.safetensors")
    loaded = dalip.load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.image_mbdc.weighting == "batchnorm" and loaded.text_mbdc.dropout_kind == "channel"
    assert loaded.config()["mbdc"]["dropout"] == 0.3
    images, texts = torch.randn(2, 3, 32, 32), torch.randint(1, 400, (2, 16))
    with torch.no_grad():
        model.eval()
        for got, want in [
            (loaded.encode_image(images), model.encode_image(images)),
            (loaded.encode_text(texts), model.encode_text(texts)),
        ]:
            torch.testing.assert_close(got.second, want.second)
