"""Dataclass configs shared by every script.

Each script defines (or imports) a dataclass config. :func:`add_config_args`
adds ``--config FILE`` and ``--set key=value`` to its argument parser;
:func:`resolve` builds the config from defaults, then the JSON file, then the
overrides, then explicit command-line options; :func:`save` writes the resolved
config (``config.json``) into the output folder.

Keys are dotted for nested dataclasses (``--set optim.lr=0.01``). Values are
parsed as JSON when they parse (``--set sizes=[1,2]``, ``--set flag=true``),
as strings otherwise, and are then checked against the field's type.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config key or value. Scripts turn it into a one-line error, exit 2."""


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _number(text: str, tp, key: str):
    try:
        return tp(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not {'an integer' if tp is int else 'a number'}") \
            from None


def _coerce(value: Any, tp, key: str):
    """Check (and gently convert) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not a valid {tp}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected an object, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        inner = args[0] if args else Any
        if isinstance(value, str):      # "a,b": a list; "2,280" of numbers: numbers
            value = [v.strip() for v in value.split(",") if v.strip() != ""]
            if inner in (int, float):
                value = [_number(v, inner, key) for v in value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected an object, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build a dataclass from a (possibly partial) dict; unknown keys are errors."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!r} (known: {', '.join(sorted(fields))})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def apply_override(cfg: T, assignment: str) -> T:
    """Apply one ``key=value`` (dotted keys for nested configs) and return a new config."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, text = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    return _set_path(cfg, parts, _parse_value(text), key)


def _set_path(obj, parts, value, full_key):
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"unknown config key {full_key!r}")
    fields = {f.name for f in dataclasses.fields(obj)}
    name = parts[0]
    if name not in fields:
        raise ConfigError(
            f"unknown config key {full_key!r} (known at this level: {', '.join(sorted(fields))})")
    hints = _hints(type(obj))
    if len(parts) == 1:
        tp = hints[name]
        if tp is str and not isinstance(value, str):
            value = json.dumps(value) if not isinstance(value, (int, float)) else str(value)
        new = _coerce(value, tp, full_key)
    else:
        new = _set_path(getattr(obj, name), parts[1:], value, full_key)
    return dataclasses.replace(obj, **{name: new})


def load(cls: type[T], path: str | os.PathLike) -> T:
    with open(path) as f:
        data = json.load(f)
    return from_dict(cls, data)


def save(cfg, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as JSON, atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")  # hosts of a split build
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="FILE",
                       help="JSON config file; its keys override the defaults")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                       dest="overrides",
                       help="override one config key (dotted for nested keys); repeatable")
    return parser


def resolve(cls: type[T], args: argparse.Namespace | None = None,
            explicit: dict | None = None) -> T:
    """Defaults < ``--config`` file < ``--set`` overrides < explicit options.

    ``explicit`` maps config keys to values from dedicated command-line options;
    entries whose value is None are ignored (the option was not given).
    """
    cfg = cls()
    if args is not None and getattr(args, "config", None):
        cfg = load(cls, args.config)
    for item in (getattr(args, "overrides", None) or []) if args is not None else []:
        cfg = apply_override(cfg, item)
    for key, value in (explicit or {}).items():
        if value is not None:
            cfg = _set_path(cfg, key.split("."), value, key)
    return cfg


def resolve_or_exit(cls: type[T], args: argparse.Namespace | None = None,
                    explicit: dict | None = None) -> T:
    """:func:`resolve`, turning a :class:`ConfigError` into a one-line error, exit 2."""
    try:
        return resolve(cls, args, explicit)
    except (ConfigError, OSError, json.JSONDecodeError) as e:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "tf-cme"
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2)


# --------------------------------------------------------------------------- flags
# Command-line flags derived from the config dataclasses: a default is written once (the
# field), its help once (the comment after the field). Commands keep their option names:
# ``--name-with-hyphens`` for the field ``name_with_hyphens``, unless renamed.

def field_comments(cls) -> dict[str, str]:
    """``{field: the comment after it}`` read from the dataclass's source (a comment
    continued on the next lines, indented under it, is joined)."""
    import inspect
    import io
    import tokenize
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    current, line_of = None, {}
    toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    for i, tok in enumerate(toks):
        if tok.type == tokenize.NAME and tok.string in names and tok.start[1] == 4 and \
                i + 1 < len(toks) and toks[i + 1].string == ":":
            current = tok.string
            line_of[current] = tok.start[0]
        elif tok.type == tokenize.COMMENT and current is not None:
            text = tok.string.lstrip("#").strip()
            out[current] = f"{out[current]} {text}".strip() if current in out else text
        elif tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string not in names:
            current = None
    return out


def _flag_type(tp):
    """(argparse kwargs) for a field annotation: numbers, strings, Literal choices,
    booleans (a store_true flag), lists (comma-separated, checked by _coerce)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _flag_type(inner[0])
    if origin is typing.Literal:
        return {"choices": list(args), "type": type(args[0])}
    if tp is bool:
        return {"action": "store_true"}
    if tp in (int, float, str):
        return {"type": tp}
    if origin in (list, tuple):
        return {"type": str, "metavar": "V1,V2"}
    return {"type": str}


def add_field_args(parser, cls, fields, group: str | None = None, **overrides) -> list[str]:
    """Add a flag for each of ``fields`` of the dataclass ``cls``; returns their names
    (pass them to :func:`explicit`). Help is the field's comment with its default;
    ``overrides[field]`` (a dict) replaces any argparse keyword, e.g. ``flag``, ``help``,
    ``metavar``, ``choices``. Flags default to None: "not given" (config file and
    ``--set`` decide)."""
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else
                         f.default_factory() if f.default_factory is not dataclasses.MISSING
                         else None) for f in dataclasses.fields(cls)}
    target = parser.add_argument_group(group) if group else parser
    for name in fields:
        if name not in hints:
            raise KeyError(f"{cls.__name__} has no field {name!r}")
        kw = _flag_type(hints[name])
        o = dict(overrides.get(name, {}))
        flag = o.pop("flag", "--" + name.replace("_", "-"))
        default = defaults[name]
        shown = (",".join(map(str, default)) if isinstance(default, (list, tuple)) else
                 "off" if default is False else "none" if default is None else
                 "''" if default == "" else default)
        text = o.pop("help", comments.get(name, name.replace("_", " ")))
        kw.update(o)
        # argparse formats help with %: a literal one is escaped (the flag's own default is
        # None, so %(default)s could not show the field's)
        text = f"{text} (default: {shown})".replace("%", "%%")
        target.add_argument(flag, dest=name, default=None, help=text, **kw)
    return list(fields)


def explicit(args, fields) -> dict:
    """``{field: value}`` of the flags :func:`add_field_args` added (None: not given)."""
    return {name: getattr(args, name) for name in fields}
