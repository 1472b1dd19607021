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
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from genre_tf.config import AudioConfig, Config, FeatureConfig, MelConfig
from genre_tf.features import analysis as features
from genre_tf.features import representations
from genre_tf.features.audio import (
    AudioError,
    load_track,
    segment_bounds,
    segment_hop_samples,
    segment_samples,
    tile_to_segment,
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


def extract_track(path: str, digest: str, cache: TrackCache) -> TrackResult:
    """Decode and segment one file once, analyse it into each of the cache's representations and store each; bad
    audio becomes a cached skip.

    A clip shorter than one segment is tiled to fill one and stored so, whatever `audio.short_clips` says: the
    policy is applied when the result is read, so training and prediction share one entry.
    """
    try:
        analysis, meta = analyse_file(path, cache.recipe, cache.names)
    except AudioError as err:
        for name in cache.names:
            cache[name].write_skip(digest, str(err))
        return TrackResult(path, digest, 0, hit=False, reason=str(err))
    for name in cache.names:
        cache[name].write_entry(digest, analysis, meta)
    return TrackResult(path, digest, meta["n_segments"], hit=False, short_seconds=meta.get("short_seconds"))


def analyse_file(path: str, recipe: Recipe, names: tuple[str, ...]) -> tuple[features.TrackAnalysis, dict]:
    """Decode and segment one file once and analyse it into the representations `names`: (the analysis, the meta
    of its entry). The one analysis of a track, for the local engine (`extract_track`) and the Beam engine
    (genre_tf.extract.beam) alike; raises AudioError for bad audio."""
    return analyse_waveform(load_track(Path(path), recipe.audio), recipe, names)


def analyse_waveform(y: np.ndarray, recipe: Recipe, names: tuple[str, ...]) -> tuple[features.TrackAnalysis, dict]:
    """A decoded track (at audio.sample_rate) segmented and analysed into the representations `names`, a clip shorter
    than one segment tiled to fill one: (the analysis, the meta of its entry). `analyse_file` after the decode, and
    `serve`'s feature rows of an upload it decoded already (`audio_graph.FeatureRows`)."""
    bounds = segment_bounds(len(y), recipe.audio)
    short_seconds = None if bounds else len(y) / recipe.audio.sample_rate
    if not bounds:
        y = tile_to_segment(y, recipe.audio)
        bounds = segment_bounds(len(y), recipe.audio)
    analysis = features.analyse_track(y, recipe.audio.sample_rate, recipe.features, recipe.mel, bounds, names)
    meta = {"n_samples": len(y), "n_segments": len(bounds), "segments": bounds, "sample_rate": recipe.audio.sample_rate}
    if short_seconds is not None:
        meta["short_seconds"] = short_seconds
    return analysis, meta


def _extract_job(job: tuple[str, str, str, Recipe, tuple[str, ...]]) -> TrackResult:
    path, digest, cache_dir, recipe, names = job
    return extract_track(path, digest, TrackCache(Path(cache_dir), recipe, names))


def _one_blas_thread() -> None:
    # Processes already use every core, and BLAS threads on top oversubscribe them. One thread in
    # every extractor, in-process too, also keeps float summation order, and so the bytes, the same.
    threadpool_limits(1)


def compile_kernels(recipe: Recipe | None = None, names: tuple[str, ...] = representations.ALL) -> None:
    """Compile (or load) every numba kernel that extracting `names` uses, in this process, by analysing a short tone
    (with the default recipe unless one is given: kernels are compiled per argument type, not per setting).

    librosa asks numba to cache its compiled kernels beside its source (`librosa/**/__pycache__/*.nbi, *.nbc`).
    Numba writes a kernel's index and its data as separate files with no lock between processes, so extraction
    workers that each compile the same kernels on a cold cache write the same entries at once, and a later process
    that loaded what they left crashed in librosa's pitch tracking (a segfault). Run before a pool starts, this
    writes every entry once; the workers then only read them.
    """
    recipe = recipe or Recipe(AudioConfig(), FeatureConfig(), MelConfig())
    sr = recipe.audio.sample_rate
    n = max(segment_samples(recipe.audio), recipe.features.n_fft, recipe.mel.n_fft) + recipe.features.hop_length
    t = np.arange(n) / sr
    y = (0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * np.sin(2 * np.pi * 97.0 * t)).astype(np.float32)
    with threadpool_limits(1):
        features.analyse_track(y, sr, recipe.features, recipe.mel, segment_bounds(n, recipe.audio), names)


class SharedPool:
    """Extraction worker processes that several `extract_all` calls share, started by the first call with more than
    one file to extract: a stream of chunks pays their start, imports and first-call compilation once, and a stream
    of cache hits not at all."""

    def __init__(self, workers: int):
        self.workers = workers
        self.executor: ProcessPoolExecutor | None = None
        self.compiled: set[str] = set()  # representation keys whose kernels this process compiled

    def map(self, jobs: list[tuple]) -> Iterator[TrackResult]:
        if self.workers <= 1 or len(jobs) <= 1:
            with threadpool_limits(1):
                yield from map(_extract_job, jobs)
            return
        todo = {recipe.key(name): (recipe, name) for *_, recipe, names in jobs for name in names}
        for key, (recipe, name) in todo.items():  # before any worker can run a kernel: see compile_kernels
            if key not in self.compiled:
                compile_kernels(recipe, (name,))
                self.compiled.add(key)
        if self.executor is None:
            # spawn, not fork: callers such as train have TensorFlow's threads running, which fork does not survive.
            context = multiprocessing.get_context("spawn")
            self.executor = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_one_blas_thread)
        yield from self.executor.map(_extract_job, jobs, chunksize=1)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()


@contextmanager
def extraction_pool(workers: int) -> Iterator[SharedPool]:
    """A SharedPool of `workers` processes for the block, shut down at its end."""
    pool = SharedPool(workers)
    try:
        yield pool
    finally:
        pool.close()


def _parallel(jobs: list[tuple], workers: int, pool: SharedPool | None) -> Iterator[TrackResult]:
    if pool is not None:
        yield from pool.map(jobs)
        return
    with extraction_pool(workers) as own_pool:
        yield from own_pool.map(jobs)


def legacy_note(cache_dir: Path) -> str | None:
    """A line on entries made before each representation had its own cache (`<cache.dir>/tracks/`): never read."""
    legacy = Path(cache_dir) / "tracks"
    if not legacy.is_dir():
        return None
    return (
        f"note: {legacy} holds cache entries of an older layout (every representation in one entry); they are not "
        "read, so these tracks are extracted once more; delete that folder to free its space"
    )


def extract_all(
    paths: Iterable[str],
    cache_dir: Path,
    recipe: Recipe,
    names: tuple[str, ...] = representations.ALL,
    jobs: int = 0,
    progress: bool = True,
    pool: SharedPool | None = None,
) -> list[TrackResult]:
    """Extract the representations `names` of every file (cache hits cost one hash; a file that has some of them
    is analysed for the rest only), in parallel over `jobs` processes (or `pool`'s), in input order."""
    cache = TrackCache(cache_dir, recipe, names)
    cache.clean_partial()
    results: dict[int, TrackResult] = {}
    todo = []
    for i, path in enumerate(paths):
        try:
            digest = file_digest(Path(path))
        except AudioError as err:
            results[i] = TrackResult(path, None, 0, hit=False, reason=str(err))
            continue
        cached, missing = cache.lookup(path, digest)
        if cached is not None:
            results[i] = cached
        else:
            todo.append((i, (path, digest, str(cache_dir), recipe, missing)))
    note = legacy_note(cache_dir) if todo and progress else None
    if note:
        print(note, flush=True)
    workers = jobs or os.cpu_count() or 1
    done = _parallel([job for _, job in todo], min(workers, len(todo)), pool)
    bar = tqdm(done, total=len(todo), desc="extracting", unit="track", disable=not progress or not todo)
    for (i, _), result in zip(todo, bar, strict=True):
        results[i] = result
    return [results[i].under_policy(recipe.audio) for i in sorted(results)]
