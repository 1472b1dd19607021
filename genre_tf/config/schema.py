"""Typed experiment config: YAML file + `--set key=value` overrides, validated into dataclasses.

Dataclasses rather than pydantic: the schema is small, stdlib-only objects start fast in extraction
worker processes, and the validator below gives the one-line `config error: <key>: <problem>` messages
the command-line tools promise without translating another library's multi-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


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
