"""tag: every format's tags read and written with mutagen, the audio left alone, the plan's reasons, the log, undo,
a read-only file, a file changed between plan and write, and a kill during --write."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genre_tf.serving import tagging
from genre_tf.serving.tagging import CONFIDENCE_FIELD, Log, apply, plan, read_field, samples, undo

SR = 22050
FORMATS = {".wav": {}, ".flac": {}, ".ogg": {"format": "OGG", "subtype": "VORBIS"}, ".mp3": {"format": "MP3"}}
CLASSES = ["blues", "jazz", "rock"]


def write_audio(path: Path, hz: float, seconds: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR, **FORMATS.get(path.suffix, {}))
    return path


@pytest.fixture
def library(tmp_path) -> list[Path]:
    """One clip per taggable format."""
    return [write_audio(tmp_path / "music" / f"song {ext[1:]}{ext}", 220.0 * (i + 1)) for i, ext in enumerate(FORMATS)]


@pytest.mark.parametrize("ext", list(FORMATS))
def test_each_format_is_tagged_in_place_with_its_audio_mode_and_time_kept(tmp_path, ext):
    path = write_audio(tmp_path / f"a{ext}", 330.0)
    os.chmod(path, 0o640)
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before, data = path.stat(), samples(path)
    assert read_field(path, "genre") == ""
    rows = []
    tagging.safe_write(path, {"genre": "Jazz", CONFIDENCE_FIELD: "0.930"}, lambda b, a: rows.append((b, a)))
    assert read_field(path, "genre") == "Jazz" and read_field(path, CONFIDENCE_FIELD) == "0.930"
    after = path.stat()
    assert np.array_equal(samples(path), data)
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert rows and rows[0][0] != rows[0][1] and not list(tmp_path.glob(".*genre_tf-tmp*"))
    tagging.safe_write(path, {"genre": ""}, lambda b, a: None)  # '' removes the field
    assert read_field(path, "genre") == ""


def test_the_plan_says_why_a_file_is_left_alone(tmp_path, library):
    wav, flac, ogg, mp3 = library
    au = write_audio(tmp_path / "music" / "old.au", 440.0)
    tagging.safe_write(flac, {"genre": "Rock"}, lambda b, a: None)
    tagging.safe_write(ogg, {"genre": "jazz"}, lambda b, a: None)
    files = [wav, flac, ogg, mp3, au]
    tracks = pd.DataFrame({"track_id": [p.stem + p.suffix for p in files], "path": list(map(str, files))})
    probs = np.array([[0.1, 0.9, 0.0], [0.05, 0.9, 0.05], [0.0, 0.95, 0.05], [0.5, 0.3, 0.2], [0.0, 0.0, 1.0]])
    skipped = pd.DataFrame([("bad.flac", "bad", "cannot be decoded (garbled)")], columns=["path", "track_id", "reason"])
    digests = {p: p.read_bytes() for p in files}
    planned = plan(tracks, probs, CLASSES, skipped, threshold=0.8).set_index("path")
    assert {p: p.read_bytes() for p in files} == digests, "a plan changes no byte"
    assert planned.loc[str(wav), ["action", "genre"]].tolist() == ["write", "jazz"]
    assert planned.loc[str(flac), "reason"] == "already tagged (Rock; --overwrite replaces it)"
    assert planned.loc[str(ogg), "reason"] == "already tagged with this genre"
    assert planned.loc[str(mp3), "reason"] == "not confident (0.500 < 0.800)"
    assert planned.loc[str(au), "reason"] == "format without tags (.au)"
    assert planned.loc["bad.flac", "reason"] == "not predicted: cannot be decoded (garbled)"
    again = plan(tracks, probs, CLASSES, skipped, threshold=0.8, overwrite=True).set_index("path")
    assert again.loc[str(flac), "action"] == "write" and again.loc[str(ogg), "action"] == "leave"


def test_write_logs_every_change_and_undo_restores_it(tmp_path, library):
    wav, flac, ogg, mp3 = library
    tagging.safe_write(flac, {"genre": "Rock"}, lambda b, a: None)
    tracks = pd.DataFrame({"track_id": ["w", "f", "o", "m"], "path": list(map(str, library))})
    probs = np.tile([0.05, 0.9, 0.05], (4, 1))
    planned = plan(tracks, probs, CLASSES, pd.DataFrame(columns=["path", "track_id", "reason"]), 0.5, overwrite=True)
    os.chmod(ogg, 0o444)  # read-only
    write_audio(mp3, 550.0)  # changed between the plan and the write
    originals = {p: samples(p) for p in library}
    log = Log(tmp_path / "log.csv")
    done = apply(planned, "genre", log).set_index("path")
    assert done.done.tolist() == [True, True, False, False]
    assert done.loc[str(ogg), "reason"] == "read-only"
    assert done.loc[str(mp3), "reason"] == "changed since it was predicted"
    assert [read_field(p, "genre") for p in library] == ["jazz", "jazz", "", ""]
    assert all(np.array_equal(samples(p), originals[p]) for p in library)
    table = log.read()
    assert table[table.field == "genre"][["path", "old", "new"]].values.tolist() == [
        [str(wav), "", "jazz"],
        [str(flac), "Rock", "jazz"],
    ]
    write_audio(tmp_path / "other.wav", 100.0)
    lines = undo(log)
    assert [read_field(p, "genre") for p in library[:2]] == ["", "Rock"]
    assert read_field(flac, CONFIDENCE_FIELD) == "" and len(lines) == 2 and lines[0].startswith("restored ")
    assert all(line.startswith("left ") for line in undo(log))  # once restored, they are no longer what was written


def test_undo_refuses_a_file_changed_since(tmp_path, library):
    wav = library[0]
    tracks = pd.DataFrame({"track_id": ["w"], "path": [str(wav)]})
    log = Log(tmp_path / "log.csv")
    apply(
        plan(tracks, np.array([[0.9, 0.1, 0.0]]), CLASSES, pd.DataFrame(columns=["path", "track_id", "reason"]), 0.5),
        "genre",
        log,
    )
    tagging.safe_write(wav, {"genre": "Mine"}, lambda b, a: None)
    assert undo(log) == [f"left {wav}: changed since it was tagged"]
    assert read_field(wav, "genre") == "Mine"


# `python -m genre_tf.tag` that kills itself (SIGKILL) as it is about to rename its second tagged copy into place.
TAG_KILLED = """
import os, runpy, signal
from genre_tf.serving import tagging
renames = []
real = os.replace

def replace(src, dst):
    renames.extend([dst] if ".genre_tf-tmp" in str(src) else [])  # a tagged copy, not a cache file or the plan
    if len(renames) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
tagging.os.replace = replace
runpy.run_module("genre_tf.tag", run_name="__main__", alter_sys=True)
"""


def test_a_kill_during_write_then_the_same_command_leaves_every_file_whole_and_tagged_once(
    tmp_path, library, make_table_run, write_feature_table
):
    run = make_table_run(tmp_path / "runs" / "mlp", write_feature_table(tmp_path / "table.csv", CLASSES))
    # Every valid track right at any confidence: the threshold for any precision is the lowest, so all are written.
    (run / "calibration.json").write_text(
        json.dumps({"temperature": 1.0, "valid_confidence": [0.0], "valid_correct": [True]})
    )
    originals = {p: samples(p) for p in library}
    log, plan_file = tmp_path / "tags.log.csv", tmp_path / "plan.csv"
    command = ["--run", str(run), str(library[0].parent), "--log", str(log), "--plan", str(plan_file)]
    dry = subprocess.run([sys.executable, "-m", "genre_tf.tag", *command], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "dry run: 4 files would be tagged, 0 left alone" in dry.stdout and not log.exists()
    assert all(read_field(p, "genre") == "" for p in library)
    killed = subprocess.run([sys.executable, "-c", TAG_KILLED, *command, "--write"], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(list(library[0].parent.glob(".*genre_tf-tmp*"))) == 1  # the copy it was about to rename
    assert sum(read_field(p, "genre") != "" for p in library) == 1
    again = subprocess.run([sys.executable, "-m", "genre_tf.tag", *command, "--write"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "removed 1 half-made copies a stopped run left" in again.stdout
    assert "3 files tagged, 1 left alone" in again.stdout  # the first file was tagged before the kill
    assert not list(library[0].parent.glob(".*genre_tf-tmp*"))
    assert all(read_field(p, "genre") in CLASSES for p in library)
    assert all(np.array_equal(samples(p), originals[p]) for p in library)
    undone = subprocess.run([sys.executable, "-m", "genre_tf.tag", "--undo", str(log)], capture_output=True, text=True)
    assert undone.returncode == 0 and undone.stdout.count("restored ") == 4, undone.stdout + undone.stderr[-2000:]
    assert "left " not in undone.stdout  # the killed write's log row is the second run's: the same bytes
    assert all(read_field(p, "genre") == "" for p in library)


def test_a_file_not_predicted_leaves_the_others_sizes_and_times_exact_so_they_are_written(tmp_path, library):
    tracks = pd.DataFrame({"track_id": [p.stem for p in library[:2]], "path": [str(p) for p in library[:2]]})
    skipped = pd.DataFrame({"path": [str(library[2])], "track_id": ["x"], "reason": ["duplicate track id"]})
    probs = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])
    planned = plan(tracks, probs, CLASSES, skipped, threshold=0.5)
    assert planned.mtime_ns.tolist()[:2] == [p.stat().st_mtime_ns for p in library[:2]]
    done = apply(planned, "genre", Log(tmp_path / "log.csv"))
    assert done.done.tolist() == [True, True, False], done.reason.tolist()
