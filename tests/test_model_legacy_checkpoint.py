"""A checkpoint written by dalip 0.1 (tests/data/make_legacy_checkpoint.py) loads with its old behaviour."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

import dalip

DATA = Path(__file__).parent / "data"


def test_legacy_checkpoint_gives_the_features_it_was_written_with():
    model = dalip.load_checkpoint(DATA / "legacy-0.1.safetensors")
    expected = load_file(str(DATA / "legacy-0.1-expected.safetensors"))
    with torch.no_grad():
        image = model.encode_image(expected["images"])
        text = model.encode_text(expected["texts"])
    for name, got in [
        ("image_first", image.first),
        ("image_second", image.second),
        ("text_first", text.first),
        ("text_second", text.second),
    ]:
        torch.testing.assert_close(got, expected[name], atol=1e-5, rtol=1e-5, msg=name)
