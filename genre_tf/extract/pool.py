"""Extraction over many tracks: worker processes (one BLAS thread each, librosa's kernels compiled once), shared by
calls that reuse them, with progress, each track found in the cache or analysed and written."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from genre_tf.config import AudioConfig, FeatureConfig, MelConfig
from genre_tf.config.console import Progress
from genre_tf.extract.cache import Recipe, TrackCache, TrackResult, file_digest, legacy_note
from genre_tf.extract.track import extract_track
from genre_tf.features import analysis as features
from genre_tf.features import representations
from genre_tf.features.audio import (
    AudioError,
    segment_bounds,
    segment_samples,
)


def _extract_job(job: tuple[str, str, str, Recipe, tuple[str, ...]]) -> TrackResult:
    path, digest, cache_dir, recipe, names = job
    return extract_track(path, digest, TrackCache(Path(cache_dir), recipe, names))


def _one_blas_thread() -> None:
    # Processes already use every core, and BLAS threads on top oversubscribe them. One thread in
    # every extractor, in-process too, also keeps float summation order, and so the bytes, the same.
    threadpool_limits(1)


def _start_worker() -> None:
    """A pool process: one BLAS thread, and Ctrl-C left to the parent, which stops the pool (a worker's own
    KeyboardInterrupt would print a traceback per process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _one_blas_thread()


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
            self.executor = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker)
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
    bar = Progress(done, total=len(todo), desc="extracting", unit="track", disable=not progress or not todo)
    with bar:
        for (i, _), result in zip(todo, bar, strict=True):
            results[i] = result
    return [results[i].under_policy(recipe.audio) for i in sorted(results)]
