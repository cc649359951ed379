import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from dalip import DALIPLoss, Features


def random_features(batch=8, dim=16, seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    make = lambda: F.normalize(torch.randn(batch, dim, generator=generator), dim=-1)  # noqa: E731
    image, text = Features(make(), make()), Features(make(), make())
    if requires_grad:
        for tensor in (*image, *text):
            tensor.requires_grad_(True)
    return image, text


def test_alpha_one_is_exactly_open_clip_loss():
    image, text = random_features()
    scale = torch.tensor(14.3)
    ours = DALIPLoss(alpha=1.0)(image, text, scale)
    assert torch.equal(ours["loss"], ClipLoss()(image.first, text.first, scale))


def test_losses_combine_weights_both_branches():
    image, text = random_features()
    scale, scale_second = torch.tensor(10.0), torch.tensor(5.0)
    out = DALIPLoss(alpha=0.3)(image, text, scale, scale_second)
    first = ClipLoss()(image.first, text.first, scale)
    second = ClipLoss()(image.second, text.second, scale_second)
    torch.testing.assert_close(out["first_order_loss"], first)
    torch.testing.assert_close(out["second_order_loss"], second)
    torch.testing.assert_close(out["loss"], 0.3 * first + 0.7 * second)


def test_similarity_combine_is_one_loss_on_fused_logits():
    image, text = random_features()
    scale = torch.tensor(10.0)
    out = DALIPLoss(alpha=0.25, combine="similarity")(image, text, scale)
    logits = scale * (0.25 * image.first @ text.first.T + 0.75 * image.second @ text.second.T)
    labels = torch.arange(8)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(out["loss"], expected)
    assert not out["second_order_loss"].requires_grad


def matched_and_shuffled_features():
    """Images, texts near their own image, and the same texts shifted by one (mismatched)."""
    image, _ = random_features(seed=1)
    noise = random_features(seed=2)[0]
    text = Features(
        F.normalize(image.first + 0.3 * noise.first, dim=-1),
        F.normalize(image.second + 0.3 * noise.second, dim=-1),
    )
    return image, text, Features(text.first.roll(1, 0), text.second.roll(1, 0))


def test_matched_pairs_score_lower_than_shuffled():
    image, text, shuffled = matched_and_shuffled_features()
    loss = DALIPLoss()
    scale = torch.tensor(20.0)
    assert loss(image, text, scale)["loss"] < 0.5 * loss(image, shuffled, scale)["loss"]


@pytest.mark.parametrize("kwargs, message", [({"alpha": 1.5}, "alpha"), ({"combine": "sum"}, "combine")])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DALIPLoss(**kwargs)


def _distributed_worker(rank, world_size, init_file, combine, local_loss, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    image, text = random_features(batch=8, seed=5, requires_grad=True)
    part = slice(rank * 4, (rank + 1) * 4)
    local_image = Features(image.first[part], image.second[part])
    local_text = Features(text.first[part], text.second[part])
    loss = DALIPLoss(
        alpha=0.4,
        combine=combine,
        local_loss=local_loss,
        gather_with_grad=True,
        rank=rank,
        world_size=world_size,
    )
    out = loss(local_image, local_text, torch.tensor(12.0))
    total = out["loss"].detach().clone()
    dist.all_reduce(total)
    out["loss"].backward()  # gradients flow back through the gather
    grad = image.first.grad.clone()
    dist.all_reduce(grad)
    results[rank] = (total / world_size).item(), grad
    dist.destroy_process_group()


@pytest.mark.parametrize("combine, local_loss", [("losses", False), ("losses", True), ("similarity", False)])
def test_two_gloo_processes_match_one_process(tmp_path, combine, local_loss):
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_distributed_worker, args=(2, tmp_path / "init", combine, local_loss, results), nprocs=2)
    image, text = random_features(batch=8, seed=5, requires_grad=True)
    single = DALIPLoss(alpha=0.4, combine=combine)(image, text, torch.tensor(12.0))["loss"]
    single.backward()
    assert abs(results[0][0] - single.item()) < 1e-6
    assert abs(results[1][0] - single.item()) < 1e-6
    # Summed over ranks, the gradient each rank sends to the features equals the full-batch one
    # (up to the 1/world mean that DDP applies).
    torch.testing.assert_close(results[0][1] / 2, image.first.grad, rtol=0, atol=1e-6)
