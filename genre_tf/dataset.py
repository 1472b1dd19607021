"""Dataset index (track_id, path, label, split) and splits by track, made before any segmenting."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from genre_tf.config import ConfigError, DataConfig

INDEX_COLUMNS = ["track_id", "path", "label", "split"]
SPLITS = ("train", "valid", "test")
UNASSIGNED = "unassigned"  # tracks a split file does not list: kept in the index, reported, never trained on
GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
GTZAN_ID = re.compile(rf"({'|'.join(GTZAN_GENRES)})\.000\d\d")  # the 1000 clips, blues.00000 .. rock.00099
GTZAN_SPLIT = "the GTZAN fault-filtered split"


@dataclass
class Index:
    """The tracks of one dataset, with problems found while indexing (reported, never silently dropped)."""

    tracks: pd.DataFrame
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    split_note: str = ""  # which split the tracks got and why, for the run's log and summary


def _is_candidate(entry: Path) -> bool:
    # Hidden files (.DS_Store, ._x.wav) are file-system noise, not tracks.
    return not entry.name.startswith(".")


def _dedupe(rows: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Keep the first file of each track id; later files with the same stem are reported."""
    seen: dict[str, str] = {}
    kept, problems = [], []
    for row in rows:
        if row["track_id"] in seen:
            problems.append((row["path"], f"duplicate track id {row['track_id']} (also {seen[row['track_id']]})"))
            continue
        seen[row["track_id"]] = row["path"]
        kept.append(row)
    return kept, problems


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=INDEX_COLUMNS).astype({"label": str, "split": str})


def index_folder(root: Path, labeled: bool = True) -> Index:
    """Index a folder per genre (GTZAN layout), or with `labeled=False` every file below `root` (unlabeled)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError("data.root", f"folder does not exist: {root}")
    rows = []
    if labeled:
        entries = sorted(p for p in root.iterdir() if _is_candidate(p))
        for genre_dir in (p for p in entries if p.is_dir() and not p.suffix):
            for entry in sorted(p for p in genre_dir.iterdir() if _is_candidate(p)):
                rows.append({"track_id": entry.stem, "path": str(entry), "label": genre_dir.name, "split": ""})
        # Files beside the genre folders have no label of their own; a split file with genres can give one.
        for entry in (p for p in entries if not p.is_dir() or p.suffix):
            rows.append({"track_id": entry.stem, "path": str(entry), "label": "", "split": ""})
    else:
        for entry in sorted(p for p in root.rglob("*") if _is_candidate(p) and (p.is_file() or p.suffix)):
            rows.append({"track_id": entry.stem, "path": str(entry), "label": "", "split": ""})
    rows, problems = _dedupe(rows)
    return Index(_frame(rows), problems)


def index_paths(paths: list[Path]) -> Index:
    """Unlabeled index of audio files, and of every file below the given folders (for prediction)."""
    rows, problems = [], []
    for path in map(Path, paths):
        if path.is_dir():
            folder = index_folder(path, labeled=False)
            rows += folder.tracks.to_dict("records")
            problems += folder.problems
        else:
            rows.append({"track_id": path.stem, "path": str(path), "label": "", "split": ""})
    rows, duplicates = _dedupe(rows)
    return Index(_frame(rows), problems + duplicates)


def index_csv(csv_path: Path) -> Index:
    """Index a CSV of path,label rows; relative paths are relative to the CSV's folder."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ConfigError("data.csv", f"{csv_path} lacks column(s) {', '.join(sorted(missing))}")
    base = Path(csv_path).parent
    rows = []
    for path, label in zip(table["path"], table["label"], strict=True):
        full = Path(path) if Path(path).is_absolute() else base / path
        rows.append({"track_id": full.stem, "path": str(full), "label": label, "split": ""})
    rows, problems = _dedupe(rows)
    return Index(_frame(rows), problems)


def read_split_file(path: Path) -> pd.DataFrame:
    """A `track_id,split[,genre]` CSV indexed by track_id (the fault-filtered GTZAN split has a genre column)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"track_id", "split"} <= set(table.columns):
        raise ConfigError("data.split_file", f"{path} must have columns track_id,split")
    bad = set(table["split"]) - set(SPLITS)
    if bad:
        raise ConfigError("data.split_file", f"unknown split name(s) {', '.join(sorted(bad))} in {path}")
    return table.drop_duplicates("track_id").set_index("track_id")


def gtzan_split() -> pd.DataFrame:
    """The artist-aware fault-filtered GTZAN split (Kereliuk, Sturm & Larsen 2015), shipped with the package.

    Train 443, valid 197, test 290 track ids, the list torchaudio carries in its source; the 70 clips it
    leaves out (repetitions, mislabelings, distortions) are in no split. Ids name their genre, which
    labels GTZAN files that no genre folder labels.
    """
    with resources.as_file(resources.files("genre_tf") / "splits" / "gtzan_fault_filtered.csv") as path:
        table = read_split_file(path)
    table["genre"] = table.index.str.split(".").str[0]
    return table


def split_from_table(
    tracks: pd.DataFrame, table: pd.DataFrame, name: str
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Splits from a split table named `name`; tracks it does not list become `unassigned` and are reported.

    Where the table has a genre (or label) column, it labels the tracks that no genre folder labels.
    """
    tracks = tracks.copy()
    tracks["split"] = tracks["track_id"].map(table["split"]).fillna(UNASSIGNED)
    label_column = next((c for c in ("genre", "label") if c in table.columns), None)
    if label_column:
        unlabeled = tracks["label"] == ""
        tracks.loc[unlabeled, "label"] = tracks.loc[unlabeled, "track_id"].map(table[label_column]).fillna("")
    problems = [(p, f"not in {name}") for p in tracks.loc[tracks.split == UNASSIGNED, "path"]]
    return tracks, problems


def fold_numbers(tracks: pd.DataFrame, folds: int) -> np.ndarray:
    """Grouped folds: each label's tracks sorted by id and cut into `folds` runs of neighbouring ids.

    Neighbouring GTZAN ids are often the same artist, so contiguous runs keep an artist in one fold,
    where a random assignment would leak it across folds.
    """
    fold = np.zeros(len(tracks), dtype=int)
    for _, group in tracks.groupby("label", sort=True):
        order = group.sort_values("track_id").index
        positions = np.arange(len(order))
        fold[tracks.index.get_indexer(order)] = positions * folds // len(order)
    return fold


def split_k_fold(tracks: pd.DataFrame, folds: int, fold: int) -> pd.Series:
    """Fold `fold` is test, the next one valid, the rest train."""
    numbers = fold_numbers(tracks, folds)
    split = np.where(numbers == fold, "test", np.where(numbers == (fold + 1) % folds, "valid", "train"))
    return pd.Series(split, index=tracks.index)


def split_stratified(tracks: pd.DataFrame, valid: float, test: float, seed: int) -> pd.Series:
    """Per label, shuffle tracks with `seed` and cut test / valid / train by the fractions."""
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=tracks.index, dtype=object)
    for _, group in tracks.groupby("label", sort=True):
        order = group.sort_values("track_id").index.to_numpy().copy()
        rng.shuffle(order)
        n_test = int(round(len(order) * test))
        n_valid = int(round(len(order) * valid))
        split[order[:n_test]] = "test"
        split[order[n_test : n_test + n_valid]] = "valid"
    return split


def choose_split(track_ids: pd.Series, data: DataConfig) -> tuple[str, str]:
    """The split a config asks for (folds, file, gtzan or stratified) and why, in words."""
    if data.folds > 1:
        return "folds", f"data.folds {data.folds}"
    if data.split_file is not None:
        return "file", f"{len(track_ids)} tracks"
    is_gtzan = track_ids.str.fullmatch(GTZAN_ID)
    share = f"{is_gtzan.sum()} of {len(track_ids)} track ids are GTZAN ids"
    if data.split != "auto":
        return data.split, f"data.split {data.split}" + (f"; {share}" if data.split == "gtzan" else "")
    # Only a pure GTZAN index takes the GTZAN split: other tracks would all be left out of training.
    if is_gtzan.all() and track_ids.isin(gtzan_split().index).any():
        return "gtzan", f"{len(track_ids)} GTZAN track ids"
    if is_gtzan.all():
        return "stratified", f"GTZAN track ids, none in {GTZAN_SPLIT}"
    return "stratified", f"only {share}" if is_gtzan.any() else "track ids are not GTZAN ids"


def split_note(method: str, reason: str, data: DataConfig, seed: int, n_missing: int) -> str:
    """One line on the split a run used and why: `gtzan fault-filtered (100 GTZAN track ids; ...)`."""
    if method == "folds":
        valid = (data.fold + 1) % data.folds
        return f"grouped {data.folds}-fold by track id, fold {data.fold} test, fold {valid} valid ({reason})"
    if method == "stratified":
        return f"stratified by track, seed {seed} ({reason})"
    name = f"split file {data.split_file}" if method == "file" else "gtzan fault-filtered"
    return f"{name} ({reason}; {n_missing} not in the split reported)"


def assign_splits(index: Index, data: DataConfig, seed: int) -> Index:
    """Give every track a split, by track (never by segment), as the config says, and note which and why."""
    tracks = index.tracks.copy()
    problems = list(index.problems)
    method, reason = choose_split(tracks.track_id, data)
    missing = []
    if method == "file":
        tracks, missing = split_from_table(tracks, read_split_file(data.split_file), f"split file {data.split_file}")
    elif method == "gtzan":
        tracks, missing = split_from_table(tracks, gtzan_split(), GTZAN_SPLIT)
        if len(missing) == len(tracks):
            raise ConfigError("data.split", f"is gtzan, but none of the {len(tracks)} track ids is in {GTZAN_SPLIT}")
    problems += missing
    labeled = tracks.label != ""
    if method == "folds":
        tracks.loc[labeled, "split"] = split_k_fold(tracks[labeled], data.folds, data.fold)
    elif method == "stratified":
        tracks.loc[labeled, "split"] = split_stratified(tracks[labeled], data.valid_fraction, data.test_fraction, seed)
    problems += [(path, "no label (not in a genre folder)") for path in tracks.loc[~labeled, "path"]]
    tracks.loc[~labeled, "split"] = UNASSIGNED
    return Index(tracks, problems, split_note(method, reason, data, seed, len(missing)))


def build_index(data: DataConfig, seed: int) -> Index:
    """The labeled, split index for an audio dataset config (source folder, demo or csv)."""
    index = index_csv(data.csv) if data.source == "csv" else index_folder(data.root)
    if index.tracks.empty:
        raise ConfigError("data.root" if data.source != "csv" else "data.csv", "no tracks found")
    return assign_splits(index, data, seed)


def track_id_of(filename: str) -> str:
    """`blues.00000.wav` -> `blues.00000`; ids without an audio extension are kept as they are."""
    stem, dot, ext = filename.rpartition(".")
    return stem if dot and ext.lower() in ("wav", "au", "flac", "ogg", "mp3") else filename


def index_table(csv_path: Path, data: DataConfig, seed: int) -> tuple[Index, pd.DataFrame]:
    """Index a GTZAN-style feature table (filename, length, features..., [label], [split]).

    Returns the index and the table keyed by track_id. A `split` column is used as it is (rows
    marked e.g. `excluded` are reported and left out) unless the config names a split; without one the
    config's split applies.
    """
    table = pd.read_csv(csv_path, keep_default_na=False)
    if "filename" not in table.columns:
        raise ConfigError("data.csv", f"{csv_path} has no filename column")
    table.insert(0, "track_id", table.pop("filename").map(track_id_of))
    labels = table["label"].astype(str) if "label" in table.columns else pd.Series("", index=table.index)
    paths = pd.Series(str(csv_path), index=table.index)
    tracks = pd.DataFrame({"track_id": table["track_id"], "path": paths, "label": labels, "split": ""})
    index = Index(tracks)
    names_split = data.split != "auto" or data.split_file is not None or data.folds > 1
    if "split" in table.columns and not names_split:
        index.split_note = f"the split column of {csv_path}"
        index.tracks["split"] = table["split"].astype(str)
        for track_id, split in zip(table["track_id"], table["split"], strict=True):
            if split not in SPLITS:
                index.problems.append((track_id, f"split {split!r} in {csv_path}"))
        index.tracks.loc[~index.tracks.split.isin(SPLITS), "split"] = UNASSIGNED
    elif (index.tracks.label != "").any():
        index = assign_splits(index, data, seed)
    features = table.drop(columns=[c for c in ("label", "split") if c in table.columns]).set_index("track_id")
    return index, features
