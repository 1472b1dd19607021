"""Build the feature and mel-image caches for a config and print a summary.

Computes the representations the config's model reads (feature rows for the MLP, mel images for the CNN and
keras.applications backbones, musicnn patches for musicnn), or those named by --representations, and writes the
dataset view to `<cache.dir>/prepared/<name>/`: index.csv, skipped.csv, summary.json, the resolved config.yaml,
and with feature rows features_track.csv (the published GTZAN columns, one row per track) and
features_segment.csv (one row per segment). With --engine beam the same analysis runs as an Apache Beam pipeline
and writes sharded records instead (genre_tf.extract.beam, genre_tf.extract.shards), which train reads with data.shards.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genre_tf.config import Config, save_config
from genre_tf.data.demo import generate_demo
from genre_tf.data.index import SPLITS, Index
from genre_tf.data.split import build_index, split_decodable
from genre_tf.extract.cache import Recipe, TrackCache, write_atomic
from genre_tf.extract.pool import SharedPool, extract_all
from genre_tf.features import analysis as features
from genre_tf.features import representations

SKIPPED_COLUMNS = ["path", "track_id", "reason"]
IMBALANCE = 1.5  # a training split whose largest genre has this many times the tracks of its smallest is reported


@dataclass
class Prepared:
    """A dataset ready for pipelines: usable tracks, their segments, and what was skipped."""

    tracks: pd.DataFrame  # track_id, path, label, split, digest, n_segments, [feature columns]
    segments: pd.DataFrame  # track_id, segment, label, split, [mel_path], [musicnn_path], [feature columns]
    skipped: pd.DataFrame  # path, track_id, reason
    stats: dict = field(default_factory=dict)


def prepared_dir(cfg: Config) -> Path:
    return Path(cfg.cache.dir) / "prepared" / cfg.name


def _segment_table(tracks: pd.DataFrame, cache: TrackCache, columns: list[str]) -> pd.DataFrame:
    """One row per segment: its track, place, label and split, its cached files, and its feature row if computed."""
    layout = next(iter(cache.stores.values()))  # every store holds the same segments of a track
    names = ["track_id", "segment", "label", "split"]
    names += [representations.PATH_COLUMNS[name] for name in cache.names if name in representations.PATH_COLUMNS]
    names += columns if representations.FEATURES in cache.names else []
    frames = []
    for track in tracks.itertuples():
        frame = pd.DataFrame({"track_id": track.track_id, "segment": layout.segment_positions(track.digest)})
        frame["label"], frame["split"] = track.label, track.split  # segment: k, it starts k segment hops in
        for name, column in representations.PATH_COLUMNS.items():
            if name in cache.names:
                frame[column] = cache[name].paths(track.digest, track.n_segments)
        if representations.FEATURES in cache.names:
            rows = cache[representations.FEATURES].segment_rows(track.digest)
            frame = pd.concat([frame, pd.DataFrame(rows, columns=columns)], axis=1)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[names] if frames else pd.DataFrame(columns=names)


def prepare_index(
    index: Index,
    cfg: Config,
    jobs: int | None = None,
    progress: bool = True,
    pool: SharedPool | None = None,
    names: tuple[str, ...] | None = None,
) -> Prepared:
    """Extract (or find in the cache) the representations `names` (default: what the config's model reads) of
    every track of an index and assemble the tables; `pool`: extraction's worker processes, shared with other
    calls (`pool.extraction_pool`)."""
    started = time.perf_counter()
    recipe = Recipe.from_config(cfg)
    cache = TrackCache(cfg.cache.dir, recipe, (representations.read_by(cfg.model),) if names is None else names)
    paths = index.tracks["path"].tolist()
    jobs = cfg.cache.jobs if jobs is None else jobs
    results = extract_all(paths, cfg.cache.dir, recipe, cache.names, jobs=jobs, progress=progress, pool=pool)
    tracks = index.tracks.copy()
    tracks["digest"] = [r.digest for r in results]
    tracks["n_segments"] = [r.n_segments for r in results]
    reasons = [r.reason for r in results]
    skipped = [(p, t, r) for p, t, r in zip(paths, tracks.track_id, reasons, strict=True) if r is not None]
    n_failed = len(skipped)
    # Reported while indexing: not extracted or kept apart.
    skipped += [(p, index.problem_id(p), r) for p, r in index.problems]
    decoded = np.array([r is None for r in reasons], dtype=bool)
    tracks = tracks[decoded].reset_index(drop=True)
    if index.split_method:  # a training index: the tracks that failed take no slot in any split
        tracks["split"] = split_decodable(index, decoded, cfg.data, cfg.seed).tracks["split"].to_numpy()
    columns = features.feature_columns(cfg.features.n_mfcc)
    if representations.FEATURES in cache.names:
        store = cache[representations.FEATURES]
        rows = np.stack([store.track_row(d) for d in tracks.digest]) if len(tracks) else np.zeros((0, len(columns)))
        tracks = pd.concat([tracks, pd.DataFrame(rows, columns=columns)], axis=1)
    segments = _segment_table(tracks, cache, columns)
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
        "representations": list(cache.names),
        "cache_keys": recipe.keys(cache.names),
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


def prepare(
    cfg: Config, jobs: int | None = None, progress: bool = True, names: tuple[str, ...] | None = None
) -> Prepared:
    """The dataset a config describes, demo audio generated first when it asks for it; `names`: the
    representations to compute (default: what the config's model reads)."""
    prepared = prepare_index(config_index(cfg, progress), cfg, jobs, progress, names=names)
    if progress:  # the split as trained: over the tracks that decoded
        print("\n".join(genre_lines(prepared.stats["genres"])), flush=True)
    return prepared


def config_index(cfg: Config, progress: bool = True) -> Index:
    """The index of the tracks a config describes (demo audio generated first when it asks for it), its split
    printed with `progress`: what either engine then prepares."""
    if cfg.data.source == "demo":
        generate_demo(
            cfg.data.root, cfg.data.demo_tracks_per_genre, cfg.data.demo_seconds, cfg.audio.sample_rate, cfg.seed
        )
    index = build_index(cfg.data, cfg.seed)
    if progress:  # the tracks per genre and split follow extraction: files that fail to decode take no slot
        print(f"split: {index.split_note}", flush=True)
    return index


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def write_prepared(prepared: Prepared, cfg: Config, out_dir: Path) -> None:
    """The dataset view a user can open: tables, skipped files, summary and config."""
    write_atomic(out_dir / "index.csv", _csv_bytes(prepared.tracks[["track_id", "path", "label", "split", "digest"]]))
    for name in ("features_track.csv", "features_segment.csv"):  # a view of what an earlier prepare computed
        (out_dir / name).unlink(missing_ok=True)
    if representations.FEATURES in prepared.stats["representations"]:
        write_atomic(out_dir / "features_track.csv", _csv_bytes(prepared.tracks.drop(columns=["path", "digest"])))
        paths = [column for column in representations.PATH_COLUMNS.values() if column in prepared.segments]
        write_atomic(out_dir / "features_segment.csv", _csv_bytes(prepared.segments.drop(columns=paths)))
    write_atomic(out_dir / "skipped.csv", _csv_bytes(prepared.skipped))
    write_atomic(out_dir / "summary.json", json.dumps(prepared.stats, indent=1).encode())
    save_config(cfg, out_dir / "config.yaml")


def format_summary(prepared: Prepared) -> str:
    s = prepared.stats
    lines = [
        f"tracks {s['tracks']}  segments {s['segments']}  skipped {s['skipped']}  reported {s['reported']}  "
        f"cache hits {s['cache_hits']}  extracted {s['extracted']}",
        f"{s['seconds']:.1f} s, {s['clips_per_second']} clips/s; splits {s['splits']}; "
        f"computed: {', '.join(s['representations'])}",
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


def chosen_representations(choice: str, cfg: Config) -> tuple[str, ...]:
    """--representations: `model`, `all`, or names; ConfigError for an unknown one."""
    if choice == "model":
        return (representations.read_by(cfg.model),)
    if choice == "all":
        return representations.ALL
    return representations.check([name.strip() for name in choice.split(",") if name.strip()])
