"""Helpers shared by the evaluation tests: tiny image folders and a stub model whose
features are chosen by the test, so every metric can be worked out by hand.

A stub image is a solid PNG whose red value is its id; `stub_preprocess` turns it back
into that id and `StubModel.encode_image` looks the id up in a feature table. Texts are
looked up the same way through `StubTokenizer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from data_fixtures import jpeg_bytes, write_csv, write_shard
from PIL import Image

from dalip.inference.specs import LoadedModel
from dalip.model.features import Features

# A zero-shot case worked out by hand (tests/test_eval_metrics.py): images 0-2 are class
# a, 3 is b, 4-5 are c; the text features put one class on each axis.
CLASSES = ["alpha", "beta", "gamma"]
IMAGE_FIRST = [[1, 0, 0], [1, 0.2, 0], [0.3, 1, 0], [0, 1, 0], [1, 0, 0.5], [1, 0, 0.1]]
IMAGE_SECOND = [[1, 0, 0], [0.5, 1, 0], [1, 0.8, 0], [0, 1, 0], [0, 0, 1], [0.2, 0, 1]]
EYE = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def write_image(path: Path, red: int, size: int = 32, green: int = 0) -> Path:
    """A solid PNG whose red channel stores `red` (lossless, so the id survives)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (red, green, 255 - red)).save(path)
    return path


def write_folder(
    root: Path, images_per_class: dict[str, int], readable: dict[str, str] | None = None, start_id: int = 0
) -> list[Path]:
    """root/<class>/<n>.png with consecutive ids in class order; classes.txt when `readable`."""
    paths, image_id = [], start_id
    for folder, count in images_per_class.items():
        for number in range(count):
            paths.append(write_image(root / folder / f"{number}.png", image_id))
            image_id += 1
    if readable:
        lines = [f"{folder}\t{readable[folder]}" for folder in images_per_class]
        (root / "classes.txt").write_text("\n".join(lines) + "\n")
    return paths


def stub_preprocess(image: Image.Image) -> torch.Tensor:
    return torch.tensor(image.getpixel((0, 0))[0])


def unit(rows: Sequence[Sequence[float]]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


class StubTokenizer:
    """text -> row index of the stub's text table (unknown texts are an error)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.index = {text: i for i, text in enumerate(texts)}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([[self.index[t]] for t in texts])


class StubModel(torch.nn.Module):
    """encode_image / encode_text look features up; similarity as DALIPModel's."""

    has_second_order = True

    def __init__(
        self,
        image_first,
        image_second,
        text_first,
        text_second,
        alpha: float = 0.5,
        answer_mode: str = "fused",
    ) -> None:
        super().__init__()
        self.answer_mode = self.default_mode = answer_mode
        self.image_table = Features(unit(image_first), unit(image_second))
        self.text_table = Features(unit(text_first), unit(text_second))
        self.alpha = alpha

    def encode_image(self, ids: torch.Tensor, second_order: bool = True) -> Features:
        first, second = self.image_table
        return Features(first[ids], second[ids] if second_order else None)

    def encode_text(self, tokens: torch.Tensor, second_order: bool = True) -> Features:
        ids = tokens[:, 0]
        first, second = self.text_table
        return Features(first[ids], second[ids] if second_order else None)

    def similarity(self, image: Features, text: Features, mode: str | None = None) -> torch.Tensor:
        mode = mode or self.default_mode
        first = image.first @ text.first.T
        if mode == "first":
            return first
        second = image.second @ text.second.T
        return second if mode == "second" else self.alpha * first + (1 - self.alpha) * second


def loaded_stub(model: StubModel, texts: Sequence[str], name: str = "stub") -> LoadedModel:
    return LoadedModel(name, model, stub_preprocess, StubTokenizer(texts), f"stub:{name}", "0" * 64)


def make_workspace(root: Path) -> dict[str, Path]:
    """Two tiny saved checkpoints (seeds 0 and 1), an open_clip export of the first,
    train/test image folders (3 classes), a caption CSV and a two-domain suite YAML."""
    from conftest import TEST_MBDC

    import dalip
    from dalip.export.open_clip_file import export_open_clip

    paths: dict[str, Path] = {}
    for seed, name in ((0, "start"), (1, "tuned")):
        torch.manual_seed(seed)
        model, *_ = dalip.create_model("test-tiny", **TEST_MBDC)
        paths[name] = root / f"{name}.safetensors"
        model.save(paths[name])
    export_open_clip(dalip.load_checkpoint(paths["start"]), root / "start_open_clip.pt")
    paths["exported"] = root / "start_open_clip.pt"
    readable = {"oak": "red oak", "maple": "sugar maple", "fern": "royal fern"}
    write_folder(root / "train", {"oak": 4, "maple": 4, "fern": 4}, readable)
    write_folder(root / "test", {"oak": 2, "maple": 2, "fern": 2}, readable, start_id=100)
    rows = [
        {"filepath": f"test/{c}/{n}.png", "caption": f"a leaf of {readable[c]}", "label": i}
        for i, c in enumerate(readable)
        for n in range(2)
    ]
    paths["captions"] = write_csv(root / "captions.csv", rows)
    paths["train"], paths["test"] = root / "train", root / "test"
    paths["suite"] = root / "suite.yaml"
    paths["suite"].write_text(
        "name: tiny\nmodes: [fused, first]\nbatch_size: 4\nseed: 3\n"
        "datasets:\n"
        "  - {name: leaves-zs, task: zeroshot, domain: plant, path: test, templates: plant}\n"
        "  - {name: leaves-ret, task: retrieval, domain: plant, path: captions.csv}\n"
        "  - {name: leaves-lp, task: linear_probe, domain: general, train: train, test: test, c_values: [0.1, 1]}\n"
        "  - {name: leaves-fs, task: fewshot, domain: general, train: train, test: test, shots: [1, 2], folds: 2}\n"
    )
    return paths


def write_clip_benchmark_folder(
    root: Path, classes: Sequence[str], per_class: int = 2, templates: Sequence[str] = ("a photo of a {c}.",)
) -> Path:
    """A classification dataset in CLIP_benchmark's WebDataset layout, as its
    `clip_benchmark_export_wds` writes it: classnames.txt, zeroshot_classification_templates.txt
    (`{c}` for the class), test/nshards.txt and test/0.tar of jpg + cls samples."""
    (root / "test").mkdir(parents=True)
    (root / "classnames.txt").write_text("\n".join(classes) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    samples = [
        (
            f"s{label * per_class + n:07d}",
            {"jpg": jpeg_bytes(label * per_class + n), "cls": str(label).encode()},
        )
        for label in range(len(classes))
        for n in range(per_class)
    ]
    write_shard(root / "test" / "0.tar", samples)
    (root / "test" / "nshards.txt").write_text("1\n")
    return root


def write_metadata_folder(root: Path, classes: Sequence[str], per_class: int = 2) -> Path:
    """A Meta-Album Mini folder as BioCLIP's evaluation reads it: <class>/<n>.jpg images and
    metadata.csv with pandas' unnamed index column, `filepath` (relative) and `class`."""
    rows = []
    for name in classes:
        for n in range(per_class):
            image = root / name / f"{n}.jpg"
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(jpeg_bytes(len(rows)))
            rows.append({"": len(rows), "filepath": f"{name}/{n}.jpg", "class": name})
    return write_csv(root / "metadata.csv", rows)
