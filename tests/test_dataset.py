"""Dataset index and splits: by track, reproducible, reported problems."""

from pathlib import Path

import pandas as pd
import pytest

from genre_tf.config import load_config
from genre_tf.dataset import build_index, fold_numbers, gtzan_split, index_csv, index_folder, index_table, track_id_of

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
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
    assert index.labels == ["a", "b", "c"]


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
    assert tracks.loc["blues.00000", "label"] == "blues" and tracks.loc["blues.00000", "split"] == "train"
    assert tracks.loc["rock.00001", "split"] == "valid"
    assert tracks.loc["mystery", "split"] == "unassigned"
    assert sorted(index.problems) == [
        (str(tmp_path / "mystery.wav"), "no label (not in a genre folder)"),
        (str(tmp_path / "mystery.wav"), f"not in split file {split_file}"),
    ]


def test_shipped_split_is_the_fault_filtered_one():
    table = gtzan_split()
    assert table.split.value_counts().to_dict() == {"train": 443, "valid": 197, "test": 290}
    assert table.loc["jazz.00054", "genre"] == "jazz" and table.loc["blues.00012", "split"] == "test"
