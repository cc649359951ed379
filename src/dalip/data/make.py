"""`make_source`: a `SourceConfig` -> the source its `kind` names; `check_source_config`."""

from __future__ import annotations

from dalip.config import SourceConfig
from dalip.data.captions import Tokenizer, validate_caption_weights
from dalip.data.files import CsvSource, ImageFolderSource
from dalip.data.shards import WebDatasetSource
from dalip.data.skips import SkipCounter
from dalip.data.sources import SampleBuilder, Source, Transform
from dalip.data.taxonomy import TaxonTexts, check_text_types, source_taxonomy


def make_source(
    config: SourceConfig,
    transform: Transform | None = None,
    tokenizer: Tokenizer | None = None,
    *,
    seed: int = 0,
    skip_counter: SkipCounter | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Source:
    """Build the source `config.kind` names ("csv", "folder" or "webdataset").

    `rank`/`world_size` are only used when a webdataset source is iterated on its own.
    """
    check_source_config(config, f"source {config.path}: ")
    validate_caption_weights(config.caption_weights, f"source {config.path}")
    counter = skip_counter if skip_counter is not None else SkipCounter()
    texts = None
    if config.text_types:
        taxonomy = source_taxonomy(config.taxonomy, config.kind, config.path)
        texts = TaxonTexts(taxonomy, config.text_types, config.templates or [])
    builder = SampleBuilder(transform, tokenizer, config.text_types or config.caption_weights, counter)
    if config.kind == "csv":
        return CsvSource(config, builder, seed=seed, texts=texts)
    if config.kind == "folder":
        return ImageFolderSource(config, builder, seed=seed, texts=texts)
    if config.kind == "webdataset":
        return WebDatasetSource(config, builder, seed=seed, rank=rank, world_size=world_size, texts=texts)
    raise ValueError(
        f"source {config.path}: kind must be 'csv', 'folder' or 'webdataset', got {config.kind!r}"
    )


def check_source_config(config: SourceConfig, where: str) -> None:
    """What a source's field types cannot say: `resampled: true` needs webdataset shards.
    ValueError naming the field otherwise: `where` "data.sources[1]" gives
    "data.sources[1].resampled", a prefix ending in ": " is kept as is."""
    field = f"{where}resampled" if where.endswith(": ") else f"{where}.resampled"
    named = f"{where}text_types" if where.endswith(": ") else f"{where}.text_types"
    check_text_types(config.text_types, named)
    if config.text_types and config.caption_weights:
        raise ValueError(
            f"{named}: set text_types or caption_weights, not both (text_types weigh the captions)"
        )
    if config.resampled and config.kind != "webdataset":
        raise ValueError(
            f"{field}: only webdataset sources are resampled (a {config.kind} source reads "
            f"each sample once per pass); remove resampled: true from it"
        )
