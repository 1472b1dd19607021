"""Benchmark: clips per second of the one-STFT feature recipe against the notebook recipe.

Both recipes produce the full feature-table row of each 30 s GTZAN clip plus a 128-mel log-mel image per 3 s
segment, single-process, on the same clips in the same run. The notebook recipe computes every librosa feature
from the waveform on its own (one STFT each, harmonic and percussive each doing their own HPSS) and one
melspectrogram per segment; it computes no per-segment feature rows, which the one-STFT recipe does get, so
the ratio is a lower bound. Both use pad_mode='reflect' and the published table's truncated harmonic /
percussive waveforms, so their columns must agree. Wall-clock clips/s is the headline; CPU time is printed
beside it because it is less disturbed by other processes on a shared machine.

    .venv/bin/python bench/features.py --clips 20 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import pstats
import time
from collections import defaultdict
from pathlib import Path

import librosa
import numpy as np
import soundfile
from threadpoolctl import threadpool_limits

from genre_tf.config import FeatureConfig, MelConfig
from genre_tf.features import FEATURE_COLUMNS, analyse_track

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEGMENT_SECONDS = 3.0


def load_clips(root: Path, limit: int) -> list[tuple[str, np.ndarray, int]]:
    """The first `limit` clips (sorted by name) as float32 waveforms at their own sample rate."""
    paths = sorted(root.glob("*/*.flac"))[:limit]
    clips = []
    for path in paths:
        y, sr = soundfile.read(path, dtype="float32")
        clips.append((path.stem, y, sr))
    return clips


def segments_of(n_samples: int, sr: int) -> list[tuple[int, int]]:
    """Non-overlapping 3 s segments that fit in the clip."""
    size = int(SEGMENT_SECONDS * sr)
    return [(i * size, (i + 1) * size) for i in range(n_samples // size)]


def notebook_recipe(
    y: np.ndarray, sr: int, segments: list[tuple[int, int]], timings: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Feature-table row and per-segment log-mel images, each librosa feature computed from the waveform."""
    reflect = {"pad_mode": "reflect"}
    kept = (len(y) // 512) * 512  # old istft length; the published table has zeros after it
    row: list[float] = []

    def timed(stage, compute):
        start = time.perf_counter()
        value = compute()
        timings[stage] += time.perf_counter() - start
        return value

    def add(values):
        row.extend([float(np.mean(values, dtype=np.float64)), float(np.var(values, dtype=np.float64))])

    def truncated(wave):
        wave[kept:] = 0.0
        return wave

    add(timed("chroma_stft", lambda: librosa.feature.chroma_stft(y=y, sr=sr, **reflect)))
    add(timed("rms", lambda: librosa.feature.rms(y=y, **reflect)))
    add(timed("spectral_centroid", lambda: librosa.feature.spectral_centroid(y=y, sr=sr, **reflect)))
    add(timed("spectral_bandwidth", lambda: librosa.feature.spectral_bandwidth(y=y, sr=sr, **reflect)))
    add(timed("spectral_rolloff", lambda: librosa.feature.spectral_rolloff(y=y, sr=sr, **reflect)))
    add(timed("zero_crossing_rate", lambda: librosa.feature.zero_crossing_rate(y)))
    add(timed("harmonic", lambda: truncated(librosa.effects.harmonic(y, **reflect))))
    add(timed("percussive", lambda: truncated(librosa.effects.percussive(y, **reflect))))
    # beat_track's onset envelope (median over mel bands): the published tempo column
    onset = timed("tempo", lambda: librosa.onset.onset_strength(y=y, sr=sr, aggregate=np.median, **reflect))
    row.append(float(timed("tempo", lambda: librosa.feature.tempo(onset_envelope=onset, sr=sr))[0]))
    for coefficient in timed("mfcc", lambda: librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, **reflect)):
        add(coefficient)
    images = timed("mel images", lambda: np.stack([segment_mel_db(y[s:e], sr) for s, e in segments]))
    return np.array(row), images


def segment_mel_db(y: np.ndarray, sr: int) -> np.ndarray:
    """128-mel log-mel dB of one segment on its own."""
    return librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, pad_mode="reflect"), top_db=None)


def column_std(benchmarked_rows: np.ndarray) -> np.ndarray:
    """Column std of the published table where it is at hand, else over the benchmarked clips."""
    table = SHARED_DATA / "gtzan_features" / "features_30_sec_labeled.csv"
    if not table.exists():
        return benchmarked_rows.std(axis=0) + 1e-12
    with table.open() as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r[c]) for c in FEATURE_COLUMNS] for r in rows]).std(axis=0)


def one_stft_recipe(
    y: np.ndarray, sr: int, segments: list[tuple[int, int]], timings: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """The recipe under test (its stages are profiled separately, so `timings` stays unused)."""
    analysis = analyse_track(y, sr, FeatureConfig(), MelConfig(), segments)
    return analysis.track_row, analysis.mel_segments


RECIPES = {"one-STFT recipe": one_stft_recipe, "notebook recipe": notebook_recipe}


def run_recipes(clips: list[tuple[str, np.ndarray, int]]) -> dict:
    """Time both recipes clip by clip, alternating, so that load from other processes hits both alike."""
    result = {key: defaultdict(float) for key in ("wall", "cpu", "stages")}
    result["rows"], result["images"] = defaultdict(list), defaultdict(list)
    for _, y, sr in clips:
        segments = segments_of(len(y), sr)
        for name, recipe in RECIPES.items():
            wall, cpu = time.perf_counter(), time.process_time()
            row, images = recipe(y, sr, segments, result["stages"])
            result["wall"][name] += time.perf_counter() - wall
            result["cpu"][name] += time.process_time() - cpu
            result["rows"][name].append(row)
            result["images"][name].append(images)
    return result


def report_agreement(fast_rows: np.ndarray, slow_rows: np.ndarray, fast_images, slow_images) -> None:
    """Max column difference in units of column std, and the mel-image difference away from segment edges."""
    diff = np.abs(fast_rows - slow_rows) / column_std(slow_rows)
    worst = diff.max(axis=0)
    order = np.argsort(worst)[::-1][:3]
    print(f"column agreement: max |fast - notebook| = {worst.max():.2e} column std")
    print("  worst columns: " + ", ".join(f"{FEATURE_COLUMNS[i]} {worst[i]:.1e}" for i in order))
    # segment starts are not on the clip's hop grid, so its frames sit up to one hop off the notebook's
    gaps = np.concatenate([np.abs(a - b).ravel() for a, b in zip(fast_images, slow_images, strict=True)])
    print(f"mel images: same shapes, median |dB difference| {np.median(gaps):.2f} dB (frames up to one hop apart)")


def profile_fast_recipe(clips: list[tuple[str, np.ndarray, int]]) -> None:
    """Per-stage time of the one-STFT recipe: cumulative time of each function of genre_tf.features."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _, y, sr in clips:
        analyse_track(y, sr, FeatureConfig(), MelConfig(), segments_of(len(y), sr))
    profiler.disable()
    per_stage: dict[str, float] = defaultdict(float)
    for (filename, _, name), (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items():
        if "move_median" in name:
            per_stage["bottleneck.move_median"] += cumulative
        elif name in ("stft", "tempo") and "librosa" in filename:
            per_stage[f"librosa.{name}"] += cumulative
        elif filename.endswith("features.py") and "genre_tf" in filename and not name.startswith("<"):
            per_stage[name] += cumulative
    print("\none-STFT recipe, per stage (profiled, cumulative: a stage includes the ones it calls):")
    for name, seconds in sorted(per_stage.items(), key=lambda kv: -kv[1]):
        if seconds / len(clips) >= 1e-4:
            print(f"  {name:28s} {1000 * seconds / len(clips):8.1f} ms/clip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100, help="how many clips of gtzan_mini (default all 100)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "gtzan_mini", help="folder of <genre>/*.flac")
    parser.add_argument("--profile", action="store_true", help="print the per-stage breakdown of both recipes")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no clips: {args.data} is not a folder")
    clips = load_clips(args.data, args.clips)
    # one BLAS thread, as in an extraction worker; more threads only fight over the cores here
    with threadpool_limits(limits=1):
        run_recipes(clips[:1])  # warm-up: numba compilation and filterbank caches are not what we measure
        result = run_recipes(clips)
    n = len(clips)
    wall, cpu = result["wall"], result["cpu"]
    print(f"{n} clips, single process, one BLAS thread")
    for name in RECIPES:
        per_clip = f"{1000 * wall[name] / n:5.0f} ms/clip, cpu {1000 * cpu[name] / n:5.0f} ms"
        print(f"{name}:  {n / wall[name]:6.2f} clips/s  ({per_clip})")
    fast, slow = RECIPES
    print(f"speed-up:         {wall[slow] / wall[fast]:6.1f}x  (cpu time: {cpu[slow] / cpu[fast]:.1f}x)")
    report_agreement(*(np.array(result["rows"][name]) for name in RECIPES), *result["images"].values())
    if args.profile:
        print("\nnotebook recipe, per stage:")
        for stage, seconds in sorted(result["stages"].items(), key=lambda kv: -kv[1]):
            print(f"  {stage:28s} {1000 * seconds / n:8.1f} ms/clip")
        with threadpool_limits(limits=1):
            profile_fast_recipe(clips)


if __name__ == "__main__":
    main()
