"""Bounded readers of the YAML and JSON a user hands dalip (a config, a suite, a `--set` value, a
model folder's config, captions, manifests): a small file must not ask for unbounded memory
(aliases that expand exponentially), recursion (deep nesting) or time. `quoted` cuts a value
for an error message."""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

# Bounds on YAML input (a config, a suite, a `--set` value): a small file must not ask for
# unbounded memory (aliases that expand exponentially) or recursion (deep nesting).
MAX_YAML_CHARACTERS = 1_000_000
MAX_YAML_VALUES = 100_000  # scalars, lists and mappings, counted with every alias expanded
MAX_YAML_DEPTH = 64
MAX_QUOTED = 200  # characters of a value quoted in an error message
# JSON that dalip writes in bulk (an output folder's manifest, few-shot splits) may list millions
# of files or indices: larger bounds on size, the same on nesting.
MAX_DATA_JSON_CHARACTERS = 200_000_000
MAX_DATA_JSON_VALUES = 20_000_000


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue  # yaml refuses it itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {quoted(key)} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_size(
    root: Any, children: Callable[[Any], Iterable[Any]], max_values: int, counted: str = "values"
) -> None:
    """ValueError when the document under `root` (YAML nodes, aliases expanded, or JSON data)
    holds more than `max_values` values or nests deeper than MAX_YAML_DEPTH (the walk stops at
    the bound); `children` gives a value's own values."""
    stack, count = [(root, 1)], 0
    while stack:
        current, depth = stack.pop()
        count += 1
        if count > max_values:
            raise ValueError(f"more than {max_values:,} {counted}")
        if depth > MAX_YAML_DEPTH:
            raise ValueError(f"nested more than {MAX_YAML_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children(current))


def _yaml_children(node: yaml.Node) -> Iterable[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return ()


def _json_children(value: Any) -> Iterable[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [*value, *value.values()]
    return ()


def load_yaml_text(text: str) -> Any:
    """YAML text -> data, safely (no tags beyond the standard ones) and within the bounds above;
    ValueError (or yaml.YAMLError) otherwise."""
    if len(text) > MAX_YAML_CHARACTERS:
        raise ValueError(f"{len(text):,} characters; at most {MAX_YAML_CHARACTERS:,} are read")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, _yaml_children, MAX_YAML_VALUES, "values once its aliases are expanded")
        return loader.construct_document(node)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def quoted(value: Any) -> str:
    """`repr(value)`, cut to MAX_QUOTED characters for an error message."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}... ({len(text):,} characters)"


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """A YAML file's data (UTF-8, a byte-order mark allowed); FileNotFoundError / ValueError
    naming the file otherwise."""
    text = _read_text(path, what, MAX_YAML_CHARACTERS)
    try:
        return load_yaml_text(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({yaml_error_line(error)})") from error
    except ValueError as error:
        raise ValueError(f"{path}: the {what} is refused: {error}") from error


def load_json_text(
    text: str, max_characters: int = MAX_YAML_CHARACTERS, max_values: int = MAX_YAML_VALUES
) -> Any:
    """JSON text -> data within YAML's bounds (characters, values, MAX_YAML_DEPTH levels of
    nesting); ValueError otherwise (json.JSONDecodeError, a ValueError, for broken JSON)."""
    if len(text) > max_characters:
        raise ValueError(f"{len(text):,} characters; at most {max_characters:,} are read")
    try:
        data = json.loads(text)
    except RecursionError:  # json's parser recurses once per level: refused before the walk
        raise ValueError(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    _check_size(data, _json_children, max_values)
    return data


def read_json(
    path: str | os.PathLike,
    what: str,
    max_characters: int = MAX_YAML_CHARACTERS,
    max_values: int = MAX_YAML_VALUES,
) -> Any:
    """A JSON file's data (UTF-8, a byte-order mark allowed) within `load_json_text`'s bounds;
    FileNotFoundError / ValueError naming the file otherwise. The bounds are a config's unless a
    file dalip writes in bulk (a manifest, few-shot splits) asks for more."""
    text = _read_text(path, what, max_characters)
    try:
        return load_json_text(text, max_characters, max_values)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    except ValueError as error:
        raise ValueError(f"{path}: the {what} is refused: {error}") from error


def _read_text(path: str | os.PathLike, what: str, max_characters: int) -> str:
    """A text file of at most about `max_characters` (UTF-8, a byte-order mark allowed)."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{what} not found: {path}" if not Path(path).exists() else f"{what} {path}: not a file"
        )
    if Path(path).stat().st_size > 4 * max_characters:
        raise ValueError(f"{path}: the {what} is larger than {max_characters:,} characters")
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}); save the {what} as UTF-8") from error


def yaml_error_line(error: yaml.YAMLError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines[:2])[:MAX_QUOTED] if lines else type(error).__name__
