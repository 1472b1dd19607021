"""A submission CSV (id, class[, p_<class>...], one row per track) written a chunk of tracks at a time, resumable.

Beside `results.csv`, `predict --output results.csv` keeps `results.skipped.csv` (path,track_id,reason of the inputs
that got no row), `results.files.csv` (id,path,size,mtime_ns,sha1: the file each row was predicted from) and
`results.csv.json`, the sidecar naming what made the rows: the runs (resolved paths, and the SHA-1 of each
model.keras), their classes, whether probabilities are written, and the inputs given. Rows are appended and flushed
chunk by chunk, so a kill loses at most the chunk in progress. The same command again resumes: it keeps the whole rows
of files that have not changed since (same size and modification time, or else the same SHA-1), drops a row the kill
cut short, and predicts the other tracks. A command whose runs, classes, columns or inputs differ from the sidecar's
is refused (`predict --overwrite` replaces the output), so one file never mixes the predictions of two models, or
rows of two folders under one id.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from genre_tf.evaluation.unknown import not_measured
from genre_tf.extract.cache import file_digest, write_atomic
from genre_tf.extract.prepared import SKIPPED_COLUMNS
from genre_tf.run import RunDir
from genre_tf.serving.litert import UNKNOWN


def submission_columns(classes: list[str], with_probabilities: bool, confidence: bool = False) -> list[str]:
    """`id`, `class`, with `confidence` its calibrated probability, and with probabilities one `p_<class>` column
    per class, in the runs' class order."""
    sure = ["confidence", "unknown_score"] if confidence else []
    return ["id", "class", *sure, *(f"p_{c}" for c in classes if with_probabilities)]


def submission(
    classes: list[str],
    tracks: np.ndarray,
    probs: np.ndarray,
    with_probabilities: bool,
    confidence: bool = False,
    unknown: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One row per track: its id, the most probable class, with `confidence` that class's (calibrated) probability
    and the unknown score (`unknown`: scores, and whether each track is unknown: its class is then `unknown`), and
    optionally every class's probability (6 decimals). Without either, the two columns of a Kaggle submission."""
    table = pd.DataFrame({"id": tracks, "class": np.array(classes, dtype=object)[probs.argmax(axis=1)]})
    if confidence:
        scores, flagged = unknown if unknown is not None else not_measured(len(tracks))
        table.loc[np.asarray(flagged, bool), "class"] = UNKNOWN
        table["confidence"] = probs.max(axis=1).round(6)
        table["unknown_score"] = np.round(scores, 6)
    if with_probabilities:
        for i, name in enumerate(classes):
            table[f"p_{name}"] = probs[:, i].round(6)
    return table


def skipped_path(output: Path) -> Path:
    """`results.skipped.csv` beside `results.csv`: the inputs that got no row, and why."""
    return output.with_suffix(".skipped.csv")


def sidecar_path(output: Path) -> Path:
    """`results.csv.json` beside `results.csv`: what made its rows."""
    return output.with_name(output.name + ".json")


def files_path(output: Path) -> Path:
    """`results.files.csv` beside `results.csv`: the file each row was predicted from, as it was then."""
    return output.with_suffix(".files.csv")


FILE_COLUMNS = ["id", "path", "size", "mtime_ns", "sha1"]


def file_keys(tracks: pd.DataFrame) -> pd.DataFrame:
    """FILE_COLUMNS of each track (track_id, path): what tells, later, whether its file is still the one predicted."""
    rows = []
    for track_id, path in zip(tracks["track_id"], tracks["path"], strict=True):
        stat = Path(path).stat()
        rows.append((track_id, str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, file_digest(path)))
    return pd.DataFrame(rows, columns=FILE_COLUMNS)


def changed(tracks: pd.DataFrame, kept: dict[str, tuple[str, ...]]) -> list[str]:
    """The ids of `tracks` (track_id, path) with a kept row whose file is not the one predicted: another path, or
    another size or modification time and other bytes (a file touched but not changed keeps its row)."""
    stale = []
    for track_id, path in zip(tracks["track_id"], tracks["path"], strict=True):
        if track_id not in kept:
            continue
        was_path, size, mtime_ns, sha1 = kept[track_id]
        try:
            stat = Path(path).stat()
        except OSError:
            continue  # gone: the prediction finds it unreadable and lists it as skipped
        same_stat = (str(stat.st_size), str(stat.st_mtime_ns)) == (size, mtime_ns)
        if was_path != str(Path(path).resolve()) or not (same_stat or file_digest(path) == sha1):
            stale.append(track_id)
    return stale


def made_by(
    runs: list[RunDir],
    with_probabilities: bool,
    weights: np.ndarray | None = None,
    inputs: list[Path] | None = None,
) -> dict:
    """The sidecar of an output these runs write: run paths, model digests, classes, whether probabilities are in,
    the inputs given (resolved, sorted), and the runs' weights where they differ (an ensemble run's)."""
    sidecar = {
        "runs": [str(run.path.resolve()) for run in runs],
        "models": [file_digest(run.model_file) for run in runs],
        "classes": runs[0].classes,
        "probabilities": with_probabilities,
        "inputs": sorted(str(Path(p).resolve()) for p in inputs or []),
    }
    if weights is not None and not np.allclose(weights, weights[0]):
        sidecar["weights"] = [round(float(w), 6) for w in weights]
    return sidecar


def difference(old: dict | None, new: dict) -> str:
    """What an output's sidecar says against what this command would write, in words, for the refusal."""
    if old is None:
        return "it has no readable sidecar naming them"
    if old.get("runs") != new["runs"]:
        return f"made by {', '.join(old.get('runs', []))}; this command runs {', '.join(new['runs'])}"
    if old.get("models") != new["models"]:
        return "a run's model.keras has changed since"
    if old.get("classes") != new["classes"]:
        return f"classes {', '.join(old.get('classes', []))}; these runs' {', '.join(new['classes'])}"
    if old.get("inputs") != new["inputs"]:
        was = ", ".join(old["inputs"]) if "inputs" in old else "inputs it does not name"
        return f"predicted from {was}; this command predicts {', '.join(new['inputs'])}"
    if old.get("probabilities") == new["probabilities"]:
        return "written with other settings"
    if old.get("probabilities"):
        return "written with --probabilities; this command is without"
    return "written without --probabilities; this command is with"


def whole_lines(path: Path) -> tuple[list[str], bool]:
    """The lines of an appended CSV that are whole (newline-ended, as many fields as the header), the header first,
    and whether any was not: a kill in the middle of a write leaves the last row cut short."""
    lines = path.read_text().splitlines(keepends=True)
    if not lines or not lines[0].endswith("\n"):
        return [], bool(lines)
    n_fields = len(_fields(lines[0]))
    whole = [line for line in lines if line.endswith("\n") and len(_fields(line)) == n_fields]
    return whole, len(whole) < len(lines)


def keep_whole_lines(path: Path) -> list[str]:
    """The whole lines of an appended CSV (`whole_lines`); the file is rewritten without the others, or removed when
    not even its header is whole."""
    lines, cut = whole_lines(path)
    if cut and lines:
        write_atomic(path, "".join(lines).encode())
    elif cut:
        path.unlink()
    return lines


def _fields(line: str) -> list[str]:
    return next(csv.reader([line]), [])


@dataclass
class SubmissionFile:
    """An output CSV and its skipped.csv, appended a chunk at a time; created with the first chunk that has rows."""

    path: Path
    classes: list[str]
    with_probabilities: bool
    sidecar: dict  # `made_by` of this command's runs
    rows: int = 0  # rows in the file
    kept: int = 0  # rows this command found and kept
    written: int = 0  # rows this command wrote
    started: bool = False
    _skipped: set[tuple[str, ...]] = field(default_factory=set)  # rows of skipped.csv, so a resume adds none twice
    _pending: list[tuple[str, ...]] = field(default_factory=list)  # skipped rows held until the file is created

    @property
    def columns(self) -> list[str]:
        return submission_columns(self.classes, self.with_probabilities, confidence=True)

    def resume(self) -> dict[str, tuple[str, ...]]:
        """The track ids the file already has a row for, each with its file's (path, size, mtime_ns, sha1) when
        predicted; SystemExit when other runs or inputs made it. A row cut short by a kill, or without its file's
        record, is dropped from the file here."""
        if not self.path.is_file():
            return {}
        lines, _ = whole_lines(self.path)
        if not lines:  # killed before its header was whole: it holds no predictions
            return {}
        old = self._sidecar()
        if old != self.sidecar:
            raise self._refusal(difference(old, self.sidecar))
        if _fields(lines[0]) != self.columns:
            raise self._refusal(f"its columns are {lines[0].strip()}")
        files = files_path(self.path)
        records = keep_whole_lines(files)[1:] if files.is_file() else []
        known = {fields[0]: tuple(fields[1:]) for fields in map(_fields, records)}
        rows = [line for line in keep_whole_lines(self.path)[1:] if _fields(line)[0] in known]
        kept = {_fields(line)[0]: known[_fields(line)[0]] for line in rows}
        self._rewrite(set(kept))
        self.rows = self.kept = len(kept)
        self.started = True
        if skipped_path(self.path).is_file():
            self._skipped = {tuple(_fields(line)) for line in keep_whole_lines(skipped_path(self.path))[1:]}
        return kept

    def forget(self, ids: set[str]) -> None:
        """Drop the rows (and file records) of `ids`, to be predicted again."""
        kept = {_fields(line)[0] for line in whole_lines(self.path)[0][1:]} - set(ids)
        self._rewrite(kept)
        self.rows = self.kept = len(kept)

    def _rewrite(self, ids: set[str]) -> None:
        """Keep only the rows and file records of `ids` (each file rewritten atomically, where it changes)."""
        for path in (self.path, files_path(self.path)):
            if not path.is_file():
                continue
            lines, _ = whole_lines(path)
            keep = lines[:1] + [line for line in lines[1:] if _fields(line)[0] in ids]
            if keep != path.read_text().splitlines(keepends=True):
                write_atomic(path, "".join(keep).encode())

    def _refusal(self, reason: str) -> SystemExit:
        return SystemExit(
            f"error: {self.path} holds predictions of other runs or inputs ({reason}); pass --overwrite to replace "
            "it, or choose another --output"
        )

    def _sidecar(self) -> dict | None:
        try:
            return json.loads(sidecar_path(self.path).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def _start(self) -> None:
        """A fresh file: the sidecar first (so a file with rows always has one), then the header; no skipped.csv."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(sidecar_path(self.path), json.dumps(self.sidecar, indent=1).encode())
        skipped_path(self.path).unlink(missing_ok=True)
        pd.DataFrame(columns=FILE_COLUMNS).to_csv(files_path(self.path), index=False)
        pd.DataFrame(columns=self.columns).to_csv(self.path, index=False)
        self.started = True

    def remove(self) -> None:
        """Delete the output and the files beside it (`predict --overwrite`)."""
        for path in (self.path, sidecar_path(self.path), skipped_path(self.path), files_path(self.path)):
            path.unlink(missing_ok=True)

    def append(self, table: pd.DataFrame, skipped: pd.DataFrame, files: pd.DataFrame) -> None:
        """Add a chunk's rows (`submission`), the records of their files (`file_keys`; written first, so a row
        always has one) and its skipped inputs not listed yet, all flushed when this returns."""
        for row in skipped[SKIPPED_COLUMNS].astype(str).itertuples(index=False, name=None):
            if row not in self._skipped:
                self._skipped.add(row)
                self._pending.append(row)
        if table.empty and not self.started:
            return
        if not self.started:
            self._start()
        if self._pending:
            listed = skipped_path(self.path).is_file()
            pending = pd.DataFrame(self._pending, columns=SKIPPED_COLUMNS)
            pending.to_csv(skipped_path(self.path), mode="a", header=not listed, index=False)
            self._pending = []
        files = files.set_index("id").loc[table["id"]].reset_index()
        files[FILE_COLUMNS].to_csv(files_path(self.path), mode="a", header=False, index=False)
        table[self.columns].to_csv(self.path, mode="a", header=False, index=False)
        self.rows += len(table)
        self.written += len(table)
