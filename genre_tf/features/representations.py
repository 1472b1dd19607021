"""The representations a model reads, what shapes each one, and which one each model family reads.

Three representations are made from a track's decoded audio, each cached on its own (genre_tf.extract.cache):
- `features`: feature-table rows (the published GTZAN columns, per track and per segment), which need the
  harmonic / percussive split, chroma, tempo and MFCCs of genre_tf.features.analysis;
- `mel_image`: a log-mel image per segment (genre_tf.features.analysis, mel.*);
- `musicnn_patch`: musicnn's 16 kHz mel power patch per segment (genre_tf.features.musicnn_input).
A run computes only what its model reads: a CNN never pays for the harmonic / percussive split, a musicnn probe
for neither table nor images. Each representation's cache key hashes only the parameters that shape it, so a
change of `mel.*` leaves the feature rows valid, and the other way round.

No TensorFlow here: `prepare` and the extraction workers import this.
"""

from __future__ import annotations

from dataclasses import asdict

from genre_tf.config import AudioConfig, ConfigError, FeatureConfig, MelConfig, ModelConfig
from genre_tf.features.musicnn_input import MUSICNN_MODELS

FEATURES = "features"  # rows of the feature table
MEL_IMAGE = "mel_image"  # the cached log-mel PNG of a segment
MUSICNN_PATCH = "musicnn_patch"  # the cached 16 kHz mel power patch of a segment, float16-rounded
ALL = (FEATURES, MEL_IMAGE, MUSICNN_PATCH)

# The per-segment representations' cached files: the column of a prepared segment table that holds a segment's file
# (or, read from shards, its bytes), and the file's name in a track's cache entry.
PATH_COLUMNS = {MEL_IMAGE: "mel_path", MUSICNN_PATCH: "musicnn_path"}
SEGMENT_FILES = {MEL_IMAGE: "mel_{:04d}.png", MUSICNN_PATCH: "musicnn_{:04d}.f16"}

# Bumped when a representation's recipe changes what it computes: its entries are then made again, the others kept.
VERSIONS = {FEATURES: "1", MEL_IMAGE: "1", MUSICNN_PATCH: "1"}


def read_by(model: ModelConfig) -> str:
    """The representation a configured model reads: the one place that maps model kinds to inputs."""
    if model.kind == "mlp":
        return FEATURES
    if model.kind == "cnn":
        return MEL_IMAGE
    if model.kind == "transfer":
        return MUSICNN_PATCH if model.transfer.backbone in MUSICNN_MODELS else MEL_IMAGE
    raise ConfigError("model.kind", f"must be one of mlp, cnn, transfer, got {model.kind!r}")


def check(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The names, validated and in the order of ALL (so that equal sets compare equal)."""
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        raise ConfigError("representations", f"must be among {', '.join(ALL)}, got {', '.join(unknown)}")
    return tuple(name for name in ALL if name in names)


def shaping_parameters(name: str, audio: AudioConfig, features: FeatureConfig, mel: MelConfig) -> dict:
    """Every parameter that shapes a representation's content, for its cache key.

    The audio settings decide the waveform and its segments for all three; `audio.short_clips` is a policy applied
    when entries are read, not content, so predicting on training audio finds the training entries. Mel images
    take their STFT padding from `features.pad_mode`; musicnn patches have a fixed recipe of their own.
    """
    spec = {"audio": {k: v for k, v in asdict(audio).items() if k != "short_clips"}, "version": VERSIONS[name]}
    if name == FEATURES:
        spec["features"] = asdict(features)
    elif name == MEL_IMAGE:
        spec["mel"] = {**asdict(mel), "pad_mode": features.pad_mode}
    return {"representation": name, **spec}
