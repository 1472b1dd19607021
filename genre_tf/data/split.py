"""How a dataset's tracks are split (always by track, before segmenting): the shipped GTZAN split, a split file,
stratified or k-fold, made again over the tracks that decode, and checked to give a sound model."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from genre_tf.config import ConfigError, DataConfig
from genre_tf.data.index import GTZAN_ID, SPLITS, Index, index_csv, index_folder, track_id_of

UNASSIGNED = "unassigned"  # tracks a split file does not list: kept in the index, reported, never trained on


GTZAN_SPLIT = "the GTZAN fault-filtered split"


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
    with resources.as_file(resources.files("genre_tf.data") / "splits" / "gtzan_fault_filtered.csv") as path:
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
    note = split_note(method, reason, data, seed, len(missing))
    return Index(tracks, problems, note, index.ignored, method, index.root)


def stratified_minimum(valid: float, test: float) -> int:
    """The fewest tracks a genre needs so that the stratified split gives it one in train and in every split whose
    fraction is above 0."""
    for n in range(1, 1000):
        n_test, n_valid = int(round(n * test)), int(round(n * valid))
        if (n_test or not test) and (n_valid or not valid) and n - n_test - n_valid >= 1:
            return n
    raise ConfigError("data.valid_fraction", f"valid {valid:g} and test {test:g} leave no track to train on")


def _counts(genres: pd.Series) -> str:
    return ", ".join(f"{genre} {n}" for genre, n in genres.items())


def check_trainable(index: Index, data: DataConfig, failed: int = 0) -> None:
    """Raise ConfigError where the split cannot give a sound model: fewer than two genres, a genre with too few
    tracks for the split asked, or none in train, or none in a valid or test split that others have; an empty valid
    split. `build_index` checks before any audio is read, `split_decodable` again over the tracks that decoded
    (`failed`: how many did not)."""
    source_key = "data.csv" if data.source in ("csv", "table") else "data.root"
    method = index.split_method
    tracks = index.tracks[(index.tracks.label != "") & index.tracks.split.isin(SPLITS)]
    per_genre = tracks.groupby("label").size()
    after = f"; {failed} files that failed to decode left out" if failed else ""
    if len(per_genre) < 2:
        if not len(per_genre) and (index.tracks.label == "").any() and data.source == "folder":
            problem = (
                f"{(index.tracks.label == '').sum()} audio files but no genre folder in {data.root}; "
                f"put each genre's files in a subfolder named after it ({data.root}/<genre>/...)"
            )
            raise ConfigError(source_key, problem)
        found = f"only one genre ({_counts(per_genre)} tracks{after})" if len(per_genre) else "no labeled tracks"
        raise ConfigError(source_key, f"{found}; a genre classifier needs at least two genres")
    if method == "stratified":
        need = stratified_minimum(data.valid_fraction, data.test_fraction)
        rule = f"a stratified split with valid {data.valid_fraction:g} and test {data.test_fraction:g}"
    elif method == "folds":
        need, rule = data.folds, f"{data.folds}-fold cross-validation"
    else:
        need, rule = 0, ""
    short = per_genre[per_genre < need]
    if len(short):
        problem = f"too few tracks in genre {_counts(short)}{after}: {rule} needs {need} per genre"
        raise ConfigError("data.split", problem)
    key = "data.split_file" if method == "file" else "data.split"
    if method in ("file", "gtzan") and not (tracks.split == "valid").any():
        raise ConfigError(key, f"the valid split is empty ({index.split_note}{after})")
    for split, name in (("train", "training"), ("valid", "valid"), ("test", "test")):
        if split != "train" and not (tracks.split == split).any():
            continue  # a split this config does not make (test_fraction 0); one it makes holds every genre
        held = tracks[tracks.split == split].groupby("label").size().reindex(per_genre.index, fill_value=0)
        if (held == 0).any():
            missing = ", ".join(held.index[held == 0])
            raise ConfigError(key, f"no {name} track in genre {missing} ({index.split_note}{after})")


def split_decodable(index: Index, decoded: np.ndarray, data: DataConfig, seed: int) -> Index:
    """The split index of the tracks that decoded (`decoded`: a mask over index.tracks), checked again.

    A split that depends on which tracks there are (stratified, folds) is made again over them, so a file that
    fails to decode takes no slot in valid or test; a split by track id (a split file, the GTZAN split) keeps
    every decoded track where the table puts it. Without failures the index comes back as it was."""
    decoded = np.asarray(decoded, dtype=bool)
    if decoded.all():
        return index
    tracks = index.tracks[decoded].reset_index(drop=True)
    assigned = (tracks.label != "") & tracks.split.isin(SPLITS)
    if index.split_method == "folds":
        tracks.loc[assigned, "split"] = split_k_fold(tracks[assigned], data.folds, data.fold)
    elif index.split_method == "stratified":
        tracks.loc[assigned, "split"] = split_stratified(
            tracks[assigned], data.valid_fraction, data.test_fraction, seed
        )
    kept = replace(index, tracks=tracks)
    check_trainable(kept, data, failed=int((~decoded).sum()))
    return kept


def build_index(data: DataConfig, seed: int) -> Index:
    """The labeled, split index for an audio dataset config (source folder, demo or csv), checked to be trainable."""
    index = index_csv(data.csv) if data.source == "csv" else index_folder(data.root)
    if index.tracks.empty:
        where = data.csv if data.source == "csv" else data.root
        ignored = sum(index.ignored.values())
        raise ConfigError(
            "data.root" if data.source != "csv" else "data.csv",
            f"no audio files in {where}" + (f" ({ignored} other files ignored)" if ignored else ""),
        )
    index = assign_splits(index, data, seed)
    check_trainable(index, data)
    return index


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
