"""One track's analysis: its audio decoded and segmented once, every representation asked for computed from one STFT,
and the files of its cache entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genre_tf.extract.cache import Recipe, TrackCache, TrackResult
from genre_tf.features import analysis as features
from genre_tf.features import audio
from genre_tf.features.audio import (
    AudioError,
    segment_bounds,
    tile_to_segment,
)


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
    return analyse_waveform(audio.load_track(Path(path), recipe.audio), recipe, names)


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
