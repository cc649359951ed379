"""Run configuration: dataclasses, YAML loading and command-line overrides."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SourceConfig:
    """One image-text source of a training or evaluation mix.

    kind: "csv" (CSV/TSV file), "folder" (root/<class>/*.jpg) or "webdataset"
    (tar shards, brace patterns allowed). Paths in a CSV are relative to the file.
    """

    kind: str
    path: str
    weight: float = 1.0
    image_key: str = "filepath"
    caption_key: str = "caption"
    label_key: str | None = None
    templates: list[str] | None = None
    caption_weights: dict[str, float] | None = None
    num_samples: int | None = None
