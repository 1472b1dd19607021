"""Tests for genre_tf.features.analysis: values on tiny synthetic clips, and agreement with the published GTZAN
table."""

from __future__ import annotations

import csv
import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
from PIL import Image

from genre_tf.config import FeatureConfig, MelConfig
from genre_tf.features.analysis import (
    FEATURE_COLUMNS,
    _chroma,
    _estimate_tuning,
    analyse_track,
    decode_mel_png,
    encode_mel_png,
    feature_columns,
    mel_frames_per_segment,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SR = 22050
HOP = 512
FEATURES = FeatureConfig()
MEL = MelConfig()
SAMPLE_COLUMNS = {"harmony_mean", "harmony_var", "perceptr_mean", "perceptr_var"}  # averaged over samples


def column(name: str) -> int:
    return FEATURE_COLUMNS.index(name)


def tone(freq: float, n_samples: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n_samples) / SR)).astype(np.float32)


def noise(n_samples: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n_samples)).astype(np.float32)


def music_like(seconds: float) -> np.ndarray:
    """Two tones, noise, and a click every 0.5 s (120 BPM) so every feature has something to measure."""
    n = int(seconds * SR)
    clicks = np.zeros(n, dtype=np.float32)
    clicks[:: SR // 2] = 1.0
    return tone(440.0, n) + 0.5 * tone(660.0, n) + noise(n) + np.convolve(clicks, np.hanning(64), "same")


def test_feature_columns_follow_the_published_order():
    assert len(FEATURE_COLUMNS) == 57
    assert FEATURE_COLUMNS[:4] == ["chroma_stft_mean", "chroma_stft_var", "rms_mean", "rms_var"]
    assert FEATURE_COLUMNS[14:19] == ["perceptr_mean", "perceptr_var", "tempo", "mfcc1_mean", "mfcc1_var"]
    assert FEATURE_COLUMNS[-1] == "mfcc20_var"
    assert len(feature_columns(13)) == 43 and feature_columns(13)[-1] == "mfcc13_var"


def test_pure_tone_centroid_and_chroma_peak():
    y = tone(440.0, 2 * SR)
    analysis = analyse_track(y, SR, FEATURES, MEL, [])
    assert analysis.track_row[column("spectral_centroid_mean")] == pytest.approx(440.0, rel=0.02)
    assert analysis.track_row[column("spectral_bandwidth_mean")] < 100.0
    power = np.abs(librosa.stft(y, pad_mode="reflect")) ** 2
    chroma = _chroma(power, SR, FEATURES.n_fft).mean(axis=1)
    assert np.argmax(chroma) == 9  # pitch classes start at C: A is 9
    assert chroma[9] > 0.99 and np.delete(chroma, 9).max() < 0.5


@pytest.mark.parametrize("cents", [0.0, 23.0, -41.0])
def test_tuning_estimate_equals_librosa(cents: float):
    y = tone(440.0 * 2 ** (cents / 1200), SR) + tone(523.25 * 2 ** (cents / 1200), SR) + noise(SR)
    power = np.abs(librosa.stft(y, pad_mode="reflect")) ** 2
    assert _estimate_tuning(power, SR, FEATURES.n_fft) == librosa.estimate_tuning(S=power, sr=SR)


@pytest.mark.parametrize(
    "features",
    [FEATURES, FeatureConfig(n_fft=1024, hop_length=300, n_mfcc=13, pad_mode="constant")],
    ids=["published", "other-stft"],
)
def test_track_row_equals_librosa_features_computed_one_by_one(features: FeatureConfig):
    y = music_like(4.0)
    stft = {"n_fft": features.n_fft, "hop_length": features.hop_length, "pad_mode": features.pad_mode}
    frames = {"frame_length": features.n_fft, "hop_length": features.hop_length}
    kept = (len(y) // features.hop_length) * features.hop_length  # harmonic / percussive are zero after this
    onset = librosa.onset.onset_strength(y=y, sr=SR, aggregate=np.median, **stft)
    per_feature = [
        librosa.feature.chroma_stft(y=y, sr=SR, **stft),
        librosa.feature.rms(y=y, pad_mode=features.pad_mode, **frames),
        librosa.feature.spectral_centroid(y=y, sr=SR, **stft),
        librosa.feature.spectral_bandwidth(y=y, sr=SR, **stft),
        librosa.feature.spectral_rolloff(y=y, sr=SR, **stft),
        librosa.feature.zero_crossing_rate(y, **frames),
        librosa.effects.harmonic(y, **stft)[:kept],
        librosa.effects.percussive(y, **stft)[:kept],
    ]
    expected = []
    for values, n in zip(per_feature, [None] * 6 + [len(y)] * 2, strict=True):
        total = values.size if n is None else n  # zeros after `kept` count in the mean and variance
        mean = values.sum(dtype=np.float64) / total
        expected += [mean, (values.astype(np.float64) ** 2).sum() / total - mean**2]
    expected.append(librosa.feature.tempo(onset_envelope=onset, sr=SR, hop_length=features.hop_length)[0])
    for coefficient in librosa.feature.mfcc(y=y, sr=SR, n_mfcc=features.n_mfcc, **stft):
        expected += [coefficient.mean(dtype=np.float64), coefficient.var(dtype=np.float64)]

    row = analyse_track(y, SR, features, MEL, []).track_row
    assert len(row) == len(feature_columns(features.n_mfcc))
    np.testing.assert_allclose(row, expected, rtol=2e-5, atol=1e-8)


def test_segment_rows_are_slices_and_pool_to_the_track_row():
    segment = 64 * HOP
    # silence, then noise; one sample short, so the clip's frame centres fall exactly into the two segments
    y = np.concatenate([np.zeros(segment, dtype=np.float32), noise(segment - 1)])
    analysis = analyse_track(y, SR, FEATURES, MEL, [(0, segment), (segment, 2 * segment)])
    quiet, loud = analysis.segment_rows
    for name in ("rms_mean", "zero_crossing_rate_mean", "harmony_var", "perceptr_var", "spectral_bandwidth_mean"):
        assert quiet[column(name)] < 0.05 * loud[column(name)], name

    # the track row is the pooled mean / variance of the segment rows: 64 frames each, samples 1 apart
    for name in (c for c in FEATURE_COLUMNS if c.endswith("_mean")):
        i_mean, i_var = column(name), column(name.replace("_mean", "_var"))
        weights = np.array([segment, segment - 1] if name in SAMPLE_COLUMNS else [1, 1], dtype=np.float64)
        weights /= weights.sum()
        means, variances = analysis.segment_rows[:, i_mean], analysis.segment_rows[:, i_var]
        pooled_mean = weights @ means
        pooled_var = weights @ (variances + means**2) - pooled_mean**2
        assert analysis.track_row[i_mean] == pytest.approx(pooled_mean, rel=1e-9, abs=1e-12), name
        assert analysis.track_row[i_var] == pytest.approx(pooled_var, rel=1e-6, abs=1e-12), name


def test_silence_and_tiny_segments_stay_finite():
    y = np.zeros(SR, dtype=np.float32)
    segments = [(0, HOP), (HOP, 2 * HOP), (2 * SR, 2 * SR + HOP)]  # the last lies past the end of the track
    analysis = analyse_track(y, SR, FEATURES, MEL, segments)
    assert np.isfinite(analysis.track_row).all() and np.isfinite(analysis.segment_rows).all()
    assert np.all(analysis.segment_rows[2] == 0.0)
    assert analysis.mel_segments.shape == (3, MEL.n_mels, 2)
    # 10 log10(amin) = -100 dB: silence, inside the track or past its end
    np.testing.assert_allclose(analysis.mel_segments, -100.0, atol=1e-3)
    assert analysis.musicnn_segments.shape[0] == 3 and not analysis.musicnn_segments.any()  # zero power

    noisy = analyse_track(noise(SR), SR, FEATURES, MEL, segments)
    assert np.isfinite(noisy.segment_rows).all()
    assert noisy.segment_rows[0, column("tempo")] > 0


@pytest.mark.parametrize(
    "mel",
    [MEL, MelConfig(n_mels=64, n_fft=1024, hop_length=256, fmin=50.0, fmax=8000.0)],
    ids=["shared-stft", "own-stft"],
)
def test_mel_images_are_the_clip_spectrogram_sliced_per_segment(mel: MelConfig):
    y = music_like(3.0)
    segment = 32 * HOP
    analysis = analyse_track(y, SR, FEATURES, mel, [(0, segment), (segment, 2 * segment)])
    frames = mel_frames_per_segment(segment, mel)
    assert frames == 1 + segment // mel.hop_length
    assert analysis.mel_segments.shape == (2, mel.n_mels, frames)
    assert analysis.mel_segments.dtype == np.float32

    # away from its edges, a segment's image equals librosa's log-mel of the segment on its own
    alone = librosa.feature.melspectrogram(
        y=y[segment : 2 * segment],
        sr=SR,
        n_fft=mel.n_fft,
        hop_length=mel.hop_length,
        n_mels=mel.n_mels,
        fmin=mel.fmin,
        fmax=mel.fmax,
        pad_mode="reflect",
    )
    edge = mel.n_fft // (2 * mel.hop_length)
    np.testing.assert_allclose(
        analysis.mel_segments[1][:, edge:-edge], librosa.power_to_db(alone, top_db=None)[:, edge:-edge], atol=1e-3
    )


def test_png_round_trip_within_one_quantisation_step():
    step = (MEL.db_ceiling - MEL.db_floor) / 65535
    mel_db = np.random.default_rng(1).uniform(MEL.db_floor, MEL.db_ceiling, (MEL.n_mels, 130)).astype(np.float32)
    data = encode_mel_png(mel_db, MEL)
    assert data == encode_mel_png(mel_db.copy(), MEL)  # deterministic bytes
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[24:26] == bytes([16, 0])  # 16-bit, grayscale
    decoded = decode_mel_png(data, MEL)
    assert decoded.shape == mel_db.shape and decoded.dtype == np.float32
    assert np.abs(decoded - mel_db).max() <= step


def test_png_puts_the_highest_band_on_top_and_clips():
    ramp = np.repeat(np.linspace(-120.0, 60.0, MEL.n_mels, dtype=np.float32)[:, None], 5, axis=1)
    data = encode_mel_png(ramp, MEL)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (5, MEL.n_mels)
        pixels = np.asarray(image)
    assert pixels[0, 0] == 65535 and pixels[-1, 0] == 0  # row 0 is the highest mel band
    decoded = decode_mel_png(data, MEL)
    assert decoded[0, 0] == MEL.db_floor and decoded[-1, 0] == MEL.db_ceiling


def test_track_rows_match_the_published_gtzan_table(monkeypatch: pytest.MonkeyPatch):
    table = SHARED_DATA / "gtzan_features" / "features_30_sec_labeled.csv"
    clip_dir = SHARED_DATA / "gtzan_mini"
    if not (table.is_file() and clip_dir.is_dir()):
        pytest.skip(f"../shared/data not found: {SHARED_DATA} holds no gtzan_features table and gtzan_mini clips")
    with table.open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert [c for c in reader.fieldnames if c not in ("filename", "length", "label", "split")] == FEATURE_COLUMNS
    published = {row["filename"]: [float(row[c]) for c in FEATURE_COLUMNS] for row in rows}
    column_std = np.std(list(published.values()), axis=0, ddof=1)
    paths = [p for p in sorted(clip_dir.glob("*/*.flac")) if f"{p.stem}.wav" in published]
    assert len(paths) == 96
    waves = [soundfile.read(p, dtype="float32") for p in paths]  # the original 16-bit samples, no resampling

    # spawn, not fork: other tests may have started TensorFlow's threads in this process
    spawn = multiprocessing.get_context("spawn")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # two workers on two cores: no BLAS threads on top
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        analyses = pool.map(analyse_track, *zip(*waves, strict=True), repeat(FEATURES), repeat(MEL), repeat([]))
        ours = np.array([analysis.track_row for analysis in analyses])
    expected = np.array([published[f"{p.stem}.wav"] for p in paths])

    deviation = np.abs(ours - expected) / column_std
    tempo = column("tempo")
    worst = np.delete(deviation, tempo, axis=1).max(axis=0)
    names = [c for c in FEATURE_COLUMNS if c != "tempo"]
    print(f"\nworst column: {names[worst.argmax()]}, {worst.max():.2e} column std")
    assert worst.max() <= 0.01, f"{names[worst.argmax()]} is {worst.max():.3f} column std off"
    tempo_agrees = int((np.abs(ours[:, tempo] - expected[:, tempo]) <= 2.0).sum())
    print(f"tempo within 2 BPM of the published value: {tempo_agrees} of {len(paths)} clips")
    assert tempo_agrees >= 90
