"""Plain data (YAML, JSON, `a.b=value` overrides) -> typed dataclasses. Unknown fields, wrong
types and values outside a Literal's choices are ValueErrors that name the field
(e.g. `optim.lr`); the choices come from the Literal types themselves (`typing.get_args`)."""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from typing import Any, Literal, Sequence, TypeVar

import yaml

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from plain data; unknown fields and wrong types are ValueErrors."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping of fields, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in data if key not in names]
    if unknown:
        raise ValueError(f"unknown field {_join(where, unknown[0])!r}; expected one of: {', '.join(names)}")
    values = {key: _convert(hints[key], value, _join(where, key)) for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:  # a required field is missing
        raise ValueError(f"{where or 'config'}: {error}") from error


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
    raise ValueError(f"{where}: expected {hint.__name__}, got {_kind(value)} {value!r}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (values parsed as YAML: 1e-4, true, [a, b], null)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {override!r}: expected FIELD=VALUE, e.g. optim.lr=1e-4")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {override!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def check_choice(where: str, value: Any, choices: Sequence[Any]) -> Any:
    """`value` when it is one of `choices`, else a ValueError naming the field."""
    if value not in choices:
        raise ValueError(f"{where}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_choices(config: Any, where: str = "") -> None:
    """Check every Literal-typed field of a dataclass config (and of nested ones, lists too)."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value, name = getattr(config, item.name), _join(where, item.name)
        if typing.get_origin(hints[item.name]) is Literal:
            check_choice(name, value, typing.get_args(hints[item.name]))
        elif dataclasses.is_dataclass(value):
            check_choices(value, name)
        elif isinstance(value, list):
            for index, entry in enumerate(value):
                if dataclasses.is_dataclass(entry):
                    check_choices(entry, f"{name}[{index}]")
