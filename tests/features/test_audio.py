"""Tests for genre_tf.features.audio: every container on real GTZAN audio, resampling, and every kind of unusable
file."""

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genre_tf.config import AudioConfig
from genre_tf.features.audio import AUDIO_EXTENSIONS, AudioError, load_track, segment_bounds, spread_segments

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FORMATS = SHARED_DATA / "gtzan_formats"
MINI = SHARED_DATA / "gtzan_mini"
needs_gtzan = pytest.mark.skipif(
    not (FORMATS.is_dir() and MINI.is_dir()), reason=f"real GTZAN clips not found under {SHARED_DATA}"
)
GTZAN_FRAMES = {"jazz.00054.wav": 662112}  # the others are 661794 frames (30.013 s at 22050 Hz)
CFG = AudioConfig()


def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def dominant_frequency(waveform: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform)), n=8 * len(waveform)))
    return float(np.argmax(spectrum) * sr / (8 * len(waveform)))


def real_clip() -> np.ndarray:
    return load_track(MINI / "classical" / "classical.00001.flac", CFG)


# Real audio in every container


@needs_gtzan
@pytest.mark.parametrize("name", ["blues.00000.au", "rock.00000.au", "classical.00001.wav", "jazz.00054.wav"])
def test_gtzan_containers_decode(name):
    waveform = load_track(FORMATS / name, CFG)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert len(waveform) == GTZAN_FRAMES.get(name, 661794)
    assert np.isfinite(waveform).all() and 0.01 < np.sqrt(np.mean(waveform**2)) < 1


@needs_gtzan
@pytest.mark.parametrize("name", ["blues.00000.au", "rock.00000.au", "classical.00001.wav"])
def test_au_and_wav_match_their_flac_copies(name):
    genre = name.split(".")[0]
    flac = MINI / genre / (Path(name).stem + ".flac")
    np.testing.assert_array_equal(load_track(FORMATS / name, CFG), load_track(flac, CFG))


@needs_gtzan
@pytest.mark.parametrize("fmt", ["WAV", "AU", "FLAC"])
def test_lossless_rewrite_decodes_to_identical_samples(tmp_path, fmt):
    clip = real_clip()
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, clip, CFG.sample_rate, format=fmt, subtype="PCM_16")
    assert sf.info(path).format == fmt
    np.testing.assert_array_equal(load_track(path, CFG), clip)


@needs_gtzan
@pytest.mark.parametrize(("fmt", "subtype", "ext"), [("OGG", "VORBIS", ".ogg"), ("MP3", "MPEG_LAYER_III", ".mp3")])
def test_lossy_rewrite_keeps_length_rate_and_shape(tmp_path, fmt, subtype, ext):
    clip = real_clip()
    path = tmp_path / f"clip{ext}"
    sf.write(path, clip, CFG.sample_rate, format=fmt, subtype=subtype)
    decoded = load_track(path, CFG)
    assert sf.info(path).samplerate == CFG.sample_rate
    assert abs(len(decoded) - len(clip)) <= 0.01 * CFG.sample_rate
    n = min(len(decoded), len(clip))
    assert np.corrcoef(decoded[:n], clip[:n])[0, 1] > 0.98


@needs_gtzan
def test_mp3_saved_as_wav_decodes_by_content(tmp_path):
    clip = real_clip()[: 5 * CFG.sample_rate]
    sf.write(tmp_path / "real.mp3", clip, CFG.sample_rate, format="MP3")
    disguised = tmp_path / "disguised.wav"
    disguised.write_bytes((tmp_path / "real.mp3").read_bytes())
    assert sf.info(disguised).format == "MP3"
    np.testing.assert_array_equal(load_track(disguised, CFG), load_track(tmp_path / "real.mp3", CFG))


# Channels, rates and lengths


def test_stereo_is_mixed_down_to_the_channel_mean(tmp_path):
    left, right = tone(440, 1, 22050), tone(660, 1, 22050, amplitude=0.2)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    np.testing.assert_allclose(load_track(tmp_path / "stereo.wav", CFG), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (8000, 1), (22050, 1)])
def test_resampling_keeps_the_pitch(tmp_path, rate, channels):
    signal = np.repeat(tone(440, 2, rate)[:, None], channels, axis=1)
    sf.write(tmp_path / "tone.wav", signal, rate)
    waveform = load_track(tmp_path / "tone.wav", CFG)
    assert abs(len(waveform) - 2 * CFG.sample_rate) <= 1
    assert dominant_frequency(waveform, CFG.sample_rate) == pytest.approx(440, abs=1)
    # Away from the edges the resampled tone is the ideal one: no gain change, no phase drift.
    ideal = tone(440, 2, CFG.sample_rate)
    np.testing.assert_allclose(waveform[1000:-1000], ideal[1000:-1000], atol=2e-3)


def test_duration_pads_short_tracks_and_trims_long_ones(tmp_path):
    cfg = AudioConfig(duration=2.0)
    sf.write(tmp_path / "short.wav", tone(440, 1, 22050), 22050, subtype="FLOAT")
    sf.write(tmp_path / "long.wav", tone(440, 3, 22050), 22050, subtype="FLOAT")
    short, long = load_track(tmp_path / "short.wav", cfg), load_track(tmp_path / "long.wav", cfg)
    assert len(short) == len(long) == 44100
    np.testing.assert_array_equal(short[:22050], tone(440, 1, 22050))
    assert not short[22050:].any()
    np.testing.assert_array_equal(long, tone(440, 2, 22050))


def test_long_file_reads_only_max_duration(tmp_path):
    """A 20-minute file with max_duration 60 costs 60 s of memory and time, not 20 minutes."""
    path, sr = tmp_path / "twenty_minutes.wav", 22050
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for _ in range(20):  # written a minute at a time, so the test itself stays small too
            f.write(0.1 * rng.standard_normal(60 * sr))
    assert sf.info(path).duration == pytest.approx(1200)
    tracemalloc.start()
    began = time.perf_counter()
    waveform = load_track(path, AudioConfig(max_duration=60.0))
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(waveform) == 60 * sr
    assert peak < 3 * waveform.nbytes  # the whole file as float32 would be 20x waveform.nbytes
    assert seconds < 2.0


# Unusable files: each raises AudioError with a one-line reason


def make_directory(tmp_path):
    (tmp_path / "x.wav").mkdir()
    return tmp_path / "x.wav"


def make_empty(tmp_path):
    (tmp_path / "empty.wav").touch()
    return tmp_path / "empty.wav"


def make_truncated_header(tmp_path):
    sf.write(tmp_path / "full.wav", tone(440, 1, 22050), 22050)
    (tmp_path / "truncated.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:20])
    return tmp_path / "truncated.wav"


def make_header_only(tmp_path):
    sf.write(tmp_path / "full.wav", tone(440, 1, 22050), 22050)
    (tmp_path / "header_only.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:44])
    return tmp_path / "header_only.wav"


def make_text(tmp_path):
    (tmp_path / "notes.wav").write_text("track list\n1. blues\n2. jazz — live\n" * 50)
    return tmp_path / "notes.wav"


def make_binary_junk(tmp_path):
    (tmp_path / "junk.flac").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return tmp_path / "junk.flac"


def make_silent(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(22050, dtype=np.float32), 22050)
    return tmp_path / "silent.wav"


def make_nearly_silent(tmp_path):
    sf.write(tmp_path / "hum.wav", tone(50, 1, 22050, amplitude=1e-5), 22050, subtype="FLOAT")
    return tmp_path / "hum.wav"


def make_nan(tmp_path):
    samples = tone(440, 1, 22050)
    samples[100] = np.nan
    sf.write(tmp_path / "nan.wav", samples, 22050, subtype="FLOAT")
    return tmp_path / "nan.wav"


def make_inf(tmp_path):
    samples = tone(440, 1, 22050)
    samples[-1] = np.inf
    sf.write(tmp_path / "inf.wav", samples, 22050, subtype="FLOAT")
    return tmp_path / "inf.wav"


def make_unsupported_extension(tmp_path):
    sf.write(tmp_path / "track.txt", tone(440, 1, 22050), 22050, format="WAV")
    return tmp_path / "track.txt"


def make_missing(tmp_path):
    return tmp_path / "missing.wav"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (make_directory, "is a directory"),
        (make_empty, "empty file (0 bytes)"),
        (make_truncated_header, "truncated header (WAV, 20 bytes)"),
        (make_header_only, "no audio frames"),
        (make_text, "not an audio file (text)"),
        (make_binary_junk, "not an audio file (Format not recognised)"),
        (make_silent, "silent (RMS 0 < audio.silence_rms 0.0001)"),
        (make_nearly_silent, "silent (RMS 7.07e-06 < audio.silence_rms 0.0001)"),
        (make_nan, "contains NaN or inf samples"),
        (make_inf, "contains NaN or inf samples"),
        (make_unsupported_extension, "unsupported extension .txt"),
        (make_missing, "file not found"),
    ],
)
def test_unusable_files_raise_audio_error_with_reason(tmp_path, make, reason):
    with pytest.raises(AudioError) as caught:
        load_track(make(tmp_path), CFG)
    assert str(caught.value) == reason


def test_silence_threshold_zero_accepts_silence(tmp_path):
    waveform = load_track(make_silent(tmp_path), AudioConfig(silence_rms=0.0))
    assert len(waveform) == 22050 and not waveform.any()


def test_extensions_are_the_supported_containers():
    assert AUDIO_EXTENSIONS == (".wav", ".au", ".flac", ".ogg", ".mp3")


# Segments


def test_short_track_loads_but_has_no_segments(tmp_path):
    sf.write(tmp_path / "short.wav", tone(440, 2.5, 22050), 22050)
    waveform = load_track(tmp_path / "short.wav", CFG)
    assert len(waveform) == round(2.5 * 22050)
    assert segment_bounds(len(waveform), CFG) == []


def test_fragment_below_min_seconds_is_too_short(tmp_path):
    sf.write(tmp_path / "fragment.wav", tone(440, 0.07, 22050), 22050)
    with pytest.raises(AudioError, match=r"^too short \(0\.07 s < audio\.min_seconds 0\.5 s\)$"):
        load_track(tmp_path / "fragment.wav", CFG)
    assert len(load_track(tmp_path / "fragment.wav", AudioConfig(min_seconds=0.05))) == round(0.07 * 22050)


def test_segments_without_overlap():
    cfg = AudioConfig(sample_rate=1000, segment_seconds=3.0)
    assert segment_bounds(10_000, cfg) == [(0, 3000), (3000, 6000), (6000, 9000)]
    assert segment_bounds(3000, cfg) == [(0, 3000)]
    assert segment_bounds(2999, cfg) == []


def test_segments_with_hop_overlap_and_equal_length():
    cfg = AudioConfig(sample_rate=1000, segment_seconds=3.0, segment_hop=1.5)
    bounds = segment_bounds(7600, cfg)
    assert bounds == [(0, 3000), (1500, 4500), (3000, 6000), (4500, 7500)]
    assert {end - start for start, end in bounds} == {3000}


def test_spread_segments_keeps_all_up_to_the_limit_and_spreads_beyond():
    assert spread_segments(5, 20) == [0, 1, 2, 3, 4]
    assert spread_segments(5, None) == [0, 1, 2, 3, 4]
    assert spread_segments(399, 20)[:3] == [9, 29, 49] and spread_segments(399, 20)[-1] == 389  # no intro, no outro
    assert spread_segments(40, 4) == [5, 15, 25, 35]
    assert spread_segments(0, 20) == []
    cfg = AudioConfig(sample_rate=10, segment_seconds=1.0, segment_hop=0.5, max_segments_per_track=3)
    assert segment_bounds(100, cfg) == [(15, 25), (45, 55), (75, 85)]  # 19 segments of 10 samples every 5
