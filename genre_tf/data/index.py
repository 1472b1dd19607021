"""Dataset index (track_id, path, label, split): the audio files of a folder per genre, a CSV of path,label rows or
paths to predict, each with its track id, and the files left out with their reasons (splits: genre_tf.data.split)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from genre_tf.config import ConfigError
from genre_tf.data.paths import (  # noqa: F401  (their home was here: data.index names them still)
    GTZAN_GENRES,
    GTZAN_ID,
    UNREADABLE_AUDIO,
    Walk,
    _dedupe,
    _hidden,
    common_root,
    track_id,
    track_id_of,
    walk_folder,
)

INDEX_COLUMNS = ["track_id", "path", "label", "split"]
SPLITS = ("train", "valid", "test")


@dataclass
class Index:
    """The tracks of one dataset, with problems found while indexing (reported, never silently dropped)."""

    tracks: pd.DataFrame
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    split_note: str = ""  # which split the tracks got and why, for the run's log and summary
    ignored: dict[str, int] = field(default_factory=dict)  # files that are not audio, by extension: counted only
    split_method: str = ""  # folds, file, gtzan or stratified (choose_split)
    root: Path | None = None  # the folder ids are made below (`track_id`), also for the files reported

    def problem_id(self, path: str) -> str:
        """The id a reported file would have had as a track (`reggae/06 Song` for an .m4a in reggae/)."""
        if self.root is None:
            return Path(path).stem
        made, suffix = track_id(path, self.root), Path(path).suffix  # an unreadable format's extension too
        return made[: -len(suffix)] if suffix and made.lower().endswith(suffix.lower()) else made


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=INDEX_COLUMNS).astype({"label": str, "split": str})


def _row(path: Path, root: Path, label: str = "") -> dict:
    return {"track_id": track_id(path, root), "path": str(path), "label": label, "split": ""}


def _walked_index(rows: list[dict], walk: Walk, root: Path) -> Index:
    rows, problems = _dedupe(rows)
    problems = [(str(p), f"unsupported audio format {p.suffix.lower()}") for p in walk.unreadable] + problems
    return Index(_frame(rows), problems, ignored=dict(walk.ignored), root=Path(root))


def index_folder(root: Path, labeled: bool = True) -> Index:
    """Index a folder per genre (every audio file below a genre folder, at any depth, is of that genre), or with
    `labeled=False` every audio file below `root` (unlabeled). Files that are not audio are counted, not listed."""
    root = Path(root)
    if not root.is_dir():
        where = "" if root.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise ConfigError("data.root", f"folder does not exist: {root}{where}")
    walk = Walk()
    if not labeled:
        return _walked_index([_row(p, root) for p in walk_folder(root, walk)], walk, root)
    seen, rows = {os.path.realpath(root)}, []
    entries = sorted(p for p in root.iterdir() if not _hidden(p.name))
    for genre_dir in (p for p in entries if p.is_dir()):
        rows += [_row(p, root, genre_dir.name) for p in walk_folder(genre_dir, walk, seen)]
    # Files beside the genre folders have no label of their own; a split file with genres can give one.
    rows += [_row(p, root) for p in walk.audio([p for p in entries if not p.is_dir()])]
    return _walked_index(rows, walk, root)


def index_paths(paths: list[Path]) -> Index:
    """Unlabeled index of audio files, and of every audio file below the given folders (for prediction); ids are
    made below the inputs' common folder, so `A/01.mp3` and `B/01.mp3` are two tracks."""
    root, walk, rows = common_root(paths), Walk(), []
    for path in map(Path, paths):
        if path.is_dir():
            rows += [_row(p, root) for p in walk_folder(path, walk)]
        else:
            rows.append(_row(path, root))  # named on the command line: read, or skipped with its reason
    return _walked_index(rows, walk, root)


def index_csv(csv_path: Path) -> Index:
    """Index a CSV of path,label rows; relative paths are relative to the CSV's folder, and so are ids (the paths
    as written, without the extension) unless some file lies outside it: then the files' common folder."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ConfigError("data.csv", f"{csv_path} lacks column(s) {', '.join(sorted(missing))}")
    base = Path(os.path.abspath(Path(csv_path).parent))
    paths = [Path(path) if Path(path).is_absolute() else Path(csv_path).parent / path for path in table["path"]]
    inside = all(Path(os.path.abspath(p)).is_relative_to(base) for p in paths)
    root = base if inside else common_root(paths)
    rows, problems = _dedupe([_row(path, root, label) for path, label in zip(paths, table["label"], strict=True)])
    return Index(_frame(rows), problems, root=root)
