"""Decode, check, mix down, resample and segment audio tracks: the only module that opens audio files.

Every container (WAV, AU, FLAC, OGG Vorbis, MP3) is decoded by libsndfile through soundfile, which
recognises a file by its content, not its name: an MP3 stream saved as `.wav` decodes as MP3.
Anything unusable raises `AudioError`, whose message is one line meant for a person.
No TensorFlow here: this module runs in extraction worker processes and must start fast.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from genre_tf.features.formats import AUDIO_EXTENSIONS  # noqa: F401  (named here before formats.py)
from genre_tf.features.resampling import soxr_hq

if TYPE_CHECKING:  # the type only: decoding needs neither the config's YAML nor librosa (serving.litert's venv)
    from genre_tf.config import AudioConfig

# Leading bytes of the containers we read, to tell a damaged audio file from something that never was one.
_MAGIC = {b"RIFF": "WAV", b"RIFX": "WAV", b"RF64": "WAV", b".snd": "AU", b"fLaC": "FLAC", b"OggS": "OGG", b"ID3": "MP3"}
_HEADER_BYTES = 1024  # a recognised file that libsndfile cannot open and is this small has lost its header


class AudioError(Exception):
    """An unusable audio file; str(err) is a one-line reason such as `empty file (0 bytes)`."""


def load_track(path: Path | str, cfg: AudioConfig) -> np.ndarray:
    """Float32 mono waveform of `path` at cfg.sample_rate, at most cfg.max_duration seconds; raises AudioError."""
    seconds = cfg.max_duration if cfg.duration is None else min(cfg.max_duration, cfg.duration)
    with _open(Path(path)) as f:
        native_rate = f.samplerate
        try:
            # A frame limit, so a 3-hour file costs no more than max_duration seconds of memory.
            frames = f.read(round(seconds * native_rate), dtype="float32", always_2d=True)
        except sf.SoundFileRuntimeError as err:
            raise AudioError(f"corrupt {f.format} data: {_libsndfile_reason(err)}") from None
    if frames.size == 0:
        raise AudioError("no audio frames")
    if len(frames) < cfg.min_seconds * native_rate:  # a fragment gives no genre worth a confident answer
        raise AudioError(f"too short ({len(frames) / native_rate:.2f} s < audio.min_seconds {cfg.min_seconds:g} s)")
    if not np.isfinite(frames).all():
        raise AudioError("contains NaN or inf samples")
    waveform = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)  # mono: a view, not a copy
    rms = float(np.sqrt(np.mean(np.square(waveform), dtype=np.float64)))
    if rms < cfg.silence_rms:
        raise AudioError(f"silent (RMS {rms:.3g} < audio.silence_rms {cfg.silence_rms:g})")
    if native_rate != cfg.sample_rate:
        waveform = soxr_hq(waveform, native_rate, cfg.sample_rate)
    if cfg.duration is not None:
        waveform = _fit_length(waveform, round(cfg.duration * cfg.sample_rate))
    return waveform.astype(np.float32, copy=False)


def track_seconds(path: Path | str) -> float:
    """Length of `path` in seconds as its header gives it, without decoding; raises AudioError as load_track would."""
    with _open(Path(path)) as f:
        return f.frames / f.samplerate


def check_extension(name: str) -> None:
    """Raise AudioError unless `name` ends in an audio extension (the decoder does not guess from other names)."""
    suffix = Path(name).suffix
    if suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioError(f"unsupported extension {suffix or '(none)'}")


def segment_samples(cfg: AudioConfig) -> int:
    """Samples in one segment at the configured rate."""
    return round(cfg.segment_seconds * cfg.sample_rate)


def segment_hop_samples(cfg: AudioConfig) -> int:
    """Samples from one segment's start to the next one's: segment k starts at k times this."""
    return round((cfg.segment_hop or cfg.segment_seconds) * cfg.sample_rate)


def spread_segments(n_segments: int, limit: int | None) -> list[int]:
    """Which of a track's `n_segments` to keep: the middle segment of each of min(n_segments, limit) equal parts,
    which is every segment up to `limit` and `limit` evenly spread beyond it (integers only: the exported graph
    computes the same)."""
    keep = n_segments if limit is None else min(n_segments, limit)
    return [(2 * j + 1) * n_segments // (2 * keep) for j in range(keep)]


def segment_bounds(n_samples: int, cfg: AudioConfig) -> list[tuple[int, int]]:
    """(start, end) sample ranges of the equal-length segments a track keeps (at most audio.max_segments_per_track,
    evenly spread); [] when the track is shorter than one segment."""
    length, hop = segment_samples(cfg), segment_hop_samples(cfg)
    n_segments = max(0, (n_samples - length) // hop + 1)
    return [(k * hop, k * hop + length) for k in spread_segments(n_segments, cfg.max_segments_per_track)]


def tile_to_segment(waveform: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """A clip shorter than one segment repeated end to end to fill exactly one segment.

    Repeating keeps the clip's timbre, rhythm and level in every frame; zero padding would add
    silence the models never saw in training.
    """
    return np.resize(waveform, segment_samples(cfg)).astype(np.float32)


def _fit_length(waveform: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim `waveform` to `n_samples`, or zero-pad its end up to it."""
    if len(waveform) >= n_samples:
        return waveform[:n_samples]
    return np.pad(waveform, (0, n_samples - len(waveform)))


def _open(path: Path) -> sf.SoundFile:
    """Open `path` for reading, deciding the format from its content; raises AudioError."""
    _check_path(path)
    try:
        return sf.SoundFile(path)
    except sf.LibsndfileError as err:
        raise AudioError(_unopenable_reason(path, _libsndfile_reason(err))) from None


def _check_path(path: Path) -> None:
    """Reject what is not worth handing to the decoder, with the reason a person would want."""
    if path.is_dir():
        raise AudioError("is a directory")
    if not path.exists():
        raise AudioError("file not found")
    check_extension(path.name)
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")


def _unopenable_reason(path: Path, decoder_reason: str) -> str:
    """Why libsndfile could not open `path`, judged from its first bytes and size."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEADER_BYTES)
    except OSError as err:
        return f"cannot read: {err.strerror}"
    container = next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)
    if container is None and len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        container = "MP3"  # an MPEG frame sync word: MP3 without an ID3 tag
    if container is None:
        return "not an audio file (text)" if _is_text(head) else f"not an audio file ({decoder_reason})"
    if len(head) < _HEADER_BYTES:
        return f"truncated header ({container}, {len(head)} bytes)"
    return f"corrupt {container} file: {decoder_reason}"


def _is_text(head: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # not final: a character cut at the end is fine
    except UnicodeDecodeError:
        return False
    return b"\0" not in head


def _libsndfile_reason(err: sf.SoundFileRuntimeError) -> str:
    """libsndfile's own words, without the `Error opening '<path>': ` prefix."""
    reason = getattr(err, "error_string", None) or str(err).rsplit("': ", 1)[-1]
    return reason.removeprefix("Error : ").strip().rstrip(".")
