"""Representation caches: keyed by content and by what shapes each representation, computed only when asked,
atomic, byte-identical after kill -9 and resume."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from genre_tf.config import load_config
from genre_tf.data.demo import generate_demo
from genre_tf.extract.cache import Recipe, TrackStore, file_digest, legacy_note
from genre_tf.extract.pool import extract_all
from genre_tf.features import analysis as features
from genre_tf.features.representations import ALL, FEATURES, MEL_IMAGE, MUSICNN_PATCH


def demo_config(tmp_path: Path, *extra: str):
    return load_config(
        None,
        [
            "data.source=demo",
            f"data.root={tmp_path / 'demo'}",
            f"cache.dir={tmp_path / 'cache'}",
            "data.demo_tracks_per_genre=3",
            "data.demo_seconds=3",
            "audio.segment_seconds=1.0",
            "mel.n_mels=32",
            *extra,
        ],
    )


def tree_digest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def test_each_representations_key_follows_the_parameters_that_shape_it_and_no_others(tmp_path):
    base = Recipe.from_config(demo_config(tmp_path)).keys(ALL)
    assert Recipe.from_config(demo_config(tmp_path)).keys(ALL) == base
    assert len(set(base.values())) == 3
    changed = {  # the override: the representations whose key it changes
        "audio.segment_seconds=2.0": ALL,
        "audio.sample_rate=16000": ALL,
        "audio.max_segments_per_track=5": ALL,
        "mel.n_mels=64": (MEL_IMAGE,),
        "mel.hop_length=256": (MEL_IMAGE,),
        "features.n_mfcc=13": (FEATURES,),
        "features.hop_length=256": (FEATURES,),
        "features.pad_mode=constant": (FEATURES, MEL_IMAGE),  # the mel images' STFT padding
        "audio.short_clips=tile": (),  # a policy applied when entries are read
    }
    for override, names in changed.items():
        keys = Recipe.from_config(demo_config(tmp_path, override)).keys(ALL)
        assert [name for name in ALL if keys[name] != base[name]] == list(names), override


def test_only_the_representations_asked_for_are_computed_and_alike_either_way(tmp_path):
    cfg = demo_config(tmp_path)
    paths = [str(p) for p in generate_demo(cfg.data.root, 1, 2.0)][:2]
    recipe = Recipe.from_config(cfg)
    cache = tmp_path / "parts"
    (first,) = {r.hit for r in extract_all(paths, cache, recipe, (MEL_IMAGE,), jobs=1, progress=False)}
    assert not first and sorted(p.name for p in cache.iterdir()) == [MEL_IMAGE]
    mel_before = tree_digest(cache / MEL_IMAGE)
    assert all(r.hit for r in extract_all(paths, cache, recipe, (MEL_IMAGE,), jobs=1, progress=False))
    # A run that reads rows and images finds the images and computes the rows alone; the images stay as they were.
    results = extract_all(paths, cache, recipe, (FEATURES, MEL_IMAGE), jobs=1, progress=False)
    assert not any(r.hit for r in results) and tree_digest(cache / MEL_IMAGE) == mel_before
    assert sorted(p.name for p in cache.iterdir()) == sorted([FEATURES, MEL_IMAGE])
    whole = tmp_path / "whole"
    extract_all(paths, whole, recipe, ALL, jobs=1, progress=False)
    for name in (FEATURES, MEL_IMAGE):  # images sliced from the feature table's STFT, or from their own: same bytes
        assert tree_digest(cache / name) == tree_digest(whole / name), name
    store = TrackStore(whole, recipe, MUSICNN_PATCH)
    assert [Path(p).name for p in store.paths(results[0].digest, 2)] == ["musicnn_0000.f16", "musicnn_0001.f16"]


def test_an_older_caches_entries_are_named_once_and_not_read(tmp_path, capsys):
    cfg = demo_config(tmp_path)
    assert legacy_note(cfg.cache.dir) is None
    (cfg.cache.dir / "tracks" / "0123456789abcdef").mkdir(parents=True)
    paths = [str(p) for p in generate_demo(cfg.data.root, 1, 2.0)][:1]
    extract_all(paths, cfg.cache.dir, Recipe.from_config(cfg), (FEATURES,), jobs=1)
    extract_all(paths, cfg.cache.dir, Recipe.from_config(cfg), (FEATURES,), jobs=1)  # all hits: nothing to say
    assert capsys.readouterr().out.count(str(cfg.cache.dir / "tracks")) == 1


def test_second_run_is_all_hits_and_moves_do_not_matter(tmp_path):
    cfg = demo_config(tmp_path)
    paths = [str(p) for p in generate_demo(cfg.data.root, 2, 2.0)]
    recipe = Recipe.from_config(cfg)
    first = extract_all(paths, cfg.cache.dir, recipe, jobs=1, progress=False)
    assert all(r.ok and not r.hit for r in first)
    moved = tmp_path / "moved.wav"
    os.replace(paths[0], moved)
    second = extract_all([str(moved), *paths[1:]], cfg.cache.dir, recipe, jobs=1, progress=False)
    assert all(r.hit for r in second)
    assert [r.digest for r in second] == [r.digest for r in first]
    store = TrackStore(cfg.cache.dir, recipe, FEATURES)
    rows = store.segment_rows(first[0].digest)
    assert rows.shape == (first[0].n_segments, 57) and np.isfinite(rows).all()


def test_bad_files_are_skipped_with_reasons_and_cached(tmp_path):
    cfg = demo_config(tmp_path)
    good = tmp_path / "good.wav"
    sf.write(good, np.random.default_rng(0).normal(0, 0.1, 22050 * 2).astype(np.float32), 22050)
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 10)
    short = tmp_path / "short.wav"
    sf.write(short, np.random.default_rng(1).normal(0, 0.1, 15435).astype(np.float32), 22050)
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    fragment = tmp_path / "fragment.wav"
    sf.write(fragment, np.random.default_rng(2).normal(0, 0.1, 2000).astype(np.float32), 22050)
    paths = [str(good), str(text), str(short), str(folder), str(fragment)]
    results = extract_all(paths, cfg.cache.dir, Recipe.from_config(cfg), jobs=1, progress=False)
    assert [r.ok for r in results] == [True, False, False, False, False]
    assert results[1].reason.startswith("not an audio file")
    assert results[2].reason == "shorter than one segment (0.70 s < 1.0 s)"
    assert results[3].reason == "is a directory"
    assert results[4].reason == "too short (0.09 s < audio.min_seconds 0.5 s)"
    again = extract_all(paths, cfg.cache.dir, Recipe.from_config(cfg), jobs=1, progress=False)
    assert [r.hit for r in again[:3]] == [True, True, True]
    assert again[1].reason == results[1].reason


def test_parallel_equals_serial(tmp_path):
    cfg = demo_config(tmp_path)
    paths = [str(p) for p in generate_demo(cfg.data.root, 1, 2.0)]
    serial = extract_all(paths, tmp_path / "a", Recipe.from_config(cfg), jobs=1, progress=False)
    parallel = extract_all(paths, tmp_path / "b", Recipe.from_config(cfg), jobs=2, progress=False)
    assert [r.digest for r in serial] == [r.digest for r in parallel]
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


NUMBA_WRITE_HOOK = """
import multiprocessing, os, sys

def _log_numba_writes(event, args):
    # numba writes each cache file under a temporary name in "wb" mode, then renames it into place
    if event == "open" and isinstance(args[0], str) and ".nb" in args[0] and args[1] and "w" in args[1]:
        who = "worker" if multiprocessing.parent_process() is not None else "parent"
        with open(os.environ["NUMBA_WRITE_LOG"], "a") as log:
            log.write(f"{who} {args[0]}\\n")

sys.addaudithook(_log_numba_writes)
"""


def warm_numba_cache_but_pitch(cache_dir: Path) -> None:
    """A numba cache dir holding librosa's compiled kernels as its own __pycache__ has them, except pitch tracking's.

    A wholly cold cache costs half a minute of compiling; one cold module shows the same race.
    """
    import librosa
    from numba.core.caching import _CacheLocator

    for cached in Path(librosa.__file__).parent.rglob("__pycache__/*.nb[ic]"):
        if "pitch." not in cached.name:
            target = cache_dir / _CacheLocator.get_suitable_cache_subpath(cached.parent.parent / "x.py")
            target.mkdir(parents=True, exist_ok=True)
            (target / cached.name).write_bytes(cached.read_bytes())


def test_extraction_workers_find_librosas_numba_kernels_compiled(tmp_path):
    """On a cold numba cache, `prepare --jobs 2` compiles librosa's kernels once, in the parent, before the pool.

    Workers that compiled them themselves wrote the same numba cache entries at once, which left caches that made
    later processes crash in librosa's pitch tracking; an audit hook in every process logs who writes them.
    """
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NUMBA_WRITE_HOOK)
    log = tmp_path / "numba_writes.log"
    warm_numba_cache_but_pitch(tmp_path / "numba")
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(tmp_path / "numba"),  # cold, and librosa's own __pycache__ stays untouched
        "NUMBA_WRITE_LOG": str(log),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data: {{source: demo, root: {tmp_path / 'demo'}, demo_tracks_per_genre: 2, demo_seconds: 2,"
        " valid_fraction: 0.5, test_fraction: 0}\n"
        f"cache: {{dir: {tmp_path / 'cache'}}}\naudio: {{segment_seconds: 1.0}}\nmel: {{n_mels: 32}}\n"
    )
    command = [sys.executable, "-m", "genre_tf.prepare", "--config", str(config), "--jobs", "2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "extracted 12" in done.stdout
    writers = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert [path for who, path in writers if who == "worker"] == []
    assert any(who == "parent" for who, _ in writers), "the cold cache was filled by the parent"


def test_kill_and_resume_is_byte_identical(tmp_path):
    """prepare killed with SIGKILL mid-extraction, then rerun, leaves the same cache as one clean run."""
    config = tmp_path / "c.yaml"
    common = (
        f"data: {{source: demo, root: {tmp_path / 'demo'}, demo_tracks_per_genre: 4, demo_seconds: 4}}\n"
        "audio: {segment_seconds: 1.0}\nmel: {n_mels: 32}\n"
    )
    config.write_text(f"name: killed\ncache: {{dir: {tmp_path / 'killed'}}}\n" + common)
    command = [sys.executable, "-m", "genre_tf.prepare", "--config", str(config), "--jobs", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tracks = tmp_path / "killed" / FEATURES  # the demo config's MLP reads feature rows only
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tracks.glob("*/*"))) < 4:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    entries = len([p for p in tracks.glob("*/*") if not p.name.startswith(".tmp")])
    assert 0 < entries < 24, "the kill must land mid-extraction"
    subprocess.run(command, check=True, capture_output=True)
    clean = tmp_path / "clean.yaml"
    clean.write_text(f"name: clean\ncache: {{dir: {tmp_path / 'clean'}}}\n" + common)
    subprocess.run([*command[:4], str(clean), "--jobs", "1"], check=True, capture_output=True)
    assert tree_digest(tracks) == tree_digest(tmp_path / "clean" / FEATURES)
    rerun = subprocess.run(command, check=True, capture_output=True, text=True)
    assert "cache hits 24  extracted 0" in rerun.stdout


def test_file_digest_is_content(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert file_digest(a) == file_digest(b)


def test_short_clips_tile_to_one_segment_when_asked(tmp_path):
    clip = tmp_path / "short.wav"
    tone = np.sin(2 * np.pi * 440 * np.arange(11025) / 22050).astype(np.float32) * 0.3
    sf.write(clip, tone, 22050)
    skip = demo_config(tmp_path)
    assert extract_all([str(clip)], skip.cache.dir, Recipe.from_config(skip), jobs=1, progress=False)[0].reason
    tile = demo_config(tmp_path, "audio.short_clips=tile")
    (result,) = extract_all([str(clip)], tile.cache.dir, Recipe.from_config(tile), jobs=1, progress=False)
    assert result.ok and result.n_segments == 1
    row = TrackStore(tile.cache.dir, Recipe.from_config(tile), FEATURES).track_row(result.digest)
    centroid = row[features.FEATURE_COLUMNS.index("spectral_centroid_mean")]
    assert 400 < centroid < 500  # still a 440 Hz tone
