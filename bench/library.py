"""Benchmark: `predict FOLDER --output` on a library of N distinct 30 s clips, cold, then killed halfway and resumed.

Writes N synthetic clips (genre_tf.data.demo's styles, one random generator per clip, so every file has its own content
and nothing is a cache hit) as 16-bit FLAC, then runs

    python -m genre_tf.predict --run RUN FOLDER --output OUT --cache-dir CACHE

with a fresh cache and prints tracks/s, wall time, CPU seconds per track (its process and the workers it waited
for), the peak memory of its processes, the files it wrote in the cache, and the hours 100,000 such tracks would take
at that rate. Then, with another fresh cache and output, it kills the process group (SIGKILL) once half the rows are
written, runs the same command again, and prints what the resume kept, predicted and extracted, and whether its
output is the cold run's file byte for byte (`--no-resume` skips this half). `--runtime litert` predicts with the
run's exported .tflite on LiteRT instead (`predict --model X.tflite`, exported first where missing; no cache, and
no resume: LiteRT's predict writes its output at the end), `--weights float16` with an `export --quantize float16`
file.

    .venv/bin/python bench/library.py [--tracks 1000] [--seconds 30] [--run saved_models/demo_cnn] \
        [--runtime tensorflow|litert] [--weights float32|float16] [--no-resume] [--folder DIR] [--workdir DIR]

Without --run, saved_models/demo_cnn (`make demo`'s CNN, configs/demo_cnn.yaml) is trained first when missing.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
from result_table import record  # bench/result_table.py, beside this script

from genre_tf.data.demo import DEMO_GENRES, STYLES, render_track

REPO = Path(__file__).resolve().parents[1]
DEMO_CNN = REPO / "saved_models" / "demo_cnn"
SAMPLE_RATE = 22050
SEED = 7  # the demo's training audio uses 42: these clips are other tracks
POLL_SECONDS = 0.2


def write_clip(job: tuple[Path, int, float]) -> None:
    """One clip of the library: track `number`'s own generator, its genre cycling through the demo styles."""
    path, number, seconds = job
    if path.is_file():  # deterministic: a clip already written is this clip
        return
    genre_index = number % len(DEMO_GENRES)
    y = render_track(STYLES[DEMO_GENRES[genre_index]], np.random.default_rng([SEED, number]), seconds, SAMPLE_RATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path.with_suffix(".tmp.flac"), y, SAMPLE_RATE, subtype="PCM_16")
    path.with_suffix(".tmp.flac").rename(path)


def write_library(folder: Path, tracks: int, seconds: float) -> list[Path]:
    """`folder/<genre>/<genre>.NNNNN.flac` for NNNNN in 0..tracks-1, over every core."""
    jobs = [
        (folder / DEMO_GENRES[i % len(DEMO_GENRES)] / f"{DEMO_GENRES[i % len(DEMO_GENRES)]}.{i:05d}.flac", i, seconds)
        for i in range(tracks)
    ]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(write_clip, jobs, chunksize=8))
    return [path for path, _, _ in jobs]


def demo_cnn(log: Path) -> Path:
    """`make demo`'s CNN run, trained (on the demo's own synthetic audio) when it is missing."""
    if not (DEMO_CNN / "model.keras").is_file():
        print(f"training saved_models/demo_cnn (configs/demo_cnn.yaml; log {log}) ...", flush=True)
        started = time.perf_counter()
        with open(log, "w") as output:
            command = [sys.executable, "-m", "genre_tf.train", "--config", "configs/demo_cnn.yaml"]
            subprocess.run(command, cwd=REPO, env=child_env(), check=True, stdout=output, stderr=output)
        print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    return DEMO_CNN


def workdir_and_run(workdir: Path | None, run: Path | None, prefix: str) -> tuple[Path, Path]:
    """The bench's folder (a temporary one unless given) and its run (the demo CNN, trained if missing, unless
    given)."""
    work = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return work, run or demo_cnn(work / "train.log")


def child_env() -> dict:
    """This checkout's genre_tf first on the path, whatever the interpreter has installed."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@dataclass
class Measured:
    seconds: float
    peak_tree_bytes: int  # the predict process and its extraction workers together
    peak_main_bytes: int
    stdout: str
    rows_at_end: int
    cpu_seconds: float  # user + system, of predict and the processes it waited for


def rows_in(output: Path) -> int:
    """Whole rows in a submission CSV (lines after the header)."""
    return max(output.read_bytes().count(b"\n") - 1, 0) if output.is_file() else 0


def run_predict(command: list[str], output: Path, log: Path, kill_at_rows: int | None = None) -> Measured:
    """Run predict in its own process group, sampling its memory; SIGKILL the group at `kill_at_rows` rows."""
    started = time.perf_counter()
    cpu_before = children_cpu_seconds()
    with open(log, "w") as stderr, open(log.with_suffix(".out"), "w") as stdout:
        process = subprocess.Popen(
            command, cwd=REPO, env=child_env(), stdout=stdout, stderr=stderr, start_new_session=True
        )
        main = psutil.Process(process.pid)
        peak_tree = peak_main = 0
        while process.poll() is None:
            try:
                main_rss = main.memory_info().rss
                tree_rss = main_rss + sum(child.memory_info().rss for child in main.children(recursive=True))
            except psutil.NoSuchProcess:
                break
            peak_main, peak_tree = max(peak_main, main_rss), max(peak_tree, tree_rss)
            if kill_at_rows is not None and rows_in(output) >= kill_at_rows:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(POLL_SECONDS)
        process.wait()
    seconds = time.perf_counter() - started
    if kill_at_rows is None and process.returncode != 0:
        raise SystemExit(f"error: predict exited with {process.returncode}; see {log}")
    cpu = children_cpu_seconds() - cpu_before
    return Measured(seconds, peak_tree, peak_main, log.with_suffix(".out").read_text(), rows_in(output), cpu)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cache_files(cache: Path) -> int:
    return sum(1 for p in cache.rglob("*") if p.is_file())


def cache_entries(cache: Path) -> int:
    """Tracks extracted into the cache: one entry folder each."""
    return sum(1 for p in cache.glob("tracks/*/*") if p.is_dir() and not p.name.startswith("."))


def gb(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def cold(run: Path, folder: Path, work: Path, tracks: int, runtime: str, model: Path | None) -> tuple[Path, dict]:
    """The uninterrupted run on a fresh cache (on LiteRT: the `model` file); its output and figures."""
    output, cache = work / "cold" / "results.csv", work / "cold" / "cache"
    command = predict_command(run, folder, output, cache, runtime, model)
    measured = run_predict(command, output, work / "cold.log")
    rate = tracks / measured.seconds
    print(f"cold: {' '.join(command[1:])}")
    print(
        f"  {tracks} tracks in {measured.seconds:.1f} s: {rate:.2f} tracks/s, {measured.cpu_seconds / tracks:.2f} "
        f"CPU s per track; peak RSS {gb(measured.peak_tree_bytes)} (all processes), {gb(measured.peak_main_bytes)} "
        f"(predict's own); {cache_files(cache)} files written in the cache ({cache_entries(cache)} track entries)"
    )
    print(f"  100,000 such tracks at this rate: {100_000 / rate / 3600:.1f} h")
    print(f"  {measured.stdout.splitlines()[0] if measured.stdout else '(nothing printed)'}")
    return output, {
        "cold s": round(measured.seconds),
        "cold tracks/s": round(rate, 2),
        "CPU s per track": round(measured.cpu_seconds / tracks, 3),
        "100,000 tracks, h": round(100_000 / rate / 3600, 1),
        "peak RSS, all processes": gb(measured.peak_tree_bytes),
        "peak RSS, predict's own": gb(measured.peak_main_bytes),
        "cache files written": cache_files(cache),
    }


def killed_and_resumed(run: Path, folder: Path, work: Path, tracks: int, cold_output: Path) -> dict:
    """Killed once half the rows are in, then the same command again on what the kill left; the figures."""
    output, cache = work / "resumed" / "results.csv", work / "resumed" / "cache"
    command = predict_command(run, folder, output, cache, "tensorflow")
    killed = run_predict(command, output, work / "killed.log", kill_at_rows=tracks // 2)
    entries_at_kill = cache_entries(cache)
    print(
        f"killed (SIGKILL to the process group) after {killed.seconds:.1f} s with {killed.rows_at_end} rows written "
        f"and {entries_at_kill} tracks extracted"
    )
    resumed = run_predict(command, output, work / "resumed.log")
    line = next((x for x in resumed.stdout.splitlines() if x.startswith("resuming:")), "no resuming line")
    kept = int(re.match(r"resuming: (\d+)", line).group(1)) if line.startswith("resuming") else 0
    print(
        f"resumed in {resumed.seconds:.1f} s ({(tracks - kept) / resumed.seconds:.2f} tracks/s): {line}; "
        f"predicted {resumed.rows_at_end - kept} tracks, extracted {cache_entries(cache) - entries_at_kill}; "
        f"peak RSS {gb(resumed.peak_tree_bytes)}"
    )
    identical = output.read_bytes() == cold_output.read_bytes()
    print(f"  killed + resumed {killed.seconds + resumed.seconds:.1f} s; output identical to the cold run's: "
          f"{identical}")  # fmt: skip
    return {
        "killed after s": round(killed.seconds),
        "rows at the kill": killed.rows_at_end,
        "resumed: kept": kept,
        "resumed s": round(resumed.seconds),
        "resumed tracks/s": round((tracks - kept) / resumed.seconds, 2),
        "output identical to the cold run's": identical,
    }


def predict_command(
    run: Path, folder: Path, output: Path, cache: Path, runtime: str, model: Path | None = None
) -> list[str]:
    """predict with the run on TensorFlow, or on LiteRT with the run's exported `model` (no cache: it decodes each
    file as the exported model takes it)."""
    predict = [sys.executable, "-m", "genre_tf.predict"]
    if runtime == "litert":
        return [*predict, "--model", str(model), str(folder), "--output", str(output)]
    return [*predict, "--run", str(run), str(folder), "--output", str(output), "--cache-dir", str(cache)]


def exported(run: Path, work: Path, weights: str) -> Path:
    """The run's .tflite: float32 where `predict --runtime litert` looks for it, float16 in the work folder; exported
    when missing (`export --quantize`)."""
    from genre_tf.serving.litert import exported_tflite

    path = exported_tflite(run) if weights == "float32" else work / f"{run.name}_{weights}.tflite"
    if path.is_file():
        return path
    log = work / "export.log"
    print(f"exporting {run} as TFLite, {weights} weights (log {log}) ...", flush=True)
    with open(log, "w") as output:
        command = [sys.executable, "-m", "genre_tf.export", "--run", str(run), "--format", "tflite", "--output"]
        command += [str(path), "--quantize", "none" if weights == "float32" else weights]
        subprocess.run(command, cwd=REPO, env=child_env(), check=True, stdout=output, stderr=output)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1000, help="clips in the library")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    parser.add_argument("--run", type=Path, help="a finished run (default: saved_models/demo_cnn, trained if missing)")
    parser.add_argument("--folder", type=Path, help="where the library is written (kept); default: in --workdir")
    parser.add_argument("--workdir", type=Path, help="outputs and caches (kept); default: a temporary folder")
    parser.add_argument("--runtime", choices=("tensorflow", "litert"), default="tensorflow")
    parser.add_argument("--no-resume", action="store_true", help="the cold run only, no kill and resume")
    parser.add_argument("--weights", choices=("float32", "float16"), default="float32", help="litert: the .tflite's")
    args = parser.parse_args()
    if args.weights != "float32" and args.runtime != "litert":
        parser.error("--weights float16 is for --runtime litert (an export --quantize float16 file)")
    work, run = workdir_and_run(args.workdir, args.run, "library-bench-")
    model = exported(run, work, args.weights) if args.runtime == "litert" else None
    for leftover in ("cold", "resumed"):  # each measurement starts from an empty cache and no output
        shutil.rmtree(work / leftover, ignore_errors=True)
    folder = args.folder or work / "library"
    started = time.perf_counter()
    write_library(folder, args.tracks, args.seconds)
    size = sum(p.stat().st_size for p in folder.rglob("*.flac"))
    print(f"library: {args.tracks} clips of {args.seconds:g} s in {folder} ({gb(size)} of FLAC), "
          f"ready in {time.perf_counter() - started:.0f} s; run {run}; {os.cpu_count()} cores")  # fmt: skip
    cold_output, figures = cold(run, folder, work, args.tracks, args.runtime, model)
    if args.runtime == "tensorflow" and not args.no_resume:
        figures |= killed_and_resumed(run, folder, work, args.tracks, cold_output)
    row = {"tracks": args.tracks, "seconds each": args.seconds, "FLAC": gb(size), "run": run.name}
    row |= {"runtime": args.runtime, **figures, "load average at the end": load_average(), "weights": args.weights}
    record("library", [row], key=["tracks", "seconds each", "run", "runtime", "weights"])
    if args.workdir is None:
        for cache in (work / "cold" / "cache", work / "resumed" / "cache"):
            shutil.rmtree(cache, ignore_errors=True)


def load_average() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
