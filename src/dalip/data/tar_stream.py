"""Reading tar shards that may be damaged: webdataset's tar stages with a guard against a
member that claims more bytes than its shard holds, and an error handler that counts a
shard's fault (`truncated_shard`, `missing_file`, `duplicate_member`) once and carries on."""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator
from typing import Any

from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

from dalip.data.skips import SkipCounter

logger = logging.getLogger(__name__)


class ShardEndGuard:
    """A shard's byte stream that refuses to be read on and on past its end.

    `tarfile` reads a stream (`r|*`, as webdataset opens shards) in order: to pass a member it
    reads through the member's claimed size, a block at a time, even when the stream ended
    long before. A header claiming 10^15 bytes would keep it reading nothing for days. The
    guard lets a few reads at the end through (the end of a well-formed tar reads there
    too), then raises `tarfile.ReadError`, which the shard's error handler counts as
    `truncated_shard` before going on with the next shard.
    """

    READS_AT_END = 16

    def __init__(self, stream: Any, url: str) -> None:
        self.stream, self.url = stream, url
        self.reads_at_end = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if data or size == 0:
            self.reads_at_end = 0
            return data
        self.reads_at_end += 1
        if self.reads_at_end > self.READS_AT_END:
            raise tarfile.ReadError(f"{self.url}: a member's header claims more bytes than the shard holds")
        return data

    def __repr__(self) -> str:  # webdataset names the stream in its errors: the handler reads the url
        return f"ShardEndGuard({self.url})"

    def __getattr__(self, name: str) -> Any:  # close(), name... as the stream has them
        return getattr(self.stream, name)


def guarded_tar_samples(handler: ShardErrorHandler) -> Any:
    """webdataset's `tarfile_to_samples` stage, each shard's stream in a `ShardEndGuard`."""

    def stage(shards: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        streams = (
            {**opened, "stream": ShardEndGuard(opened["stream"], opened["url"])}
            for opened in url_opener(shards, handler=handler)
        )
        return group_by_keys(tar_file_expander(streams, handler=handler), handler=handler)

    return stage


class ShardErrorHandler:
    """webdataset exception handler: count the fault once per shard and carry on."""

    def __init__(self, counter: SkipCounter, urls: list[str]) -> None:
        self.counter = counter
        self.urls = urls
        self.counted: set[str] = set()

    def __call__(self, error: Exception) -> bool:
        text = str(error.args)
        url = next((u for u in self.urls if u in text), text)
        if url not in self.counted:  # a truncated tar raises once per reader level
            self.counted.add(url)
            if isinstance(error, FileNotFoundError):
                reason = "missing_file"
            elif "duplicate file name" in str(error):  # webdataset's words for a member named twice
                reason = "duplicate_member"
            else:
                reason = "truncated_shard"
            self.counter.add(reason)
            logger.debug("shard error in %s: %r", url, error)
        return True  # continue with the next shard
