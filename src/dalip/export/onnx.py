"""ONNX encoders of a DALIP model: `image_encoder.onnx` (images (B, 3, H, W) float32,
preprocessed as `preprocess_val` does) and `text_encoder.onnx` (token ids (B, L) int64, from
the model's open_clip tokenizer), each with outputs `first` (B, D), `second` (B, D2) and
`fused` (B, D + D2): unit vectors, the batch size dynamic. `dalip_onnx.json` beside them
says what the inputs must be (size, mean, std, context length, tokenizer), alpha, and how the
model turns similarities into logits (its loss form, temperature and, for the sigmoid form,
the biases of each order).

Needs the `onnx` extra (onnx, onnxscript; onnxruntime to run the files).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dalip.export.files import write_files
from dalip.export.folder import open_clip_config
from dalip.model.dalip_model import DALIPModel
from dalip.model.preprocess import create_tokenizer

IMAGE_NAME = "image_encoder.onnx"
TEXT_NAME = "text_encoder.onnx"
INFO_NAME = "dalip_onnx.json"
OUTPUT_NAMES = ["first", "second", "fused"]
OPSET = 18


class _ImageEncoder(nn.Module):
    def __init__(self, model: DALIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.model.encode_image(image)
        return features.first, features.second, self.model.fused_embedding(features)


class _TextEncoder(nn.Module):
    def __init__(self, model: DALIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.model.encode_text(text)
        return features.first, features.second, self.model.fused_embedding(features)


def _require_exporter() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ValueError(
            f"--format onnx needs the onnx extra ({error.name} is not installed): pip install 'dalip[onnx]'"
        ) from error


def onnx_info(model: DALIPModel) -> dict[str, Any]:
    """What a consumer of the ONNX files needs: inputs, outputs, preprocessing, alpha."""
    config = open_clip_config(model)
    first, second = int(model.embed_dim), int(model.image_mbdc.out_dim)
    answer = {"form": model.loss_form, "logit_scale": float(model.clip.logit_scale.detach().exp())}
    if model.loss_form == "sigmoid":  # probability of a pair: sigmoid(scale * cos + bias), per order
        answer["logit_bias"] = float(model.clip.logit_bias.detach())
        answer["logit_bias_second"] = float(model.logit_bias_second.detach())
    return {
        "model_name": model.model_name,
        "alpha": model.alpha,
        "logits": answer,
        "image": {
            "file": IMAGE_NAME,
            "input": "image",
            "shape": ["batch", 3, *_pair(model.clip.visual.image_size)],
            "preprocess_cfg": config["preprocess_cfg"],
        },
        "text": {
            "file": TEXT_NAME,
            "input": "text",
            "shape": ["batch", int(model.clip.context_length)],
            "tokenizer": f"open_clip.get_tokenizer({model.model_name!r})",
        },
        "outputs": {"first": first, "second": second, "fused": first + second},
        "open_clip_config": config,
        "opset": OPSET,
    }


def export_onnx(model: DALIPModel, folder: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write the image and text encoders and `dalip_onnx.json` into `folder`; returns the paths."""
    _require_exporter()
    model = model.eval()
    size = _pair(model.clip.visual.image_size)
    images = torch.zeros(2, 3, *size)
    tokenizer = create_tokenizer(model)
    texts = tokenizer(["a photo of a leaf", "a serrate ovate leaf with brown spots"])
    text = json.dumps(onnx_info(model), indent=2) + "\n"
    writers = {
        IMAGE_NAME: lambda staging: _export(_ImageEncoder(model), images, "image", staging / IMAGE_NAME),
        TEXT_NAME: lambda staging: _export(_TextEncoder(model), texts, "text", staging / TEXT_NAME),
        INFO_NAME: lambda staging: (staging / INFO_NAME).write_text(text, encoding="utf-8"),
    }
    return write_files(folder, writers, force)


def _export(encoder: nn.Module, example: torch.Tensor, input_name: str, path: Path) -> None:
    encoder.eval()
    batch = torch.export.Dim("batch", min=1)
    with _quiet():
        program = torch.onnx.export(
            encoder,
            (example,),
            dynamo=True,
            input_names=[input_name],
            output_names=OUTPUT_NAMES,
            dynamic_shapes={input_name: {0: batch}},
            opset_version=OPSET,
            verbose=False,
        )
    # Weights go into the .onnx file unless it would pass protobuf's 2 GB limit; then
    # onnx writes them to PATH.data beside it.
    program.save(str(path), external_data=None)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints its progress on stdout; keep it out of the command's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _pair(size: Any) -> tuple[int, int]:
    return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
