"""Typed experiment config: YAML file + `--set key=value` overrides, validated into dataclasses.

Dataclasses rather than pydantic: the schema is small, stdlib-only objects start fast in extraction
worker processes, and the validator below gives the one-line `config error: <key>: <problem>` messages
the command-line tools promise without translating another library's multi-line errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config problem, reported as one line naming the key."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _range(lo: float | None = None, hi: float | None = None, **kw: Any) -> Any:
    return field(metadata={"range": (lo, hi)}, **kw)


def _existing(**kw: Any) -> Any:
    return field(metadata={"exists": True}, **kw)


@dataclass
class DataConfig:
    """Where tracks come from and how they are split (always by track, before segmenting)."""

    source: Literal["demo", "folder", "csv", "table"] = "folder"
    root: Path | None = None  # folder per genre; for `demo`, where the synthetic audio is written
    csv: Path | None = _existing(default=None)  # `csv`: path,label rows; `table`: a GTZAN feature table
    test_dir: Path | None = _existing(default=None)  # unlabeled audio for a submission
    test_table: Path | None = _existing(default=None)  # unlabeled feature table for a submission
    # auto: folds if data.folds > 1, else split_file if given, else the shipped GTZAN fault-filtered split
    # when every track id is a GTZAN id, else stratified by track. gtzan / stratified name one outright.
    split: Literal["auto", "gtzan", "stratified"] = "auto"
    split_file: Path | None = _existing(default=None)  # track_id,split[,genre]: when given, it is the split
    valid_fraction: float = _range(0.0, 0.9, default=0.15)
    test_fraction: float = _range(0.0, 0.9, default=0.15)
    folds: int = _range(0, 100, default=0)  # >1: grouped k-fold, `fold` is the held-out one
    fold: int = _range(0, 99, default=0)
    demo_tracks_per_genre: int = _range(2, 1000, default=12)
    demo_seconds: float = _range(1.0, 120.0, default=6.0)
    # A folder of shards written by `prepare --engine beam` (a local path, gs://, s3://: what tf.io.gfile reads):
    # train reads its tracks, ids, labels and splits from there instead of preparing audio through the cache.
    shards: str | None = None
    # With data.shards: train streams mel images and musicnn patches from the shard files (tf.data: parallel interleave,
    # a shuffle buffer) instead of holding a split's segments in memory, and under train.distribute: multi_worker each
    # worker reads its own shard files. For a collection larger than memory, or multi-worker training. The shuffle
    # differs from the in-memory reader's, so a streamed run is not the same numbers as one from the cache (it is the
    # same from one streamed run to the next, and resumes exactly). A features model (mlp) holds its rows either way.
    stream: bool = False


@dataclass
class CacheConfig:
    dir: Path = Path("data/cache")
    jobs: int = _range(0, 256, default=0)  # 0: all cores


@dataclass
class AudioConfig:
    sample_rate: int = _range(1000, 192000, default=22050)
    duration: float | None = _range(0.1, 3600.0, default=None)  # pad/trim every track to this; None keeps it
    max_duration: float = _range(1.0, 36000.0, default=600.0)  # longer files are read up to this
    segment_seconds: float = _range(0.1, 600.0, default=3.0)
    segment_hop: float | None = _range(0.05, 600.0, default=None)  # None: segment_seconds (no overlap)
    silence_rms: float = _range(0.0, 1.0, default=1e-4)  # quieter tracks are skipped as silent
    short_clips: Literal["skip", "tile"] = "skip"  # shorter than one segment: skip, or repeat to fill one
    min_seconds: float = _range(0.0, 600.0, default=0.5)  # shorter files are reported as too short, never predicted
    # A longer track keeps this many segments, evenly spread (`audio.spread_segments`), so a 10-minute song weighs in
    # training as a 30 s clip does and costs as little to predict; 20 keeps every segment of a 30 s clip at a 1.5 s hop.
    max_segments_per_track: int | None = _range(1, 100000, default=20)


@dataclass
class FeatureConfig:
    """The GTZAN feature-table recipe (librosa defaults of the published table)."""

    n_fft: int = _range(64, 65536, default=2048)
    hop_length: int = _range(16, 65536, default=512)
    n_mfcc: int = _range(1, 128, default=20)
    pad_mode: Literal["reflect", "constant"] = "reflect"


@dataclass
class MelConfig:
    """Log-mel images; dB values map linearly from [db_floor, db_ceiling] onto 16-bit PNG."""

    n_mels: int = _range(8, 512, default=128)
    n_fft: int = _range(64, 65536, default=2048)
    hop_length: int = _range(16, 65536, default=512)
    fmin: float = _range(0.0, 96000.0, default=0.0)
    fmax: float | None = _range(1.0, 96000.0, default=None)
    db_floor: float = -80.0
    db_ceiling: float = 40.0


@dataclass
class MlpConfig:
    hidden_layers: int = _range(0, 16, default=2)
    units: int = _range(1, 8192, default=256)
    dropout: float = _range(0.0, 0.95, default=0.3)
    batch_norm: bool = True
    # How feature columns are scaled, fitted on the training rows only: "standard" (mean 0, std 1) or "quantile"
    # (rank-Gauss: each column through its empirical quantiles onto a standard normal, robust to outliers and skew).
    scaler: Literal["standard", "quantile"] = "standard"


@dataclass
class CnnConfig:
    conv_blocks: int = _range(1, 8, default=4)
    filters: int = _range(1, 1024, default=32)  # doubled in every block
    kernel_size: int = _range(1, 15, default=3)
    pooling: Literal["max", "avg"] = "max"
    dropout: float = _range(0.0, 0.95, default=0.3)


@dataclass
class TransferConfig:
    """A pretrained backbone under a new head (`model.kind: transfer`); the backbone's name says where it comes from."""

    backbone: str = "ResNet50"  # any keras.applications model name
    # "pretrained" (ImageNet for keras.applications, the musicnn wheel's for musicnn), "imagenet", null (random),
    # or a local .h5 / .weights.h5 path
    weights: str | None = "imagenet"
    trainable_blocks: int = _range(0, 16, default=0)  # counted from the top; 0 = frozen backbone
    trainable_layers: int | None = _range(0, 10000, default=None)  # alternative to trainable_blocks
    head_units: int = _range(0, 8192, default=256)  # 0: the softmax layer sits on the backbone's features
    dropout: float = _range(0.0, 0.95, default=0.3)
    l2: float = _range(0.0, 10.0, default=0.0)  # L2 penalty on the head's kernels
    alpha: float = _range(0.1, 4.0, default=1.0)  # width multiplier of MobileNet-family backbones
    cache_boundary: bool = True  # train above the frozen blocks on activations cached once (genre_tf.training.boundary)
    # "frozen": the backbone's BatchNorm keeps its pretrained statistics (inference mode), as fine-tuning wants;
    # "train": BatchNorm learns in the blocks that train, as a network trained from scratch (weights: null) needs.
    batch_norm: Literal["frozen", "train"] = "frozen"


@dataclass
class ModelConfig:
    kind: Literal["mlp", "cnn", "transfer"] = "mlp"
    # mlp: rows per segment or per whole track; transfer: "track" is the linear probe, a softmax layer on the
    # track's mean embedding (segments' frozen-backbone features averaged)
    level: Literal["segment", "track"] = "segment"
    image_size: list[int] = field(default_factory=lambda: [128, 128])  # height, width of image inputs
    channels: Literal[1, 3] = 1
    channel_mode: Literal["repeat", "deltas"] = "repeat"  # how 3 channels are made from one mel image
    mlp: MlpConfig = field(default_factory=MlpConfig)
    cnn: CnnConfig = field(default_factory=CnnConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)


@dataclass
class TrainConfig:
    epochs: int = _range(1, 10000, default=30)
    batch_size: int = _range(1, 4096, default=32)
    learning_rate: float = _range(0.0, 10.0, default=1e-3)
    fine_tune_epochs: int = _range(0, 10000, default=0)  # second phase with the chosen blocks unfrozen
    fine_tune_learning_rate: float = _range(0.0, 10.0, default=1e-5)
    patience: int = _range(0, 10000, default=8)  # early stopping on the valid split; 0 = never stop early
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"  # picks the checkpoint and stops early
    label_smoothing: float = _range(0.0, 0.5, default=0.0)
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = _range(0.0, 1.0, default=0.004)  # adamw's decoupled weight decay (Keras' default); adam: none
    # Learning rate over each phase's steps: "constant", or "cosine" decay to min_learning_rate at the phase's end.
    # Either starts with a linear warm-up from 0 over warmup_epochs epochs (fractions allowed) when that is above 0.
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = _range(0.0, 10000.0, default=0.0)
    min_learning_rate: float = _range(0.0, 10.0, default=0.0)  # cosine's floor, capped at each phase's learning rate
    # After the epochs are chosen on valid, train again on train + valid for exactly those epochs (per phase) and
    # make that the run's model (genre_tf.training.fit); the valid figures stay those of the chosen model.
    refit: bool = False
    # The refit's learning rate: "follow" the first fit's curve up to the chosen epoch (the schedule spans the
    # configured epochs), or "anneal": the schedule spans the refit's own epochs, so a cosine ends at its floor. A
    # recipe whose valid figures swing from epoch to epoch at a high rate then ends where its weights have settled.
    refit_schedule: Literal["follow", "anneal"] = "follow"
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    # "balanced": each example's loss weighted by n / (genres * its genre's examples in the data fitted), so a genre
    # with few tracks counts as much as a large one (sklearn's class_weight="balanced"); "none": every example alike.
    class_weight: Literal["none", "balanced"] = "none"


@dataclass
class AugmentConfig:
    """Training-time augmentation (genre_tf.inputs.augment), every item off by default; evaluation never augments.

    Drawn per (seed, epoch, element), so a resumed run sees the same draws. Masks, gain and time shift apply to
    mel images and musicnn patches, feature_noise to feature-table rows, mixup to both.
    """

    time_masks: int = _range(0, 16, default=0)  # SpecAugment time masks per example
    time_mask_frames: int = _range(0, 10000, default=0)  # each time mask is 0..this many frames wide
    freq_masks: int = _range(0, 16, default=0)  # SpecAugment frequency masks per example
    freq_mask_bands: int = _range(0, 512, default=0)  # each frequency mask is 0..this many mel bands wide
    gain_db: float = _range(0.0, 60.0, default=0.0)  # a random gain of -gain_db..gain_db dB per example
    # random time crop: the segment's window moves later by up to this fraction of the segment hop, into the
    # track's next segment (0: the fixed segment positions)
    time_shift: float = _range(0.0, 1.0, default=0.0)
    mixup_alpha: float = _range(0.0, 10.0, default=0.0)  # mixup with weights from Beta(alpha, alpha); 0: off
    feature_noise: float = _range(0.0, 10.0, default=0.0)  # Gaussian noise std on standardised feature rows

    @property
    def active(self) -> bool:
        """Whether anything here changes a training input."""
        masks = (self.time_masks and self.time_mask_frames) or (self.freq_masks and self.freq_mask_bands)
        return bool(masks or self.gain_db or self.time_shift or self.mixup_alpha or self.feature_noise)


@dataclass
class Config:
    name: str = "run"
    seed: int = 42
    output_dir: Path = Path("saved_models")
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class EnsembleConfig:
    """An ensemble run (genre_tf.training.ensemble): member runs' track probabilities, weighted by a choice made on
    valid."""

    name: str = "ensemble"
    output_dir: Path = Path("saved_models")
    # run directories, or configs (.yaml) of runs that are trained first (or found finished) where they say
    members: list[Path] = field(default_factory=list)
    # "greedy": forward selection with replacement over the members' valid predictions (Caruana et al. 2004);
    # "equal": every member weighs the same
    selection: Literal["greedy", "equal"] = "greedy"
    rounds: int = _range(1, 10000, default=20)  # greedy: members added, one at a time (a member may come back)


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
        return Path(value)
    raise TypeError(f"unsupported config type {hint} at {key}")


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
            raise ConfigError(f"data.{f.name}", f"path does not exist: {value}")
    if data.source == "folder" and not data.root.is_dir():
        raise ConfigError("data.root", f"folder does not exist: {data.root}")


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


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file's values; `extends: other.yaml` (relative to this file) is read first and updated."""
    if not path.is_file():
        raise ConfigError("--config" if not seen else "extends", f"file does not exist: {path}")
    if path.resolve() in seen:
        raise ConfigError("extends", f"{path} extends itself")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("--config", f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
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
    values = read_yaml(Path(path)) if path is not None else {}
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


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="e.g. train.epochs=3"
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named on the command line; on error print one line and exit 2."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as err:
        exit_config_error(err)


def exit_config_error(err: ConfigError) -> typing.NoReturn:
    print(f"config error: {err}", file=sys.stderr)
    raise SystemExit(2)
