"""Counting where code makes the host wait for the device: reading a tensor's value (`.item()`,
`float(t)`, `bool(t)`, `.tolist()`, `.numpy()`) or computing a shape from values (`nonzero`,
boolean-mask indexing, `masked_select`, `unique`). On a GPU each of these stalls the CPU until
the queued kernels have run, so the CPU can no longer run ahead and the GPU idles between steps.

The counter sees these operations on any device, so a CPU run counts what a GPU run would wait
for (`tests/test_train_host_syncs.py` bounds a training step's count; `benchmarks/bench_step.py`
reports it). On CUDA, `torch.cuda.set_sync_debug_mode("warn")` is the runtime's own check.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Operators whose result the host must wait for: a value, or a shape that depends on values.
_SYNCING_OPERATORS = {
    aten._local_scalar_dense.default: "item",  # .item(), float(t), int(t), bool(t)
    aten.nonzero.default: "nonzero",
    aten.masked_select.default: "masked_select",
    aten.is_nonzero.default: "item",
    aten.equal.default: "item",
    aten._unique2.default: "unique",
    aten.unique_dim.default: "unique",
    aten.unique_consecutive.default: "unique",
    aten.repeat_interleave.Tensor: "repeat_interleave",
}
_INDEXING_OPERATORS = (
    aten.index.Tensor,
    aten.index_put.default,
    aten.index_put_.default,
    aten._index_put_impl_.default,
)
# Tensor methods that copy values to Python without an operator the dispatcher sees on the CPU.
_READING_METHODS = {torch.Tensor.tolist: "tolist", torch.Tensor.numpy: "numpy"}


def _has_boolean_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class _Operators(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = _SYNCING_OPERATORS.get(func)
        if name is None and func in _INDEXING_OPERATORS and _has_boolean_index(args):
            name = "boolean_index"
        if name is not None:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


class _Methods(TorchFunctionMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = _READING_METHODS.get(func)
        if name is not None:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """Context manager counting host syncs by kind (`counts`, `total`) on this thread, including
    the backward pass (autograd runs CPU work on the calling thread and carries the mode along).

        with HostSyncCounter() as syncs:
            step(...)
        assert syncs.total == 0, syncs.counts
    """

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self._modes = (_Methods(self.counts), _Operators(self.counts))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __enter__(self) -> HostSyncCounter:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
