"""Low-rank adapters (LoRA, Hu et al. 2022) on open_clip's towers, as torch parametrizations.

An adapted weight is W = W0 + (alpha / rank) * B @ A for each targeted block of rows of W:
the query, key and value blocks of a packed `in_proj_weight` (torch's nn.MultiheadAttention,
what open_clip's ViTs and text towers use) or of timm's packed `qkv` Linear (timm's ViTs, EVA,
PE-Core, FastViT's attention stage) get an adapter each, as CLIP-LoRA adapts q, k and v;
separate `q_proj` / `k_proj` / `v_proj` Linear layers (ModifiedResNet's attention pool, EVA
unfused) one each; `out` adapts the attention's output projection (`out_proj`, timm's
`attn.proj`), `mlp` the MLP layers (`c_fc` / `c_proj`, timm's `fc1` / `fc2`, SwiGLU's `fc1_g` /
`fc1_x`). A is random and B zero, so the adapted model starts as the start model. W0 is
frozen; A and B train. Attention whose key and value widths differ from its queries' (CoCa's
attentional pooler) is left frozen.

Dropout is on the adapter's rank components (each of the `rank` directions of B @ A dropped
with probability `dropout` in training, the rest scaled up): a packed attention weight is
read whole by torch's attention kernel, so there is no adapter input to drop.

`merge_low_rank(state)` turns a state dict with adapters into the plain one (W0 + update),
from the state dict alone (each adapter keeps its rows and scale as buffers): models are
saved merged, so evaluation, exports and `serve` never see an adapter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

LORA_TARGETS = ("q", "k", "v", "out", "mlp")
_ORIGINAL = re.compile(r"^(.*)\.parametrizations\.([^.]+)\.original$")


def low_rank_weight(
    weight: torch.Tensor,
    rows: Sequence[Sequence[int]],
    a: Sequence[torch.Tensor],
    b: Sequence[torch.Tensor],
    scale: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """`weight` with `scale * b[i] @ diag(keep[i]) @ a[i]` added to its rows `rows[i]` =
    (start, stop); `keep` (blocks, rank): the rank components kept (None: all)."""
    pieces, done = [], 0
    for index, (start, stop) in enumerate(rows):
        pieces.append(weight[done:start])
        update = b[index] if keep is None else b[index] * keep[index]
        pieces.append(weight[start:stop] + scale * (update @ a[index]))
        done = stop
    pieces.append(weight[done:])
    return torch.cat(pieces)


class LowRankUpdate(nn.Module):
    """The parametrization W0 -> W0 + (alpha / rank) B @ A on some row blocks of W0."""

    def __init__(
        self, weight: torch.Tensor, rows: Sequence[tuple[int, int]], rank: int, alpha: float, dropout: float
    ) -> None:
        super().__init__()
        columns = weight.shape[1]
        self.rows = [tuple(block) for block in rows]  # read on the host in forward (never a device sync)
        self.register_buffer("lora_rows", torch.tensor(rows, dtype=torch.int64).reshape(-1, 2))
        self.register_buffer("lora_scale", torch.tensor(alpha / rank, dtype=weight.dtype))
        self.lora_a = nn.ParameterList()
        self.lora_b = nn.ParameterList()
        for start, stop in rows:
            a = torch.empty(rank, columns, dtype=weight.dtype, device=weight.device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as nn.Linear (and peft) initialise A
            self.lora_a.append(nn.Parameter(a))
            self.lora_b.append(
                nn.Parameter(torch.zeros(stop - start, rank, dtype=weight.dtype, device=weight.device))
            )
        self.dropout = dropout

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        keep = None
        if self.training and self.dropout > 0:
            shape = (len(self.lora_a), self.lora_a[0].shape[0])
            mask = torch.rand(shape, device=weight.device) >= self.dropout
            keep = mask.to(weight.dtype) / (1.0 - self.dropout)
        return low_rank_weight(weight, self.rows, self.lora_a, self.lora_b, self.lora_scale, keep)


def add_low_rank_adapters(
    clip: nn.Module, targets: Sequence[str], rank: int, alpha: float, dropout: float = 0.0
) -> list[str]:
    """Adapt every residual block of both towers of an open_clip model in place; the towers'
    own weights stop training (the temperature and logit bias keep their training state).
    Returns the adapted weights' names. ValueError naming the tower when one has no layer
    the targets adapt (e.g. a ConvNeXt image tower and targets q, k, v)."""
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown or not targets:
        raise ValueError(f"lora.targets: expected some of {', '.join(LORA_TARGETS)}, got {list(targets)}")
    found = [(name, module, _targets_of(name, module, targets)) for name, module in clip.named_modules()]
    found = [  # the two towers only: not CoCa's caption decoder, which the contrastive loss never uses
        (name, module, chosen)
        for name, module, chosen in found
        if chosen and (_in_tower(name, "visual") or _in_tower(name, "text"))
    ]
    for tower in ("visual", "text"):
        if not any(_in_tower(name, tower) for name, _, _ in found):
            module = getattr(clip, tower, None)
            if module is not None:
                kind = type(getattr(module, "trunk", module)).__name__
            else:
                kind = "none" if tower == "visual" else "open_clip text transformer"
            raise ValueError(
                f"lora: the {'image' if tower == 'visual' else 'text'} tower ({kind}) has no layer that "
                f"lora.targets {list(targets)} adapt (LoRA adapts attention and MLP Linear layers); "
                f"add mlp to lora.targets, or lock that tower instead"
            )
    kept = {
        p: p.requires_grad for p in (clip.logit_scale, getattr(clip, "logit_bias", None)) if p is not None
    }
    for parameter in clip.parameters():
        parameter.requires_grad_(False)
    for parameter, trains in kept.items():  # the temperature (and bias) train in full
        parameter.requires_grad_(trains)
    adapted = []
    for name, module, chosen in found:
        for weight_name, rows in chosen:
            weight = getattr(module, weight_name)
            parametrize.register_parametrization(
                module, weight_name, LowRankUpdate(weight.detach(), rows, rank, alpha, dropout)
            )
            getattr(module.parametrizations, weight_name).original.requires_grad_(False)
            adapted.append(f"{name}.{weight_name}")
    return adapted


_OUT_NAMES = (".attn.out_proj", ".attn.proj")
_MLP_NAMES = (".mlp.c_fc", ".mlp.c_proj", ".mlp.fc1", ".mlp.fc2", ".mlp.fc1_g", ".mlp.fc1_x")


def _targets_of(
    name: str, module: nn.Module, targets: Sequence[str]
) -> list[tuple[str, list[tuple[int, int]]]]:
    """(weight name, row blocks) that `targets` adapt in `module` (named `name` in the model):
    q/k/v blocks of a packed in_proj or qkv, separate q/k/v projections, the attention's output
    projection, a residual block's MLP layers."""
    if isinstance(module, nn.MultiheadAttention):
        if not module._qkv_same_embed_dim:  # separate key / value widths: no packed in_proj
            return []
        width = module.embed_dim
        rows = [(i * width, (i + 1) * width) for i, part in enumerate("qkv") if part in targets]
        return [("in_proj_weight", rows)] if rows else []
    if not isinstance(module, nn.Linear):
        return []
    whole = [("weight", [(0, module.out_features)])]
    if name.endswith(".qkv") and module.out_features % 3 == 0:  # timm's packed q, k, v
        width = module.out_features // 3
        rows = [(i * width, (i + 1) * width) for i, part in enumerate("qkv") if part in targets]
        return [("weight", rows)] if rows else []
    for part in "qkv":
        if part in targets and name.endswith(f".{part}_proj"):
            return whole
    if "out" in targets and name.endswith(_OUT_NAMES):
        return whole
    if "mlp" in targets and name.endswith(_MLP_NAMES):
        return whole
    return []


def _in_tower(name: str, tower: str) -> bool:
    """Whether module `name` of an open_clip model is in its image ("visual") or text tower
    (`CLIP` keeps the text transformer's modules at the top level, as `transformer`)."""
    if tower == "visual":
        return name.startswith("visual.")
    return name.startswith(("text.", "transformer."))


def merge_low_rank(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with adapters (`add_low_rank_adapters`) as the plain one: each adapted
    weight is W0 + its update, under its own name; other entries unchanged."""
    merged = {}
    adapters = {}
    for key, value in state.items():
        match = _ORIGINAL.match(key)
        if match:
            adapters[f"{match.group(1)}.{match.group(2)}"] = (
                f"{match.group(1)}.parametrizations.{match.group(2)}"
            )
        elif ".parametrizations." not in key:
            merged[key] = value
    for target, prefix in adapters.items():
        count = state[f"{prefix}.0.lora_rows"].shape[0]
        a = [state[f"{prefix}.0.lora_a.{i}"] for i in range(count)]
        b = [state[f"{prefix}.0.lora_b.{i}"] for i in range(count)]
        rows, scale = state[f"{prefix}.0.lora_rows"].tolist(), state[f"{prefix}.0.lora_scale"]
        with torch.no_grad():
            merged[target] = low_rank_weight(state[f"{prefix}.original"], rows, a, b, scale)
    return merged
