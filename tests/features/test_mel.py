"""The log-mel image recipe: dB mapping, model-input images, and the in-graph layers pinned to what they repeat: the
log-mel to the cached PNGs, musicnn's mel power to the cached patches, the feature scalers to the saved scalers."""

from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from scipy.stats import norm

from genre_tf.config import AudioConfig, FeatureConfig, MelConfig
from genre_tf.features import musicnn_input
from genre_tf.features.analysis import analyse_track, decode_mel_png, encode_mel_png
from genre_tf.features.audio import segment_bounds
from genre_tf.features.mel import PNG_MAX, db_to_unit, mel_filter_bank, unit_to_db
from genre_tf.features.scaling import fit_scaler
from genre_tf.inputs.layers import (
    LogMelImage,
    MelImage,
    MusicnnMelPower,
    QuantileScaling,
    StandardScaling,
    normal_quantile,
)
from genre_tf.inputs.pipeline import png_to_unit

CLIP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gtzan_mini" / "blues" / "blues.00000.flac"


def test_db_maps_onto_the_unit_range_and_back():
    mel = MelConfig(db_floor=-80.0, db_ceiling=40.0)
    db = np.array([-100.0, -80.0, -20.0, 40.0, 55.0])
    unit = db_to_unit(db, mel)
    np.testing.assert_allclose(unit, [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(unit_to_db(unit[1:4], mel), db[1:4])


def test_filter_bank_is_librosas_slaney_bank_and_read_only():
    bank = mel_filter_bank(22050, 2048, 64, 0.0, 11025.0)
    np.testing.assert_array_equal(bank, librosa.filters.mel(sr=22050, n_fft=2048, n_mels=64))
    assert not bank.flags.writeable and mel_filter_bank(22050, 2048, 64, 0.0, 11025.0) is bank


def test_mel_image_sizes_and_makes_channels():
    mel = MelConfig(n_mels=16)
    db = np.linspace(mel.db_floor, mel.db_ceiling, 16 * 20, dtype=np.float32).reshape(16, 20)
    unit = png_to_unit(tf.constant(encode_mel_png(db, mel)))
    repeat = MelImage((8, 10), channels=3, channel_mode="repeat")(unit)
    assert repeat.shape == (8, 10, 3) and np.allclose(repeat[..., 0], repeat[..., 2])
    assert MelImage((8, 10))(unit).shape == (8, 10, 1)
    deltas = MelImage((16, 20), channels=3, channel_mode="deltas")(unit)
    np.testing.assert_allclose(deltas[:, 1:-1, 1], (unit[:, 2:, 0] - unit[:, :-2, 0]) / 2, atol=1e-6)
    np.testing.assert_allclose(deltas[:, 0, 1], (unit[:, 1, 0] - unit[:, 0, 0]) / 2, atol=1e-6)  # edge repeated
    batched = MelImage((8, 10), channels=3, channel_mode="deltas")(unit[None])
    np.testing.assert_allclose(batched[0], MelImage((8, 10), channels=3, channel_mode="deltas")(unit), atol=1e-6)


def cached_and_in_graph(y: np.ndarray, sr: int, mel: MelConfig, audio: AudioConfig) -> tuple[np.ndarray, np.ndarray]:
    """Unit images of every segment as the cache stores them (decoded PNGs), and as LogMelImage computes them."""
    bounds = segment_bounds(len(y), audio)
    analysis = analyse_track(y, sr, FeatureConfig(), mel, bounds)
    cached = np.stack([db_to_unit(decode_mel_png(encode_mel_png(m, mel), mel), mel) for m in analysis.mel_segments])
    whole = LogMelImage(sr, vars(mel))(y[None])[0, ..., 0].numpy()[::-1]  # (n_mels, frames), lowest band first
    frames = analysis.mel_segments.shape[-1]
    whole = np.pad(whole, [(0, 0), (0, frames)])  # frames past the end of the track are silent (unit 0)
    starts = [-(-start // mel.hop_length) for start, _ in bounds]  # the cache slices the clip's frames so
    return cached, np.stack([whole[:, s : s + frames] for s in starts])


@pytest.mark.parametrize("mel", [MelConfig(n_mels=64), MelConfig(n_mels=128, fmin=50.0, fmax=8000.0)])
def test_in_graph_log_mel_equals_the_cached_images(mel):
    sr, audio = 22050, AudioConfig(segment_seconds=1.0, segment_hop=0.5)
    rng = np.random.default_rng(0)
    t = np.arange(3 * sr) / sr
    y = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    cached, in_graph = cached_and_in_graph(y, sr, mel, audio)
    assert cached.shape == in_graph.shape == (5, mel.n_mels, 44)
    # One 16-bit step of the PNG, plus float32 STFT rounding (1e-4 = 0.012 dB, in the quietest bands).
    np.testing.assert_allclose(in_graph, cached, atol=1.0 / PNG_MAX + 1e-4)


@pytest.mark.skipif(not CLIP.is_file(), reason=f"real GTZAN clip not found at {CLIP} (../shared absent)")
def test_in_graph_log_mel_equals_the_cached_images_of_real_music():
    y, sr = librosa.load(CLIP, sr=None, duration=10.0)
    cached, in_graph = cached_and_in_graph(y, sr, MelConfig(), AudioConfig(segment_seconds=3.0))
    assert cached.shape == in_graph.shape == (3, 128, 130)
    np.testing.assert_allclose(in_graph, cached, atol=1.0 / PNG_MAX + 1e-4)


def test_in_graph_musicnn_mel_power_equals_the_cached_patches_power():
    rng = np.random.default_rng(0)
    rate = musicnn_input.MUSICNN_SAMPLE_RATE
    t = np.arange(2 * rate) / rate
    y = (0.5 * np.sin(2 * np.pi * 330 * t * (1 + t)) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    cached = musicnn_input.mel_power(y).astype(np.float32)
    in_graph = MusicnnMelPower()(y[None])[0].numpy()
    assert in_graph.shape == cached.shape == (1 + len(y) // musicnn_input.HOP_LENGTH, musicnn_input.N_MELS)
    assert np.array_equal(in_graph, in_graph.astype(np.float16))  # float16-rounded values, as the cache stores them
    # float32 STFT rounding can tip a value to the neighbouring float16 step (1e-3 relative) and no further.
    np.testing.assert_allclose(in_graph, cached, rtol=1e-3, atol=1e-7)
    assert np.mean(in_graph == cached) > 0.95
    assert np.abs(musicnn_input.compress(in_graph) - musicnn_input.compress(cached)).max() < 5e-4


@pytest.fixture
def scaler_rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Skewed training rows with a repeated value, and rows inside, at the ends of and beyond their range."""
    rng = np.random.default_rng(0)
    fitted = pd.DataFrame({"rms_mean": rng.lognormal(0.0, 1.0, 60), "tempo": rng.choice([90.0, 120.0, 140.0], 60)})
    inside = pd.DataFrame({"rms_mean": rng.lognormal(0.0, 1.0, 40), "tempo": rng.uniform(80.0, 150.0, 40)})
    ends = pd.DataFrame({"rms_mean": [-1.0, fitted.rms_mean.min(), fitted.rms_mean.max(), 1e3], "tempo": [90.0] * 4})
    return fitted, pd.concat([inside, ends, fitted.head(10)], ignore_index=True)


@pytest.mark.parametrize("kind", ["standard", "quantile"])
def test_in_graph_scalers_equal_the_saved_scalers(scaler_rows, kind):
    fitted, rows = scaler_rows
    scaler = fit_scaler(kind, fitted, ["rms_mean", "tempo"])
    if kind == "quantile":
        layer = QuantileScaling(scaler.quantiles.tolist(), scaler.references.tolist())
    else:
        layer = StandardScaling(scaler.mean.tolist(), scaler.std.tolist())
    rows = rows.astype(np.float32)  # what the exported model takes
    expected = scaler.transform(rows)
    got = layer(rows[scaler.columns].to_numpy()).numpy()
    if kind == "quantile":  # the ends are in the test: beyond them, at them, at a repeated lowest value
        assert np.sum(np.abs(expected) > 5.0) >= 6
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)


def test_normal_quantile_agrees_with_scipy():
    p = np.concatenate([[0.0, 1e-7, 1e-4, 0.02, 0.02425, 0.3], np.linspace(0.4, 0.6, 5), [0.97575, 0.999, 1.0]])
    got = normal_quantile(p.astype(np.float32)).numpy()
    np.testing.assert_allclose(got[1:-1], norm.ppf(p[1:-1]), rtol=1e-5)
    assert got[0] < -5.2 and got[-1] > 5.2  # beyond the quantile scaler's clip, which decides those ends
