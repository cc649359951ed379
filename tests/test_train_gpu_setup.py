"""The GPU path's set-up, checked without a GPU: which GPU a rank takes, which RNG state it
saves and restores, the process-group timeout, and validation in the training precision."""

import datetime

import pytest
import torch
from train_fixtures import write_config

from dalip.config import load_train_config
from dalip.model.devices import resolve_device
from dalip.train import distributed
from dalip.train.distributed import ControlChannel, DistributedContext, init_distributed
from dalip.train.state import rng_state, set_rng_state


@pytest.fixture
def fake_gpus(monkeypatch):
    """torch.cuda as a machine with GPUs would answer; `calls` records the RNG calls."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(
        torch.cuda,
        "get_rng_state",
        lambda device="cuda": (
            calls.append(("get", torch.device(device))),
            torch.tensor([40 + (torch.device(device).index or 0)], dtype=torch.uint8),
        )[1],
    )
    monkeypatch.setattr(
        torch.cuda,
        "set_rng_state",
        lambda state, device="cuda": calls.append(("set", torch.device(device), state.tolist())),
    )

    def every_gpu(*args, **kwargs):
        raise AssertionError("the RNG state of every visible GPU was touched")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_gpu)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", every_gpu)
    return calls


def test_a_rank_saves_and_restores_only_its_own_gpu_generator(fake_gpus):
    own = torch.device("cuda", 3)
    state = rng_state(own)
    assert fake_gpus == [("get", own)] and state["cuda_device"].tolist() == [43]
    set_rng_state(state, torch.device("cuda", 0))  # resumed where this process sees one GPU
    assert fake_gpus[-1] == ("set", torch.device("cuda", 0), [43])
    before = len(fake_gpus)
    set_rng_state(state, torch.device("cpu"))
    assert len(fake_gpus) == before


def test_a_checkpoint_with_every_gpus_state_restores_the_ranks_own(fake_gpus):
    legacy = {
        **rng_state(),
        "cuda": [torch.tensor([10], dtype=torch.uint8), torch.tensor([11], dtype=torch.uint8)],
    }
    set_rng_state(legacy, torch.device("cuda", 1))
    assert fake_gpus == [("set", torch.device("cuda", 1), [11])]
    set_rng_state(legacy, torch.device("cuda", 5))  # saved with fewer GPUs: nothing to restore
    assert len(fake_gpus) == 1


def test_each_rank_takes_its_own_gpu_or_the_one_it_sees(fake_gpus, monkeypatch):
    assert resolve_device("auto", 3) == torch.device("cuda", 3)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # per-task CUDA_VISIBLE_DEVICES
    assert resolve_device("auto", 3) == torch.device("cuda", 0)
    assert resolve_device("cuda", 2) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="LOCAL_RANK=3 but this process sees 2 GPUs"):
        resolve_device("auto", 3)


def test_the_process_group_timeout_comes_from_the_config(train_data, tmp_path, monkeypatch):
    config = load_train_config(write_config(train_data, tmp_path / "run", distributed_timeout_minutes=90))
    assert config.distributed_timeout_minutes == 90
    seen = {}
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    init_distributed(DistributedContext(rank=1, world_size=2), config.distributed_timeout_minutes)
    assert seen["timeout"] == datetime.timedelta(minutes=90) and seen["backend"] == "gloo"


def test_one_process_agrees_with_itself_without_communicating():
    channel = ControlChannel.create(DistributedContext())
    assert not channel.active
    assert channel.agree(True, None) == (True, None) and channel.agree(False, 15) == (False, 15)
    channel.barrier()


def test_validation_runs_in_the_training_precision(train_data, tmp_path, monkeypatch):
    from dalip.evaluation import validation

    seen = {}
    monkeypatch.setattr(
        validation, "zero_shot", lambda *args, runtime, **kwargs: seen.update(runtime=runtime) or {}
    )
    config = load_train_config(
        write_config(
            train_data,
            tmp_path / "run",
            precision="bf16",
            eval_every=1,
            data={"val": str(train_data / "plant/val")},
        )
    )
    validation.training_validation(config)(
        type("Task", (), {"second_order": True, "model": None, "tokenizer": None, "preprocess_val": None})(),
        4,
    )
    assert seen["runtime"].precision == "bf16" and seen["runtime"].batch_size == 4
