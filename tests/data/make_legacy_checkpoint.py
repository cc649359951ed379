"""Write tests/data/legacy-0.1.safetensors with dalip 0.1 (commit 7f655c4) and its expected features.

Kept for the record: the files were written once, before the architecture and method changes,
so tests can check that old checkpoints still load with the behaviour they were trained with.
Run from the repository root: `python tests/data/make_legacy_checkpoint.py`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

import dalip

HERE = Path(__file__).parent
NAME = "legacy-tiny"
CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    (folder / f"{NAME}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model, _, _, _ = dalip.create_model(NAME, heads=2, reduced_dim=4)
    with torch.no_grad():  # non-trivial norms and biases, so a change in their use shows
        for name, parameter in model.named_parameters():
            if not name.startswith("clip."):
                parameter.add_(0.3 * torch.randn_like(parameter))
    model.eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 16, 16, generator=generator)
    texts = torch.randint(1, 63, (3, 8), generator=generator)
    with torch.no_grad():
        image, text = model.encode_image(images), model.encode_text(texts)
    model.save(HERE / "legacy-0.1.safetensors")
    save_file(
        {
            "images": images,
            "texts": texts,
            "image_first": image.first,
            "image_second": image.second,
            "text_first": text.first,
            "text_second": text.second,
        },
        HERE / "legacy-0.1-expected.safetensors",
    )


if __name__ == "__main__":
    main()
