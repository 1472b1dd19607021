"""Build the feature and mel-image caches for a config and print a summary.

    python -m genre_tf.prepare --config configs/demo.yaml [--jobs N]

Writes the dataset view to `<cache.dir>/prepared/<name>/`: index.csv, skipped.csv, features_track.csv
(the published GTZAN columns, one row per track), features_segment.csv (one row per segment),
summary.json and the resolved config.yaml.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genre_tf import features
from genre_tf.cache import Recipe, SharedPool, TrackStore, extract_all, write_atomic
from genre_tf.config import Config, ConfigError, add_config_arguments, config_from_args, exit_config_error, save_config
from genre_tf.dataset import SPLITS, Index, build_index

SKIPPED_COLUMNS = ["path", "track_id", "reason"]
IMBALANCE = 1.5  # a training split whose largest genre has this many times the tracks of its smallest is reported


@dataclass
class Prepared:
    """A dataset ready for pipelines: usable tracks, their segments, and what was skipped."""

    tracks: pd.DataFrame  # track_id, path, label, split, digest, n_segments, length, feature columns
    segments: pd.DataFrame  # track_id, segment, label, split, mel_path, feature columns
    skipped: pd.DataFrame  # path, track_id, reason
    stats: dict = field(default_factory=dict)


def prepared_dir(cfg: Config) -> Path:
    return Path(cfg.cache.dir) / "prepared" / cfg.name


def _segment_table(tracks: pd.DataFrame, store: TrackStore, columns: list[str]) -> pd.DataFrame:
    frames = []
    for track in tracks.itertuples():
        rows = store.segment_rows(track.digest)
        frame = pd.DataFrame(rows, columns=columns)
        frame.insert(0, "track_id", track.track_id)
        frame.insert(1, "segment", store.segment_positions(track.digest))  # k: it starts k segment hops in
        frame.insert(2, "label", track.label)
        frame.insert(3, "split", track.split)
        frame.insert(4, "mel_path", store.mel_paths(track.digest, track.n_segments))
        frame.insert(5, "musicnn_path", store.musicnn_paths(track.digest, track.n_segments))
        frames.append(frame)
    names = ["track_id", "segment", "label", "split", "mel_path", "musicnn_path", *columns]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=names)


def prepare_index(
    index: Index, cfg: Config, jobs: int | None = None, progress: bool = True, pool: SharedPool | None = None
) -> Prepared:
    """Extract (or find in the cache) every track of an index and assemble the tables; `pool`: extraction's
    worker processes, shared with other calls (`cache.extraction_pool`)."""
    started = time.perf_counter()
    recipe = Recipe.from_config(cfg)
    store = TrackStore(cfg.cache.dir, recipe)
    paths = index.tracks["path"].tolist()
    jobs = cfg.cache.jobs if jobs is None else jobs
    results = extract_all(paths, cfg.cache.dir, recipe, jobs=jobs, progress=progress, pool=pool)
    tracks = index.tracks.copy()
    tracks["digest"] = [r.digest for r in results]
    tracks["n_segments"] = [r.n_segments for r in results]
    reasons = [r.reason for r in results]
    skipped = [(p, t, r) for p, t, r in zip(paths, tracks.track_id, reasons, strict=True) if r is not None]
    n_failed = len(skipped)
    skipped += [(p, Path(p).stem, r) for p, r in index.problems]  # reported while indexing; not extracted or kept apart
    tracks = tracks[np.array([r is None for r in reasons], dtype=bool)].reset_index(drop=True)
    columns = features.feature_columns(cfg.features.n_mfcc)
    rows = np.stack([store.track_row(d) for d in tracks.digest]) if len(tracks) else np.zeros((0, len(columns)))
    tracks = pd.concat([tracks, pd.DataFrame(rows, columns=columns)], axis=1)
    segments = _segment_table(tracks, store, columns)
    skipped = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
    seconds = time.perf_counter() - started
    extracted = sum(not r.hit for r in results)
    stats = {
        "tracks": len(tracks),
        "segments": len(segments),
        "skipped": n_failed,
        "reported": len(skipped) - n_failed,
        "cache_hits": sum(r.hit for r in results),
        "extracted": extracted,
        "seconds": round(seconds, 2),
        "clips_per_second": round(len(results) / seconds, 2) if seconds > 0 else None,
        "split": index.split_note,
        "splits": tracks["split"].value_counts().sort_index().to_dict(),
        "genres": genre_counts(tracks),
        "skipped_by_reason": skipped.reason.map(reason_kind).value_counts().to_dict(),
        "ignored": index.ignored,
        "recipe_key": recipe.key,
    }
    return Prepared(tracks, segments, skipped, stats)


def genre_counts(tracks: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Tracks per genre and split, {genre: {"train": n, "valid": n, "test": n}}, for labeled tracks."""
    labeled = tracks[(tracks.label != "") & tracks.split.isin(SPLITS)]
    table = pd.crosstab(labeled.label, labeled.split).reindex(columns=list(SPLITS), fill_value=0)
    return {genre: {split: int(n) for split, n in row.items()} for genre, row in table.iterrows()}


def genre_lines(genres: dict[str, dict[str, int]]) -> list[str]:
    """The tracks per genre and split, and a line on imbalance where the training split has it."""
    if not genres:
        return []
    width = max(map(len, genres))
    lines = [f"{len(genres)} genres, tracks in train / valid / test:"]
    lines += [f"  {genre:<{width}}  " + " / ".join(str(n[s]) for s in SPLITS) for genre, n in genres.items()]
    train = {genre: n["train"] for genre, n in genres.items()}
    most, least = max(train, key=train.get), min(train, key=train.get)
    if train[least] and train[most] >= IMBALANCE * train[least]:
        lines.append(
            f"imbalanced: train has {train[most]} {most} tracks but {train[least]} {least} "
            f"({train[most] / train[least]:.1f}x); the report's balanced accuracy weighs every genre alike, "
            "and train.class_weight: balanced weights the loss by inverse frequency"
        )
    return lines


def reason_kind(reason: str) -> str:
    """A skip reason without its particulars: `too short (0.30 s < ...)` -> `too short`."""
    for mark in (" (", ": "):
        reason = reason.split(mark, 1)[0]
    return reason


def prepare(cfg: Config, jobs: int | None = None, progress: bool = True) -> Prepared:
    """The dataset a config describes, demo audio generated first when it asks for it."""
    if cfg.data.source == "demo":
        from genre_tf.demo import generate_demo

        generate_demo(
            cfg.data.root, cfg.data.demo_tracks_per_genre, cfg.data.demo_seconds, cfg.audio.sample_rate, cfg.seed
        )
    index = build_index(cfg.data, cfg.seed)
    if progress:  # before extraction, which can take a while
        counts = genre_counts(index.tracks)
        print("\n".join([f"split: {index.split_note}", *genre_lines(counts)]), flush=True)
    return prepare_index(index, cfg, jobs, progress)


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def write_prepared(prepared: Prepared, cfg: Config, out_dir: Path) -> None:
    """The dataset view a user can open: tables, skipped files, summary and config."""
    track_table = prepared.tracks.drop(columns=["path", "digest"])
    write_atomic(out_dir / "index.csv", _csv_bytes(prepared.tracks[["track_id", "path", "label", "split", "digest"]]))
    write_atomic(out_dir / "features_track.csv", _csv_bytes(track_table))
    write_atomic(
        out_dir / "features_segment.csv", _csv_bytes(prepared.segments.drop(columns=["mel_path", "musicnn_path"]))
    )
    write_atomic(out_dir / "skipped.csv", _csv_bytes(prepared.skipped))
    write_atomic(out_dir / "summary.json", json.dumps(prepared.stats, indent=1).encode())
    save_config(cfg, out_dir / "config.yaml")


def format_summary(prepared: Prepared) -> str:
    s = prepared.stats
    lines = [
        f"tracks {s['tracks']}  segments {s['segments']}  skipped {s['skipped']}  reported {s['reported']}  "
        f"cache hits {s['cache_hits']}  extracted {s['extracted']}",
        f"{s['seconds']:.1f} s, {s['clips_per_second']} clips/s; splits {s['splits']}",
    ]
    return "\n".join(lines + skipped_lines(prepared.skipped) + ignored_lines(s["ignored"]))


def skipped_lines(skipped: pd.DataFrame, listed: int = 5, examples: int = 2) -> list[str]:
    """A few skipped files one by one (`skipped PATH: REASON`); more grouped by reason, most first, with a few of
    each (`300 skipped: duplicate track id (rock/1.mp3, ...)`). skipped.csv has every one with its whole reason."""
    if len(skipped) <= listed:
        return [f"skipped {row.path}: {row.reason}" for row in skipped.itertuples()]
    groups = skipped.groupby(skipped.reason.map(reason_kind), sort=False).path
    lines = []
    for kind, paths in sorted(groups, key=lambda group: -len(group[1])):
        shown = ", ".join(paths.iloc[:examples]) + (", ..." if len(paths) > examples else "")
        lines.append(f"{len(paths)} skipped: {kind} ({shown})")
    return [*lines, "every skipped file, with its whole reason, is in skipped.csv"]


def ignored_lines(ignored: dict[str, int]) -> list[str]:
    if not ignored:
        return []
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(ignored.items(), key=lambda item: -item[1]))
    return [f"ignored {sum(ignored.values())} files that are not audio: {kinds}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genre_tf.prepare", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: cache.jobs, 0 = all cores)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    try:
        prepared = prepare(cfg, jobs=args.jobs)
    except ConfigError as err:
        exit_config_error(err)
    out_dir = prepared_dir(cfg)
    write_prepared(prepared, cfg, out_dir)
    print(format_summary(prepared))
    print(f"written to {out_dir}")


if __name__ == "__main__":
    main()
