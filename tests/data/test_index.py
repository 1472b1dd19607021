"""Dataset index and splits: by track, reproducible, reported problems."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genre_tf.config import ConfigError, load_config
from genre_tf.data.demo import generate_demo
from genre_tf.data.index import GTZAN_GENRES, index_csv, index_folder, index_paths, track_id, track_id_of
from genre_tf.data.split import (
    assign_splits,
    build_index,
    fold_numbers,
    gtzan_split,
    index_table,
    split_decodable,
    stratified_minimum,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"../shared/data not found at {SHARED}")


def make_tree(root: Path, genres=("a", "b", "c"), per_genre=10) -> None:
    for genre in genres:
        (root / genre).mkdir(parents=True)
        for i in range(per_genre):
            (root / genre / f"{genre}.{i:05d}.wav").write_bytes(b"x")
    (root / "a" / ".DS_Store").write_bytes(b"")


def test_folder_index_ids_are_paths_below_the_root_and_labels_are_genre_folders(tmp_path):
    make_tree(tmp_path)
    index = index_folder(tmp_path)
    assert len(index.tracks) == 30
    assert index.tracks.track_id.iloc[0] == "a/a.00000"
    assert sorted(index.tracks.label.unique()) == ["a", "b", "c"]
    assert index.ignored == {"hidden": 1} and not index.problems  # .DS_Store: counted as hidden, not as an extension


def test_duplicate_stems_are_reported(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "a" / "a.00000.au").write_bytes(b"x")
    index = index_folder(tmp_path)
    assert len(index.tracks) == 30
    assert index.problems == [
        (str(tmp_path / "a" / "a.00000.wav"), f"duplicate track id (a/a.00000, also {tmp_path / 'a' / 'a.00000.au'})")
    ]


def test_csv_index_resolves_relative_paths(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"x")
    pd.DataFrame({"path": ["x.wav", "/abs/y.mp3"], "label": ["rock", "jazz"]}).to_csv(tmp_path / "i.csv", index=False)
    tracks = index_csv(tmp_path / "i.csv").tracks
    assert tracks.path.tolist() == [str(tmp_path / "x.wav"), "/abs/y.mp3"]
    assert tracks.track_id.tolist() == [track_id(tmp_path / "x.wav", "/"), "abs/y"]  # the files' common folder: /


def test_csv_ids_are_paths_below_the_csvs_folder(tmp_path):
    pd.DataFrame({"path": ["a/song.mp3", "b/song.mp3", "./a/song.mp3"], "label": ["rock", "jazz", "rock"]}).to_csv(
        tmp_path / "i.csv", index=False
    )
    index = index_csv(tmp_path / "i.csv")
    assert index.tracks.track_id.tolist() == ["a/song", "b/song"]  # the third row is the first file again
    assert not index.problems


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
    index = assign_splits(index_folder(cfg.data.root), cfg.data, 0)
    counts = index.tracks.split.value_counts().to_dict()
    assert counts == {"valid": 49, "train": 40, "unassigned": 7, "test": 4}
    assert len(index.problems) == 7 and all("not in split file" in reason for _, reason in index.problems)
    # gtzan_mini's clips 00000-00012 of blues, classical and country are all valid or test in this split
    with pytest.raises(ConfigError, match="data.split_file: no training track in genre blues, classical, country"):
        build_index(cfg.data, 0)


def test_loose_files_take_labels_from_a_split_file(tmp_path):
    (tmp_path / "rock").mkdir()
    for name in ("rock/rock.00001.wav", "blues.00000.au", "mystery.wav"):
        (tmp_path / name).write_bytes(b"x")
    split_file = tmp_path.parent / f"{tmp_path.name}-split.csv"
    split_file.write_text("track_id,genre,split\nblues.00000,blues,train\nrock.00001,rock,valid\n")
    cfg = load_config(None, ["data.source=folder", f"data.root={tmp_path}", f"data.split_file={split_file}"])
    index = assign_splits(index_folder(cfg.data.root), cfg.data, 0)
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
    for name in ids:
        (root / name.split(".")[0]).mkdir(parents=True, exist_ok=True)
        (root / name.split(".")[0] / f"{name}.wav").write_bytes(b"x")


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
    gtzan_data = folder_config(tmp_path, "data.split=gtzan").data
    gtzan = assign_splits(index_folder(tmp_path), gtzan_data, 7)
    split = gtzan.tracks.set_index("track_id").split
    assert (split[[f"mine/mine.{i:05d}" for i in range(10)]] == "unassigned").all()
    with pytest.raises(ConfigError, match="data.root: only one genre \\(blues 10 tracks\\)"):
        build_index(gtzan_data, 7)
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
    data = folder_config(SHARED / "gtzan_mini").data
    index = assign_splits(index_folder(data.root), data, 0)
    assert index.tracks.split.value_counts().to_dict() == {"valid": 49, "train": 40, "unassigned": 7, "test": 4}
    assert index.split_note == "gtzan fault-filtered (100 GTZAN track ids; 7 not in the split reported)"
    with pytest.raises(ConfigError, match="data.split: no training track in genre blues, classical, country"):
        build_index(data, 0)  # which is why configs/gtzan_mini.yaml cross-validates


@needs_shared
def test_loose_gtzan_files_are_labeled_by_their_ids():
    data = folder_config(SHARED / "gtzan_formats").data
    tracks = assign_splits(index_folder(data.root), data, 0).tracks.set_index("track_id")
    assert tracks.label.to_dict() == {g: g.split(".")[0] for g in tracks.index}
    assert tracks.split.to_dict() == {
        "blues.00000": "valid",
        "classical.00001": "valid",
        "jazz.00054": "train",
        "rock.00000": "train",
    }


def test_prepare_with_any_music_folder_needs_no_split_file(tmp_path):
    generate_demo(tmp_path / "music", tracks_per_genre=4, seconds=3.2, sample_rate=22050)
    command = [sys.executable, "-m", "genre_tf.prepare", "--config", "configs/cnn.yaml", "--jobs", "1"]
    command += ["--set", f"data.root={tmp_path / 'music'}", "--set", f"cache.dir={tmp_path / 'cache'}"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    line = "split: stratified by track, seed 42 (track ids are not GTZAN ids)"
    assert proc.stdout.splitlines()[0] == line
    summary = json.loads((tmp_path / "cache" / "prepared" / "gtzan_cnn" / "summary.json").read_text())
    assert summary["split"] == line.removeprefix("split: ") and summary["tracks"] == 24


def make_library(root: Path) -> None:
    """Genre folders that reuse file names (`1.flac` in each), albums nested in one, a cover, a playlist, a link."""
    for genre in ("jazz", "rock", "pop"):
        for i in range(1, 5):
            (root / genre).mkdir(parents=True, exist_ok=True)
            (root / genre / f"{i}.flac").write_bytes(f"{genre}{i}".encode())
    for album in ("Artist/IV", "Artist/V"):
        (root / "rock" / album).mkdir(parents=True)
        (root / "rock" / album / "01 Intro.mp3").write_bytes(album.encode())
        (root / "rock" / album / "cover.jpg").write_bytes(b"jpg")
    (root / "rock" / "list.m3u").write_text("1.flac\n")
    (root / "pop" / "remix.m4a").write_bytes(b"m4a")
    (root / "pop" / "again.flac").symlink_to(root / "pop" / "1.flac")  # the same file twice is one track
    (root / "jazz" / "loop").symlink_to(root / "jazz", target_is_directory=True)  # followed once, no loop


def test_a_library_keeps_every_track_whatever_its_file_name(tmp_path):
    make_library(tmp_path)
    index = index_folder(tmp_path)
    tracks = index.tracks.set_index("track_id")
    assert tracks.index.tolist() == [
        "jazz/1", "jazz/2", "jazz/3", "jazz/4", "pop/1", "pop/2", "pop/3", "pop/4",
        "rock/1", "rock/2", "rock/3", "rock/4", "rock/Artist/IV/01 Intro", "rock/Artist/V/01 Intro",
    ]  # fmt: skip
    assert tracks.loc["rock/Artist/V/01 Intro", "label"] == "rock" and tracks.label.value_counts().to_dict() == {
        "rock": 6,
        "jazz": 4,
        "pop": 4,
    }
    assert index.problems == [(str(tmp_path / "pop" / "remix.m4a"), "unsupported audio format .m4a")]
    assert index.ignored == {".jpg": 2, ".m3u": 1}


def test_prediction_ids_are_made_below_the_inputs_common_folder(tmp_path):
    make_library(tmp_path)
    albums = [tmp_path / "rock" / "Artist" / "IV", tmp_path / "rock" / "Artist" / "V"]
    assert index_paths(albums).tracks.track_id.tolist() == ["IV/01 Intro", "V/01 Intro"]
    assert index_paths([tmp_path / "rock"]).tracks.track_id.tolist()[-2:] == ["Artist/IV/01 Intro", "Artist/V/01 Intro"]
    one = index_paths([tmp_path / "jazz" / "2.flac", tmp_path / "jazz" / "2.flac"])
    assert one.tracks.track_id.tolist() == ["2"] and not one.problems
    assert index_paths([tmp_path / "pop" / "1.flac", tmp_path / "rock" / "1.flac"]).tracks.track_id.tolist() == [
        "pop/1",
        "rock/1",
    ]
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    nothing = index_paths([empty])
    assert nothing.tracks.empty and nothing.ignored == {".txt": 1}


@pytest.mark.parametrize(
    ("per_genre", "overrides", "message"),
    [
        ({"rock": 8}, [], "data.root: only one genre \\(rock 8 tracks\\); a genre classifier needs at least two"),
        (
            {"rock": 8, "jazz": 2, "pop": 3},
            [],
            "data.split: too few tracks in genre jazz 2, pop 3: a stratified split with valid 0.15 and test 0.15 "
            "needs 4 per genre",
        ),
        (
            {"rock": 8, "jazz": 4},
            ["data.folds=5"],
            "data.split: too few tracks in genre jazz 4: 5-fold cross-validation needs 5 per",
        ),
    ],
)
def test_a_split_that_cannot_give_a_sound_model_is_one_config_error(tmp_path, per_genre, overrides, message):
    for genre, n in per_genre.items():
        (tmp_path / genre).mkdir()
        for i in range(n):
            (tmp_path / genre / f"{i}.wav").write_bytes(b"x")
    with pytest.raises(ConfigError, match=message):
        build_index(folder_config(tmp_path, *overrides).data, 0)


def test_a_folder_without_audio_is_one_config_error(tmp_path):
    (tmp_path / "rock").mkdir()
    (tmp_path / "rock" / "cover.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match=f"data.root: no audio files in {tmp_path} \\(1 other files ignored\\)"):
        build_index(folder_config(tmp_path).data, 0)


def test_stratified_minimum_follows_the_fractions():
    assert stratified_minimum(0.15, 0.15) == 4
    assert stratified_minimum(0.2, 0.2) == 3
    assert stratified_minimum(0.0, 0.0) == 1
    assert stratified_minimum(0.5, 0.0) == 2


def test_audio_directly_in_the_root_asks_for_a_folder_per_genre(tmp_path):
    for i in range(6):
        (tmp_path / f"{i:02d} Track.wav").write_bytes(b"x")
    with pytest.raises(ConfigError, match="data.root: 6 audio files but no genre folder in .*; put each genre's files"):
        build_index(folder_config(tmp_path).data, 0)


def test_a_genre_without_a_test_track_is_one_config_error(tmp_path):
    make_tree(tmp_path, per_genre=3)
    rows = [(f"{g}/{g}.{i:05d}", split) for g in "abc" for i, split in enumerate(("train", "valid", "test"))]
    rows[-1] = ("c/c.00002", "train")  # genre c has no test track
    split_file = tmp_path / "split.csv"
    pd.DataFrame(rows, columns=["track_id", "split"]).to_csv(split_file, index=False)
    with pytest.raises(ConfigError, match="data.split_file: no test track in genre c"):
        build_index(folder_config(tmp_path, f"data.split_file={split_file}").data, 0)


@pytest.mark.parametrize("overrides", [[], ["data.folds=3"]])
def test_tracks_that_fail_to_decode_take_no_slot_in_a_split(tmp_path, overrides):
    make_tree(tmp_path, per_genre=8)
    data = folder_config(tmp_path, *overrides).data
    index = build_index(data, 0)
    failed = index.tracks.track_id.isin(["a/a.00000", "b/b.00003"]).to_numpy()
    kept = split_decodable(index, ~failed, data, 0)
    assert len(kept.tracks) == len(index.tracks) - 2 and not kept.tracks.track_id.isin(["a/a.00000", "b/b.00003"]).any()
    counts = kept.tracks.groupby(["label", "split"]).size().unstack(fill_value=0)
    assert (counts[["valid", "test"]] >= 1).all().all()  # every genre keeps a decodable valid and test track
    assert counts.sum(axis=1).to_dict() == {"a": 7, "b": 7, "c": 8}
    assert split_decodable(index, np.ones(len(index.tracks), bool), data, 0) is index  # nothing failed: as it was


def test_a_genre_left_without_a_test_track_by_failures_is_one_config_error(tmp_path):
    make_tree(tmp_path, per_genre=4)
    data = folder_config(tmp_path).data
    index = build_index(data, 0)
    failed = index.tracks.track_id.str.startswith("c/c.0000") & (index.tracks.track_id != "c/c.00000")
    with pytest.raises(ConfigError, match="data.root: only one genre|too few tracks in genre c 1; 3 files that failed"):
        split_decodable(index, ~failed.to_numpy(), data, 0)


def test_hidden_files_are_counted_as_hidden_and_reported_files_keep_their_ids(tmp_path, write_clip):
    from genre_tf.extract.prepared import ignored_lines, prepare_index

    write_clip(tmp_path / "rock" / "Artist" / "01 Track.wav", 1.0)
    write_clip(tmp_path / "reggae" / "01 Dub.wav", 1.0)
    (tmp_path / "rock" / "Artist" / "._01 Track.flac").write_bytes(b"resource fork")
    (tmp_path / "rock" / "Artist" / "cover.jpg").write_bytes(b"x")
    (tmp_path / "reggae" / "06 Song.m4a").write_bytes(b"x")
    index = index_folder(tmp_path)
    assert index.ignored == {"hidden": 1, ".jpg": 1}
    assert ignored_lines(index.ignored) == ["ignored 2 files that are not audio: 1 hidden, 1 .jpg"]
    settings = ["data.source=folder", f"data.root={tmp_path}", f"cache.dir={tmp_path / 'cache'}"]
    cfg = load_config(None, [*settings, "audio.segment_seconds=0.5"])
    skipped = prepare_index(index, cfg, jobs=1, progress=False).skipped
    assert skipped[["track_id", "reason"]].values.tolist() == [["reggae/06 Song", "unsupported audio format .m4a"]]
