"""prepare_index on a few tiny files: the tracks and segments tables, skips with reasons, stats, written files."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genre_tf.config import load_config
from genre_tf.data.index import INDEX_COLUMNS, Index, index_paths
from genre_tf.extract.cache import Recipe, TrackStore, file_digest
from genre_tf.extract.prepared import SKIPPED_COLUMNS, genre_lines, prepare_index, skipped_lines, write_prepared
from genre_tf.features.analysis import feature_columns
from genre_tf.features.representations import ALL, FEATURES, MEL_IMAGE, MUSICNN_PATCH

DUPLICATE = ("elsewhere/a.wav", "duplicate track id a (also a.wav)")


@pytest.fixture(scope="module")
def prepared_twice(tmp_path_factory, make_config, write_clip):
    """(config, index, first run, second run) over a 1.5 s tone, a 1.0 s tone and a text file named .wav, every
    representation computed."""
    tmp = tmp_path_factory.mktemp("prepare")
    a = write_clip(tmp / "jazz" / "a.wav", 1.5, 440.0)
    b = write_clip(tmp / "rock" / "b.wav", 1.0, 1000.0)
    notes = tmp / "rock" / "notes.wav"
    notes.write_text("these are liner notes, not audio\n" * 4)
    rows = [("a", str(a), "jazz", "train"), ("notes", str(notes), "rock", "train"), ("b", str(b), "rock", "valid")]
    index = Index(pd.DataFrame(rows, columns=INDEX_COLUMNS), [DUPLICATE])
    cfg = make_config(tmp)
    first = prepare_index(index, cfg, progress=False, names=ALL)
    return cfg, index, first, prepare_index(index, cfg, progress=False, names=ALL)


def test_tracks_table_holds_the_usable_tracks_with_their_feature_row(prepared_twice):
    cfg, index, first, _ = prepared_twice
    tracks = first.tracks
    assert tracks.columns.tolist() == [*INDEX_COLUMNS, "digest", "n_segments", *feature_columns(20)]
    assert tracks[["track_id", "label", "split", "n_segments"]].values.tolist() == [
        ["a", "jazz", "train", 3],
        ["b", "rock", "valid", 2],
    ]
    assert tracks.digest.tolist() == [file_digest(Path(p)) for p in tracks.path]
    store = TrackStore(cfg.cache.dir, Recipe.from_config(cfg), FEATURES)
    for track in tracks.itertuples():
        np.testing.assert_array_equal(tracks.loc[track.Index, feature_columns(20)], store.track_row(track.digest))
    assert tracks.spectral_centroid_mean.between([400, 900], [500, 1100]).all()  # 440 Hz and 1000 Hz tones


def test_segments_table_has_one_row_per_segment(prepared_twice):
    cfg, _, first, _ = prepared_twice
    segments = first.segments
    columns = ["track_id", "segment", "label", "split", "mel_path", "musicnn_path", *feature_columns(20)]
    assert segments.columns.tolist() == columns
    assert segments[["track_id", "segment", "label", "split"]].values.tolist() == [
        ["a", 0, "jazz", "train"],
        ["a", 1, "jazz", "train"],
        ["a", 2, "jazz", "train"],
        ["b", 0, "rock", "valid"],
        ["b", 1, "rock", "valid"],
    ]
    store = {name: TrackStore(cfg.cache.dir, Recipe.from_config(cfg), name) for name in ALL}
    digest_a = first.tracks.digest[0]
    mel_entry, musicnn_entry = store[MEL_IMAGE].entry(digest_a), store[MUSICNN_PATCH].entry(digest_a)
    assert segments.mel_path[:3].tolist() == [str(mel_entry / f"mel_000{i}.png") for i in range(3)]
    assert all(Path(p).is_file() for p in segments.mel_path)
    assert segments.musicnn_path[0] == str(musicnn_entry / "musicnn_0000.f16")
    assert all(Path(p).stat().st_size == 2 * 96 * 31 for p in segments.musicnn_path)  # 0.5 s: 31 float16 frames
    np.testing.assert_array_equal(segments[feature_columns(20)][:3], store[FEATURES].segment_rows(digest_a))


@pytest.mark.parametrize(
    ("overrides", "computed", "columns"),
    [
        ((), FEATURES, feature_columns(20)),
        (("model.kind=cnn",), MEL_IMAGE, ["mel_path"]),
        (("model.kind=transfer", "model.transfer.backbone=MobileNet"), MEL_IMAGE, ["mel_path"]),
        (("model.kind=transfer", "model.transfer.backbone=MSD_musicnn"), MUSICNN_PATCH, ["musicnn_path"]),
    ],
)
def test_a_run_computes_only_the_representation_its_model_reads(
    tmp_path, make_config, write_clip, overrides, computed, columns
):
    index = index_paths([write_clip(tmp_path / "a.wav", 1.5, 440.0)])
    prepared = prepare_index(index, make_config(tmp_path, *overrides), progress=False)
    assert prepared.stats["representations"] == [computed]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [computed]  # nothing else was computed or written
    assert prepared.segments.columns.tolist() == ["track_id", "segment", "label", "split", *columns]
    assert (FEATURES in prepared.stats["representations"]) == (feature_columns(20)[0] in prepared.tracks)


def test_skipped_rows_give_the_reason(prepared_twice):
    _, index, first, _ = prepared_twice
    notes = index.tracks.path[1]
    assert first.skipped.columns.tolist() == SKIPPED_COLUMNS
    assert first.skipped.values.tolist() == [
        [notes, "notes", "not an audio file (text)"],  # failed in extraction
        [DUPLICATE[0], "a", DUPLICATE[1]],  # reported while indexing
    ]


def test_stats_count_hits_on_the_second_run(prepared_twice):
    cfg, _, first, second = prepared_twice
    common = {"tracks": 2, "segments": 5, "skipped": 1, "reported": 1, "split": "", "splits": {"train": 1, "valid": 1}}
    assert {k: first.stats[k] for k in common} == common == {k: second.stats[k] for k in common}
    assert (first.stats["cache_hits"], first.stats["extracted"]) == (0, 3)  # the text file's skip is cached too
    assert (second.stats["cache_hits"], second.stats["extracted"]) == (3, 0)
    assert first.stats["cache_keys"] == second.stats["cache_keys"] == Recipe.from_config(cfg).keys(ALL)
    pd.testing.assert_frame_equal(first.tracks, second.tracks)
    pd.testing.assert_frame_equal(first.segments, second.segments)
    pd.testing.assert_frame_equal(first.skipped, second.skipped)


def test_write_prepared_writes_the_documented_files(prepared_twice, tmp_path):
    cfg, _, first, _ = prepared_twice
    write_prepared(first, cfg, tmp_path / "out")
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [
        "config.yaml",
        "features_segment.csv",
        "features_track.csv",
        "index.csv",
        "skipped.csv",
        "summary.json",
    ]  # and no temporary files left
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert index.columns.tolist() == ["track_id", "path", "label", "split", "digest"]
    assert index.track_id.tolist() == ["a", "b"]
    track_table = pd.read_csv(tmp_path / "out" / "features_track.csv")
    assert track_table.columns.tolist() == ["track_id", "label", "split", "n_segments", *feature_columns(20)]
    np.testing.assert_allclose(track_table[feature_columns(20)], first.tracks[feature_columns(20)], rtol=1e-12)
    segment_table = pd.read_csv(tmp_path / "out" / "features_segment.csv")
    assert segment_table.columns.tolist() == ["track_id", "segment", "label", "split", *feature_columns(20)]
    assert len(segment_table) == 5
    assert pd.read_csv(tmp_path / "out" / "skipped.csv").reason.tolist() == first.skipped.reason.tolist()
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == first.stats
    assert load_config(tmp_path / "out" / "config.yaml") == cfg


def test_short_clips_is_a_policy_on_one_cache_entry(tmp_path, make_config, write_clip):
    """Defect (4e337ea): short_clips was part of the cache key, so `tile` extracted every file again under a new key.

    Now both policies read one entry: the short clip is stored tiled, and `skip` reports it when the entry is read.
    """
    clips = [write_clip(tmp_path / "long.wav", 1.0, 440.0), write_clip(tmp_path / "short.wav", 0.3, 440.0)]
    index = index_paths(clips)
    skip, tile = make_config(tmp_path), make_config(tmp_path, "audio.short_clips=tile")
    assert (skip.audio.short_clips, tile.audio.short_clips) == ("skip", "tile")
    assert Recipe.from_config(skip).keys(ALL) == Recipe.from_config(tile).keys(ALL)

    skipped = prepare_index(index, skip, progress=False)
    assert skipped.tracks.track_id.tolist() == ["long"]
    assert skipped.skipped.values.tolist() == [[str(clips[1]), "short", "shorter than one segment (0.30 s < 0.5 s)"]]
    assert (skipped.stats["extracted"], skipped.stats["skipped"]) == (2, 1)

    tiled = prepare_index(index, tile, progress=False)
    assert (tiled.stats["cache_hits"], tiled.stats["extracted"]) == (2, 0)
    assert tiled.stats["cache_keys"] == skipped.stats["cache_keys"]
    assert tiled.tracks[["track_id", "n_segments"]].values.tolist() == [["long", 2], ["short", 1]]
    assert tiled.skipped.empty

    again = prepare_index(index, skip, progress=False)  # the tiled entry is still a skip under `skip`
    assert (again.stats["cache_hits"], again.stats["extracted"]) == (2, 0)
    assert again.skipped.reason.tolist() == ["shorter than one segment (0.30 s < 0.5 s)"]
    assert len(list((tmp_path / "cache" / FEATURES).iterdir())) == 1, "one recipe folder for both policies"


def test_many_skips_are_grouped_by_reason_and_few_are_listed():
    many = pd.DataFrame(
        [(f"rock/{i}.mp3", f"rock/{i}", f"duplicate track id (rock/{i}, also x)") for i in range(300)]
        + [("a.wav", "a", "too short (0.30 s < audio.min_seconds 0.5 s)")],
        columns=SKIPPED_COLUMNS,
    )
    assert skipped_lines(many) == [
        "300 skipped: duplicate track id (rock/0.mp3, rock/1.mp3, ...)",
        "1 skipped: too short (a.wav)",
        "every skipped file, with its whole reason, is in skipped.csv",
    ]
    assert skipped_lines(many.tail(1)) == ["skipped a.wav: too short (0.30 s < audio.min_seconds 0.5 s)"]


def test_genre_lines_give_counts_per_split_and_name_an_imbalance():
    counts = {"jazz": {"train": 12, "valid": 3, "test": 3}, "rock": {"train": 80, "valid": 20, "test": 20}}
    lines = genre_lines(counts)
    assert lines[:3] == ["2 genres, tracks in train / valid / test:", "  jazz  12 / 3 / 3", "  rock  80 / 20 / 20"]
    assert lines[3].startswith("imbalanced: train has 80 rock tracks but 12 jazz (6.7x)")
    assert len(genre_lines({"jazz": counts["jazz"], "rock": counts["jazz"]})) == 3


def test_an_empty_index_prepares_to_empty_tables(tmp_path, make_config):
    prepared = prepare_index(Index(pd.DataFrame(columns=INDEX_COLUMNS)), make_config(tmp_path), progress=False)
    assert prepared.tracks.empty and prepared.segments.empty
    assert {"split", feature_columns(20)[0]} <= set(prepared.segments)


def test_a_long_track_keeps_its_segments_spread_as_a_full_extraction_has_them(tmp_path, make_config, write_clip):
    """A 15 s clip has 30 segments of 0.5 s; with audio.max_segments_per_track 4 it keeps 4, spread over the track,
    numbered by where they start, and each equals that segment of an extraction that keeps all."""
    song = write_clip(tmp_path / "song.wav", 15.0, 440.0)
    index = Index(pd.DataFrame([("song", str(song), "rock", "train")], columns=INDEX_COLUMNS))
    spread = prepare_index(index, make_config(tmp_path, "audio.max_segments_per_track=4"), progress=False, names=ALL)
    full = prepare_index(index, make_config(tmp_path, "audio.max_segments_per_track=null"), progress=False, names=ALL)
    assert spread.tracks.n_segments.tolist() == [4] and full.tracks.n_segments.tolist() == [30]
    assert spread.segments.segment.tolist() == [3, 11, 18, 26]
    kept = full.segments.set_index("segment").loc[[3, 11, 18, 26], feature_columns(20)]
    np.testing.assert_array_equal(spread.segments[feature_columns(20)].to_numpy(), kept.to_numpy())
    assert [Path(p).read_bytes() for p in spread.segments.mel_path] == [
        Path(p).read_bytes() for p in full.segments.set_index("segment").loc[[3, 11, 18, 26], "mel_path"]
    ]
    np.testing.assert_array_equal(spread.tracks[feature_columns(20)], full.tracks[feature_columns(20)])
