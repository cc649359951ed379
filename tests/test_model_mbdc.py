import pytest
import torch
import torch.nn.functional as F
from test_model_bdc import reference_bdc

from dalip import MBDC
from dalip.model.mbdc import masked_batch_norm


def reference_mbdc(module: MBDC, tokens, summary, mask=None):
    """The same math written plainly: a loop over samples and heads, the double-loop BDC."""
    outputs = []
    for b in range(tokens.shape[0]):
        keep = torch.ones(tokens.shape[1], dtype=torch.bool) if mask is None else mask[b]
        x = module.token_proj(tokens[b][keep])  # (M, dim)
        s = module.token_proj(summary[b])
        vectors = []
        for h in range(module.heads):
            part = slice(h * module.head_dim, (h + 1) * module.head_dim)
            cosine = F.cosine_similarity(x[:, part], s[part][None], dim=-1)
            weights = (torch.softmax(cosine, 0) * keep.sum())[:, None]
            if module.weighting in ("before_norm", "batchnorm"):  # weights on the reduction's input
                reduced = module.reduce(x[:, part] * weights)
            elif module.weighting == "after_norm":
                reduced = module.reduce(x[:, part]) * weights
            else:
                reduced = module.reduce(x[:, part])
            bdc = reference_bdc(reduced)
            rows, cols = torch.triu_indices(module.reduced_dim, module.reduced_dim)
            vectors.append(bdc[rows, cols])
        vector = torch.cat(vectors)
        outputs.append(F.normalize(module.out_proj(module.mix(module.norm(vector))), dim=-1))
    return torch.stack(outputs)


@pytest.mark.parametrize(
    "heads, reduced_dim, tokens_count, out_dim", [(4, 6, 9, None), (2, 5, 17, 12), (1, 3, 2, 7)]
)
def test_output_shape_and_norm(heads, reduced_dim, tokens_count, out_dim):
    module = MBDC(32, heads=heads, reduced_dim=reduced_dim, out_dim=out_dim).eval()
    output = module(torch.randn(3, tokens_count, 32), torch.randn(3, 32))
    assert output.shape == (3, out_dim or 32)
    assert module.vector_dim == heads * reduced_dim * (reduced_dim + 1) // 2
    torch.testing.assert_close(output.norm(dim=-1), torch.ones(3))


@torch.no_grad()
@pytest.mark.parametrize("weighting", ["after_norm", "batchnorm", "none", "before_norm"])
def test_batched_heads_match_plain_reference(weighting):
    torch.manual_seed(0)
    module = MBDC(24, heads=3, reduced_dim=4, weighting=weighting).double()
    if weighting == "batchnorm":  # running statistics away from (0, 1), so eval mode differs from identity
        module.train()(
            torch.randn(4, 7, 24, dtype=torch.float64) * 3 + 1, torch.randn(4, 24, dtype=torch.float64)
        )
    module.eval()
    tokens, summary = torch.randn(2, 7, 24, dtype=torch.float64), torch.randn(2, 24, dtype=torch.float64)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    torch.testing.assert_close(module(tokens, summary, mask), reference_mbdc(module, tokens, summary, mask))
    torch.testing.assert_close(module(tokens, summary), reference_mbdc(module, tokens, summary))


@pytest.mark.parametrize("masked", [True, False])
def test_masked_batch_norm_is_batch_norm_of_the_real_tokens(masked):
    """MBDC's "batchnorm" weighting normalises without boolean indexing (no host sync): the same
    output, gradient and running statistics as nn.BatchNorm1d over the real tokens alone."""
    torch.manual_seed(3)
    ours, reference = torch.nn.BatchNorm1d(5), torch.nn.BatchNorm1d(5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2), ours.bias.uniform_(-1, 1)
    reference.load_state_dict(ours.state_dict())
    x = (torch.randn(3, 7, 2, 5) * 2 + 1).requires_grad_()
    mask = torch.rand(3, 7) > 0.3 if masked else torch.ones(3, 7, dtype=torch.bool)
    for _ in range(2):  # twice: the running averages move from their start
        output = masked_batch_norm(x, ours, mask if masked else None)
        expected = torch.zeros_like(x)
        expected[mask] = reference(x[mask].reshape(-1, 5)).view(-1, 2, 5)
    torch.testing.assert_close(output, expected)
    upstream = torch.randn_like(x)
    ours_grad = torch.autograd.grad((output * upstream).sum(), [x, ours.weight])
    expected_grad = torch.autograd.grad((expected * upstream).sum(), [x, reference.weight])
    for got, want in zip(ours_grad, expected_grad):
        torch.testing.assert_close(got, want)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, msg=name)
    ours.eval(), reference.eval()
    torch.testing.assert_close(masked_batch_norm(x, ours, None), reference(x.reshape(-1, 5)).view_as(x))


def test_padding_length_does_not_change_output():
    torch.manual_seed(1)
    module = MBDC(16, heads=2, reduced_dim=4).eval()
    tokens, summary = torch.randn(2, 5, 16), torch.randn(2, 16)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    short = module(tokens, summary, mask)
    padded = torch.cat([tokens, torch.randn(2, 11, 16)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 11, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(module(padded, summary, padded_mask), short, rtol=0, atol=1e-6)


def test_every_parameter_gets_a_finite_gradient():
    module = MBDC(16, heads=4, reduced_dim=3, learnable_temperature=True)
    output = module(torch.randn(4, 6, 16), torch.randn(4, 16), torch.rand(4, 6) > 0.3)
    (output @ torch.randn(16)).sum().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_bf16_autocast_runs_and_stays_close():
    torch.manual_seed(2)
    module = MBDC(32, heads=4, reduced_dim=6).eval()
    tokens, summary = torch.randn(2, 10, 32), torch.randn(2, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = module(tokens, summary)
    assert torch.isfinite(low).all()
    assert F.cosine_similarity(low.float(), module(tokens, summary)).min() > 0.98


@pytest.mark.parametrize(
    "kwargs, message",
    [({"heads": 3}, "heads must divide"), ({"reduced_dim": 0}, "reduced_dim"), ({"dropout": 1.0}, "dropout")],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MBDC(16, **kwargs)


def test_bad_inputs():
    module = MBDC(16, heads=2, reduced_dim=3)
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, M, 16\)"):
        module(torch.randn(2, 16), torch.randn(2, 16))
    with pytest.raises(ValueError, match="summary must have shape"):
        module(torch.randn(2, 5, 16), torch.randn(3, 16))
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape"):
        module(torch.randn(2, 5, 16), torch.randn(2, 16), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        module(torch.randn(2, 5, 16), torch.randn(2, 16), torch.ones(2, 5))
