"""Plain data (YAML, JSON, `a.b=value` overrides) -> typed dataclasses, and the one check of
their values; YAML and JSON files are read within bounds (`read_yaml`, `read_json`). Unknown
fields, wrong types, values outside a Literal's choices, non-finite numbers and numbers outside
a field's range (`checked(...)`) are ValueErrors that name the field (e.g. `optim.lr`); the
choices come from the Literal types themselves (`typing.get_args`), the ranges from the
fields' metadata."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import yaml

from dalip.readers import MAX_YAML_DEPTH, load_yaml_text, quoted, yaml_error_line

T = TypeVar("T")
_BOUNDS = (  # metadata key, sign shown, test
    ("minimum", ">=", lambda value, bound: value >= bound),
    ("maximum", "<=", lambda value, bound: value <= bound),
    ("above", ">", lambda value, bound: value > bound),
    ("below", "<", lambda value, bound: value < bound),
)


def checked(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> Any:
    """A dataclass field whose numbers (the value, or each item of a list) must lie in a range:
    `minimum <= v <= maximum`, `above < v < below`. None, where the type allows it, passes."""
    limits = dict(minimum=minimum, maximum=maximum, above=above, below=below)
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={key: value for key, value in limits.items() if value is not None},
    )


def flattened(default_factory: Any) -> Any:
    """A dataclass-typed field whose own fields are read, written and named at the level of the
    dataclass that holds it: `ModelConfig.mbdc` (an `MBDCOptions`) is `model.heads` in YAML, in
    `--set` and in errors, and `to_dict` writes it flat."""
    return dataclasses.field(default_factory=default_factory, metadata={"flatten": True})


def _is_flattened(item: dataclasses.Field) -> bool:
    return bool(item.metadata.get("flatten"))


def field_names(cls: type) -> list[str]:
    """The keys of dataclass `cls` in plain data: its fields, a flattened field's own in its place
    (one level: a flattened dataclass holds no flattened field itself)."""
    hints = typing.get_type_hints(cls)
    return [
        name
        for item in dataclasses.fields(cls)
        for name in (
            [f.name for f in dataclasses.fields(hints[item.name])] if _is_flattened(item) else [item.name]
        )
    ]


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from plain data; unknown fields and wrong types are ValueErrors.

    `where` prefixes the field names in errors: "optim" gives "optim.lr"; a prefix ending in
    ": " (a file) or "." is kept as is ("suite.yaml: datasets[0].task")."""
    if not isinstance(data, dict):
        raise ValueError(f"{_place(where)}: expected a mapping of fields, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    names = field_names(cls)
    unknown = [key for key in data if key not in names]
    if unknown:
        prefix, _, name = _join(where, str(unknown[0])).rpartition(": ")  # "file: " stays outside the quotes
        raise ValueError(
            f"{prefix + ': ' if prefix else ''}unknown field {name!r}; expected one of: {', '.join(names)}"
        )
    values = {}
    for item in dataclasses.fields(cls):
        if _is_flattened(item):  # the given keys replace those of the field's default
            own_hints = typing.get_type_hints(hints[item.name])
            own = {
                key: _convert(own_hints[key], data[key], _join(where, key))
                for key in field_names(hints[item.name])
                if key in data
            }
            values[item.name] = dataclasses.replace(item.default_factory(), **own)
        elif item.name in data:
            values[item.name] = _convert(hints[item.name], data[item.name], _join(where, item.name))
    try:
        return cls(**values)
    except TypeError as error:  # a required field is missing
        raise ValueError(f"{_place(where)}: {error}") from error


def to_dict(config: Any) -> dict[str, Any]:
    """Plain data of a dataclass config (as `dataclasses.asdict`, flattened fields written flat)."""
    data: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if _is_flattened(item):
            data.update(to_dict(value))
        else:
            data[item.name] = _plain(value)
    return data


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in [a for a in args if a is not type(None)]:
            try:
                return _convert(option, value, where)
            except ValueError as error:  # try the next type of the union
                errors.append(error)
        raise errors[0]
    if origin is Literal:
        return check_choice(where, value, args)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {_kind(value)}")
        return [_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {_kind(value)}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _convert_scalar(hint, value, where)


_ACCEPTED = {bool: (bool,), int: (int,), float: (int, float), str: (str, int, float)}  # bool only for bool


def _convert_scalar(hint: Any, value: Any, where: str) -> Any:
    accepted = _ACCEPTED.get(hint)
    if accepted is None:
        return value
    if isinstance(value, accepted) and (hint is bool) == isinstance(value, bool):
        return hint(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        with contextlib.suppress(ValueError):
            return float(value)
    raise ValueError(f"{where}: expected {hint.__name__}, got {_kind(value)} {quoted(value)}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _join(where: str, key: str) -> str:
    """ "optim" + "lr" -> "optim.lr"; a prefix ending in ": " or "." (a file, a list item) is kept as is."""
    if not where or where.endswith((": ", ".")):
        return f"{where}{key}"
    return f"{where}.{key}"


def _place(where: str) -> str:
    return where.rstrip(": .") or "config"


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (values parsed as YAML: 1e-4, true, [a, b], null)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {quoted(override)}: expected FIELD=VALUE, e.g. optim.lr=1e-4")
        parts = key.strip().split(".")
        if len(parts) > MAX_YAML_DEPTH:
            raise ValueError(f"override {quoted(key)[:60]}: more than {MAX_YAML_DEPTH} levels of sections")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {quoted(override)}: {quoted(part)} is not a section")
            node = child
        try:
            node[parts[-1]] = load_yaml_text(raw) if raw.strip() else None
        except ValueError as error:
            raise ValueError(f"override of {key.strip()[:80]}: the value is refused: {error}") from error
        except yaml.YAMLError as error:
            raise ValueError(
                f"override {quoted(override)}: the value is not valid YAML "
                f"({yaml_error_line(error)}); quote it or fix the brackets"
            ) from error
    return data


def check_choice(where: str, value: Any, choices: Sequence[Any]) -> Any:
    """`value` when it is one of `choices`, else a ValueError naming the field."""
    if value not in choices:
        raise ValueError(f"{where}: expected one of {', '.join(map(str, choices))}, got {quoted(value)}")
    return value


def check_fields(config: Any, where: str = "") -> None:
    """Check every field of a dataclass config (nested ones and lists of them too): Literal
    fields hold one of their choices, numbers are finite and inside their `checked` range.
    The same check whether the values came from a file, `--set` or Python."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value, name = getattr(config, item.name), _join(where, item.name)
        if _is_flattened(item):
            check_fields(value, where)
        elif typing.get_origin(hints[item.name]) is Literal:
            check_choice(name, value, typing.get_args(hints[item.name]))
        elif dataclasses.is_dataclass(value):
            check_fields(value, name)
        elif isinstance(value, list):
            for index, entry in enumerate(value):
                if dataclasses.is_dataclass(entry):
                    check_fields(entry, f"{name}[{index}]")
                else:
                    check_number(f"{name}[{index}]", entry, item.metadata)
        elif isinstance(value, dict):
            for key, entry in value.items():
                check_number(f"{name}.{key}", entry, {})
        else:
            check_number(name, value, item.metadata)


def check_number(where: str, value: Any, limits: typing.Mapping[str, float]) -> None:
    """A number (bools and anything else pass) must be finite and inside `limits`
    (`checked`'s minimum / maximum / above / below); ValueError naming the field otherwise."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    bounds = [(sign, limits[key], test) for key, sign, test in _BOUNDS if key in limits]
    if math.isfinite(value) and all(test(value, bound) for _, bound, test in bounds):
        return
    wanted = " and ".join(f"{sign} {bound:g}" for sign, bound, _ in bounds)
    kind = "an integer" if isinstance(value, int) else "a finite number"
    raise ValueError(f"{where}: expected {kind}{' ' + wanted if wanted else ''}, got {quoted(value)}")
