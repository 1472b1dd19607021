"""Benchmark: clips per second of the one-STFT feature recipe against the notebook recipe.

Both recipes produce the full feature-table row of each 30 s GTZAN clip plus a 128-mel log-mel image per 3 s
segment, single-process, on the same clips in the same run. The notebook recipe is the common one: every
librosa feature from the waveform on its own (one STFT each), harmonic and percussive from one
`librosa.effects.hpss` call, and one melspectrogram per segment; it computes no per-segment feature rows, which
the one-STFT recipe does get, so the ratio is a lower bound. Both use pad_mode='reflect' and the published
table's truncated harmonic / percussive waveforms, so their columns must agree. The recipes run clip by clip in
alternating order, so that load from other processes hits both alike. Wall-clock time is the headline; CPU time
is printed beside it because it is less disturbed by other processes on a shared machine. The one-STFT recipe's
time is split into its two HPSS median filters (`genre_tf.features.analysis._median_filter`, timed where it is called)
and everything else.

`--representations` times what `prepare` pays per track for each model family instead: the cache entries of one
representation (feature rows for the MLP, mel images for the CNN and keras.applications backbones, musicnn patches
for musicnn), decoded and written as `prepare` does, against all three at once (the one entry every run used to
compute), with the files and bytes each writes per track.

    .venv/bin/python bench/features.py --clips 24 --profile
    .venv/bin/python bench/features.py --clips 20 --representations
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import os
import pstats
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import librosa
import numpy as np
import soundfile
from result_table import record  # bench/result_table.py, beside this script
from threadpoolctl import threadpool_limits

import genre_tf.features.analysis
from genre_tf.config import FeatureConfig, MelConfig, load_config
from genre_tf.extract.cache import Recipe, TrackCache, file_digest
from genre_tf.extract.track import extract_track
from genre_tf.features import representations
from genre_tf.features.analysis import FEATURE_COLUMNS, analyse_track

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEGMENT_SECONDS = 3.0
MEDIAN_FILTERS = "median filters"  # the one-STFT recipe's stage timed on its own


def stage_timings() -> defaultdict[str, np.ndarray]:
    """Seconds per stage, as [wall, cpu]."""
    return defaultdict(lambda: np.zeros(2))


@contextlib.contextmanager
def timed(timings: dict[str, np.ndarray], stage: str):
    """Add the wall and CPU seconds of the block to `timings[stage]`."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        timings[stage] += (time.perf_counter() - wall, time.process_time() - cpu)


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
    y: np.ndarray, sr: int, segments: list[tuple[int, int]], timings: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Feature-table row and per-segment log-mel images, each librosa feature computed from the waveform."""
    reflect = {"pad_mode": "reflect"}
    kept = (len(y) // 512) * 512  # old istft length; the published table has zeros after it
    row: list[float] = []

    def timed_stage(stage, compute):
        with timed(timings, stage):
            return compute()

    def add(values):
        row.extend([float(np.mean(values, dtype=np.float64)), float(np.var(values, dtype=np.float64))])

    def truncated(wave):
        wave[kept:] = 0.0
        return wave

    add(timed_stage("chroma_stft", lambda: librosa.feature.chroma_stft(y=y, sr=sr, **reflect)))
    add(timed_stage("rms", lambda: librosa.feature.rms(y=y, **reflect)))
    add(timed_stage("spectral_centroid", lambda: librosa.feature.spectral_centroid(y=y, sr=sr, **reflect)))
    add(timed_stage("spectral_bandwidth", lambda: librosa.feature.spectral_bandwidth(y=y, sr=sr, **reflect)))
    add(timed_stage("spectral_rolloff", lambda: librosa.feature.spectral_rolloff(y=y, sr=sr, **reflect)))
    add(timed_stage("zero_crossing_rate", lambda: librosa.feature.zero_crossing_rate(y)))
    # one separation for both parts, as the notebooks behind the published table do
    harmonic, percussive = timed_stage("hpss", lambda: librosa.effects.hpss(y, **reflect))
    add(truncated(harmonic))
    add(truncated(percussive))
    # beat_track's onset envelope (median over mel bands): the published tempo column
    onset = timed_stage("tempo", lambda: librosa.onset.onset_strength(y=y, sr=sr, aggregate=np.median, **reflect))
    row.append(float(timed_stage("tempo", lambda: librosa.feature.tempo(onset_envelope=onset, sr=sr))[0]))
    for coefficient in timed_stage("mfcc", lambda: librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, **reflect)):
        add(coefficient)
    images = timed_stage("mel images", lambda: np.stack([segment_mel_db(y[s:e], sr) for s, e in segments]))
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


@contextlib.contextmanager
def median_filters_timed(timings: dict[str, np.ndarray]):
    """Time every call of genre_tf.features.analysis._median_filter (the two HPSS filters) into `timings`."""
    original = genre_tf.features.analysis._median_filter

    def median_filter(x: np.ndarray, size: int, axis: int) -> np.ndarray:
        with timed(timings, MEDIAN_FILTERS):
            return original(x, size, axis)

    genre_tf.features.analysis._median_filter = median_filter  # looked up at call time by _hpss_waves
    try:
        yield
    finally:
        genre_tf.features.analysis._median_filter = original


def one_stft_recipe(
    y: np.ndarray, sr: int, segments: list[tuple[int, int]], timings: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The recipe under test, with its median filters timed (the rest is the total less them)."""
    with median_filters_timed(timings):
        analysis = analyse_track(y, sr, FeatureConfig(), MelConfig(), segments)
    return analysis.track_row, analysis.mel_segments


RECIPES = {"one-STFT recipe": one_stft_recipe, "notebook recipe": notebook_recipe}


def run_recipes(clips: list[tuple[str, np.ndarray, int]]) -> dict:
    """Time both recipes clip by clip, in alternating order, so that load from other processes hits both alike."""
    result = {"seconds": defaultdict(list), "stages": defaultdict(stage_timings)}
    result["rows"], result["images"] = defaultdict(list), defaultdict(list)
    for i, (_, y, sr) in enumerate(clips):
        segments = segments_of(len(y), sr)
        names = list(RECIPES) if i % 2 == 0 else list(RECIPES)[::-1]
        for name in names:
            clip_timings = stage_timings()
            with timed(clip_timings, "total"):
                row, images = RECIPES[name](y, sr, segments, result["stages"][name])
            result["seconds"][name].append(clip_timings["total"])  # [wall, cpu] of this clip
            result["rows"][name].append(row)
            result["images"][name].append(images)
    return result


def report_speed(result: dict, n: int) -> dict:
    """Per-clip ms of both recipes, their ratio, and the one-STFT recipe's median filters against the rest; the
    figures printed, for bench/results/features.csv."""
    seconds = {name: np.array(result["seconds"][name]) for name in RECIPES}  # (n, 2): wall, cpu per clip
    fast, slow = RECIPES
    for name in RECIPES:
        wall, cpu = 1000 * seconds[name].mean(axis=0)
        print(f"{name}:  {wall:6.0f} ms/clip wall, {cpu:6.0f} ms/clip cpu  ({1000 / wall:.2f} clips/s)")
    wall_ratio, cpu_ratio = seconds[slow].sum(axis=0) / seconds[fast].sum(axis=0)
    print(f"ratio notebook / one-STFT:  {wall_ratio:.1f}x wall, {cpu_ratio:.1f}x cpu  (totals over the clips)")
    per_clip = np.median(seconds[slow] / seconds[fast], axis=0)
    print(f"  median of per-clip ratios: {per_clip[0]:.1f}x wall, {per_clip[1]:.1f}x cpu")
    median_filters = 1000 * result["stages"][fast][MEDIAN_FILTERS] / n
    rest = 1000 * seconds[fast].mean(axis=0) - median_filters
    print("one-STFT recipe, where the time goes:")
    print(f"  HPSS median filters (2)  {median_filters[0]:6.0f} ms/clip wall, {median_filters[1]:6.0f} ms/clip cpu")
    print(f"  everything else          {rest[0]:6.0f} ms/clip wall, {rest[1]:6.0f} ms/clip cpu")
    (fast_wall, fast_cpu), (slow_wall, slow_cpu) = (1000 * seconds[name].mean(axis=0) for name in RECIPES)
    return {
        "one-STFT CPU ms/clip": round(fast_cpu),
        "notebook CPU ms/clip": round(slow_cpu),
        "CPU ratio": round(cpu_ratio, 1),
        "wall ratio": round(wall_ratio, 1),
        "one-STFT clips/s": round(1000 / fast_wall, 2),
        "notebook clips/s": round(1000 / slow_wall, 2),
        "HPSS median filters CPU ms/clip": round(median_filters[1]),
        "everything else CPU ms/clip": round(rest[1]),
    }


def report_agreement(fast_rows: np.ndarray, slow_rows: np.ndarray, fast_images, slow_images) -> float:
    """Max column difference in units of column std (returned), and the mel-image difference away from segment
    edges."""
    diff = np.abs(fast_rows - slow_rows) / column_std(slow_rows)
    worst = diff.max(axis=0)
    order = np.argsort(worst)[::-1][:3]
    print(f"column agreement: max |fast - notebook| = {worst.max():.2e} column std")
    print("  worst columns: " + ", ".join(f"{FEATURE_COLUMNS[i]} {worst[i]:.1e}" for i in order))
    # segment starts are not on the clip's hop grid, so its frames sit up to one hop off the notebook's
    gaps = np.concatenate([np.abs(a - b).ravel() for a, b in zip(fast_images, slow_images, strict=True)])
    print(f"mel images: same shapes, median |dB difference| {np.median(gaps):.2f} dB (frames up to one hop apart)")
    return float(worst.max())


def profile_fast_recipe(clips: list[tuple[str, np.ndarray, int]]) -> None:
    """Per-stage time of the one-STFT recipe: cumulative time of each function of genre_tf.features.analysis."""
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


REPRESENTATION_SETS = {
    "all three (the former entry)": representations.ALL,
    "MLP: feature rows": (representations.FEATURES,),
    "CNN: mel images": (representations.MEL_IMAGE,),
    "musicnn: patches": (representations.MUSICNN_PATCH,),
}


def time_representations(paths: list[Path]) -> None:
    """Per track: decode + analyse + write the cache entries of each representation set, sets alternating."""
    recipe = Recipe.from_config(load_config(REPO / "configs" / "gtzan_mini.yaml", ["audio.segment_seconds=3.0"]))
    seconds = {name: [] for name in REPRESENTATION_SETS}
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        caches = {
            name: TrackCache(Path(tmp) / str(i), recipe, names)
            for i, (name, names) in enumerate(REPRESENTATION_SETS.items())
        }
        extract_track(str(paths[0]), "warm-up", TrackCache(Path(tmp) / "warm", recipe, representations.ALL))
        for i, path in enumerate(paths):
            digest = file_digest(path)
            order = list(REPRESENTATION_SETS) if i % 2 == 0 else list(REPRESENTATION_SETS)[::-1]
            for name in order:
                wall, cpu = time.perf_counter(), time.process_time()
                extract_track(str(path), digest, caches[name])
                seconds[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        files = {name: sum(1 for p in c.cache_dir.rglob("*") if p.is_file()) for name, c in caches.items()}
        size = {
            name: sum(p.stat().st_size for p in c.cache_dir.rglob("*") if p.is_file()) for name, c in caches.items()
        }
    n = len(paths)
    print(f"{n} clips of 30 s, 3 s segments, one process, one BLAS thread; decode + analyse + write per track:")
    full = np.array(seconds[next(iter(REPRESENTATION_SETS))]).mean(axis=0)
    rows = []
    for name, times in seconds.items():
        wall, cpu = np.array(times).mean(axis=0)
        print(
            f"  {name:30s} {1000 * wall:6.0f} ms wall {1000 * cpu:6.0f} ms cpu  ({full[0] / wall:4.1f}x faster)  "
            f"{files[name] / n:4.0f} files  {size[name] / n / 1024:6.0f} KiB per track"
        )
        rows.append(
            {
                "clips": n,
                "representations": name,
                "wall ms": round(1000 * wall),
                "CPU ms": round(1000 * cpu),
                "x less wall": round(full[0] / wall, 1),
                "x less CPU": round(full[1] / cpu, 1),
                "files per track": round(files[name] / n),
                "KiB per track": round(size[name] / n / 1024),
            }
        )
    record("features_representations", rows, key=["clips"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100, help="how many clips of gtzan_mini (default all 100)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "gtzan_mini", help="folder of <genre>/*.flac")
    parser.add_argument("--profile", action="store_true", help="print the per-stage breakdown of both recipes")
    parser.add_argument(
        "--representations", action="store_true", help="time each family's representation against all three"
    )
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no clips: {args.data} is not a folder")
    if args.representations:
        from predict import spread_clips  # bench/predict.py, beside this script

        time_representations(spread_clips(args.data, args.clips))
        return
    clips = load_clips(args.data, args.clips)
    # one BLAS thread, as in an extraction worker; more threads only fight over the cores here
    with threadpool_limits(limits=1):
        run_recipes(clips[:1])  # warm-up: numba compilation and filterbank caches are not what we measure
        result = run_recipes(clips)
    n = len(clips)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{n} clips, single process, one BLAS thread, recipes alternating; load average now {load}")
    figures = report_speed(result, n)
    worst = report_agreement(*(np.array(result["rows"][name]) for name in RECIPES), *result["images"].values())
    record("features", [{"clips": n, **figures, "max column difference (std)": f"{worst:.1e}", "load average": load}],
           key=["clips"])  # fmt: skip
    if args.profile:
        print("\nnotebook recipe, per stage:")
        stages = result["stages"]["notebook recipe"]
        for stage, (wall, cpu) in sorted(stages.items(), key=lambda kv: -kv[1][0]):
            print(f"  {stage:28s} {1000 * wall / n:8.1f} ms/clip wall, {1000 * cpu / n:8.1f} ms/clip cpu")
        with threadpool_limits(limits=1):
            profile_fast_recipe(clips)


if __name__ == "__main__":
    main()
