"""Generated malformed inputs (hypothesis): whatever a config, an override, a suite or a
model file holds, `dalip` answers with success or one error line and exit status 2 — never
a traceback — and writes nothing outside the output it was given."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import files_under, saved_checkpoint, write_safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dalip.cli import main

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Values a careless or hostile file holds: wrong types, extremes, non-finite numbers,
# paths that climb out, text in other scripts.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e-12, 2.0, 1e30]),
    st.sampled_from(
        ["", "abc", "../../../etc/passwd", "/", "~", "cuda", "fp8", "hf-hub:x/y", "日本語", "\x00"]
    ),
    st.text(max_size=12),
)


def nested(scalars: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=6,
    )


VALUES = nested(SCALARS)
# Stored model configs get small numbers: a large plausible architecture is valid and
# would only make the test slow (oversized ones are refused; test_model_files_untrusted).
SMALL_VALUES = nested(
    st.one_of(SCALARS.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)), st.integers(-3, 40))
)
TRAIN_FIELDS = [
    "batch_size",
    "epochs",
    "steps",
    "precision",
    "device",
    "seed",
    "checkpoint_every",
    "keep_last",
    "log_every",
    "eval_every",
    "max_nonfinite",
    "out_dir",
    "model",
    "model.name",
    "model.pretrained",
    "model.alpha",
    "model.heads",
    "model.reduced_dim",
    "model.dropout",
    "model.image_size",
    "model.context_length",
    "model.config_file",
    "loss",
    "loss.kind",
    "loss.combine",
    "data",
    "data.sources",
    "data.workers",
    "data.num_samples",
    "data.val",
    "optim",
    "optim.lr",
    "optim.mbdc_lr",
    "optim.weight_decay",
    "optim.beta1",
    "optim.beta2",
    "optim.eps",
    "optim.warmup_steps",
    "optim.schedule",
    "optim.min_lr_ratio",
    "optim.grad_clip",
    "optim.accumulation",
    "lock.image_unlocked_groups",
    "lock.text_unlocked_layers",
    "unknown_field",
    "optim.unknown",
]


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    """A fresh working folder, entered; yields it and restores the old working folder."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="dalip-fuzz-") as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(previous)


def run(*argv: Any) -> tuple[int, str]:
    """`dalip ARGV` in-process: (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main([str(a) for a in argv])
    return status, err.getvalue()


def assert_ok_or_one_line(status: int, err: str, command: str) -> None:
    assert "Traceback" not in err and "weights_only" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    if status == 0:
        assert not errors, err
        return
    assert status == 2, f"exit {status}: {err}"
    assert len(errors) == 1 and err.strip().splitlines()[-1].startswith(f"dalip {command}: error: "), err


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, name = dotted.split(".")
    node = config
    for section in sections:
        if not isinstance(node.get(section), dict):
            node[section] = {}
        node = node[section]
    node[name] = value


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(TRAIN_FIELDS), VALUES), min_size=1, max_size=3))
def test_generated_train_configs(changes):
    with sandbox() as root:
        (root / "data.csv").write_text("filepath,caption\nimg.jpg,a leaf\n")
        config: dict[str, Any] = {
            "model": {"name": "test-tiny"},
            "data": {"sources": [{"kind": "csv", "path": "data.csv"}]},
            "out_dir": "run",
        }
        for field, value in changes:
            _set(config, field, value)
        try:
            text = yaml.safe_dump(config, allow_unicode=True)
        except yaml.YAMLError:
            return
        (root / "run.yaml").write_text(text, encoding="utf-8")
        before = files_under(root)
        status, err = run("train", "--config", root / "run.yaml", "--print-config")
        assert_ok_or_one_line(status, err, "train")
        assert files_under(root) == before


@FUZZ
@given(
    overrides=st.lists(
        st.tuples(st.sampled_from(TRAIN_FIELDS + ["", "a..b", "=", "x.y.z"]), st.text(max_size=16)),
        min_size=1,
        max_size=3,
    )
)
def test_generated_overrides(overrides):
    with sandbox() as root:
        (root / "data.csv").write_text("filepath,caption\nimg.jpg,a leaf\n")
        argv = [
            "train",
            "--set",
            "model.name=test-tiny",
            "--set",
            "data.sources=[{kind: csv, path: data.csv}]",
        ]
        for field, value in overrides:
            argv += ["--set", f"{field}={value}"]
        status, err = run(*argv, "--print-config")
        assert_ok_or_one_line(status, err, "train")
        assert files_under(root) == {"data.csv"}


@FUZZ
@given(
    suite=VALUES,
    dataset=st.dictionaries(
        st.sampled_from(
            [
                "name",
                "task",
                "path",
                "train",
                "test",
                "folds",
                "shots",
                "features",
                "templates",
                "c_values",
                "domain",
                "splits",
                "colour",
            ]
        ),
        VALUES,
        max_size=5,
    ),
)
def test_generated_suites(suite, dataset):
    with sandbox() as root:
        (root / "model.safetensors").write_bytes(b"")
        documents = [suite, {"datasets": [dataset]}, {"batch_size": suite, "datasets": [dataset]}]
        for index, document in enumerate(documents):
            try:
                (root / f"suite{index}.yaml").write_text(
                    yaml.safe_dump(document, allow_unicode=True), encoding="utf-8"
                )
            except yaml.YAMLError:
                continue
            before = files_under(root)
            status, err = run(
                "eval",
                "-m",
                root / "model.safetensors",
                "--suite",
                root / f"suite{index}.yaml",
                "--out",
                root / "out",
                "-q",
            )
            assert status == 2  # the model file is empty: nothing can succeed
            assert_ok_or_one_line(status, err, "eval")
            assert {f for f in files_under(root) if not f.startswith("out")} == before


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    path, state, config = saved_checkpoint(tmp_path_factory.mktemp("fuzz-model"))
    return path.read_bytes(), state, config


@FUZZ
@given(cut=st.floats(0, 1), noise=st.binary(max_size=64), kind=st.sampled_from(["cut", "noise", "prefix"]))
def test_generated_broken_model_files(real_checkpoint, cut, noise, kind):
    data = real_checkpoint[0]
    with sandbox() as root:
        broken = {
            "cut": data[: int(len(data) * cut)],
            "noise": noise,
            "prefix": data[:8] + noise + data[8 + len(noise) :],
        }[kind]
        (root / "model.safetensors").write_bytes(broken)
        status, err = run("export", root / "model.safetensors", root / "out" / "plain.pt")
        assert_ok_or_one_line(status, err, "export")
        assert files_under(root) == (
            {"model.safetensors", "out", "out/plain.pt"} if status == 0 else {"model.safetensors"}
        )


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "model_name",
                "open_clip_config",
                "alpha",
                "mbdc",
                "image_size",
                "context_length",
                "preprocess_cfg",
                "separate_second_temperature",
            ]
        ),
        SMALL_VALUES,
        min_size=1,
        max_size=3,
    )
)
def test_generated_checkpoint_metadata(real_checkpoint, changes):
    _, state, config = real_checkpoint
    with sandbox() as root:
        stored = {**config, **changes}
        try:
            text = json.dumps(stored, allow_nan=True)
        except (TypeError, ValueError):
            return
        write_safetensors(root / "model.safetensors", state, None, raw_config=text)
        registered = set(Path(tempfile.gettempdir()).glob("dalip-config-*"))
        status, err = run("export", root / "model.safetensors", root / "plain.pt")
        assert_ok_or_one_line(status, err, "export")
        assert files_under(root) <= {"model.safetensors", "plain.pt"}
        assert set(Path(tempfile.gettempdir()).glob("dalip-config-*")) <= registered  # no folder left behind
