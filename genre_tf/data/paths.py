"""Where tracks are and what they are called, without reading them: the audio files below a folder (hidden files,
other files and audio the decoder cannot read set apart) and each file's track id. Standard library only, so that a
runtime without the training stack (`serving.litert`) names files as `data.index` does."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from genre_tf.features.formats import AUDIO_EXTENSIONS

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
GTZAN_ID = re.compile(rf"({'|'.join(GTZAN_GENRES)})\.000\d\d")  # the 1000 clips, blues.00000 .. rock.00099
# Audio that the decoder cannot read: reported as skipped, so a user knows these tracks were left out.
UNREADABLE_AUDIO = (".aac", ".aif", ".aiff", ".alac", ".ape", ".m4a", ".mka", ".mp2", ".opus", ".wma", ".wv")


def _hidden(name: str) -> bool:
    # .DS_Store, ._x.wav (macOS resource forks), .git: file-system noise, never tracks.
    return name.startswith(".")


def _kind(name: str) -> str:
    """`audio`, `unreadable` (audio the decoder cannot read: reported) or `other` (cover art, playlists: counted)."""
    suffix = Path(name).suffix.lower()
    if _hidden(name) or suffix not in (*AUDIO_EXTENSIONS, *UNREADABLE_AUDIO):
        return "other"
    return "audio" if suffix in AUDIO_EXTENSIONS else "unreadable"


@dataclass
class Walk:
    """What folders hold besides the audio files: audio in formats we cannot read, other files by extension."""

    unreadable: list[Path] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)

    def audio(self, paths: list[Path]) -> list[Path]:
        """The audio files of `paths`; the others are kept here, unreadable audio to report, the rest counted."""
        audio = []
        for path in paths:
            kind = _kind(path.name)
            if kind == "audio":
                audio.append(path)
            elif kind == "unreadable":
                self.unreadable.append(path)
            else:
                self.ignored[_ignored_kind(path.name)] += 1
        return audio


def _ignored_kind(name: str) -> str:
    """How an ignored file is counted: by its extension (`.jpg`), or as `hidden` (`._01 Track.flac`, `.DS_Store`:
    file-system noise) or `without extension`."""
    if _hidden(name):
        return "hidden"
    return Path(name).suffix.lower() or "without extension"


def walk_folder(folder: Path, walk: Walk, seen: set[str] | None = None) -> list[Path]:
    """Every audio file below `folder` at any depth, sorted by path; the other files go to `walk`. Symlinked files
    and folders are followed, each folder once (`seen`: real paths walked), so a link up the tree is no loop."""
    seen = set() if seen is None else seen
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        found += [Path(dirpath) / name for name in filenames]
    return walk.audio(sorted(found, key=lambda p: p.as_posix()))


def _dedupe(rows: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """One row per file (two paths to one file, by a link or given twice, are one track) and per track id: a later
    file with an id already taken (`a.mp3` beside `a.flac`, one GTZAN clip in two folders) is reported."""
    by_file: set[str] = set()
    by_id: dict[str, str] = {}
    kept, problems = [], []
    for row in rows:
        real = os.path.realpath(row["path"])
        if real in by_file:
            continue
        by_file.add(real)
        if row["track_id"] in by_id:
            problems.append((row["path"], f"duplicate track id ({row['track_id']}, also {by_id[row['track_id']]})"))
            continue
        by_id[row["track_id"]] = row["path"]
        kept.append(row)
    return kept, problems


def track_id(path: Path | str, root: Path | str) -> str:
    """A track's id, unique by construction: GTZAN's own for a GTZAN clip (`blues.00000`), else the file's path
    below `root` without its audio extension, POSIX-style (`rock/Led Zeppelin/IV/01`); a file outside `root` keeps
    its absolute path."""
    stem = track_id_of(Path(path).name)
    if GTZAN_ID.fullmatch(stem):
        return stem
    full, base = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    return track_id_of((full.relative_to(base) if full.is_relative_to(base) else full).as_posix())


def common_root(paths: list[Path]) -> Path:
    """The deepest folder holding every path (a folder itself, or a file's parent): ids are made below it."""
    folders = [os.path.abspath(p if Path(p).is_dir() else Path(p).parent) for p in paths]
    return Path(os.path.commonpath(folders)) if folders else Path.cwd()


def track_id_of(filename: str) -> str:
    """`blues.00000.wav` -> `blues.00000`; ids without an audio extension are kept as they are."""
    stem, dot, ext = filename.rpartition(".")
    return stem if dot and f".{ext.lower()}" in AUDIO_EXTENSIONS else filename
