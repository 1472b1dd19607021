"""Benchmark: what one whole song costs to prepare: wall time, CPU time, peak memory and files, per track length.

A song is made by joining gtzan_mini clips end to end (20 clips: 10 minutes) and written as a 44.1 kHz stereo MP3,
as a user's library has it. Each length is extracted in a fresh process (`genre_tf.extract.pool.extract_all`, one job,
a cold cache in a temporary folder) under the recipe of configs/gtzan_mini.yaml, so the peak resident memory
printed is that of one extraction worker for that track.

    .venv/bin/python bench/whole_song.py --minutes 0.5 5 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from result_table import record  # bench/result_table.py, beside this script

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO.parent / "shared" / "data" / "gtzan_mini"

WORKER = """
import json, resource, sys, time
from pathlib import Path
from genre_tf.extract.cache import Recipe
from genre_tf.extract.pool import extract_all
from genre_tf.config import load_config
song, cache = sys.argv[1], Path(sys.argv[2])
cfg = load_config("configs/gtzan_mini.yaml", [f"cache.dir={cache}"])
started, cpu = time.perf_counter(), time.process_time()
(result,) = extract_all([song], cache, Recipe.from_config(cfg), jobs=1, progress=False)
print(json.dumps({
    "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu, "segments": result.n_segments,
    "reason": result.reason, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "files": sum(1 for p in cache.rglob("*") if p.is_file()),
}))
"""


def make_song(minutes: float, path: Path) -> Path:
    """`minutes` of gtzan_mini clips joined end to end, 44.1 kHz stereo MP3."""
    clips = sorted(CLIPS.glob("*/*.flac"))
    needed = round(minutes * 60 * 22050)
    parts, total = [], 0
    for clip in clips:
        y, _ = sf.read(clip, dtype="float32")
        parts.append(y)
        total += len(y)
        if total >= needed:
            break
    mono = np.concatenate(parts)[:needed]
    stereo = np.repeat(np.interp(np.arange(0, len(mono), 22050 / 44100), np.arange(len(mono)), mono)[:, None], 2, 1)
    sf.write(path, stereo.astype(np.float32), 44100, format="MP3")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[0.5, 5.0, 10.0])
    args = parser.parse_args()
    if not CLIPS.is_dir():
        raise SystemExit(f"error: {CLIPS} not found (the shared gtzan_mini clips)")
    print("| song | MP3 size | wall s | CPU s | peak RSS MiB | segments kept | cache files |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory() as tmp:
            song = make_song(minutes, Path(tmp) / "song.mp3")
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", WORKER, str(song), str(Path(tmp) / "cache")],
                cwd=REPO, capture_output=True, text=True, check=True,
            )  # fmt: skip
            m = json.loads(done.stdout.strip().splitlines()[-1])
            assert m["reason"] is None, m["reason"]
            print(
                f"| {minutes:g} min | {song.stat().st_size / 2**20:.1f} MiB | {m['seconds']:.1f} | {m['cpu']:.1f} "
                f"| {m['peak_mib']:.0f} | {m['segments']} | {m['files']} |"
                f"  (whole process {time.perf_counter() - started:.1f} s)"
            )
            rows.append(
                {
                    "song": f"{minutes:g} min",
                    "MP3 size": f"{song.stat().st_size / 2**20:.1f} MiB",
                    "wall s": round(m["seconds"], 1),
                    "CPU s": round(m["cpu"], 1),
                    "peak RSS": f"{m['peak_mib']:.0f} MiB",
                    "segments kept": m["segments"],
                    "cache files": m["files"],
                }
            )
    record("whole_song", rows, key=["song"])


if __name__ == "__main__":
    main()
