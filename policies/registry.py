"""Policy registry: a policy registers itself here with @register(name, Config).

A leaf: it imports no policy. The package (policies/__init__.py) imports every policy module,
so importing anything from batchsim.policies fills the registry; a new policy is one file in
policies/ plus its import line there (docs/POLICIES.md).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from batchsim.policies.base import Policy
from batchsim.sim.checks import check_knobs
from batchsim.sim.errors import UsageError

P = TypeVar("P", bound=type[Policy])

_REGISTRY: dict[str, type[Policy]] = {}


def register(name: str, config_class: type) -> Callable[[P], P]:
    """Class decorator: make a policy available under `name` with its config dataclass."""

    def wrap(cls: P) -> P:
        assert name not in _REGISTRY, f"policy {name!r} registered twice"
        cls.name = name
        cls.config_class = config_class
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    """Names of the registered policies, sorted (the CLI's --policy choices)."""
    return sorted(_REGISTRY)


def get_policy(name: str) -> type[Policy]:
    if name not in _REGISTRY:
        raise UsageError(f"unknown policy {name!r}; choose one of: {', '.join(available())}")
    return _REGISTRY[name]


def make_config(name: str, overrides: dict[str, str | Any],
                defaults: Mapping[str, str | Any] | None = None) -> Any:
    """Build a policy's config from knob=value overrides (strings are parsed by field type).

    defaults: values for knobs the overrides leave unset, applied only to policies that have
    the knob (e.g. a profile's vLLM version for `vllm_version`)."""
    config_class = get_policy(name).config_class
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    aliases = getattr(config_class, "KNOB_ALIASES", {})
    kwargs: dict[str, Any] = {}
    implied = {k: v for k, v in (defaults or {}).items() if k in fields and k not in overrides}
    for knob, raw in {**implied, **overrides}.items():
        if knob in aliases:  # an old name: its own type and bounds, then its new name's value
            hint, new, convert = aliases[knob]
            if new in overrides:
                raise UsageError(f"knob {knob} is the old name of {new}: give only {new}")
            value = (parse_value(knob, raw, hint) if isinstance(raw, str)
                     else check_value(knob, raw, hint))
            check_knobs(name, {knob: value})
            kwargs[new] = convert(value)
            continue
        if knob not in fields:
            old = f" (old names: {', '.join(aliases)})" if aliases else ""
            raise UsageError(
                f"unknown knob {knob!r} for policy {name!r}; knobs: {', '.join(fields)}{old}"
            )
        kwargs[knob] = (parse_value(knob, raw, hints[knob]) if isinstance(raw, str)
                        else check_value(knob, raw, hints[knob]))
    check_knobs(name, kwargs)  # finite, and within what a real server accepts
    return config_class(**kwargs)


def check_value(knob: str, value: Any, hint: Any) -> Any:
    """A knob value given as a Python object (the Python API, presets): it must already have
    the knob's declared type. bool is not taken for a number, nor a float with a fraction for
    an int; an int is taken for a float."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None):
            if value is None:
                return None
            continue
        origin = typing.get_origin(option)
        if origin is typing.Literal:
            if isinstance(value, str) and value in typing.get_args(option):
                return value
            continue
        if origin is tuple:
            if isinstance(value, list | tuple) and all(
                    isinstance(x, int) and not isinstance(x, bool) for x in value):
                return tuple(value)
            continue
        if option is bool:
            if isinstance(value, bool):
                return value
            continue
        if isinstance(value, bool):
            continue
        if option is int and isinstance(value, int):
            return value
        if option is float and isinstance(value, int | float):
            return float(value)
    raise ValueError(f"knob {knob}: {value!r} ({type(value).__name__}) is not a valid "
                     f"{_type_name(hint)}")


def _type_name(hint: Any) -> str:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    names = []
    for option in options:
        if typing.get_origin(option) is typing.Literal:
            names.append(" or ".join(repr(v) for v in typing.get_args(option)))
        elif typing.get_origin(option) is tuple:
            names.append("tuple of integers")
        else:
            names.append("None" if option is type(None) else getattr(option, "__name__",
                                                                      str(option)))
    return " or ".join(names)


def parse_value(knob: str, raw: str, hint: Any) -> Any:
    """Parse a command-line string into the knob's declared type."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if raw.lower() in ("none", "null") and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        origin = typing.get_origin(option)
        if origin is typing.Literal:
            if raw in typing.get_args(option):
                return raw
            continue
        if origin is tuple:
            try:
                return tuple(int(x) for x in raw.split(",") if x)
            except ValueError:
                raise UsageError(f"knob {knob}: cannot read {raw!r} as a list of integers "
                                 "(e.g. 4,8)") from None
        if option is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            continue
        try:
            return option(raw)
        except (TypeError, ValueError):
            continue
    shown = "true or false" if bool in options else _type_name(hint)
    raise UsageError(f"knob {knob}: cannot read {raw!r} as {shown}")

