"""Build a dalip-tiny model and score a generated image against captions (CPU, offline)."""

import numpy as np
import torch
from PIL import Image, ImageDraw

import dalip


def leaf_image(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (235, 230, 215))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size * 0.25, size * 0.1, size * 0.75, size * 0.9), fill=(60, 140, 60))
    draw.line((size * 0.5, size * 0.1, size * 0.5, size * 0.9), fill=(30, 90, 30), width=2)
    return image


def main() -> None:
    torch.manual_seed(0)
    model, _, preprocess, tokenizer = dalip.create_model("dalip-tiny")
    model.eval()
    captions = ["an ovate green leaf", "a red lobed leaf with spots", "three blue squares"]
    with torch.no_grad():
        image = model.encode_image(preprocess(leaf_image()).unsqueeze(0))
        text = model.encode_text(tokenizer(captions))
        print(
            f"dalip-tiny: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
            f"(random weights: the scores show the API, not a trained model)"
        )
        for mode in ("fused", "first", "second"):
            probs = (100.0 * model.similarity(image, text, mode)).softmax(dim=-1)[0]
            ranked = ", ".join(f"{c!r}: {p:.2f}" for c, p in zip(captions, np.asarray(probs)))
            print(f"{mode:>6}: {ranked}")


if __name__ == "__main__":
    main()
