"""Genres written into the files of a music library (mutagen), only where the run is sure enough, and undone on demand.

`plan` decides, per file, the genre to write and its calibrated confidence, or why the file is left alone: not
confident (below the threshold `--precision` picks on the run's valid split), already tagged, unreadable, a format
without tags. `apply` writes a plan; `undo` restores what a log says was there.

Safety: a file's audio is never changed. Each file is tagged in a copy beside it (`.NAME.genre_tf-tmp.EXT`), whose
decoded samples must equal the original's; the copy keeps the original's permissions and modification time and is
renamed over it, so a kill leaves every file whole, either as it was or tagged. A file that changed since it was
predicted, or that cannot be written, is skipped with its reason. Every change goes to the log (path, field, old
value, new value, SHA-1 before and after) before the rename; `undo` restores a file only while it is what was written.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TCON, TXXX, ID3NoHeaderError
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from genre_tf.evaluation.calibration import precision_threshold
from genre_tf.evaluation.unknown import not_measured
from genre_tf.extract.cache import file_digest, write_atomic
from genre_tf.run import RunDir
from genre_tf.serving.compute import use_compute
from genre_tf.serving.musicnn_tags import tag_examples, track_tags
from genre_tf.serving.predict import audio_index, predict_tracks

TEMP = ".genre_tf-tmp"  # marks the copy a file is tagged in, hidden beside it: `.NAME.genre_tf-tmp.EXT`
CONFIDENCE_FIELD = "genre_tf_confidence"  # custom field: the calibrated confidence of the written genre
TAGS_FIELD = "musicnn_tags"  # custom field: the musicnn tagger's top tags, where the run has them
PLAN_COLUMNS = ["path", "track_id", "genre", "confidence", "action", "reason", "old", "size", "mtime_ns"]
LOG_COLUMNS = ["path", "field", "old", "new", "sha1_before", "sha1_after"]
LISTED = 20  # plans of up to this many files are printed file by file; larger ones as counts by reason
ID3_FORMATS = (".mp3", ".wav")
VORBIS_FORMATS = (".flac", ".ogg")


class TagError(Exception):
    """A file whose tags cannot be read or written, with the reason in words."""


def tag_format(path: Path) -> str | None:
    """`id3`, `vorbis`, or None for a format that holds no tags here (.au)."""
    suffix = Path(path).suffix.lower()
    return "id3" if suffix in ID3_FORMATS else "vorbis" if suffix in VORBIS_FORMATS else None


def _id3_frame(field: str) -> str:
    return "TCON" if field == "genre" else f"TXXX:{field}"


def _open(path: Path):
    """The file's mutagen object, tags created where it has none."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".mp3":
            try:
                return ID3(path)
            except ID3NoHeaderError:
                return ID3()
        if suffix == ".wav":
            wave = WAVE(path)
            if wave.tags is None:
                wave.add_tags()
            return wave
        if suffix == ".flac":
            return FLAC(path)
        if suffix == ".ogg":
            return OggVorbis(path)
    except Exception as err:  # mutagen's errors for unreadable files have no common base worth naming
        raise TagError(f"tags cannot be read ({type(err).__name__}: {err})") from None
    raise TagError(f"format without tags ({suffix})")


def read_field(path: Path, field: str) -> str:
    """A field's value ('' where the file has none); several values are joined with '; '."""
    tags = _open(path)
    if tag_format(path) == "id3":
        frames = tags if isinstance(tags, ID3) else tags.tags
        frame = frames.get(_id3_frame(field))
        return "; ".join(map(str, frame.text)) if frame is not None else ""
    return "; ".join(tags.get(field, []))


def write_fields(path: Path, values: dict[str, str]) -> None:
    """Set each field of `values` in the file ('' removes it): ID3v2.4 for mp3 and wav, Vorbis comments otherwise."""
    tags = _open(path)
    if tag_format(path) == "id3":
        frames = tags if isinstance(tags, ID3) else tags.tags
        for field, value in values.items():
            key = _id3_frame(field)
            frames.delall(key)
            if value:
                genre = field == "genre"
                frames.add(TCON(encoding=3, text=[value]) if genre else TXXX(encoding=3, desc=field, text=[value]))
        if isinstance(tags, ID3):
            tags.save(path, v2_version=4)
        else:
            tags.save(v2_version=4)
        return
    for field, value in values.items():
        if value:
            tags[field] = [value]
        elif field in tags:
            del tags[field]
    tags.save()


def samples(path: Path) -> np.ndarray:
    """The decoded samples, as stored (no resampling), to check that tagging left the audio alone."""
    data, _ = sf.read(path, dtype="int32" if Path(path).suffix.lower() in (".wav", ".flac") else "float32")
    return data


def temp_path(path: Path) -> Path:
    """`.NAME.genre_tf-tmp.EXT`: hidden (indexing skips it), its format still named by its extension."""
    return path.with_name(f".{path.stem}{TEMP}{path.suffix}")


def remove_leftovers(paths: list[Path]) -> int:
    """Delete the copies a killed `apply` left beside `paths`; how many."""
    gone = 0
    for path in paths:
        leftover = temp_path(Path(path))
        if leftover.exists():
            leftover.unlink()
            gone += 1
    return gone


def safe_write(path: Path, values: dict[str, str], log_row) -> None:
    """Tag a copy beside `path`, check its samples equal the original's, give it the original's permissions and
    times, call `log_row(sha1_before, sha1_after)`, then rename it over the original. TagError if it cannot."""
    path = Path(path)
    writable = path.stat().st_mode & 0o222  # its permission bits: root may write anything, but a 444 file says no
    if not writable or not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise TagError("read-only")
    copy = temp_path(path)
    try:
        shutil.copy2(path, copy)  # data, permissions and times
        write_fields(copy, values)
        if not np.array_equal(samples(path), samples(copy)):
            raise TagError("tagging would change the decoded audio; left as it was")
        stat = path.stat()
        shutil.copymode(path, copy)
        os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the file keeps its modification time
        log_row(file_digest(path), file_digest(copy))
        os.replace(copy, path)
    except sf.LibsndfileError as err:
        raise TagError(f"cannot be decoded to check its audio ({err})") from None
    finally:
        copy.unlink(missing_ok=True)


@dataclass
class Log:
    """The append-only CSV of every change (LOG_COLUMNS), flushed row by row."""

    path: Path

    def append(self, rows: list[list[str]]) -> None:
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(LOG_COLUMNS)
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> pd.DataFrame:
        return pd.read_csv(self.path, dtype=str, keep_default_na=False)


def plan(
    tracks: pd.DataFrame,
    probs: np.ndarray,
    classes: list[str],
    skipped: pd.DataFrame,
    threshold: float,
    field: str = "genre",
    overwrite: bool = False,
    unknown: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """PLAN_COLUMNS per file: `write` the top genre, or `leave` with the reason. `tracks` (track_id, path) are the
    predicted files in the order of `probs`; `skipped` (path, track_id, reason) the files that got no prediction;
    `unknown` (scores, flags): the tracks unlike the music the run learned, which are left alone."""
    scores, flagged = unknown if unknown is not None else not_measured(len(tracks))
    rows = []
    pairs = tracks[["track_id", "path"]].itertuples(index=False)
    for (track_id, path), p, score, out in zip(pairs, probs, scores, flagged, strict=True):
        genre, confidence = classes[int(np.argmax(p))], float(np.max(p))
        action, reason, old = "write", "", ""
        try:
            old = read_field(Path(path), field) if tag_format(Path(path)) else ""
            if tag_format(Path(path)) is None:
                action, reason = "leave", f"format without tags ({Path(path).suffix.lower()})"
            elif out:
                action, reason = "leave", f"unknown (unlike the music the run learned: score {score:.3f})"
            elif confidence < threshold:
                action, reason = "leave", f"not confident ({confidence:.3f} < {threshold:.3f})"
            elif old and old.lower() == genre.lower():
                action, reason = "leave", "already tagged with this genre"
            elif old and not overwrite:
                action, reason = "leave", f"already tagged ({old}; --overwrite replaces it)"
        except TagError as err:
            action, reason = "leave", str(err)
        stat = Path(path).stat()
        rows.append([str(path), track_id, genre, round(confidence, 6), action, reason, old, stat.st_size,
                     stat.st_mtime_ns])  # fmt: skip
    for row in skipped.itertuples():
        rows.append([row.path, row.track_id, "", np.nan, "leave", f"not predicted: {row.reason}", "", None, None])
    # Integers with gaps, exact: as float64, a modification time in nanoseconds loses its last digits, and every
    # file to write would then look changed since it was predicted.
    table = pd.DataFrame(rows, columns=PLAN_COLUMNS, dtype=object)
    return table.astype({"confidence": float, "size": "Int64", "mtime_ns": "Int64"}).infer_objects()


def apply(planned: pd.DataFrame, field: str, log: Log, tags: dict[str, str] | None = None) -> pd.DataFrame:
    """Write the plan's `write` rows (the genre, its confidence and the musicnn `tags` by path, where given);
    returns the plan with `done` (written or not) and the reason a row was not."""
    planned = planned.copy()
    planned["done"] = False
    for i, row in planned[planned.action == "write"].iterrows():
        path = Path(row.path)
        try:
            stat = path.stat()
            if (stat.st_size, stat.st_mtime_ns) != (int(row["size"]), int(row.mtime_ns)):
                raise TagError("changed since it was predicted")
            values = {field: row.genre, CONFIDENCE_FIELD: f"{row.confidence:.3f}"}
            if tags and str(path) in tags:
                values[TAGS_FIELD] = tags[str(path)]
            old = {name: read_field(path, name) for name in values}

            def log_row(before: str, after: str, path=path, values=values, old=old) -> None:
                log.append([[str(path), name, old[name], value, before, after] for name, value in values.items()])

            safe_write(path, values, log_row)
            planned.loc[i, "done"] = True
        except (TagError, OSError) as err:
            planned.loc[i, ["action", "reason"]] = ["leave", str(err)]
    return planned


def undo(log: Log) -> list[str]:
    """Restore every file of the log to the values it had before, the last change first; a file that is no longer
    what was written (changed since, or never renamed in place by a killed run) is named and left alone. The lines
    to print."""
    table = log.read()
    lines = []
    for (path, after), rows in reversed(list(table.groupby(["path", "sha1_after"], sort=False))):
        path = Path(path)
        try:
            current = file_digest(path)
        except OSError as err:
            lines.append(f"left {path}: {err}")
            continue
        if current == rows.sha1_before.iloc[0]:
            lines.append(f"left {path}: its tags were never changed (the run stopped before)")
            continue
        if current != after:
            was = all(read_field(path, field) == old for field, old in zip(rows.field, rows.old, strict=True))
            lines.append(f"left {path}: " + ("as it was already" if was else "changed since it was tagged"))
            continue
        try:
            safe_write(path, dict(zip(rows.field, rows.old, strict=True)), lambda before, after: None)
            lines.append(
                f"restored {path}: "
                + ", ".join(f"{f}={o or '(none)'}" for f, o in zip(rows.field, rows.old, strict=True))
            )
        except TagError as err:
            lines.append(f"left {path}: {err}")
    return lines


def confidence_threshold(run: RunDir, precision: float) -> float:
    """The threshold `--precision` asks for, from the run's valid split (inf where none reaches it); SystemExit when
    the run keeps no valid-split confidences."""
    calibration = json.loads(run.calibration_file.read_text()) if run.calibration_file.is_file() else {}
    if not calibration.get("valid_confidence"):
        raise SystemExit(
            f"error: {run.path} keeps no valid-split confidences to pick a threshold from; evaluate it first: "
            f"python -m genre_tf.evaluate --run {run.path} --split valid"
        )
    threshold = precision_threshold(calibration, precision)
    if threshold is None:
        print(f"no confidence threshold gives precision {precision:g} on valid: nothing will be written")
        return float("inf")
    print(f"confidence threshold {threshold:.3f}: on valid, the genres at or above it were right {precision:g} or more")
    return threshold


def tag_files(
    run_path: Path,
    inputs: list[Path],
    write: bool,
    log: Path,
    plan_path: Path,
    precision: float,
    overwrite: bool = False,
    field: str = "genre",
    compute: str = "float32",
) -> pd.DataFrame:
    """The `tag` command: predict the inputs with the run (in `compute` precision: `compute.use_compute`), make and
    save the plan, print it, and with `write` apply it; returns the plan (with `done` after a write)."""
    use_compute(compute)
    run = RunDir(run_path)
    if problem := run.problem:
        raise SystemExit(f"error: {problem}")
    threshold = confidence_threshold(run, precision)
    inputs = [Path(p).resolve() for p in inputs]  # the plan and the log name files wherever `undo` runs from
    index = audio_index(inputs)
    if write and (gone := remove_leftovers([Path(p) for p in index.tracks.path])):
        print(f"removed {gone} half-made copies a stopped run left")
    # A musicnn run's graph gives the genres, the embeddings and its tagger's tags in one pass over the audio.
    examples = [tag_examples(run, inputs)] if write and not run.is_ensemble and run.recipe.reads_patches else None
    made = predict_tracks([run], inputs, examples=examples)
    paths = index.tracks.set_index("track_id").path
    tracks = pd.DataFrame({"track_id": made.tracks, "path": [paths[t] for t in made.tracks]})
    planned = plan(tracks, made.probs, run.classes, made.skipped, threshold, field, overwrite, made.unknown)
    write_atomic(plan_path, planned.to_csv(index=False).encode())
    if write:
        tags = None
        if examples is not None and (planned.action == "write").any():
            named = dict(track_tags(run, examples[0]))
            tags = {paths[t]: ", ".join(f"{tag} {p:.2f}" for tag, p in named[t]) for t in named}
        planned = apply(planned, field, Log(log), tags)
    if lines := plan_lines(planned, write):
        print("\n".join(lines))
    if write:
        done = int(planned.done.sum())
        print(f"{done} files tagged, {len(planned) - done} left alone; every change is in {log}")
    else:
        writes = int((planned.action == "write").sum())
        print(f"dry run: {writes} files would be tagged, {len(planned) - writes} left alone; plan in {plan_path}")
    return planned


def plan_lines(planned: pd.DataFrame, written: bool) -> list[str]:
    """A small plan file by file; a large one as counts per reason."""
    if len(planned) <= LISTED:
        lines = []
        for row in planned.itertuples():
            if row.action == "write":
                lines.append(f"{'tagged' if written else 'would tag'} {row.path}: {row.genre} ({row.confidence:.3f})")
            else:
                lines.append(f"left {row.path}: {row.reason}")
        return lines
    reasons = planned[planned.action == "leave"].reason.str.split(r" [(:]", n=1, regex=True).str[0]
    return [f"{n} left: {reason}" for reason, n in reasons.value_counts().items()]


def undo_lines(log: Path) -> list[str]:
    """The `tag --undo` command: restore what the log says, and say what happened to each file."""
    if not Path(log).is_file():
        raise SystemExit(f"error: no such log: {log}")
    return undo(Log(Path(log))) or [f"{log} lists no change"]
