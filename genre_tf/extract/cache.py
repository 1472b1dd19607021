"""Content-addressed cache of per-track representations: keyed, atomic, parallel.

Each representation (genre_tf.features.representations: feature rows, mel images, musicnn patches) has its own entry, at
`<cache.dir>/<representation>/<key>/<file digest>/`. The key hashes every parameter that shapes that
representation's content and nothing else (a change of `mel.*` leaves the feature rows' key as it was); the
digest hashes the audio file's bytes, so a moved or renamed file is still a hit and an edited one is not. A file
is decoded once for all the representations it lacks. Entries are built in a temporary folder and renamed into
place, so a killed run leaves either a whole entry or none, and every file in an entry is written
deterministically: a resumed run ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np

from genre_tf.config import AudioConfig, Config, FeatureConfig, MelConfig
from genre_tf.features import analysis as features
from genre_tf.features import representations
from genre_tf.features.audio import (
    AudioError,
    segment_hop_samples,
)

TMP_PREFIX = ".tmp-"
# The file of segment i of a per-segment representation: a 16-bit mel PNG, or raw little-endian float16 (frames, 96)
# musicnn patch, which tf.io.decode_raw reads.


@dataclass(frozen=True)
class Recipe:
    """Every setting that shapes some representation's content; picklable for worker processes."""

    audio: AudioConfig
    features: FeatureConfig
    mel: MelConfig

    @classmethod
    def from_config(cls, cfg: Config) -> Recipe:
        return cls(cfg.audio, cfg.features, cfg.mel)

    def key(self, representation: str) -> str:
        """The cache key of one representation: a hash of the parameters that shape it, and of those only."""
        spec = representations.shaping_parameters(representation, self.audio, self.features, self.mel)
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def keys(self, names: tuple[str, ...]) -> dict[str, str]:
        return {name: self.key(name) for name in names}


@dataclass(frozen=True)
class TrackResult:
    """What extraction did with one file: an entry (hit or new), or a skip with its reason."""

    path: str
    digest: str | None
    n_segments: int
    hit: bool
    reason: str | None = None
    short_seconds: float | None = None  # a clip shorter than one segment, tiled to fill one: its own length

    @property
    def ok(self) -> bool:
        return self.reason is None

    def under_policy(self, audio: AudioConfig) -> TrackResult:
        """The result as `audio.short_clips` wants it: a tiled short clip is a skip unless tiling is asked for."""
        if self.short_seconds is None or audio.short_clips == "tile" or not self.ok:
            return self
        reason = f"shorter than one segment ({self.short_seconds:.2f} s < {audio.segment_seconds} s)"
        return replace(self, n_segments=0, reason=reason)


def file_digest(path: Path) -> str:
    """SHA-1 of the file's bytes; raises AudioError when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        raise AudioError("is a directory")
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise AudioError(f"cannot read ({err.strerror or err})") from None
    return digest.hexdigest()


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write that appears at `path` whole when the block ends, or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        yield f
    os.replace(tmp, path)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new one, never a part."""
    with atomic_file(path) as f:
        f.write(data)


def _writer_alive(tmp: Path) -> bool:
    """Whether the process whose id ends a temporary name (`.tmp-<name>.<pid>`) still runs."""
    pid = tmp.name.rpartition(".")[2]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def segment_positions(meta: dict, audio: AudioConfig) -> list[int]:
    """Each segment's place k on the track's hop grid, from an entry's meta (its `segments` bounds in samples)."""
    hop = segment_hop_samples(audio)
    return [start // hop for start, _ in meta["segments"]]


class TrackStore:
    """The cache folder of one representation under one recipe: `<cache.dir>/<representation>/<key>/`."""

    def __init__(self, cache_dir: Path, recipe: Recipe, representation: str):
        self.recipe, self.representation = recipe, representation
        self.root = Path(cache_dir) / representation / recipe.key(representation)

    def entry(self, digest: str) -> Path:
        return self.root / digest

    def skip_file(self, digest: str) -> Path:
        return self.root / f"{digest}.skip"

    def lookup(self, path: str, digest: str) -> TrackResult | None:
        """The cached result for a file, or None when it was never extracted with this recipe."""
        entry = self.entry(digest)
        if entry.is_dir():
            meta = json.loads((entry / "meta.json").read_text())
            return TrackResult(path, digest, meta["n_segments"], hit=True, short_seconds=meta.get("short_seconds"))
        skip = self.skip_file(digest)
        if skip.is_file():
            return TrackResult(path, digest, 0, hit=True, reason=skip.read_text().strip())
        return None

    def entry_files(self, analysis: features.TrackAnalysis) -> dict[str, bytes]:
        """The files of this representation's entry, by name, from an analysis that holds it."""
        return entry_files(self.representation, analysis, self.recipe.mel)

    def write_entry(self, digest: str, analysis: features.TrackAnalysis, meta: dict) -> None:
        """Build the entry in a temporary folder, then rename it into place in one step."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{TMP_PREFIX}{digest}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, data in self.entry_files(analysis).items():
            (tmp / name).write_bytes(data)
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True, indent=1))
        try:
            os.rename(tmp, self.entry(digest))
        except OSError:  # another process finished the same file first; its entry is identical
            shutil.rmtree(tmp, ignore_errors=True)

    def write_skip(self, digest: str, reason: str) -> None:
        write_atomic(self.skip_file(digest), (reason + "\n").encode())

    def clean_partial(self) -> None:
        """Remove what a killed run left half-written; another live process's work in progress stays."""
        if self.root.is_dir():
            for leftover in self.root.glob(f"{TMP_PREFIX}*"):
                if not _writer_alive(leftover):
                    shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(
                        missing_ok=True
                    )

    def track_row(self, digest: str) -> np.ndarray:
        return np.load(self.entry(digest) / "track.npy")

    def segment_rows(self, digest: str) -> np.ndarray:
        return np.load(self.entry(digest) / "segments.npy")

    def segment_positions(self, digest: str) -> list[int]:
        """Each stored segment's place k on the track's hop grid (it starts at k hops; a long track keeps some)."""
        return segment_positions(json.loads((self.entry(digest) / "meta.json").read_text()), self.recipe.audio)

    def paths(self, digest: str, n_segments: int) -> list[str]:
        """The segments' files (representations.SEGMENT_FILES) of a per-segment representation."""
        name = representations.SEGMENT_FILES[self.representation]
        return [str(self.entry(digest) / name.format(i)) for i in range(n_segments)]


class TrackCache:
    """The stores of the representations a run reads: a file is a hit when every one of them holds it."""

    def __init__(self, cache_dir: Path, recipe: Recipe, names: tuple[str, ...]):
        self.cache_dir, self.recipe = Path(cache_dir), recipe
        self.names = representations.check(names)
        self.stores = {name: TrackStore(cache_dir, recipe, name) for name in self.names}

    def __getitem__(self, name: str) -> TrackStore:
        return self.stores[name]

    def lookup(self, path: str, digest: str) -> tuple[TrackResult | None, tuple[str, ...]]:
        """(the cached result, or None; the representations still to compute). A cached skip is a skip for all."""
        found, missing = None, []
        for name, store in self.stores.items():
            result = store.lookup(path, digest)
            if result is not None and not result.ok:
                return result, ()
            if result is None:
                missing.append(name)
            else:
                found = result
        return (found if not missing else None), tuple(missing)

    def clean_partial(self) -> None:
        for store in self.stores.values():
            store.clean_partial()


def legacy_note(cache_dir: Path) -> str | None:
    """A line on entries made before each representation had its own cache (`<cache.dir>/tracks/`): never read."""
    legacy = Path(cache_dir) / "tracks"
    if not legacy.is_dir():
        return None
    return (
        f"note: {legacy} holds cache entries of an older layout (every representation in one entry); they are not "
        "read, so these tracks are extracted once more; delete that folder to free its space"
    )


def entry_files(representation: str, analysis: features.TrackAnalysis, mel: MelConfig) -> dict[str, bytes]:
    """The files of one representation of a track, by name, from an analysis that holds it: a cache entry's
    files, and a shard record's (genre_tf.extract.shards) too, so both hold the same bytes."""
    if representation == representations.FEATURES:
        return {"track.npy": _npy_bytes(analysis.track_row), "segments.npy": _npy_bytes(analysis.segment_rows)}
    if representation == representations.MEL_IMAGE:
        segments = [features.encode_mel_png(image, mel) for image in analysis.mel_segments]
    else:
        segments = [patch.astype("<f2").tobytes() for patch in analysis.musicnn_segments]
    name = representations.SEGMENT_FILES[representation]
    return {name.format(i): data for i, data in enumerate(segments)}
