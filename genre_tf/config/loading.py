"""A config from YAML files and `--set key=value` overrides: parsed, upgraded from older key names, converted to the
schema's types, validated, and saved back as YAML."""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from genre_tf.config.schema import Config, ConfigError, DataConfig, EnsembleConfig


def load_ensemble_config(path: Path | str, overrides: list[str] = ()) -> EnsembleConfig:
    """Read an ensemble's YAML config (`extends` and `--set` as for a run's); raises ConfigError."""
    cfg = _build(EnsembleConfig, apply_overrides(read_yaml(Path(path)), list(overrides)))
    if len(cfg.members) < 2:
        raise ConfigError("members", f"an ensemble needs at least 2 runs, got {len(cfg.members)}")
    return cfg


# Names from before the transfer family held more than ResNet50. Old config files, saved run directories, `--set`
# overrides and search spaces keep loading: each source is renamed as it is read, so the newer source still wins.
RENAMED_SECTIONS = {"model.resnet": "model.transfer"}


RENAMED_VALUES = {"model.kind": {"resnet50": "transfer"}}


def upgrade_key(key: str, value: Any = None) -> tuple[str, Any]:
    """A dotted key and its value under today's names: `model.resnet.weights` -> `model.transfer.weights`."""
    for old, new in RENAMED_SECTIONS.items():
        if key == old or key.startswith(old + "."):
            key = new + key[len(old) :]
    renamed = RENAMED_VALUES.get(key, {})
    return key, renamed.get(value, value) if isinstance(value, str) else value


def upgrade_values(values: dict, prefix: str = "") -> dict:
    """Nested config values (one YAML file) under today's names; where both names are given, the new one wins."""
    old, new = {}, {}
    for name, value in values.items():
        key, value = upgrade_key(f"{prefix}{name}", value)
        if isinstance(value, dict):
            value = upgrade_values(value, f"{key}.")
        (new if key == f"{prefix}{name}" else old)[key.rsplit(".", 1)[-1]] = value
    return _merge(old, new)


FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _convert(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the type hint `hint`, converting YAML scalars where it is unambiguous."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(key, "must not be null")
        for arg in (a for a in args if a is not type(None)):
            return _convert(key, value, arg)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {value!r}")
        return [_convert(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and FLOAT_LITERAL.fullmatch(value):  # YAML 1.1 reads 1e-4 (no dot) as a string
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(key, f"must be a path, got {value!r}")
        return expand_path(value, key)
    raise TypeError(f"unsupported config type {hint} at {key}")


def expand_path(value: str | Path, key: str = "path") -> Path:
    """A path as a user writes it: `~` is their home, `$VAR` / `${VAR}` an environment variable; ConfigError naming
    `key` where a variable is not set (it would become a folder named `$VAR`, or `~`, in the current one)."""
    expanded = os.path.expandvars(os.path.expanduser(str(value)))
    if unset := re.search(r"\$\{?(\w+)", expanded):
        raise ConfigError(key, f"environment variable {unset.group(1)} in {value} is not set")
    if expanded.startswith("~"):
        raise ConfigError(key, f"cannot expand {value}: no such user's home")
    return Path(expanded)


def _relative_note(path: Path) -> str:
    """Where a relative path was looked for, for a does-not-exist message."""
    return "" if path.is_absolute() else f" (relative to the current folder {Path.cwd()})"


def _build(cls: type, values: Any, prefix: str = "") -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(prefix or "<root>", f"must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(where, f"unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in values:
            continue
        key = f"{prefix}.{name}" if prefix else name
        value = _convert(key, values[name], hints[name])
        _check_metadata(key, value, f.metadata)
        kwargs[name] = value
    return cls(**kwargs)


def _check_metadata(key: str, value: Any, metadata: Any) -> None:
    lo, hi = metadata.get("range", (None, None))
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        raise ConfigError(key, f"must be {lo}..{hi}, got {value}")


def check_data_paths(data: DataConfig) -> None:
    """The data a config reads exists: checked for a job that reads it, not for a saved run loaded to predict."""
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        if f.metadata.get("exists") and value is not None and not Path(value).exists():
            raise ConfigError(f"data.{f.name}", f"path does not exist: {value}{_relative_note(Path(value))}")
    if data.source == "folder" and not data.root.is_dir():
        raise ConfigError("data.root", f"folder does not exist: {data.root}{_relative_note(data.root)}")


def _check_consistency(cfg: Config) -> None:
    data = cfg.data
    if data.source in ("folder", "demo") and data.root is None:
        raise ConfigError("data.root", f"is required when data.source is {data.source}")
    if data.source in ("csv", "table") and data.csv is None:
        raise ConfigError("data.csv", f"is required when data.source is {data.source}")
    if data.valid_fraction + data.test_fraction >= 1.0:
        raise ConfigError("data.test_fraction", "valid_fraction + test_fraction must be below 1")
    if data.folds == 1 or (data.folds > 1 and data.fold >= data.folds):
        raise ConfigError("data.fold", f"must be below data.folds ({data.folds}) and folds must not be 1")
    if data.split_file is not None and data.split != "auto":
        raise ConfigError("data.split_file", f"gives the split itself, so data.split must stay auto, got {data.split}")
    if data.folds > 1 and (data.split_file is not None or data.split != "auto"):
        problem = "k-fold is a split itself, so data.split must stay auto and data.split_file unset"
        raise ConfigError("data.folds", problem)
    if data.stream and not data.shards:
        raise ConfigError("data.stream", "streams shard files: set data.shards to a folder of prepare --engine beam")
    if len(cfg.model.image_size) != 2 or min(cfg.model.image_size) < 8:
        raise ConfigError("model.image_size", f"must be [height, width] of at least 8, got {cfg.model.image_size}")
    if cfg.mel.db_floor >= cfg.mel.db_ceiling:
        raise ConfigError("mel.db_floor", "must be below mel.db_ceiling")
    if cfg.train.class_weight != "none" and cfg.train.distribute == "multi_worker":
        raise ConfigError("train.class_weight", "is not applied by multi-worker training's loop; use none there")
    if cfg.augment.time_shift and (cfg.audio.segment_hop or 0) > cfg.audio.segment_seconds:
        problem = "needs audio.segment_hop <= audio.segment_seconds: the audio between segments is not cached"
        raise ConfigError("augment.time_shift", problem)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(text, "override must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def set_key(values: dict, key: str, value: Any) -> dict:
    """Set `a.b.c` in the nested dict `values` (in place) and return it."""
    key, value = upgrade_key(key, value)
    path = key.split(".")
    node = values
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(key, f"{part} is not a section")
        node = child
    node[path[-1]] = value
    return values


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Set each `a.b.c=value` into the nested dict `values` (in place) and return it."""
    for text in overrides:
        path, value = parse_override(text)
        set_key(values, ".".join(path), value)
    return values


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_dicts else value
    return merged


def yaml_problem(err: yaml.YAMLError) -> str:
    """`line 3, column 7: mapping values are not allowed here` (1-based, where the parser stopped)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return problem
    context = f" ({err.context})" if getattr(err, "context", None) else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}{context}"


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file's values; `extends: other.yaml` (relative to this file) is read first and updated."""
    if not path.is_file():
        raise ConfigError("--config" if not seen else "extends", f"file does not exist: {path}{_relative_note(path)}")
    if path.resolve() in seen:
        raise ConfigError("extends", f"{path} extends itself")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("--config", f"{path} is not valid YAML: {yaml_problem(err)}") from None
    if not isinstance(values, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of config keys")
    values = upgrade_values(values)
    parent = values.pop("extends", None)
    if parent is None:
        return values
    return _merge(read_yaml(path.parent / parent, (*seen, path.resolve())), values)


def load_config(path: Path | str | None, overrides: list[str] = (), check_paths: bool = True) -> Config:
    """Read a YAML config, apply overrides, validate; raises ConfigError.

    `check_paths=False` skips only the check that the data's files and folders exist: a saved run predicts, exports
    and serves from another working directory or machine than the one it was trained on.
    """
    values = read_yaml(expand_path(path, "--config")) if path is not None else {}
    return config_from_dict(apply_overrides(values, list(overrides)), check_paths)


def config_from_dict(values: dict, check_paths: bool = True) -> Config:
    """Validate nested plain values (as YAML gives them) into a Config; raises ConfigError."""
    cfg = _build(Config, values)
    _check_consistency(cfg)
    if check_paths:
        check_data_paths(cfg.data)
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain, YAML-safe dict of a config (paths as strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
