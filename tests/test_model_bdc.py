import itertools

import pytest
import torch

from dalip import brownian_distance_covariance, upper_triangle_indices, vectorize_upper_triangle
from dalip.model.bdc import exact_gram
from dalip.model.devices import configure_cuda


def reference_bdc(tokens: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """BDC of one (M, d) token set, written from the formula with a double loop."""
    count, channels = tokens.shape
    distance = torch.empty(channels, channels, dtype=tokens.dtype)
    for k, m in itertools.product(range(channels), repeat=2):
        x_k, x_l = tokens[:, k], tokens[:, m]
        squared = max(0.0, float(x_k @ x_k + x_l @ x_l - 2 * x_k @ x_l))
        distance[k, m] = (squared / (2 * count) + eps) ** 0.5
    row = distance.mean(dim=1, keepdim=True)
    col = distance.mean(dim=0, keepdim=True)
    return distance - row - col + distance.mean()


def test_matches_reference_in_float64():
    torch.manual_seed(0)
    tokens = torch.randn(2, 3, 7, 5, dtype=torch.float64)  # leading batch and head dims
    result = brownian_distance_covariance(tokens)
    assert result.shape == (2, 3, 5, 5)
    assert result.dtype == torch.float64
    for b, h in itertools.product(range(2), range(3)):
        torch.testing.assert_close(result[b, h], reference_bdc(tokens[b, h]), rtol=0, atol=1e-6)


def test_symmetric_and_double_centred():
    tokens = torch.randn(4, 11, 6, dtype=torch.float64)
    result = brownian_distance_covariance(tokens)
    torch.testing.assert_close(result, result.transpose(-1, -2), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.mean(-1), torch.zeros(4, 6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.mean(-2), torch.zeros(4, 6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_masked_equals_truncated():
    torch.manual_seed(1)
    tokens = torch.randn(3, 10, 4, dtype=torch.float64)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, :10] = True
    mask[1, :4] = True
    mask[2, [0, 3, 5, 9]] = True  # not only trailing padding
    result = brownian_distance_covariance(tokens, mask)
    for b in range(3):
        kept = tokens[b][mask[b]]
        torch.testing.assert_close(result[b], brownian_distance_covariance(kept), rtol=0, atol=1e-12)
    # masked values must not matter at all
    changed = tokens.clone()
    changed[~mask] = 1e3
    torch.testing.assert_close(brownian_distance_covariance(changed, mask), result, rtol=0, atol=1e-12)


def test_finite_gradients_for_identical_channels():
    base = torch.randn(2, 9, 3)
    tokens = torch.cat([base, base[..., :1], base[..., :1]], dim=-1).requires_grad_(True)  # 3 equal channels
    brownian_distance_covariance(tokens).square().sum().backward()
    assert torch.isfinite(tokens.grad).all()
    constant = torch.ones(1, 5, 4, requires_grad=True)  # every distance is 0: sqrt at eps
    brownian_distance_covariance(constant).sum().backward()
    assert torch.isfinite(constant.grad).all()


def test_low_precision_input_is_computed_in_float32():
    torch.manual_seed(2)
    tokens = torch.randn(2, 49, 16)
    as_bf16 = tokens.to(torch.bfloat16)
    exact = brownian_distance_covariance(as_bf16.double())
    result = brownian_distance_covariance(as_bf16)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result.double(), exact, rtol=0, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = brownian_distance_covariance(as_bf16)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast.double(), exact, rtol=0, atol=1e-6)


def test_temperature_scales_squared_distances():
    tokens = torch.randn(2, 8, 5, dtype=torch.float64)
    scaled = brownian_distance_covariance(tokens, temperature=4.0)
    # scaling squared distances by 4 equals doubling the tokens
    torch.testing.assert_close(scaled, brownian_distance_covariance(2 * tokens), rtol=0, atol=1e-12)


def test_upper_triangle_vectorisation():
    matrix = torch.arange(16.0).view(4, 4)
    indices = upper_triangle_indices(4)
    assert indices.shape == (10,)
    expected = [matrix[i, j] for i in range(4) for j in range(i, 4)]
    assert vectorize_upper_triangle(matrix[None], indices)[0].tolist() == expected
    with pytest.raises(ValueError, match="square"):
        vectorize_upper_triangle(torch.zeros(2, 3, 4), indices)


@pytest.mark.parametrize(
    "tokens, mask, message",
    [
        (torch.zeros(5), None, r"\(\.\.\., M, d\)"),
        (torch.zeros(2, 5, 3), torch.ones(2, 4, dtype=torch.bool), r"mask must have shape \(2, 5\)"),
    ],
)
def test_bad_input_is_a_clear_error(tokens, mask, message):
    with pytest.raises(ValueError, match=message):
        brownian_distance_covariance(tokens, mask)


def test_the_gram_matrix_stays_ieee_float32_where_tf32_is_on(monkeypatch):
    """`configure_cuda` turns TF32 on for float32 matmuls (as open_clip_train); BDC's Gram matrix,
    forward and backward, asks for full float32 all the same, and the setting is restored."""
    seen, matmul = [], torch.matmul

    def recording_matmul(*args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return matmul(*args, **kwargs)

    monkeypatch.setattr(torch, "matmul", recording_matmul)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # what TF32 on means
    try:
        x = torch.randn(2, 3, 9, 5, requires_grad=True)
        brownian_distance_covariance(x).sum().backward()
        assert len(seen) >= 2 and set(seen) == {"highest"}  # the product and its gradient
        assert torch.get_float32_matmul_precision() == "high"
        torch.matmul(x.transpose(-1, -2), x)  # any other product keeps the process's setting
        assert seen[-1] == "high"
    finally:
        torch.set_float32_matmul_precision(previous)


def test_the_gram_matrix_leaves_an_ieee_process_as_it_was():
    """Where TF32 is off (torch's default) the Gram's switch touches nothing: every backend's
    setting reads the same after, so the matmuls around it keep their exact kernels."""
    backends = torch.backends

    def settings():
        places = (backends.cuda.matmul, backends.mkldnn.matmul, backends.mkldnn, backends)
        return [getattr(place, "fp32_precision", None) for place in places]

    before = settings(), torch.get_float32_matmul_precision()
    exact_gram(torch.randn(2, 5, 3, requires_grad=True)).sum().backward()
    assert (settings(), torch.get_float32_matmul_precision()) == before


def test_exact_gram_gradient():
    x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(exact_gram, (x,))
    torch.testing.assert_close(exact_gram(x), x.transpose(-1, -2) @ x)
    strided = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True).transpose(1, 2)  # as MBDC's
    assert torch.autograd.gradcheck(exact_gram, (strided,))


def test_configure_cuda_sets_tf32_and_the_autotuner():
    matmul_before, benchmark_before = torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark
    conv = getattr(torch.backends.cudnn, "conv", None)
    try:
        configure_cuda(tf32=True)
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.benchmark
        if conv is not None and hasattr(conv, "fp32_precision"):
            assert conv.fp32_precision == "tf32"
        configure_cuda(tf32=False)
        assert torch.get_float32_matmul_precision() == "highest"
        if conv is not None and hasattr(conv, "fp32_precision"):
            assert conv.fp32_precision == "ieee"
    finally:
        torch.set_float32_matmul_precision(matmul_before)
        torch.backends.cudnn.benchmark = benchmark_before
        if conv is not None and hasattr(conv, "fp32_precision"):
            conv.fp32_precision = "tf32"
