"""Which parameters train: LiT-style tower locks, and freezing modules (e.g. unused heads)."""

from __future__ import annotations

from torch import nn

from dalip.config import LockConfig
from dalip.model.dalip_model import DALIPModel


def apply_locks(model: DALIPModel, lock: LockConfig) -> None:
    """Freeze towers LiT-style through open_clip's own lock methods."""
    if lock.image:
        model.clip.lock_image_tower(unlocked_groups=lock.image_unlocked_groups)
    if lock.text:
        model.clip.lock_text_tower(unlocked_layers=lock.text_unlocked_layers)


def freeze(module: nn.Module) -> None:
    """Stop training every parameter of `module` (e.g. the MBDC heads of a plain CLIP run)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)


# open_clip's own parameters that belong to no tower: the temperature and SigLIP's logit bias
NOT_TOWERS = ("clip.logit_scale", "clip.logit_bias")


def tower_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The open_clip towers' parameters (not the temperature and bias): what a head warm-up holds still."""
    return [p for name, p in model.named_parameters() if name.startswith("clip.") and name not in NOT_TOWERS]
