"""Typed configuration from YAML overrides: strict, so a typo is an error, not a silent default.

Precedence: dataclass defaults -> YAML file -> ``key.sub=value`` command-line overrides. A YAML
file holds only what differs from the defaults. Unknown keys and values of the wrong type are
``ConfigError``s that name the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from kerasmyelin.errors import ConfigError

T = TypeVar("T")
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked (and, for tuples and numbers, converted) against the type ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} fields, got {value!r}")
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            # YAML 1.1 reads 1e-4 (no dot) as text; it is the way most people write a learning rate.
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # a whole number with hundreds of digits
            digits = len(str(abs(value)))
            raise ConfigError(f"{where}: a whole number of {digits} digits is too large for a number") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint!r}")  # pragma: no cover - a code error


def _build(cls: type[T], data: dict, where: str, base: T | None = None) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(data) - names))  # YAML keys may be numbers, null, ...
    if unknown:
        raise ConfigError(f"{where + ': ' if where else ''}unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(names))}")
    current = base if base is not None else cls()
    values = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        field_hint = hints[key]
        if dataclasses.is_dataclass(field_hint) and isinstance(value, dict):
            values[key] = _build(field_hint, value, path, getattr(current, key))
        else:
            values[key] = _coerce(value, field_hint, path)
    try:
        return dataclasses.replace(current, **values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def _parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc})") from None
    return key.strip().split("."), value


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] = ()) -> T:
    """Defaults of ``cls``, updated by a YAML file, then by ``key.sub=value`` overrides."""
    import yaml

    config = cls()
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        except RecursionError:
            raise ConfigError(f"{path}: YAML nested too deeply to be a configuration") from None
        if data is None:  # an empty file (or only comments): the defaults
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        try:
            config = _build(cls, data, "", config)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for text in overrides:
        keys, value = _parse_override(text)
        nested: Any = value
        for key in reversed(keys):
            nested = {key: nested}
        config = _build(cls, nested, "", config)
    return config


def to_dict(config: Any) -> dict:
    """Plain data (tuples as lists) for writing a resolved config next to a run's outputs."""
    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(config))
