"""CLIP_benchmark datasets in dalip: its WebDataset layout read as it is (its JSON results
format: `dalip.report.clip_benchmark`).

The layout of a `wds/NAME` dataset (as CLIP_benchmark's `clip_benchmark_export_wds` writes it):

    ROOT/classnames.txt                           one class name per line (classification)
    ROOT/zeroshot_classification_templates.txt    one template per line, `{c}` for the class
    ROOT/dataset_type.txt                         "retrieval" for caption datasets (absent: classification)
    ROOT/SPLIT/nshards.txt                        number of shards
    ROOT/SPLIT/0.tar, 1.tar, ...                  samples: an image (webp|png|jpg|jpeg) and
                                                  `cls` (class index) or `txt` (captions, one per line)

Images are read straight from the tar files by offset, so loader workers can share them.
"""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from dalip.data.files import IMAGE_EXTENSIONS
from dalip.data.shards import MAX_SHARDS
from dalip.data.skips import SkipCounter
from dalip.data.sources import decode_image
from dalip.evaluation.retrieval import retrieval_on
from dalip.evaluation.zero_shot import zero_shot
from dalip.inference.runtime import Runtime
from dalip.inference.specs import LoadedModel

PREFIX = "wds/"
TASK_OF_KIND = {
    "classification": "zeroshot",
    "retrieval": "retrieval",
}  # CLIP_benchmark task -> dalip suite task


@dataclass
class Member:
    """Where one image's bytes lie in a tar shard."""

    shard: str
    offset: int
    size: int


@dataclass
class ClipBenchmarkData:
    """A CLIP_benchmark WebDataset split: images plus labels or captions."""

    name: str
    root: str
    split: str
    task: str  # "zeroshot" or "retrieval"
    images: list[Member] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    classes: list[str] | None = None
    templates: list[str] | None = None  # with `{}` (ours) in place of CLIP_benchmark's `{c}`
    templates_file: str | None = None


def _read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dataset_task(root: str | os.PathLike) -> str:
    """ "zeroshot" or "retrieval", from ROOT/dataset_type.txt (absent: classification)."""
    kind = (_read_lines(Path(root) / "dataset_type.txt") or ["classification"])[0].lower()
    if kind not in TASK_OF_KIND:
        raise ValueError(
            f"{Path(root) / 'dataset_type.txt'}: {kind!r} datasets are not supported "
            f"(expected classification or retrieval)"
        )
    return TASK_OF_KIND[kind]


def describe_clip_benchmark(name: str, root: str | os.PathLike, split: str = "test") -> ClipBenchmarkData:
    """Check a CLIP_benchmark `wds/NAME` dataset's layout under `root` and read its task,
    class names and templates (no samples yet: `read_clip_benchmark` indexes them)."""
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise ValueError(f"CLIP_benchmark dataset {name!r}: expected wds/NAME (its WebDataset layout)")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: dataset root not found: {root}")
    data = ClipBenchmarkData(name, str(root), split, dataset_task(root))
    if data.task == "zeroshot":
        data.classes = _read_lines(root / "classnames.txt")
        if not data.classes:
            raise FileNotFoundError(f"{root / 'classnames.txt'}: missing or empty (one class name per line)")
        templates = _read_lines(root / "zeroshot_classification_templates.txt")
        if templates:
            data.templates = [template.replace("{c}", "{}") for template in templates]
            data.templates_file = str((root / "zeroshot_classification_templates.txt").resolve())
    _shards(root / split)
    return data


def read_clip_benchmark(name: str, root: str | os.PathLike, split: str = "test") -> ClipBenchmarkData:
    """A CLIP_benchmark `wds/NAME` dataset under `root` (its folder, holding SPLIT/), indexed."""
    data = describe_clip_benchmark(name, root, split)
    for shard in _shards(Path(root) / split):
        _index_shard(shard, data)
    if not data.images:
        wanted = "cls" if data.task == "zeroshot" else "txt"
        raise ValueError(f"{Path(root) / split}: no samples with an image and a {wanted} member")
    return data


def _shards(folder: Path) -> list[Path]:
    count_file = folder / "nshards.txt"
    if not count_file.is_file():
        raise FileNotFoundError(
            f"{count_file}: missing (CLIP_benchmark's WebDataset layout names its shard count there)"
        )
    try:
        count = int(count_file.read_text().strip())
    except ValueError as error:
        raise ValueError(f"{count_file}: expected a number of shards") from error
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"{count_file}: expected a number of shards from 1 to {MAX_SHARDS:,}, got {count}")
    names = [f"{number}.tar" for number in range(count)]
    present = set(os.listdir(folder))  # one listing, not a stat per named shard
    missing = [name for name in names if name not in present or not (folder / name).is_file()]
    if missing:
        named = ", ".join(missing[:5]) + (f" and {len(missing) - 5:,} more" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{folder}: shard(s) {named} missing ({count:,} named in nshards.txt)")
    return [folder / name for name in names]


def _index_shard(shard: Path, data: ClipBenchmarkData) -> None:
    """Group tar members by key (the name up to its first dot) and keep complete samples."""
    samples: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, extension = member.name.partition(".")
                sample = samples.setdefault(key, {})
                if f".{extension}".lower() in IMAGE_EXTENSIONS:  # the whole rest of the name, as webdataset
                    sample["image"] = Member(str(shard), member.offset_data, member.size)
                elif extension in ("cls", "txt"):
                    sample[extension] = tar.extractfile(member).read().decode("utf-8")
    except tarfile.TarError as error:
        raise ValueError(f"{shard}: not a readable tar shard ({error})") from error
    except OSError as error:
        if error.errno != errno.EINVAL:  # a header's size pointing past any file's end
            raise
        raise ValueError(
            f"{shard}: not a readable tar shard (a member claims more bytes than it holds)"
        ) from error
    wanted = "cls" if data.task == "zeroshot" else "txt"
    for key, sample in samples.items():
        if "image" not in sample or wanted not in sample:
            continue
        data.images.append(sample["image"])
        if wanted == "cls":
            data.labels.append(_label(sample["cls"], shard, key, len(data.classes or [])))
        else:
            data.captions.append([line.strip() for line in sample["txt"].splitlines() if line.strip()])


def _label(text: str, shard: Path, key: str, num_classes: int) -> int:
    try:
        label = int(text.strip())
    except ValueError as error:
        raise ValueError(f"{shard}: sample {key}: cls {text.strip()!r} is not a class index") from error
    if not 0 <= label < num_classes:
        raise ValueError(
            f"{shard}: sample {key}: class index {label} outside 0..{num_classes - 1} (classnames.txt)"
        )
    return label


class ShardImageDataset(Dataset):
    """(transform(image), label) per indexed image; None for an image that cannot be decoded."""

    def __init__(self, data: ClipBenchmarkData, transform: Callable) -> None:
        self.images = data.images
        self.labels = data.labels or [0] * len(data.images)
        self.classes = data.classes
        self.transform = transform
        self.skip_counter = SkipCounter()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        member = self.images[index]

        def read() -> bytes:
            with open(member.shard, "rb") as handle:
                handle.seek(member.offset)
                return handle.read(member.size)

        image = decode_image(read, self.skip_counter, f"{member.shard}:{index}")
        return None if image is None else (self.transform(image), self.labels[index])


def retrieval_captions(data: ClipBenchmarkData) -> tuple[list[str], list[int]]:
    """(captions, owning image index per caption) of a retrieval dataset."""
    captions = [caption for texts in data.captions for caption in texts]
    owners = [index for index, texts in enumerate(data.captions) for _ in texts]
    return captions, owners


def evaluate_clip_benchmark(
    loaded: LoadedModel,
    name: str,
    root: str | os.PathLike,
    split: str,
    task: str,
    modes: Sequence[str],
    runtime: Runtime | None = None,
    templates: Any = None,
    default_templates: Any = "openai",
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Zero-shot or retrieval on a CLIP_benchmark dataset with a loaded model.

    Zero-shot uses `templates` when given, else the dataset's own templates, else
    `default_templates`. Returns the result of `zero_shot` / `retrieval_on`, plus
    `dataset_root`.
    """
    data = read_clip_benchmark(name, root, split)
    if data.task != task:
        raise ValueError(f"{name}: {root} holds a {data.task} dataset, not {task}")
    images = ShardImageDataset(data, loaded.preprocess)
    where = f"{name}:{split}"
    if task == "retrieval":
        captions, owners = retrieval_captions(data)
        result = retrieval_on(loaded.model, images, captions, owners, loaded.tokenizer, where, modes, runtime)
    else:
        result = zero_shot(
            loaded.model,
            images,
            loaded.tokenizer,
            loaded.preprocess,
            templates=templates or data.templates or default_templates,
            modes=modes,
            runtime=runtime,
            class_names=class_names or data.classes,
        )
        if not templates and data.templates:
            result["template_set"] = data.templates_file
        result["dataset"] = where
    result["dataset_root"] = os.path.abspath(root)
    return result
