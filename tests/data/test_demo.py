"""Tests for genre_tf.data.demo: layout, determinism, idempotence, genres that are learnable but not trivial, and the
demo configs that `make demo` trains reaching 0.9."""

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from genre_tf.config import AudioConfig, load_config
from genre_tf.data.demo import DEMO_GENRES, STYLES, generate_demo
from genre_tf.features.audio import load_track

SR = 22050
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    """8 tracks of 3 s per genre: (paths, genre labels, crude per-track features)."""
    paths = generate_demo(tmp_path_factory.mktemp("demo"), tracks_per_genre=8, seconds=3.0, seed=0)
    labels = np.array([path.parent.name for path in paths])
    return paths, labels, np.array([crude_features(load_track(path, AudioConfig())) for path in paths])


def crude_features(waveform: np.ndarray) -> np.ndarray:
    """Track means of centroid, bandwidth, rolloff, zero-crossing rate, RMS, flatness and onset strength."""
    spectrum = np.abs(librosa.stft(waveform))
    rows = [
        librosa.feature.spectral_centroid(S=spectrum, sr=SR),
        librosa.feature.spectral_bandwidth(S=spectrum, sr=SR),
        librosa.feature.spectral_rolloff(S=spectrum, sr=SR),
        librosa.feature.zero_crossing_rate(waveform),
        librosa.feature.rms(S=spectrum),
        librosa.feature.spectral_flatness(S=spectrum),
        librosa.onset.onset_strength(S=librosa.amplitude_to_db(spectrum), sr=SR),
    ]
    return np.array([row.mean() for row in rows])


def test_genres_are_named_styles():
    assert len(DEMO_GENRES) == 6 and len(set(DEMO_GENRES)) == 6
    assert set(DEMO_GENRES) == set(STYLES)


def test_layout_format_and_duration(tmp_path):
    paths = generate_demo(tmp_path, tracks_per_genre=2, seconds=1.5, sample_rate=8000)
    assert paths == [tmp_path / genre / f"{genre}.{i:05d}.wav" for genre in DEMO_GENRES for i in range(2)]
    for path in paths:
        info = sf.info(path)
        assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
        assert (info.samplerate, info.frames) == (8000, 12000)
    # Nothing else is left behind, such as temporary files from the atomic writes.
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(paths)


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    first = generate_demo(tmp_path / "a", 2, 1.0, seed=7)
    again = generate_demo(tmp_path / "b", 2, 1.0, seed=7)
    other = generate_demo(tmp_path / "c", 2, 1.0, seed=8)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert all(a.read_bytes() != c.read_bytes() for a, c in zip(first, other, strict=True))


def test_rerun_skips_identical_files_and_repairs_changed_ones(tmp_path):
    paths = generate_demo(tmp_path, 2, 1.0)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in paths}
    paths[0].write_bytes(b"damaged")
    assert generate_demo(tmp_path, 2, 1.0) == paths
    assert paths[0].read_bytes() == before[paths[0]][2]
    for path in paths[1:]:  # untouched: not even rewritten
        assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == before[path]


def test_more_tracks_leave_existing_ones_unchanged(tmp_path):
    few = {p: p.read_bytes() for p in generate_demo(tmp_path / "few", 2, 1.0)}
    more = generate_demo(tmp_path / "more", 3, 1.0)
    assert len(more) == 3 * len(DEMO_GENRES)
    for path, data in few.items():
        assert (tmp_path / "more" / path.relative_to(tmp_path / "few")).read_bytes() == data


def test_tracks_load_with_the_right_length_and_level(demo_set):
    paths, _, _ = demo_set
    for path in paths[::5]:
        waveform = load_track(path, AudioConfig())
        assert len(waveform) == 3 * SR
        assert 0.45 < np.abs(waveform).max() <= 0.9 and np.sqrt(np.mean(waveform**2)) > 0.02


def test_genres_differ_measurably(demo_set):
    _, labels, features = demo_set
    centroid, onset = features[:, 0], features[:, 6]
    # Ambient is dark and soft-edged, chiptune bright and busy: no track of one looks like the other.
    assert centroid[labels == "ambient"].max() < centroid[labels == "chiptune"].min()
    assert onset[labels == "ambient"].max() < onset[labels == "techno"].min()


def test_crude_classifier_learns_but_is_not_perfect(demo_set):
    _, labels, features = demo_set
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    predicted = cross_val_predict(classifier, features, labels, cv=folds)  # every track predicted while held out
    accuracy = np.mean(predicted == labels)
    confusions = confusion_matrix(labels, predicted, labels=list(DEMO_GENRES))
    np.fill_diagonal(confusions, 0)
    assert accuracy > 2.5 / len(DEMO_GENRES)  # clearly above chance (1/6)
    assert confusions.sum() > 0  # some pair of genres overlaps
    # No single crude feature separates the genres on its own.
    for column in range(features.shape[1]):
        alone = cross_val_predict(classifier, features[:, [column]], labels, cv=folds)
        assert np.mean(alone == labels) < 0.9


@pytest.mark.slow
def test_demo_mlp_and_cnn_reach_090_test_accuracy(tmp_path):
    """The demo configs as `make demo` runs them (fixed seeds): the synthetic genres are learnable."""
    from genre_tf.training.fit import train

    where = [f"output_dir={tmp_path / 'runs'}", f"data.root={tmp_path / 'demo'}", f"cache.dir={tmp_path / 'cache'}"]
    for name in ("demo", "demo_cnn"):
        cfg = load_config(REPO / "configs" / f"{name}.yaml", where)
        metrics = train(cfg, cfg.output_dir / cfg.name, verbose=0)
        test = metrics["headline"]["test"]
        assert test["track_accuracy"] >= 0.9, (name, test)
        assert test["segment_accuracy"] >= 0.9, (name, test)
