"""Strict conversion of parsed TOML into frozen dataclasses, with errors naming file and key."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from compkit.errors import ConfigError

MIN_MEMORY_BYTES = 8 * 2**20
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def build(cls: type, data: Any, *, key: str, source: Path | str) -> Any:
    """Return an instance of dataclass `cls` built from `data`, rejecting unknown keys and bad types."""
    return _convert(cls, data, key=key, source=source)


def _fail(source: Path | str, key: str, message: str) -> ConfigError:
    where = f"{source}: {key}: " if key else f"{source}: "
    return ConfigError(where + message)


def _join(key: str, child: str) -> str:
    return f"{key}.{child}" if key else child


def _convert(tp: Any, value: Any, *, key: str, source: Path | str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, key=key, source=source)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise _fail(source, key, f"must be one of {allowed}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(tp, value, key=key, source=source)
    if origin is tuple:
        return _convert_tuple(tp, value, key=key, source=source)
    if origin is dict:
        key_type, value_type = get_args(tp)
        if not isinstance(value, dict):
            raise _fail(source, key, f"expected a table, got {type(value).__name__}")
        return {
            _convert(key_type, k, key=key, source=source): _convert(value_type, v, key=_join(key, k), source=source)
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in TYPE_NAMES:
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise _fail(source, key, f"expected {TYPE_NAMES[tp]}, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def _convert_dataclass(cls: type, value: Any, *, key: str, source: Path | str) -> Any:
    if not isinstance(value, dict):
        raise _fail(source, key, f"expected a table, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise _fail(source, _join(key, unknown[0]), f"unknown key (known keys: {known})")
    kwargs = {}
    for name, field in fields.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], key=_join(key, name), source=source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise _fail(source, _join(key, name), "missing required key")
    instance = cls(**kwargs)
    check = getattr(instance, "check", None)
    if check is not None:
        problem = check()
        if problem:
            raise _fail(source, key, problem)
    return instance


def _convert_union(tp: Any, value: Any, *, key: str, source: Path | str) -> Any:
    options = get_args(tp)
    if value is None and type(None) in options:
        return None
    kinds = [o for o in options if dataclasses.is_dataclass(o)]
    if kinds and isinstance(value, dict) and "kind" in value:
        by_kind = {get_args(typing.get_type_hints(o)["kind"])[0]: o for o in kinds}
        if value["kind"] not in by_kind:
            allowed = ", ".join(repr(k) for k in by_kind)
            raise _fail(source, _join(key, "kind"), f"must be one of {allowed}, got {value['kind']!r}")
        return _convert(by_kind[value["kind"]], value, key=key, source=source)
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(option, value, key=key, source=source)
        except ConfigError as error:
            errors.append(error)
    raise errors[0]


def _convert_tuple(tp: Any, value: Any, *, key: str, source: Path | str) -> tuple:
    if not isinstance(value, list):
        raise _fail(source, key, f"expected an array, got {value!r}")
    item_types = get_args(tp)
    if len(item_types) == 2 and item_types[1] is Ellipsis:
        return tuple(
            _convert(item_types[0], item, key=f"{key}[{i}]", source=source) for i, item in enumerate(value)
        )
    if len(value) != len(item_types):
        raise _fail(source, key, f"expected an array of {len(item_types)} values, got {len(value)}")
    return tuple(
        _convert(item_type, item, key=f"{key}[{i}]", source=source)
        for i, (item_type, item) in enumerate(zip(item_types, value, strict=True))
    )


def to_plain(instance: Any) -> Any:
    """Return a dataclass (or nested containers of them) as plain JSON-ready data."""
    if dataclasses.is_dataclass(instance):
        return {f.name: to_plain(getattr(instance, f.name)) for f in dataclasses.fields(instance)}
    if isinstance(instance, (list, tuple)):
        return [to_plain(item) for item in instance]
    if isinstance(instance, dict):
        return {k: to_plain(v) for k, v in instance.items()}
    return instance


def parse_memory(memory: str | int) -> int:
    """Return a memory size in bytes from an int or a string such as "2GB", "512MiB" or "1.5 GB"."""
    if isinstance(memory, bool):
        raise ConfigError(f"memory must be a size such as '2GB' or a number of bytes, got {memory!r}")
    if isinstance(memory, int):
        size = memory
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(memory))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise ConfigError(f"memory must be a size such as '2GB', '512MiB' or a number of bytes, got {memory!r}")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size < MIN_MEMORY_BYTES:
        raise ConfigError(f"memory must be at least {MIN_MEMORY_BYTES // 2**20} MiB, got {memory!r} ({size} bytes)")
    return size
