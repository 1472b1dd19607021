"""Feature-table rows, log-mel images and musicnn patches of a track: the ones asked for, from one STFT per clip.

The recipe reproduces the published GTZAN feature table (Kaggle `features_30_sec.csv`), made with older librosa
defaults: reflect-padded STFT, RMS over reflect-padded frames, harmonic / percussive waveforms that are zero after
the last full hop (old `istft` returned `(n_frames - 1) * hop` samples, then `fix_length` zero-padded them), and
`librosa.beat.beat_track`'s tempo, whose onset envelope is the median over mel bands. Each feature equals what the
librosa function computes on its own, to float rounding. Every per-frame matrix is computed once per clip; a
segment's row is the mean / variance of the frames (or samples) inside its range: slicing, not recomputation.
Only the representations asked for are computed (genre_tf.features.representations); the mel images reuse the feature
table's STFT when both are asked for and their frames agree, and are the same bytes either way.

No TensorFlow here: this module runs in extraction worker processes.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import bottleneck
import librosa
import numpy as np
import scipy.fft
from PIL import Image

from genre_tf.config import FeatureConfig, MelConfig
from genre_tf.features import musicnn_input
from genre_tf.features.mel import PNG_MAX, db_to_unit, mel_fmax, sparse_mel_filter_bank, unit_to_db
from genre_tf.features.representations import ALL, FEATURES, MEL_IMAGE, MUSICNN_PATCH

HPSS_KERNEL = 31  # librosa.decompose.hpss default, both directions
TUNING_BAND_HZ = (150.0, 4000.0)  # librosa.piptrack defaults, as used by estimate_tuning


def feature_columns(n_mfcc: int = 20) -> list[str]:
    """Feature-table column names in the published order, with `n_mfcc` MFCC columns."""
    names = ["chroma_stft", "rms", "spectral_centroid", "spectral_bandwidth", "rolloff", "zero_crossing_rate"]
    names += ["harmony", "perceptr"]
    stats = [f"{name}_{stat}" for name in names for stat in ("mean", "var")]
    mfccs = [f"mfcc{i}_{stat}" for i in range(1, n_mfcc + 1) for stat in ("mean", "var")]
    return [*stats, "tempo", *mfccs]


FEATURE_COLUMNS = feature_columns(20)


@dataclass
class TrackAnalysis:
    """What one track yields, of the representations asked for (None for the others): its feature-table row and
    one row per segment, a log-mel image and a musicnn patch per segment."""

    track_row: np.ndarray | None = None  # (n_columns,) float64, features over the whole track
    segment_rows: np.ndarray | None = None  # (n_segments, n_columns) float64, the same features per segment
    mel_segments: np.ndarray | None = None  # (n_segments, n_mels, frames) float32, log-mel dB (ref 1.0 power)
    musicnn_segments: np.ndarray | None = None  # (n_segments, frames, 96) float16 16 kHz mel power (musicnn_input)


@dataclass
class _ClipFrames:
    """Per-frame (or per-sample) matrices of a whole clip, ready to be sliced by segment."""

    chroma: np.ndarray  # (12, T), whose mean / var is taken over all its values
    series: np.ndarray  # (5 + n_mfcc, T) float64: rms, centroid, bandwidth, rolloff, zcr, then the MFCCs
    waves: np.ndarray  # (2, n_samples): harmonic, percussive
    onset_env: np.ndarray  # (T,)


def mel_frames_per_segment(segment_samples: int, mel: MelConfig) -> int:
    """Frames of a centred STFT of one segment: what librosa gives for the segment on its own."""
    return 1 + segment_samples // mel.hop_length


def mel_first_frame(start: int, mel: MelConfig) -> int:
    """The clip's first mel frame centred at or after sample `start`: where a segment's mel image begins."""
    return -(-start // mel.hop_length)


def analyse_track(
    y: np.ndarray,
    sr: int,
    features: FeatureConfig,
    mel: MelConfig,
    segments: list[tuple[int, int]],
    representations: tuple[str, ...] = ALL,
) -> TrackAnalysis:
    """The representations asked for of a mono float32 waveform: feature-table rows (track and per segment),
    per-segment log-mel images, per-segment musicnn patches."""
    y = np.ascontiguousarray(y, dtype=np.float32)
    analysis = TrackAnalysis()
    power = mfcc_mel_power = None
    if FEATURES in representations:
        hop = features.hop_length
        stft = librosa.stft(y, n_fft=features.n_fft, hop_length=hop, pad_mode=features.pad_mode)
        magnitude = np.abs(stft)
        power = magnitude**2
        mfcc_mel_power = sparse_mel_filter_bank(sr, features.n_fft, 128, 0.0, sr / 2) @ power  # librosa's defaults
        clip = _clip_frames(y, sr, features, stft, magnitude, power, mfcc_mel_power)
        n_frames = stft.shape[1]
        analysis.track_row = _row(clip, slice(None), slice(None), sr, hop)
        rows = [_row(clip, _frame_range(s, e, hop, n_frames), slice(s, e), sr, hop) for s, e in segments]
        analysis.segment_rows = np.array(rows, dtype=np.float64).reshape(len(segments), len(analysis.track_row))
    if MEL_IMAGE in representations:
        analysis.mel_segments = _mel_segments(y, sr, features, mel, power, mfcc_mel_power, segments)
    if MUSICNN_PATCH in representations:
        frames = musicnn_input.patch_frames((segments[0][1] - segments[0][0]) / sr) if segments else 0
        analysis.musicnn_segments = musicnn_input.segment_patches(y, sr, segments, frames)
    return analysis


def _clip_frames(
    y: np.ndarray,
    sr: int,
    features: FeatureConfig,
    stft: np.ndarray,
    magnitude: np.ndarray,
    power: np.ndarray,
    mel_power: np.ndarray,
) -> _ClipFrames:
    """Every per-frame feature matrix of the clip, from its STFT (and waveform frames for rms / zcr)."""
    freqs = librosa.fft_frequencies(sr=sr, n_fft=features.n_fft)
    mel_db = librosa.power_to_db(mel_power)  # top_db=80 relative to the clip's loudest bin, as librosa does
    series = [
        librosa.feature.rms(
            y=y, frame_length=features.n_fft, hop_length=features.hop_length, pad_mode=features.pad_mode
        )[0],
        *_centroid_bandwidth(magnitude, freqs),
        _rolloff(magnitude, freqs),
        _frame_zcr(y, features),
        *scipy.fft.dct(mel_db, axis=0, type=2, norm="ortho")[: features.n_mfcc],
    ]
    return _ClipFrames(
        chroma=_chroma(power, sr, features.n_fft),
        series=np.array(series, dtype=np.float64),
        waves=_hpss_waves(stft, magnitude, len(y), features),
        onset_env=_onset_envelope(mel_db, features),
    )


def _row(clip: _ClipFrames, frames: slice, samples: slice, sr: int, hop: int) -> np.ndarray:
    """One feature-table row: mean and variance of each matrix over the given frames / samples."""
    series = _mean_var(clip.series[:, frames])
    return np.concatenate(
        [
            _mean_var(clip.chroma[:, frames].ravel()),
            series[:5].ravel(),
            _mean_var(clip.waves[:, samples]).ravel(),
            [_tempo(clip.onset_env[frames], sr, hop)],
            series[5:].ravel(),
        ]
    )


def _frame_range(start: int, end: int, hop: int, n_frames: int) -> slice:
    """Frames whose centre lies in [start, end): segments that tile the track split its frames exactly."""
    return slice(min(-(-start // hop), n_frames), min(-(-end // hop), n_frames))


def _mean_var(x: np.ndarray) -> np.ndarray:
    """Mean and variance along the last axis, shape (..., 2); zeros where there is nothing to average."""
    if x.shape[-1] == 0:  # a segment past the end of the track has no frames
        return np.zeros((*x.shape[:-1], 2))
    return np.stack([np.mean(x, axis=-1, dtype=np.float64), np.var(x, axis=-1, dtype=np.float64)], axis=-1)


@functools.lru_cache(maxsize=256)
def _chroma_basis(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    """librosa.filters.chroma, cached per tuning (estimates fall on a 0.01-bin grid)."""
    basis = librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning)
    basis.setflags(write=False)
    return basis


def _chroma(power: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    """librosa.feature.chroma_stft(S=power): tuning estimated once, columns max-normalised."""
    raw = _chroma_basis(sr, n_fft, _estimate_tuning(power, sr, n_fft)) @ power
    peak = raw.max(axis=0)
    peak[peak < np.finfo(raw.dtype).tiny] = 1.0  # silent frames stay zero, as librosa.util.normalize leaves them
    return raw / peak


def _estimate_tuning(power: np.ndarray, sr: int, n_fft: int) -> float:
    """librosa.estimate_tuning(S=power), same numbers, but evaluated on the piptrack band only."""
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    in_band = np.flatnonzero((TUNING_BAND_HZ[0] <= freqs) & (freqs < min(TUNING_BAND_HZ[1], sr / 2)))
    if in_band.size == 0:
        return 0.0
    # every quantity piptrack uses at bin f depends on bins f-1..f+1 only, so one extra bin each side suffices
    lo, hi = max(in_band[0] - 1, 0), min(in_band[-1] + 2, len(freqs))
    band = power[lo:hi]
    above = band * (band > 0.1 * power.max(axis=0))  # piptrack threshold=0.1 of each frame's peak, over all bins
    peaks = librosa.util.localmax(above, axis=0)
    peaks[: in_band[0] - lo] = False
    peaks[in_band[-1] + 1 - lo :] = False
    f, t = np.nonzero(peaks)
    if f.size == 0:
        return 0.0
    shift = _parabolic_shift(band, f, t)
    pitch = ((f + lo + shift) * (float(sr) / n_fft)).astype(np.float32)
    gradient = (band[f + 1, t] - band[f - 1, t]) / np.float32(2)  # np.gradient at an interior bin
    magnitude = band[f, t] + (np.float32(0.5) * gradient) * shift
    voiced = pitch > 0
    if not voiced.any():
        return 0.0
    threshold = np.median(magnitude[voiced])
    return float(librosa.pitch_tuning(pitch[(magnitude >= threshold) & voiced], bins_per_octave=12))


def _parabolic_shift(band: np.ndarray, f: np.ndarray, t: np.ndarray) -> np.ndarray:
    """librosa's parabolic peak interpolation at (f, t), with the float32/float64 steps of its numba stencil."""
    below, centre, above = band[f - 1, t], band[f, t], band[f + 1, t]
    a = (above + below).astype(np.float64) - 2 * centre.astype(np.float64)
    b = (above - below).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.abs(b) >= np.abs(a), 0.0, -b / a).astype(np.float32)


def _centroid_bandwidth(magnitude: np.ndarray, freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """librosa.feature.spectral_centroid and spectral_bandwidth (p=2), from the first three spectral moments."""
    moments = np.stack([np.ones_like(freqs), freqs, freqs**2]).astype(magnitude.dtype) @ magnitude
    total, first, second = moments.astype(np.float64)
    total[total < np.finfo(magnitude.dtype).tiny] = 1.0  # silent frames: centroid and bandwidth 0, as in librosa
    centroid = first / total
    # sum(w (f - c)^2) = E[f^2] - c^2; rounding can take it a hair below zero for a pure tone
    return centroid, np.sqrt(np.maximum(second / total - centroid**2, 0.0))


def _rolloff(magnitude: np.ndarray, freqs: np.ndarray, roll_percent: float = 0.85) -> np.ndarray:
    """librosa.feature.spectral_rolloff: lowest frequency below which roll_percent of the energy lies."""
    cumulative = np.cumsum(magnitude, axis=0)
    # the cumulative sum never decreases, so the first bin reaching the threshold = the count of bins below it
    below = (cumulative < roll_percent * cumulative[-1]).sum(axis=0)
    return freqs[below]


def _frame_zcr(y: np.ndarray, features: FeatureConfig) -> np.ndarray:
    """librosa.feature.zero_crossing_rate(y): edge-padded frames, |x| <= 1e-10 counts as zero (positive)."""
    n, hop = features.n_fft, features.hop_length
    negative = np.pad(y, n // 2, mode="edge").astype(np.float64) < -1e-10
    counts = np.concatenate([[0], np.cumsum(negative[1:] != negative[:-1])])
    starts = np.arange(1 + len(y) // hop) * hop
    # a frame of n samples holds n - 1 neighbour pairs; librosa divides by n
    return (counts[starts + n - 1] - counts[starts]) / n


def _median_filter(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """scipy.ndimage.median_filter(mode='reflect') along one axis, bit for bit, about 8x faster."""
    half = size // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)
    medians = bottleneck.move_median(np.pad(x, pad, mode="symmetric"), size, axis=axis)
    centred = [slice(None)] * x.ndim
    centred[axis] = slice(size - 1, None)  # move_median is trailing: the first size - 1 outputs are warm-up
    return medians[tuple(centred)]


def _hpss_waves(stft: np.ndarray, magnitude: np.ndarray, n_samples: int, features: FeatureConfig) -> np.ndarray:
    """Harmonic and percussive waveforms (2, n_samples) of librosa.effects.harmonic / percussive, from one STFT."""
    # librosa lays the STFT out frame by frame (Fortran order): work on (T, F) views so that every array agrees
    spectrum, magnitude = stft.T, magnitude.T
    harmonic = _median_filter(magnitude, HPSS_KERNEL, axis=0)  # along time
    percussive = _median_filter(magnitude, HPSS_KERNEL, axis=1)  # along frequency
    # old librosa istft stopped after (n_frames - 1) * hop samples; the published table has zeros after that
    kept = (len(spectrum) - 1) * features.hop_length
    waves = np.zeros((2, n_samples), dtype=np.float32)
    waves[:, :kept] = _istft(spectrum * _soft_masks(harmonic, percussive), features.n_fft, features.hop_length, kept)
    return waves


def _soft_masks(harmonic: np.ndarray, percussive: np.ndarray) -> np.ndarray:
    """librosa.util.softmask(power=2, split_zeros=True) of each part against the other, stacked."""
    larger = np.maximum(harmonic, percussive)
    silent = larger < np.finfo(larger.dtype).tiny
    larger[silent] = 1.0
    masks = np.stack([harmonic, percussive]) / larger  # scaled by the larger part so the squares cannot overflow
    masks **= 2
    total = masks[0] + masks[1]
    total[silent] = 1.0
    masks /= total
    masks[:, silent] = 0.5
    return masks


def _istft(frames_first: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """librosa.istft (hann, centred) of stacked spectrograms (..., T, F), by whole-array FFT and block overlap-add."""
    n_frames = frames_first.shape[-2]
    frames = scipy.fft.irfft(frames_first, n=n_fft, axis=-1)  # (..., T, n_fft)
    frames *= librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    blocks = -(-n_fft // hop)
    if blocks * hop != n_fft:
        frames = np.pad(frames, [(0, 0)] * (frames.ndim - 1) + [(0, blocks * hop - n_fft)])
    frames = frames.reshape(*frames.shape[:-1], blocks, hop)
    # frame t's block j lands on output block t + j: one vectorised add per block instead of one per frame
    signal = np.zeros((*frames.shape[:-3], n_frames + blocks - 1, hop), dtype=np.float32)
    for j in range(blocks):
        signal[..., j : j + n_frames, :] += frames[..., j, :]
    signal = signal.reshape(*signal.shape[:-2], -1)[..., : n_fft + hop * (n_frames - 1)]
    envelope = librosa.filters.window_sumsquare(
        window="hann", n_frames=n_frames, hop_length=hop, n_fft=n_fft, dtype=np.float32
    )
    envelope[envelope <= np.finfo(np.float32).tiny] = 1.0  # librosa leaves those samples undivided
    signal /= envelope
    return signal[..., n_fft // 2 : n_fft // 2 + length]


def _onset_envelope(mel_db: np.ndarray, features: FeatureConfig) -> np.ndarray:
    """Onset strength as librosa.beat.beat_track computes it (median over mel bands), from the clip's mel dB."""
    # the published tempo column is beat_track's: with the median it matches 96 of 96 clips, with the mean 68
    flux = np.median(np.maximum(0.0, mel_db[:, 1:] - mel_db[:, :-1]), axis=0)
    lead = 1 + features.n_fft // (2 * features.hop_length)
    return np.pad(flux, (lead, 0))[: mel_db.shape[1]]


def _tempo(onset_env: np.ndarray, sr: int, hop: int) -> float:
    """librosa.feature.tempo of an onset envelope (BPM); 0 for an empty one."""
    if onset_env.size == 0:
        return 0.0
    return float(librosa.feature.tempo(onset_envelope=onset_env, sr=sr, hop_length=hop)[0])


def _mel_segments(
    y: np.ndarray,
    sr: int,
    features: FeatureConfig,
    mel: MelConfig,
    power: np.ndarray | None,
    mfcc_mel_power: np.ndarray | None,
    segments: list[tuple[int, int]],
) -> np.ndarray:
    """Log-mel dB of each segment, frames sliced from the clip's mel spectrogram; `power`, `mfcc_mel_power`: the
    feature table's STFT power and MFCC mel power where it was computed (None: not asked for)."""
    fmax = mel_fmax(mel, sr)
    if power is None or (mel.n_fft, mel.hop_length) != (features.n_fft, features.hop_length):
        stft = librosa.stft(y, n_fft=mel.n_fft, hop_length=mel.hop_length, pad_mode=features.pad_mode)
        mel_power = sparse_mel_filter_bank(sr, mel.n_fft, mel.n_mels, mel.fmin, fmax) @ (np.abs(stft) ** 2)
    elif (mel.n_mels, mel.fmin, fmax) == (128, 0.0, sr / 2):
        mel_power = mfcc_mel_power
    else:
        mel_power = sparse_mel_filter_bank(sr, mel.n_fft, mel.n_mels, mel.fmin, fmax) @ power
    mel_db = librosa.power_to_db(mel_power, top_db=None)
    silence_db = librosa.power_to_db(np.float32(0.0), top_db=None)
    if not segments:
        return np.zeros((0, mel.n_mels, 0), dtype=np.float32)
    n_frames = mel_frames_per_segment(segments[0][1] - segments[0][0], mel)
    images = np.full((len(segments), mel.n_mels, n_frames), silence_db, dtype=np.float32)
    for image, (start, _) in zip(images, segments, strict=True):
        first = mel_first_frame(start, mel)
        frames = mel_db[:, first : first + n_frames]  # frames past the end of the track stay silent
        image[:, : frames.shape[1]] = frames
    return images


def encode_mel_png(mel_db: np.ndarray, mel: MelConfig) -> bytes:
    """16-bit grayscale PNG of a log-mel image; [db_floor, db_ceiling] maps to 0..65535, row 0 = highest band."""
    pixels = np.round(db_to_unit(mel_db, mel)[::-1] * PNG_MAX).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)  # no metadata: same image, same bytes
    return buffer.getvalue()


def decode_mel_png(data: bytes, mel: MelConfig) -> np.ndarray:
    """Log-mel dB (n_mels, frames) float32 from `encode_mel_png` bytes, within one quantisation step."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image, dtype=np.float64)
    return unit_to_db(pixels[::-1] / PNG_MAX, mel).astype(np.float32)
