"""Typed, frozen dataclass configs loaded from YAML with strict keys.

A config is a tree of frozen dataclasses. ``from_dict`` checks every key and value against the
annotations: an unknown key is an error naming its full path (``train.optim.lrr``) and the valid
keys there; a value of the wrong type is an error naming the path, the expected and the found type.
Supported annotations: ``int``, ``float`` (an int is widened), ``bool``, ``str``, ``Literal[...]``,
``X | None``, unions, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]``, nested
dataclasses and ``Any``. YAML lists become tuples for ``tuple`` fields, so configs stay immutable.

Overrides are ``dotted.key=value`` strings whose value is parsed as one YAML scalar or flow
collection (``train.optim.lr=3e-4``, ``model.patch_size=[2, 2]``, ``x=null``). There is no
interpolation, no resolver language and nothing is ever executed (nanoGPT-style plain configs; the
``${...}`` mini-languages of other codebases are what this avoids).

One deviation from PyYAML's YAML 1.1 defaults: ``1e-4`` (no dot) is a float, as in YAML 1.2 and as
every user expects, instead of the string ``"1e-4"``. Duplicate keys in a mapping are an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from shared_core.errors import ConfigError

__all__ = [
    "apply_overrides",
    "from_dict",
    "from_yaml",
    "load_yaml",
    "override",
    "parse_override",
    "parse_yaml_value",
    "to_dict",
    "to_yaml",
]

T = TypeVar("T")

# ----------------------------------------------------------------------------------------------
# YAML: safe loading with YAML 1.2 floats and no duplicate keys
# ----------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float and rejects duplicate mapping keys."""


# PyYAML's float pattern needs a dot; this one (YAML 1.2 core schema) also takes 1e-4 and 1E5.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (an empty file is ``{}``)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def parse_yaml_value(text: str) -> Any:
    """Parse one override value as YAML (``3e-4`` -> float, ``[2, 2]`` -> list, ``null`` -> None)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {text!r}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Overrides
# ----------------------------------------------------------------------------------------------

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into (["a", "b", "c"], parsed value)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise ConfigError(f"override {item!r} is not of the form dotted.key=value")
    return key.split("."), parse_yaml_value(value)


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a deep copy of ``data`` with each ``key=value`` override set.

    Missing intermediate mappings are created; whether the key exists is checked later by
    ``from_dict`` against the dataclass, so a typo is reported with the valid keys.
    """
    out = _deep_copy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for depth, k in enumerate(keys[:-1]):
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"override {item!r}: {where!r} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


# ----------------------------------------------------------------------------------------------
# Dict <-> dataclass
# ----------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _where(path: str, source: str) -> str:
    loc = path or "(top level)"
    return f"{source}: {loc}" if source else loc


def _convert(value: Any, tp: Any, path: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert it (lists -> tuples, int -> float)."""
    origin, args = get_origin(tp), get_args(tp)

    def fail(expected: str | None = None) -> ConfigError:
        shown = repr(value) if not isinstance(value, Mapping) else "a mapping"
        return ConfigError(
            f"{_where(path, source)}: expected {expected or _type_name(tp)}, "
            f"got {type(value).__name__} {shown}"
        )

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise fail(f"a mapping for section {tp.__name__}")
        return _from_mapping(tp, value, path, source)
    if origin is Literal:
        # bool is an int subclass: Literal[1] must not accept True, so compare types too.
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(
            f"{_where(path, source)}: {value!r} is not one of {', '.join(repr(a) for a in args)}"
        )
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path, source)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise fail(" or ".join(_type_name(a) for a in args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail(f"a list ({_type_name(tp)})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{_where(path, source)}: expected {len(args)} items, got {len(value)}")
            items = [_convert(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, f"{path}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        key_tp, val_tp = args if args else (Any, Any)
        return {
            _convert(k, key_tp, f"{path}.<key>", source): _convert(v, val_tp, f"{path}.{k}", source)
            for k, v in value.items()
        }
    raise ConfigError(f"{_where(path, source)}: unsupported annotation {_type_name(tp)} in the config class")


def _from_mapping(cls: type[T], data: Mapping[str, Any], path: str, source: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            full = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = f"under {path!r}" if path else "at the top level"
            raise ConfigError(
                f"{source + ': ' if source else ''}unknown key {full!r}{hint}; valid keys {where}: "
                f"{', '.join(fields)}"
            )
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], sub, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_where(sub, source)}: missing required key")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a __post_init__ check of the config class
        raise ConfigError(f"{_where(path, source)}: {exc}") from exc


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, checking every key and value.

    Args:
        cls: a dataclass type (nested dataclass fields are built recursively).
        data: e.g. parsed YAML.
        source: named in error messages (usually the file path).

    Raises:
        ConfigError: unknown key (with its dotted path and the valid keys), wrong type, missing
            required key, or a value rejected by the class's ``__post_init__``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source + ': ' if source else ''}expected a mapping, got {type(data).__name__}")
    return _from_mapping(cls, data, "", source)


def from_yaml(cls: type[T], path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> T:
    """Load ``cls`` from a YAML file, then apply ``key=value`` overrides."""
    data = apply_overrides(load_yaml(path), overrides)
    return from_dict(cls, data, source=str(path))


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists/scalars (tuples become lists), ready for YAML/JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def to_yaml(obj: Any) -> str:
    """Serialise a config (dataclass or dict) as YAML that ``from_yaml`` reads back identically."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)


def override(cfg: T, overrides: Iterable[str]) -> T:
    """A copy of the config ``cfg`` with ``key=value`` overrides applied and re-validated."""
    return from_dict(type(cfg), apply_overrides(to_dict(cfg), overrides))
