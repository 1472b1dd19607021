"""Dataset index and splits: by track, reproducible, reported problems."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from genre_tf.config import ConfigError, load_config
from genre_tf.dataset import (
    GTZAN_GENRES,
    build_index,
    fold_numbers,
    gtzan_split,
    index_csv,
    index_folder,
    index_table,
    track_id_of,
)
from genre_tf.demo import generate_demo

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"../shared/data not found at {SHARED}")


def make_tree(root: Path, genres=("a", "b", "c"), per_genre=10) -> None:
    for genre in genres:
        (root / genre).mkdir(parents=True)
        for i in range(per_genre):
            (root / genre / f"{genre}.{i:05d}.wav").write_bytes(b"x")
    (root / "a" / ".DS_Store").write_bytes(b"")


def test_folder_index_uses_stems_and_folders(tmp_path):
    make_tree(tmp_path)
    index = index_folder(tmp_path)
    assert len(index.tracks) == 30
    assert index.tracks.track_id.iloc[0] == "a.00000"
    assert sorted(index.tracks.label.unique()) == ["a", "b", "c"]


def test_duplicate_stems_are_reported(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "a" / "a.00000.au").write_bytes(b"x")
    index = index_folder(tmp_path)
    assert len(index.tracks) == 30
    assert index.problems and "duplicate track id a.00000" in index.problems[0][1]


def test_csv_index_resolves_relative_paths(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"x")
    pd.DataFrame({"path": ["x.wav", "/abs/y.mp3"], "label": ["rock", "jazz"]}).to_csv(tmp_path / "i.csv", index=False)
    tracks = index_csv(tmp_path / "i.csv").tracks
    assert tracks.path.tolist() == [str(tmp_path / "x.wav"), "/abs/y.mp3"]
    assert tracks.track_id.tolist() == ["x", "y"]


def test_stratified_split_is_reproducible_and_by_track(tmp_path):
    make_tree(tmp_path)
    cfg = load_config(None, ["data.source=folder", f"data.root={tmp_path}", "data.valid_fraction=0.2"])
    first = build_index(cfg.data, seed=1).tracks
    assert first.equals(build_index(cfg.data, seed=1).tracks)
    assert not first.split.equals(build_index(cfg.data, seed=2).tracks.split)
    counts = first.groupby(["label", "split"]).size().unstack()
    assert (counts["test"] == 2).all() and (counts["valid"] == 2).all() and (counts["train"] == 6).all()
    assert build_index(cfg.data, seed=1).split_note == "stratified by track, seed 1 (track ids are not GTZAN ids)"


def test_k_fold_keeps_neighbouring_ids_together(tmp_path):
    make_tree(tmp_path)
    tracks = index_folder(tmp_path).tracks
    folds = fold_numbers(tracks, 5)
    assert folds[:10].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    cfg = load_config(None, ["data.source=folder", f"data.root={tmp_path}", "data.folds=5", "data.fold=4"])
    split = build_index(cfg.data, 0).tracks.split
    assert split[:10].tolist() == ["valid"] * 2 + ["train"] * 6 + ["test"] * 2


def test_feature_table_with_split_column(tmp_path):
    table = pd.DataFrame(
        {"filename": ["a.00000.wav", "a.00001.wav", "b.00000.wav"], "length": 3, "rms_mean": [0.1, 0.2, 0.3]}
    )
    table["label"], table["split"] = ["a", "a", "b"], ["train", "excluded", "valid"]
    table.to_csv(tmp_path / "t.csv", index=False)
    cfg = load_config(None, ["data.source=table", f"data.csv={tmp_path / 't.csv'}"])
    index, features = index_table(cfg.data.csv, cfg.data, 0)
    assert index.tracks.split.tolist() == ["train", "unassigned", "valid"]
    assert index.split_note == f"the split column of {tmp_path / 't.csv'}"
    assert index.problems == [("a.00001", f"split 'excluded' in {tmp_path / 't.csv'}")]
    assert features.loc["b.00000", "rms_mean"] == 0.3
    assert track_id_of("test.0001") == "test.0001"


@needs_shared
def test_fault_filtered_split_reports_missing_tracks():
    cfg = load_config(
        None,
        [
            "data.source=folder",
            f"data.root={SHARED / 'gtzan_mini'}",
            f"data.split_file={SHARED / 'gtzan_split' / 'fault_filtered.csv'}",
        ],
    )
    index = build_index(cfg.data, 0)
    counts = index.tracks.split.value_counts().to_dict()
    assert counts == {"valid": 49, "train": 40, "unassigned": 7, "test": 4}
    assert len(index.problems) == 7 and all("not in split file" in reason for _, reason in index.problems)


def test_loose_files_take_labels_from_a_split_file(tmp_path):
    (tmp_path / "rock").mkdir()
    for name in ("rock/rock.00001.wav", "blues.00000.au", "mystery.wav"):
        (tmp_path / name).write_bytes(b"x")
    split_file = tmp_path.parent / f"{tmp_path.name}-split.csv"
    split_file.write_text("track_id,genre,split\nblues.00000,blues,train\nrock.00001,rock,valid\n")
    cfg = load_config(None, ["data.source=folder", f"data.root={tmp_path}", f"data.split_file={split_file}"])
    index = build_index(cfg.data, 0)
    tracks = index.tracks.set_index("track_id")
    assert index.split_note == f"split file {split_file} (3 tracks; 1 not in the split reported)"
    assert tracks.loc["blues.00000", "label"] == "blues" and tracks.loc["blues.00000", "split"] == "train"
    assert tracks.loc["rock.00001", "split"] == "valid"
    assert tracks.loc["mystery", "split"] == "unassigned"
    assert sorted(index.problems) == [
        (str(tmp_path / "mystery.wav"), "no label (not in a genre folder)"),
        (str(tmp_path / "mystery.wav"), f"not in split file {split_file}"),
    ]


def make_gtzan_tree(root: Path, ids: list[str]) -> None:
    """Empty files named like GTZAN clips, in genre folders (`mine.00000` goes to `mine/`)."""
    for track_id in ids:
        (root / track_id.split(".")[0]).mkdir(parents=True, exist_ok=True)
        (root / track_id.split(".")[0] / f"{track_id}.wav").write_bytes(b"x")


ALL_GTZAN = [f"{genre}.{i:05d}" for genre in GTZAN_GENRES for i in range(100)]


def folder_config(root: Path, *overrides: str):
    return load_config(None, ["data.source=folder", f"data.root={root}", *overrides])


def test_shipped_split_is_the_fault_filtered_one():
    table = gtzan_split()
    assert table.split.value_counts().to_dict() == {"train": 443, "valid": 197, "test": 290}
    assert table.loc["jazz.00054", "genre"] == "jazz" and table.index.isin(ALL_GTZAN).all()


def test_gtzan_ids_get_the_shipped_split_by_default(tmp_path):
    make_gtzan_tree(tmp_path, ALL_GTZAN)
    index = build_index(folder_config(tmp_path).data, 0)
    assert index.tracks.split.value_counts().to_dict() == {"train": 443, "test": 290, "valid": 197, "unassigned": 70}
    split = index.tracks.set_index("track_id").split
    assert split[["blues.00000", "blues.00012", "jazz.00054", "rock.00090", "rock.00099"]].tolist() == [
        "valid",
        "test",
        "train",
        "test",
        "train",
    ]
    assert index.split_note == "gtzan fault-filtered (1000 GTZAN track ids; 70 not in the split reported)"
    assert len(index.problems) == 70 and {r for _, r in index.problems} == {"not in the GTZAN fault-filtered split"}


def test_folds_win_over_the_gtzan_split(tmp_path):
    make_gtzan_tree(tmp_path, [f"{genre}.{i:05d}" for genre in ("blues", "rock") for i in range(10)])
    index = build_index(folder_config(tmp_path, "data.folds=5", "data.fold=4").data, 0)
    assert index.split_note == "grouped 5-fold by track id, fold 4 test, fold 0 valid (data.folds 5)"
    assert index.tracks.split[:10].tolist() == ["valid"] * 2 + ["train"] * 6 + ["test"] * 2


def test_some_gtzan_ids_get_a_stratified_split_unless_gtzan_is_asked_for(tmp_path):
    # GTZAN with music of one's own: auto leaves nobody's tracks out; data.split=gtzan leaves out the others.
    make_gtzan_tree(tmp_path, [f"blues.{i:05d}" for i in range(10)] + [f"mine.{i:05d}" for i in range(10)])
    auto = build_index(folder_config(tmp_path).data, 7)
    assert auto.split_note == "stratified by track, seed 7 (only 10 of 20 track ids are GTZAN ids)"
    assert not auto.problems and auto.tracks.split.value_counts().to_dict() == {"train": 12, "test": 4, "valid": 4}
    gtzan = build_index(folder_config(tmp_path, "data.split=gtzan").data, 7)
    split = gtzan.tracks.set_index("track_id").split
    assert (split[[f"mine.{i:05d}" for i in range(10)]] == "unassigned").all()
    assert split[[f"blues.{i:05d}" for i in range(10)]].tolist() == gtzan_split().split.iloc[:10].tolist()
    assert gtzan.split_note == (
        "gtzan fault-filtered (data.split gtzan; 10 of 20 track ids are GTZAN ids; 10 not in the split reported)"
    )


def test_asking_for_gtzan_without_gtzan_ids_is_a_config_error(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(ConfigError, match="data.split: is gtzan, but none of the 30 track ids is in the GTZAN"):
        build_index(folder_config(tmp_path, "data.split=gtzan").data, 0)
    index = build_index(folder_config(tmp_path, "data.split=stratified").data, 3)
    assert index.split_note == "stratified by track, seed 3 (data.split stratified)"


@needs_shared
def test_gtzan_mini_gets_the_shipped_split_without_folds():
    index = build_index(folder_config(SHARED / "gtzan_mini").data, 0)
    assert index.tracks.split.value_counts().to_dict() == {"valid": 49, "train": 40, "unassigned": 7, "test": 4}
    assert index.split_note == "gtzan fault-filtered (100 GTZAN track ids; 7 not in the split reported)"


@needs_shared
def test_loose_gtzan_files_are_labeled_by_their_ids():
    tracks = build_index(folder_config(SHARED / "gtzan_formats").data, 0).tracks.set_index("track_id")
    assert tracks.label.to_dict() == {g: g.split(".")[0] for g in tracks.index}
    assert tracks.split.to_dict() == {
        "blues.00000": "valid",
        "classical.00001": "valid",
        "jazz.00054": "train",
        "rock.00000": "train",
    }


def test_prepare_with_any_music_folder_needs_no_split_file(tmp_path):
    generate_demo(tmp_path / "music", tracks_per_genre=2, seconds=3.2, sample_rate=22050)
    command = [sys.executable, "-m", "genre_tf.prepare", "--config", "configs/cnn.yaml", "--jobs", "1"]
    command += ["--set", f"data.root={tmp_path / 'music'}", "--set", f"cache.dir={tmp_path / 'cache'}"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    line = "split: stratified by track, seed 42 (track ids are not GTZAN ids)"
    assert proc.stdout.splitlines()[0] == line
    summary = json.loads((tmp_path / "cache" / "prepared" / "gtzan_cnn" / "summary.json").read_text())
    assert summary["split"] == line.removeprefix("split: ") and summary["tracks"] == 12
