"""Counting samples that could not be read, across DataLoader worker processes.

A bad sample (missing file, truncated or non-image file, empty caption, truncated tar
shard) is skipped and counted, never fatal. DataLoader workers are separate processes,
so the counts live in a small shared-memory tensor (`torch.Tensor.share_memory_`):
one row per process slot (row 0: the main process, row ``w + 1``: worker ``w``), one
column per reason. Each process only increments its own row, so no lock is needed, and
the main process sums the rows. Shared memory survives ``fork`` (inherited mapping) and
``spawn``/``forkserver`` (torch pickles shared tensors by handle), so the counts reach the
main process whatever the start method. The same mechanism carries the epoch number to
persistent workers (`SharedEpoch`).
"""

from __future__ import annotations

import errno
import logging
import os
import re

import torch
import torch.utils.data

logger = logging.getLogger(__name__)

# Every reason a sample can be skipped for; columns of the shared count table.
SKIP_REASONS: tuple[str, ...] = (
    "missing_file",  # image path in a CSV/folder does not exist, or a shard is gone
    "truncated_image",  # image bytes end early (decoder reports a truncated file)
    "not_an_image",  # bytes are not an image PIL can identify (or not a regular file)
    "too_large",  # more pixels than DALIP_MAX_IMAGE_PIXELS (default 64 million)
    "empty_caption",  # caption missing, blank, or no caption key with weight left
    "bad_caption",  # a caption that looks like JSON but does not parse
    "truncated_shard",  # a tar shard that ends early or has a broken header
    "incomplete_sample",  # a shard sample without an image or without a caption
    "duplicate_member",  # a shard sample with two members of one name (the rest of its shard is skipped)
    "no_taxon",  # with text_types: a shard sample whose class (.cls) the taxonomy lacks, or none
)


def shared(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """`tensor.share_memory_()`; when the shared-memory file cannot be made (a file-size limit,
    a full /dev/shm) an OSError that the CLI prints as one line, instead of torch's RuntimeError."""
    try:
        return tensor.share_memory_()
    except RuntimeError as error:
        found = re.search(r"\((\d+)\)\s*$", str(error))  # torch ends its message with "(errno)"
        code = int(found.group(1)) if found else errno.EIO
        raise OSError(code, os.strerror(code), "/dev/shm", None, f"shared memory for {what}") from error


DEFAULT_SLOTS = 65  # main process + 64 DataLoader workers per rank


def worker_slot(slots: int) -> int:
    """Row of the shared table owned by the calling process (0 outside workers)."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return 0
    return 1 + info.id % (slots - 1)


class SkipCounter:
    """reason -> number of skipped samples, summed over the main process and workers.

    `add` is called wherever a sample is dropped; `counts` (in the main process, after
    or during iteration) returns the totals since creation.
    """

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        if slots < 2:
            raise ValueError(f"SkipCounter slots must be >= 2, got {slots}")
        # (slots, reasons) int64 in shared memory
        self._table = shared(torch.zeros(slots, len(SKIP_REASONS), dtype=torch.int64), "the skip counts")

    def add(self, reason: str, count: int = 1) -> None:
        """Count `count` samples skipped for `reason` (one of `SKIP_REASONS`)."""
        column = SKIP_REASONS.index(reason)
        self._table[worker_slot(self._table.shape[0]), column] += count

    def counts(self) -> dict[str, int]:
        """Totals per reason over all processes; reasons with no skips are left out."""
        totals = self._table.sum(dim=0).tolist()  # (reasons,)
        return {reason: int(n) for reason, n in zip(SKIP_REASONS, totals) if n}

    def total(self) -> int:
        """Number of skipped samples, all reasons together."""
        return int(self._table.sum())


def subtract_counts(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Per-reason difference of two `SkipCounter.counts` snapshots (zeros dropped)."""
    delta = {reason: after.get(reason, 0) - before.get(reason, 0) for reason in after}
    return {reason: n for reason, n in delta.items() if n}


def log_skips(counts: dict[str, int], where: str) -> None:
    """Report skip counts on this module's logger (a warning when anything was lost)."""
    if not counts:
        logger.debug("%s: no samples skipped", where)
        return
    detail = ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items()))
    logger.warning("%s: skipped %d samples (%s)", where, sum(counts.values()), detail)


class SharedEpoch:
    """An epoch number that `set_epoch` in the main process makes visible to workers,
    including persistent ones (a one-element shared-memory tensor)."""

    def __init__(self, epoch: int = 0) -> None:
        self._value = shared(torch.tensor([epoch], dtype=torch.int64), "the epoch number")

    def set(self, epoch: int) -> None:
        self._value[0] = int(epoch)

    def get(self) -> int:
        return int(self._value[0])
