"""Run logs: metrics.jsonl (always) and TensorBoard (when installed), rank 0 only."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dalip.atomic import naming_failures
from dalip.readers import load_json_text

logger = logging.getLogger(__name__)


class RunLog:
    """The run log: one JSON object per logged step appended to `metrics.jsonl`, scalars
    mirrored to TensorBoard (when installed); a no-op on ranks other than 0 (`enabled`)."""

    def __init__(
        self,
        out_dir: str | Path,
        enabled: bool = True,
        tensorboard: bool = True,
        purge_step: int | None = None,
    ) -> None:
        """`purge_step`: a resumed run's first step; TensorBoard drops its events from there on."""
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with naming_failures(self.path):  # now, so the output manifest lists it before any step
            self.path.touch()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed; logging to %s only", self.path)
            else:
                self.writer = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with naming_failures(self.path), open(self.path, "a") as handle:
            handle.write(json.dumps(record, default=_plain) + "\n")
        if self.writer is not None:
            step = record.get("step", 0)
            for key, value in _flatten(record).items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class StepTimes:
    """Where the wall-clock time of the steps since the last log record went, as open_clip_train
    logs it: `data_time` (waiting for the loader) and `batch_time` (the whole step, data
    included), seconds per step; `images_per_second` over the whole step. Read the figures after
    the device has caught up (the loop reads the losses first), so they include its work."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.started, self.data, self.steps = time.perf_counter(), 0.0, 0

    def add_data_wait(self, seconds: float) -> None:
        self.data += seconds

    def step_done(self) -> None:
        self.steps += 1

    def figures(self, batch_size: int) -> dict[str, float]:
        """The figures of the steps since `restart` (global `batch_size` images per step)."""
        steps = max(self.steps, 1)
        batch_time = (time.perf_counter() - self.started) / steps
        return {
            "data_time": self.data / steps,
            "batch_time": batch_time,
            "images_per_second": batch_size / max(batch_time, 1e-9),
        }


def progress_bar(total: int, initial: int, show: bool) -> tqdm:
    """The run's step counter (hidden unless `show`: rank 0 with `progress` set)."""
    return tqdm(total=total, initial=initial, unit="step", disable=None if show else True, dynamic_ncols=True)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def _plain(value: Any) -> Any:
    return float(value) if hasattr(value, "__float__") else str(value)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file (each line read within dalip's JSON bounds)."""
    with open(path) as handle:
        return [load_json_text(line) for line in handle if line.strip()]
